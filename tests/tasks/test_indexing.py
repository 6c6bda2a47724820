from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flows.ingest import ingest_partition
from ragcycle.errors import ConfigError
from ragcycle.settings import ChunkingSettings, Settings
from tasks.indexing.plan import partition_plan, plan_ingest
from tasks.indexing.prepare import Recipe
from tasks.indexing.store import open_index
from tasks.indexing.writes import remove_documents
from tasks.loading import discover_sources
from tests.conftest import make_settings
from tests.fakes import HashEmbedder


def ingest_once(
    settings: Settings, folder: Path, embedder: HashEmbedder, partition_size: int = 2
) -> tuple[int, int]:
    """A bare ingest, partition by partition, with the real loaders, chunker and Chroma; only the
    vectors are fake."""
    index = open_index(settings)
    sources = discover_sources([folder], settings.ingest.extensions)
    states = index.document_states()
    plan = plan_ingest(sources, states, settings.chunking.config_hash(), [str(folder)])
    written = deleted = 0
    for partition in partition_plan(plan.to_load, states, partition_size):
        result = ingest_partition(partition, index, embedder, None, Recipe(settings.chunking))
        written, deleted = written + result.written, deleted + result.deleted
    return written, deleted + remove_documents(index, plan.removed, states)


def write_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a", "b", "c"):
        (folder / f"{name}.md").write_text(f"# {name}\n\n" + f"Paragraph about {name}. " * 80)


def test_plan_sorts_new_changed_unchanged_and_removed(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    fake = HashEmbedder()
    written, deleted = ingest_once(settings, folder, fake)
    assert written > 3 and deleted == 0
    index = open_index(settings)
    total = index.count()
    assert total == written

    (folder / "a.md").write_text("# a\n\nRewritten. " * 30)
    (folder / "c.md").unlink()
    (folder / "d.md").write_text("# d\n\nBrand new document with enough words to index.")
    states = index.document_states()
    plan = plan_ingest(
        discover_sources([folder], [".md"]), states, settings.chunking.config_hash(), [str(folder)]
    )
    assert [s.doc_id for s in plan.new] == ["d.md"]
    assert [s.doc_id for s in plan.changed] == ["a.md"]
    assert plan.unchanged == ["b.md"]
    assert plan.removed == ["c.md"]

    ingest_once(settings, folder, fake)
    states = index.document_states()
    assert set(states) == {"a.md", "b.md", "d.md"}
    assert all(len(state.chunks_by_hash) == 1 for state in states.values())


def test_rerun_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    fake = HashEmbedder()
    ingest_once(settings, folder, fake)
    before = sorted(open_index(settings).collection.get()["ids"])
    embedded = fake.embedded
    assert ingest_once(settings, folder, fake) == (0, 0)
    assert fake.embedded == embedded
    assert sorted(open_index(settings).collection.get()["ids"]) == before


def test_half_written_document_is_redone(settings: Settings, tmp_path: Path) -> None:
    """A crash between upserts leaves part of a document: the next plan must not trust it."""
    folder = tmp_path / "docs"
    write_corpus(folder)
    ingest_once(settings, folder, HashEmbedder())
    index = open_index(settings)
    ids_of_b = sorted(index.document_states()["b.md"].chunk_ids)
    index.delete(ids_of_b[:1])
    plan = plan_ingest(
        discover_sources([folder], [".md"]),
        index.document_states(),
        settings.chunking.config_hash(),
    )
    assert [s.doc_id for s in plan.changed] == ["b.md"]
    ingest_once(settings, folder, HashEmbedder())
    assert sorted(index.document_states()["b.md"].chunk_ids) == ids_of_b


def test_new_chunking_replaces_old_chunks(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    ingest_once(settings, folder, HashEmbedder())
    rechunked = settings.model_copy(update={"chunking": ChunkingSettings(size=300, overlap=0)})
    written, deleted = ingest_once(rechunked, folder, HashEmbedder())
    states = open_index(settings).document_states()
    assert deleted > 0 and written > 0
    assert all(state.chunking == {rechunked.chunking.config_hash()} for state in states.values())


def test_only_directories_ingested_whole_are_pruned(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    ingest_once(settings, folder, HashEmbedder())
    states = open_index(settings).document_states()
    plan = plan_ingest([], states, settings.chunking.config_hash(), prune_roots=[])
    assert plan.removed == []
    plan = plan_ingest([], states, settings.chunking.config_hash(), prune_roots=[str(folder)])
    assert plan.removed == ["a.md", "b.md", "c.md"]


def test_query_returns_cosine_scores_and_filters(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    fake = HashEmbedder()
    ingest_once(settings, folder, fake)
    index = open_index(settings)
    stored = index.collection.get(include=["documents", "embeddings", "metadatas"], limit=1)
    vector = np.asarray(stored["embeddings"][0])
    hits = index.query(vector, k=3)
    assert hits[0].chunk_id == stored["ids"][0]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score >= hits[1].score >= hits[2].score
    only_c = index.query(vector, k=3, where={"doc_id": "c.md"})
    assert only_c and all(hit.doc_id == "c.md" for hit in only_c)


def test_collection_refuses_vectors_of_another_model(settings: Settings) -> None:
    open_index(settings)
    other = settings.model_copy(
        update={"embedding": settings.embedding.model_copy(update={"model_name": "other-model"})}
    )
    with pytest.raises(ConfigError, match="holds vectors of"):
        open_index(other)


def test_collection_uses_high_recall_hnsw(settings: Settings) -> None:
    config = open_index(settings).collection.configuration
    hnsw = config["hnsw"]
    assert hnsw is not None
    assert (hnsw["space"], hnsw["ef_search"], hnsw["max_neighbors"]) == ("cosine", 400, 32)


def test_partitions_cover_the_plan_once_with_their_own_records(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    write_corpus(folder)
    ingest_once(settings, folder, HashEmbedder())
    for name in ("a", "b"):
        (folder / f"{name}.md").write_text(f"# {name}\n\nChanged text of {name}. " * 20)
    for name in ("d", "e", "f"):
        (folder / f"{name}.md").write_text(f"# {name}\n\nNew text of {name}. " * 20)
    states = open_index(settings).document_states()
    plan = plan_ingest(discover_sources([folder], [".md"]), states, "unused", [])
    partitions = partition_plan(plan.to_load, states, 2)

    assert [len(p.sources) for p in partitions] == [2, 2, 2]
    ids = [s.doc_id for p in partitions for s in p.sources]
    assert sorted(ids) == sorted(s.doc_id for s in plan.to_load) and len(set(ids)) == len(ids)
    for partition in partitions:
        own = {s.doc_id for s in partition.sources}
        assert set(partition.states) == own & set(states)
    assert len({p.label for p in partitions}) == 3
    with pytest.raises(ValueError, match="positive"):
        partition_plan(plan.to_load, states, 0)


def test_a_partition_processed_twice_is_the_same_as_once(
    settings: Settings, tmp_path: Path
) -> None:
    """What a retried task or a second worker does with the same partition changes nothing."""
    folder = tmp_path / "docs"
    write_corpus(folder)
    ingest_once(settings, folder, HashEmbedder())
    (folder / "a.md").write_text("# a\n\nA rewritten version of a. " * 40)
    index = open_index(settings)
    states = index.document_states()
    old_ids_of_a = states["a.md"].chunk_ids
    plan = plan_ingest(discover_sources([folder], [".md"]), states, "x", [])
    [partition] = partition_plan(plan.to_load, states, 10)

    first = ingest_partition(partition, index, HashEmbedder(), None, Recipe(settings.chunking))
    after_first = sorted(index.collection.get()["ids"])
    second = ingest_partition(partition, index, HashEmbedder(), None, Recipe(settings.chunking))

    assert sorted(index.collection.get()["ids"]) == after_first
    assert first.written == second.written > 0
    assert first.deleted == len(old_ids_of_a) > 0
    assert not old_ids_of_a & set(after_first)
    current = index.document_states()["a.md"]
    assert current.is_current(next(iter(current.chunks_by_hash)), settings.chunking.config_hash())


def test_retrieval_latency_is_measured_per_question(settings: Settings, embedder: Any) -> None:
    """Regression: an evaluation's per-question latencies were the batch time divided evenly,
    so every question read the same and p50 equalled p95."""
    from tasks.retrieval import retrieve_many

    texts = [f"Fact number {i} is about the colour of a {word}." for i, word in enumerate("abcdef")]
    index = open_index(settings, "latency")
    index.upsert(
        [f"c{i}" for i in range(len(texts))],
        embedder.embed(texts),
        texts,
        [{"doc_id": f"d{i}"} for i in range(len(texts))],
    )
    questions = ["colour?", "What is fact number three about, in a few words, please?", "x"]
    each = [r.latency_ms["retrieve"] for r in retrieve_many(questions, index, embedder, 2)]
    assert len(set(each)) == len(questions) and all(ms > 0 for ms in each)
    batched = retrieve_many(questions, index, embedder, 2, batched=True)
    assert len({r.latency_ms["retrieve"] for r in batched}) == 1  # what benchmarks still get


def test_a_chroma_server_that_never_answers_times_out(tmp_path: Path) -> None:
    """chromadb's HTTP client has no timeout: a server that accepts connections and never
    answers hung every command. The configured timeout now ends it with a clear error."""
    import socket
    import time

    from ragcycle.errors import IndexStoreError
    from tasks.indexing.store import open_chroma_client

    with socket.socket() as silent:  # listens, never accepts: connections sit in the backlog
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = make_settings(tmp_path, chroma={"url": url, "request_timeout_seconds": 2})
        begun = time.monotonic()
        with pytest.raises(IndexStoreError, match="did not answer in time"):
            open_chroma_client(settings)
        assert time.monotonic() - begun < 10


def test_threads_opening_their_first_embedded_client_at_once(tmp_path: Path) -> None:
    """Regression: a reindex's contenders and its champion opened their first embedded client
    together and chromadb failed with "'RustBindingsAPI' object has no attribute 'bindings'"."""
    from concurrent.futures import ThreadPoolExecutor

    from chromadb.api.shared_system_client import SharedSystemClient

    from tasks.indexing.store import open_chroma_client

    for round_ in range(3):
        settings = make_settings(tmp_path / f"round-{round_}")
        SharedSystemClient.clear_system_cache()
        with ThreadPoolExecutor(max_workers=4) as pool:
            clients = list(pool.map(open_chroma_client, [settings] * 4))
        assert all(client.heartbeat() > 0 for client in clients)


def test_a_partition_prepared_in_worker_processes_equals_one_prepared_in_place(
    settings: Settings, tmp_path: Path
) -> None:
    """The parse pool changes where files are parsed, never what comes out: same chunks in the
    same order, same scan findings, a broken file recorded as a failure, not raised."""
    from tasks.indexing.prepare import parse_pool, pool_size, prepare_partition

    folder = tmp_path / "docs"
    write_corpus(folder)
    (folder / "contact.md").write_text("# Contact\n\nWrite to jane.doe@example.com for access.")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a PDF body")
    sources = discover_sources([folder], [".md", ".pdf"])
    recipe = Recipe(
        settings.chunking,
        scan_entities=("EMAIL_ADDRESS",),
        model_path=str(settings.embedding_model_path()),
    )
    in_place = prepare_partition(sources, recipe)
    pooled_settings = make_settings(settings.data_dir, ingest={"parse_processes": 2})
    with parse_pool(pooled_settings, len(sources)) as pool:
        assert pool is not None
        pooled = prepare_partition(sources, recipe, pool)

    assert [c.chunk_id for c in pooled.ordered] == [c.chunk_id for c in in_place.ordered]
    assert len(pooled.ordered) > 4
    assert [f.doc_id for f in pooled.findings.values()] == ["contact.md"]
    assert pooled.findings == in_place.findings
    assert [f.doc_id for f in pooled.failures] == [f.doc_id for f in in_place.failures]
    assert [f.doc_id for f in pooled.failures] == ["broken.pdf"]
    assert set(pooled.seconds) == {"load", "chunk", "scan"}
    assert pool_size(settings, 31) == 0  # auto: too few files to repay starting processes
    assert pool_size(settings, 32) == settings.prefect.max_workers
    assert pool_size(make_settings(settings.data_dir, ingest={"parse_processes": 0}), 500) == 0
