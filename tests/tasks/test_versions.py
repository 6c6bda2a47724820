from __future__ import annotations

import pytest

from tasks.versions import collection_of, collection_source


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
