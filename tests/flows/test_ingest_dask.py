"""Ingest partitions on a real local Dask cluster (worker processes) into a real Chroma server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.ingest import IngestRequest, ingest
from flows.runners import task_runner_from_settings
from ragcycle.errors import ConfigError
from tests.conftest import make_settings

pytestmark = pytest.mark.slow


def chunk_ids(chroma_url: str, collection: str) -> set[str]:
    base = f"{chroma_url}/api/v2/tenants/default_tenant/databases/default_database/collections"
    collection_id = httpx.get(f"{base}/{collection}", timeout=30).json()["id"]
    ids: set[str] = set()
    while True:
        page = httpx.post(
            f"{base}/{collection_id}/get",
            json={"include": [], "limit": 1000, "offset": len(ids)},
            timeout=30,
        ).json()["ids"]
        ids.update(page)
        if len(page) < 1000:
            return ids


def test_dask_partitions_match_the_thread_pool_and_rerun_is_a_noop(
    prefect_harness: None, chroma_server: str, sample_corpus: Path, tmp_path: Path
) -> None:
    common: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "progress": False,
        "chroma": {"url": chroma_server},
        "ingest": {"batch_documents": 3},
        "embedding": {"cache_path": str(tmp_path / "cache.sqlite")},
    }
    dask = {**common, "prefect": {"task_runner": "dask", "max_workers": 2}}
    on_dask = ingest(
        IngestRequest(paths=[str(sample_corpus)], collection="on-dask", overrides=dask)
    )
    on_threads = ingest(
        IngestRequest(paths=[str(sample_corpus)], collection="on-threads", overrides=common)
    )

    assert on_dask["documents"] == on_threads["documents"]
    assert on_dask["documents"]["new"] >= 7 and on_dask["documents"]["failed"] >= 3
    assert {f["doc_id"] for f in on_dask["failed"]} == {f["doc_id"] for f in on_threads["failed"]}
    assert on_dask["chunks"]["written"] == on_dask["chunks"]["total"] > 100
    # Each name is an index whose first ingest is its version 1.
    assert chunk_ids(chroma_server, "on-dask__v1") == chunk_ids(chroma_server, "on-threads__v1")

    again = ingest(IngestRequest(paths=[str(sample_corpus)], collection="on-dask", overrides=dask))
    assert again["chunks"]["written"] == again["chunks"]["embedded"] == 0
    assert again["documents"]["unchanged"] == on_dask["documents"]["new"]
    assert chunk_ids(chroma_server, "on-dask__v1") == chunk_ids(chroma_server, "on-threads__v1")


def test_dask_needs_a_chroma_server(tmp_path: Path) -> None:
    """Embedded Chroma is a single-process store: worker processes must not write to it."""
    settings = make_settings(tmp_path, prefect={"task_runner": "dask"})
    with pytest.raises(ConfigError, match=r"chroma\.url"):
        task_runner_from_settings(settings)


def test_remote_dask_cluster_by_address(tmp_path: Path) -> None:
    from prefect_dask.task_runners import DaskTaskRunner

    settings = make_settings(
        tmp_path,
        chroma={"url": "http://127.0.0.1:8000"},
        prefect={"task_runner": "dask", "dask_address": "tcp://127.0.0.1:8786"},
    )
    runner = task_runner_from_settings(settings)
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://127.0.0.1:8786"
