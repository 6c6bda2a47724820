from __future__ import annotations

from pathlib import Path

import pytest

from ragcycle.errors import ConflictError, VersionError
from ragcycle.failures import describe
from tasks.versions import VersionRegistry, collection_of, collection_source
from tasks.versions.retention import Cleanup, clean_up, fail_unfinished


@pytest.mark.parametrize("collection", ["ragcycle__v1", "docs.v2-x__v12"])
def test_source_names_the_collection_and_passes_the_tracking_servers_check(
    collection: str,
) -> None:
    """Regression: ``chroma://<name>`` put the name in the host with an empty path, which an
    MLflow tracking server rejects ("Invalid model version source"): every reindex failed on a
    server while the SQLite store used in embedded mode accepted it."""
    from mlflow.server.handlers import _validate_non_local_source_contains_relative_paths

    source = collection_source(collection)
    _validate_non_local_source_contains_relative_paths(source)
    assert collection_of(source) == collection


def test_sources_of_older_registries_still_resolve() -> None:
    assert collection_of("chroma://ragcycle__v3") == "ragcycle__v3"


def test_retention_skips_versions_whose_collections_are_gone(tmp_path: Path) -> None:
    """Regression: ``expired()`` counted rejected and deleted versions; once one fell out of the
    retention window, every promotion tried to drop its missing collection and raised after the
    alias had moved: the version was live, the flow failed, no decision was recorded."""
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    for number, status in enumerate(["rejected", "deleted", "retired", "retired", "ready"], 1):
        registry.register({"target": f"t{number}"})
        registry.set_status(number, status)
    registry.register({"target": "t6"})
    registry.set_status(6, "ready")
    registry.promote(5)
    registry.promote(6)  # v6 live, v5 previous
    # Three kept: live and previous count among them, so one more (the newest, v4) stays.
    assert [v.version for v in registry.expired(keep=3)] == [3]
    assert [v.version for v in registry.expired(keep=2)] == [3, 4]

    existing = {"docs__v3", "docs__v4", "docs__v5", "docs__v6"}

    def drop(collection: str) -> None:
        if collection not in existing:
            raise ValueError(f"Collection {collection} does not exist")
        existing.discard(collection)

    # A store that refuses (here: a collection already gone) never makes deleting raise.
    assert registry.delete([registry.get(1), registry.get(3)], drop) == [3]
    assert registry.get(1).status == "rejected" and registry.get(3).status == "deleted"
    assert registry.live().version == 6  # type: ignore[union-attr]


def test_a_version_killed_before_its_collection_tag_still_names_its_collection(
    tmp_path: Path,
) -> None:
    """Regression: a first ingest killed between creating its model version and tagging the
    collection left a version whose collection read as the bare index name, and the re-run
    resumed into `docs` instead of `docs__v1`."""
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    registry._ensure_model()
    registry.client.create_model_version(
        registry.model_name, source="chroma:///docs", tags={"status": "building"}
    )
    assert registry.get(1).collection == "docs__v1"
    registry.client.create_model_version(registry.model_name, source="chroma:///docs__v7")
    assert registry.get(2).collection == "docs__v7"  # an older registry's source names it
    # A source under a run's artifacts (what register() gives a version with a run) names no
    # collection; killed before the tag, the version still has the name register() gives it.
    builds = registry.client.create_experiment("builds", (tmp_path / "a").as_uri())
    run = registry.client.create_run(builds).info
    registry.client.create_model_version(
        registry.model_name, source=f"{run.artifact_uri}/index-0a1b2c3d", run_id=run.run_id
    )
    assert registry.get(3).collection == "docs__v3"


def test_the_registry_reads_like_its_aliases_with_times_a_person_can_read(tmp_path: Path) -> None:
    """The status tag agrees with the aliases: the rollback target is "previous", not
    "retired"; times are ISO 8601, and tags of older registries (epoch seconds) still parse."""
    from datetime import datetime

    from tasks.versions.registry import epoch_seconds

    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    for number in (1, 2, 3):
        registry.register({"target": f"t{number}"})
        registry.set_status(number, "ready")
    registry.promote(1)
    registry.promote(2)
    registry.promote(3)
    statuses = {v.version: (v.status, v.aliases) for v in registry.versions()}
    assert statuses == {
        1: ("retired", ()),
        2: ("previous", ("previous",)),
        3: ("live", ("champion",)),
    }

    registry.rollback()
    statuses = {v.version: (v.status, v.aliases) for v in registry.versions()}
    assert statuses == {
        1: ("retired", ()),
        2: ("live", ("champion",)),
        3: ("previous", ("previous",)),
    }

    promoted = registry.get(2).tags["promoted_at"]
    assert datetime.fromisoformat(promoted).tzinfo is not None
    assert abs(epoch_seconds(promoted) - datetime.now().timestamp()) < 120
    assert epoch_seconds("1700000000") == 1_700_000_000.0  # a tag from an older registry
    assert epoch_seconds("") == 0.0


@pytest.mark.slow
def test_the_version_page_of_the_mlflow_ui_resolves_its_source(mlflow_server: str) -> None:
    """Regression: the UI's version page fetches the version's ``MLmodel`` through the server,
    which answered 500 for a ``chroma:///`` source. A version recorded under a run has a folder
    of that run's artifacts as its source, with an ``MLmodel`` naming the collection."""
    import urllib.request

    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment("versions-page")
    run = client.create_run(experiment).info.run_id
    registry = VersionRegistry(mlflow_server, "page")
    version = registry.register({"target": "t1", "embedding_model": "minilm"}, run_id=run)
    recorded = client.get_model_version(registry.model_name, str(version.version))
    assert recorded.run_id == run == version.run_id
    assert recorded.source.startswith(client.get_run(run).info.artifact_uri + "/index-")

    url = (
        f"{mlflow_server}/model-versions/get-artifact?path=MLmodel"
        f"&name={registry.model_name}&version={version.version}"
    )
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        page = response.read().decode()
    assert "collection: page__v1" in page and "ragcycle_index" in page
    assert "embedding_model: minilm" in page and "question" in page


def test_promotion_is_a_compare_and_swap_on_the_version_gated_against(tmp_path: Path) -> None:
    """Regression: a rollback made while a reindex ran was silently overwritten when the
    challenger, gated against the old live version, was promoted over it."""
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    for number in (1, 2, 3):
        registry.register({"target": f"t{number}"})
        registry.set_status(number, "ready")
    registry.promote(1)
    registry.promote(2)  # the reindex starts here: it gates v3 against v2
    registry.rollback()  # meanwhile a person rolls back to v1
    with pytest.raises(ConflictError, match="gated against version 2, but version 1 is live"):
        registry.promote_over(3, expected_live=2)
    assert registry.live().version == 1  # type: ignore[union-attr]
    assert registry.get(3).status == "ready"
    assert registry.promote_over(3, expected_live=1).version == 3


def test_a_first_promotion_expects_no_live_version(tmp_path: Path) -> None:
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    for number in (1, 2):
        registry.register({"target": f"t{number}"})
        registry.set_status(number, "ready")
    registry.promote(1)
    with pytest.raises(ConflictError, match="gated against no live version"):
        registry.promote_over(2, expected_live=None)


def test_clean_up_fails_the_abandoned_and_empties_what_never_serves(tmp_path: Path) -> None:
    """Regression: after six reindexes with retention 3, all seven collections still existed:
    failed versions, and ready ones a killed reindex left, were never cleaned up."""
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    for number in range(1, 8):
        registry.register({"target": f"t{number}"})
    for number in (1, 2, 3):
        registry.set_status(number, "ready")
        registry.promote(number)  # v3 live, v2 previous, v1 retired
    registry.set_status(4, "failed")
    registry.set_status(5, "rejected")
    registry.set_status(6, "ready", pid="999999999")  # its builder is gone
    registry.set_tags(7, pid="999999999")  # building, builder gone
    existing = {f"docs__v{n}" for n in range(1, 8)}
    cleanup = clean_up(
        registry,
        keep=3,
        build_timeout_seconds=3600,
        existing=lambda: sorted(existing),
        drop=existing.discard,
    )
    assert cleanup.abandoned == [6, 7]
    assert sorted(cleanup.emptied) == [4, 5, 6, 7]
    assert existing == {"docs__v1", "docs__v2", "docs__v3"}
    assert {v.version: v.status for v in registry.versions()} == {
        1: "retired",
        2: "previous",
        3: "live",
        4: "failed",
        5: "rejected",
        6: "failed",
        7: "failed",
    }
    again = clean_up(
        registry,
        keep=3,
        build_timeout_seconds=3600,
        existing=lambda: sorted(existing),
        drop=existing.discard,
    )
    assert again == Cleanup()  # idempotent: nothing left to do


def test_unfinished_versions_of_this_process_are_failed_when_it_stops(tmp_path: Path) -> None:
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    registry.register({"target": "t1"})
    registry.register({"target": "t2"})
    registry.set_status(2, "ready")
    assert fail_unfinished(registry, "stopped by SIGTERM") == [1, 2]
    assert [v.status for v in registry.versions()] == ["failed", "failed"]
    assert registry.get(1).tags["failure"] == "stopped by SIGTERM"


def test_a_model_file_replaced_after_its_version_was_gated_is_refused(tmp_path: Path) -> None:
    """Regression: a version recorded generation.model_path but not the file's sha256, so
    replacing the file changed what the live version served."""
    import json

    from ragcycle.errors import ModelError
    from tasks.models import GGUF_MAGIC
    from tasks.versions import resolve_serving, serving_config
    from tasks.versions.records import model_file_tags
    from tests.conftest import make_settings

    model = tmp_path / "tuned.gguf"
    model.write_bytes(GGUF_MAGIC + b"weights as gated")
    settings = make_settings(
        tmp_path / "data", generation={"backend": "local", "model_path": str(model)}
    )
    tags = model_file_tags(settings)
    assert set(tags) == {"model_sha256"} and len(tags["model_sha256"]) == 64
    registry = VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)
    registry.register({"config": json.dumps(serving_config(settings)), **tags})
    assert resolve_serving(settings, version=1).version.version == 1  # type: ignore[union-attr]
    model.write_bytes(GGUF_MAGIC + b"other weights, same path")
    with pytest.raises(ModelError, match="is not the file version 1 was gated with"):
        resolve_serving(settings, version=1)


def test_versions_that_are_absent_or_not_ready_are_refused_as_version_errors(
    tmp_path: Path,
) -> None:
    """A person asking for a version that is not there, or cannot serve, is told to look at the
    versions (not to fix a setting), and nothing moves."""
    registry = VersionRegistry(f"sqlite:///{tmp_path / 'mlflow.db'}", "docs")
    registry.register({"target": "t1"})
    registry.set_status(1, "failed")
    with pytest.raises(VersionError, match="has no version 7"):
        registry.promote(7)
    with pytest.raises(VersionError, match="version 1 is failed, not a ready index"):
        registry.promote(1)
    with pytest.raises(VersionError, match="no previous version") as refused:
        registry.rollback()
    assert registry.live() is None
    failure = describe(refused.value)
    assert failure.kind == "version"
    assert "`ragcycle index list`" in failure.hint
