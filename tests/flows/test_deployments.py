"""prefect.yaml and `ragcycle serve` declare the same deployments from the same settings."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, make_settings


def test_prefect_yaml_is_the_rendering_of_the_default_settings(tmp_path: Path) -> None:
    """Regression: prefect.yaml hard-coded the cron and the trigger's resource while `ragcycle
    serve` read both from settings; the committed file is now rendered from the settings."""
    from flows.deployments import render_prefect_yaml

    committed = (REPO / "prefect.yaml").read_text()
    assert render_prefect_yaml(make_settings(tmp_path)) == committed
    custom = render_prefect_yaml(
        make_settings(
            tmp_path, chroma={"collection": "docs"}, lifecycle={"monitor_cron": "5 1 * * 1"}
        )
    )
    assert 'cron: "5 1 * * 1"' in custom
    assert "prefect.resource.id: ragcycle.index.docs" in custom
