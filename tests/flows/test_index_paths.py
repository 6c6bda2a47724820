"""One path into the index: the first ingest is version 1, later ingests update the live
version, a reindex with no arguments rebuilds from what the live version records, and a name
given to ``--collection`` resolves to that index's live version."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.ingest import IngestRequest, ingest
from flows.reindex import ReindexRequest, reindex
from ragcycle.cli import app
from ragcycle.errors import RegistryError
from tasks.versions import VersionRegistry
from tests.conftest import REPO, free_port, make_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = REPO / "samples" / "golden.jsonl"


def test_first_ingest_is_version_one_and_later_ingests_update_it(
    sample_corpus: Path, tmp_path: Path
) -> None:
    """Regression: after a first ingest there was no index version (`index list` printed []),
    and `reindex` then failed with "nothing to reindex"."""
    data = tmp_path / "data"
    overrides = {"data_dir": str(data), "progress": False, "evaluation": {"mlflow_genai": False}}
    ingest(IngestRequest(paths=[str(sample_corpus / "markdown")], overrides=overrides))
    registry = VersionRegistry(make_settings(data).mlflow_tracking_uri, "ragcycle")
    first = registry.live()
    assert first is not None and first.version == 1 and first.collection == "ragcycle__v1"
    assert first.sources == [str((sample_corpus / "markdown").absolute())]
    assert first.config["chunking"]["strategy"] == "recursive"

    ingest(IngestRequest(paths=[str(sample_corpus / "html")], overrides=overrides))
    updated = registry.live()
    assert updated is not None and updated.version == 1  # updated in place, not a new version
    assert len(updated.sources) == 2
    assert updated.tags["corpus_snapshot"] != first.tags["corpus_snapshot"]

    # No paths and no lifecycle.sources: the live version's recorded sources are the corpus.
    again = reindex(ReindexRequest(dataset=str(GOLDEN), overrides=overrides))
    assert again["decision"] == "noop", again["reasons"]
    assert [v.version for v in registry.versions()] == [1]


def test_collection_option_resolves_that_index_live_version(
    sample_corpus: Path, tmp_path: Path
) -> None:
    """Regression: `ask --collection demo` after `make demo` failed with "Collection  does not
    exist" (an empty name): the name was taken as a Chroma collection, not an index."""
    data = tmp_path / "data"
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{data}"\nprogress = false\n')
    ingested = CliRunner().invoke(
        app,
        [
            "ingest",
            str(sample_corpus / "markdown"),
            "--collection",
            "demo",
            "--json",
            "-c",
            str(config),
        ],
    )
    assert ingested.exit_code == 0, ingested.output
    assert json.loads(ingested.stdout)["collection"] == "demo__v1"
    asked = CliRunner().invoke(
        app,
        [
            "ask",
            "How do I run a background task?",
            "--collection",
            "demo",
            "--json",
            "-c",
            str(config),
        ],
    )
    assert asked.exit_code == 0, asked.output
    assert json.loads(asked.stdout)["sources"][0]["source"].endswith(".md")


def test_an_unreadable_registry_is_an_error_not_an_empty_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: any MlflowException read as "no versions" / "no live version", so serving
    fell back to the unversioned collection and a reindex compared against nothing."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    registry = VersionRegistry(f"http://127.0.0.1:{free_port()}", "ragcycle")
    begun = time.monotonic()
    with pytest.raises(RegistryError, match="cannot read the index versions of 'ragcycle'"):
        registry.live()
    with pytest.raises(RegistryError):
        registry.versions()
    assert time.monotonic() - begun < 30


def _register_many(uri: str, count: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    registry = VersionRegistry(uri, "race")
    out.put([registry.register({"target": "same"}).collection for _ in range(count)])


def test_builders_started_at_once_get_distinct_versions(tmp_path: Path) -> None:
    """Regression: two reindexes computed the next number client-side and built into the same
    `__vN` collection; the registry now allocates it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    VersionRegistry(uri, "race")._ensure_model()
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_register_many, args=(uri, 4, queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    collections = [name for _ in workers for name in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(collections) == [f"race__v{n}" for n in range(1, 9)]
