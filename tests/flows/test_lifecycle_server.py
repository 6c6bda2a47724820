"""``ragcycle serve``: the deployments served from one process, as prefect.yaml declares them for
a worker (tests/flows/test_server_stack.py runs the whole loop on a worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import own_cache_env
from tests.servers import create_flow_run, stop, tail, wait_automation, wait_deployments, wait_final

pytestmark = pytest.mark.slow

NAMES = ["ingest/ingest", "evaluate/evaluate", "monitor/monitor", "reindex/reindex"]


def test_serve_registers_schedule_trigger_and_limit_and_runs_flows(
    prefect_server: str, tmp_path: Path
) -> None:
    api = prefect_server
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.md").write_text("# Note\n\nThe serve test indexes this one short note.\n")
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nprogress = false\n'
        f'[prefect]\napi_url = "{api}"\n'
        f'[lifecycle]\nsources = ["{corpus}"]\nmonitor_cron = "17 4 * * *"\n'
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "ragcycle.cli", "serve", "-c", str(config)],
            env=own_cache_env(PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="2"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_deployments(api, NAMES)
            deployments = {
                name: httpx.get(f"{api}/deployments/name/{name}", timeout=30).json()
                for name in NAMES
            }
            monitor = deployments["monitor/monitor"]
            assert [s["schedule"]["cron"] for s in monitor["schedules"]] == ["17 4 * * *"]
            reindex = deployments["reindex/reindex"]
            assert reindex["global_concurrency_limit"]["limit"] == 1
            assert reindex["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
            assert all(
                d["parameters"] == {"request": {"config_file": str(config)}}
                for d in deployments.values()
            )

            automation = wait_automation(api, "reindex ragcycle")
            trigger = automation["trigger"]
            assert trigger["expect"] == ["ragcycle.quality.dropped"]
            assert trigger["match"] == {"prefect.resource.id": "ragcycle.index.ragcycle"}
            [action] = automation["actions"]
            assert action["type"] == "run-deployment" and action["deployment_id"] == reindex["id"]

            flow_run = create_flow_run(api, "ingest/ingest")
            assert wait_final(api, flow_run, timeout=240) == "COMPLETED", tail(log, 60)
        finally:
            stop(server)
