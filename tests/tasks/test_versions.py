from __future__ import annotations

from pathlib import Path

import pytest

from tasks.versions import VersionRegistry, collection_of, collection_source


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
    assert [v.version for v in registry.expired(keep=1)] == [3]

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
