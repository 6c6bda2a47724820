from __future__ import annotations

from pathlib import Path
from typing import Any

import chromadb
import pytest

from flows.ingest import IngestRequest, ingest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def test_ingest_into_a_chroma_server(
    chroma_server: str, sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    overrides = {
        "data_dir": str(tmp_path / "data"),
        "progress": False,
        "chroma": {"url": chroma_server, "collection": "served"},
    }
    report = ingest(IngestRequest(paths=[str(sample_corpus / "markdown")], overrides=overrides))
    assert report["documents"]["new"] == 3
    host, port = chroma_server.removeprefix("http://").split(":")
    client = chromadb.HttpClient(host=host, port=int(port))
    collection = client.get_collection("served__v1")  # the index's first version
    assert collection.count() == report["chunks"]["total"] > 0
    metadatas = collection.get(include=["metadatas"])["metadatas"] or []
    assert {m["doc_id"] for m in metadatas} == {
        "fastapi-background-tasks.md",
        "fastapi-cors.md",
        "fastapi-debugging.md",
    }
    assert not (tmp_path / "data" / "chroma").exists(), (
        "embedded store must not be used with a server"
    )

    (sample_corpus / "markdown" / "fastapi-cors.md").unlink()
    again = ingest(IngestRequest(paths=[str(sample_corpus / "markdown")], overrides=overrides))
    assert again["documents"]["removed"] == 1
    assert collection.count() == again["chunks"]["total"] < report["chunks"]["total"]
