"""Retrieval beyond dense: rank fusion, the BM25 index kept in step with Chroma, search modes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragcycle.settings import Settings
from tasks.indexing.lexical import (
    LexicalIndex,
    LexicalSnapshot,
    lexical_root,
    open_lexical,
    sync_lexical,
    tokenize,
)
from tasks.indexing.store import ChromaIndex, open_index
from tasks.retrieval import SearchPlan, retrieve, search_plan
from tasks.retrieval.fusion import convex_fusion, reciprocal_rank_fusion
from tests.conftest import REPO
from tests.fakes import HashEmbedder

# --- fusion -------------------------------------------------------------------------------


def test_rrf_scores_by_rank_and_weight() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b"], ["b", "c"]], [1.0, 1.0], k=60))
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)


def test_rrf_orders_by_fused_score_and_breaks_ties_by_first_appearance() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "b", "a"]], [1.0, 1.0], k=1)
    # a: 1/2 + 1/4 = 0.75, b: 1/3 + 1/3 = 0.667, c: 0.75: a and c tie, a came first
    assert [key for key, _ in fused] == ["a", "c", "b"]


def test_rrf_with_a_zero_weight_keeps_the_other_ranking() -> None:
    fused = reciprocal_rank_fusion([["x", "y"], ["y", "z"]], [1.0, 0.0], k=60)
    assert [key for key, _ in fused][:2] == ["x", "y"]
    assert dict(fused)["z"] == 0.0


def test_convex_fusion_sums_min_max_normalized_scores() -> None:
    dense = [("a", 0.9), ("b", 0.7), ("c", 0.5)]  # normalized: a 1, b 0.5, c 0
    lexical = [("c", 12.0), ("d", 4.0)]  # normalized: c 1, d 0
    fused = dict(convex_fusion([dense, lexical], [1.0, 1.0]))
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    assert [key for key, _ in convex_fusion([dense, lexical], [1.0, 1.0])] == ["a", "c", "b", "d"]
    weighted = dict(convex_fusion([dense, lexical], [1.0, 3.0]))
    assert weighted["c"] == pytest.approx(0.75) and weighted["a"] == pytest.approx(0.25)


def test_convex_fusion_of_a_single_candidate_and_of_no_weight() -> None:
    assert convex_fusion([[("only", 0.3)], []], [1.0, 1.0]) == [("only", 0.5)]
    with pytest.raises(ValueError, match="must not all be 0"):
        convex_fusion([[("a", 1.0)]], [0.0])


def test_rrf_rejects_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="2 rankings but 1 weights"):
        reciprocal_rank_fusion([["a"], ["b"]], [1.0])


# --- the lexical index --------------------------------------------------------------------


def test_tokenize_stems_and_drops_stopwords() -> None:
    assert tokenize(["The parameters are running"], "english") == [["paramet", "run"]]
    assert tokenize(["The parameters are running"], "none") == [
        ["the", "parameters", "are", "running"]
    ]


def put(index: ChromaIndex, docs: dict[str, str], meta: dict[str, Any] | None = None) -> None:
    ids = list(docs)
    texts = [docs[key] for key in ids]
    vectors = HashEmbedder(dimension=8).embed(texts)
    index.upsert(ids, vectors, texts, [{"doc_id": key, **(meta or {})} for key in ids])


@pytest.fixture
def chroma(settings: Settings) -> ChromaIndex:
    return open_index(settings, "lexical-test")


def test_sync_adds_and_drops_only_what_changed(settings: Settings, chroma: ChromaIndex) -> None:
    root = lexical_root(settings, chroma.name)
    put(chroma, {"a": "giraffes eat leaves", "b": "penguins swim in cold water"})
    first = sync_lexical(chroma, root, "english")
    assert (first.added, first.removed, first.total) == (2, 0, 2)
    lexical = LexicalIndex(root, "english")
    assert [key for key, _ in lexical.search("giraffe", 5)] == ["a"]

    # a changed document: its old chunk leaves Chroma, a new one arrives
    chroma.delete(["a"])
    put(chroma, {"a2": "giraffes sleep standing up"})
    second = sync_lexical(chroma, root, "english")
    assert (second.added, second.removed, second.total) == (1, 1, 2)
    assert lexical.search("leaves", 5) == []  # the old terms are gone
    assert [key for key, _ in lexical.search("sleeping giraffes", 5)] == ["a2"]

    unchanged = sync_lexical(chroma, root, "english")
    assert not unchanged.changed
    # one snapshot on disk, and a fresh reader sees what the first one sees
    snapshots = [p for p in root.iterdir() if p.is_dir()]
    assert len(snapshots) == 1
    assert LexicalSnapshot.read(snapshots[0]).ids == ["b", "a2"]


def test_a_stale_snapshot_never_serves_a_chunk_chroma_dropped(
    settings: Settings, chroma: ChromaIndex
) -> None:
    put(chroma, {"a": "giraffes eat leaves", "b": "penguins swim"})
    plan = search_plan(settings.with_overrides({"retrieval": {"mode": "lexical"}}), chroma)
    chroma.delete(["a"])  # as a crash between Chroma's write and the lexical sync leaves it
    found = retrieve("giraffes", chroma, HashEmbedder(dimension=8), 5, plan=plan)
    assert [hit.chunk_id for hit in found.hits] == []
    assert open_lexical(settings, chroma).search("giraffes", 5) == []  # opening re-syncs


def test_lexical_hits_honour_metadata_filters_and_carry_cosine_scores(
    settings: Settings, chroma: ChromaIndex
) -> None:
    put(chroma, {"md": "routing of path parameters"}, {"format": "markdown"})
    put(chroma, {"pdf": "path parameters in routing"}, {"format": "pdf"})
    embedder = HashEmbedder(dimension=8)
    plan = search_plan(settings, chroma, "lexical")
    found = retrieve("path parameters", chroma, embedder, 5, where={"format": "pdf"}, plan=plan)
    assert [hit.chunk_id for hit in found.hits] == ["pdf"]
    question = embedder.embed(["path parameters"])[0]
    stored = embedder.embed(["path parameters in routing"])[0]
    expected = float(question @ stored / (np.linalg.norm(question) * np.linalg.norm(stored)))
    assert found.hits[0].score == pytest.approx(expected, abs=1e-5)


def test_hybrid_finds_what_either_retriever_alone_ranks_first(
    settings: Settings, chroma: ChromaIndex, embedder: Any
) -> None:
    texts = {
        "cats": "Cats are small domesticated felines that purr.",
        "code": "Error E4012 is raised when the quota file is missing.",
        "dogs": "Dogs are loyal companions that bark.",
    }
    chroma.upsert(
        list(texts),
        embedder.embed(list(texts.values())),
        list(texts.values()),
        [{"doc_id": key} for key in texts],
    )
    sync_lexical(chroma, lexical_root(settings, chroma.name), "english")
    hybrid = search_plan(settings, chroma, "hybrid")
    for question, wanted in (("kitten purring pet", "cats"), ("E4012", "code")):
        top = retrieve(question, chroma, embedder, 1, plan=hybrid).hits[0].chunk_id
        assert top == wanted, question


def test_a_mode_other_than_dense_needs_a_lexical_index() -> None:
    with pytest.raises(ValueError, match="needs a lexical index"):
        SearchPlan(mode="hybrid")


def test_changing_the_language_rebuilds_every_chunk(
    settings: Settings, chroma: ChromaIndex
) -> None:
    root = lexical_root(settings, chroma.name)
    put(chroma, {"a": "running", "b": "walking"})
    sync_lexical(chroma, root, "english")
    again = sync_lexical(chroma, root, "none")
    assert (again.added, again.removed) == (2, 0)
    assert [key for key, _ in LexicalIndex(root, "none").search("running", 5)] == ["a"]
    assert LexicalIndex(root, "none").search("run", 5) == []  # unstemmed now


SYNC_SCRIPT = """
import sys
from tests.conftest import make_settings
from tasks.indexing.lexical import lexical_root, sync_lexical
from tasks.indexing.store import open_index
settings = make_settings(sys.argv[1])
index = open_index(settings, "lexical-test")
sync_lexical(index, lexical_root(settings, index.name), sys.argv[2])
"""


@pytest.mark.slow
def test_sync_killed_midway_leaves_a_readable_index_and_the_next_sync_completes(
    settings: Settings, chroma: ChromaIndex
) -> None:
    root = lexical_root(settings, chroma.name)
    words = [f"term{i}" for i in range(400)]
    rng = np.random.default_rng(0)
    docs = {f"c{i}": " ".join(rng.choice(words, 400)) for i in range(5_000)}
    put(chroma, dict(list(docs.items())[:10]))
    sync_lexical(chroma, root, "english")
    before = LexicalIndex(root, "english").snapshot()
    assert before is not None and len(before.ids) == 10
    put(chroma, docs)

    # "none" re-tokenizes all 5,000 chunks (2M words): seconds of work to kill in the middle of
    process = subprocess.Popen(
        [sys.executable, "-c", SYNC_SCRIPT, str(settings.data_dir), "none"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while not any(root.glob(".staging-*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the sync ended before it was killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL

    survivor = LexicalIndex(root, "english").snapshot()
    assert survivor is not None and survivor.ids == before.ids  # the old snapshot still serves
    finished = sync_lexical(chroma, root, "english")
    assert finished.total == chroma.count() == 5_000
    assert not any(root.glob(".staging-*"))  # the killed run's leftovers are cleared
    snapshot = LexicalIndex(root, "english").snapshot()
    assert snapshot is not None and sorted(snapshot.ids) == sorted(chroma.all_ids())


def test_many_queries_at_a_deep_k_are_answered_in_slices(chroma: ChromaIndex) -> None:
    put(chroma, {f"c{i}": f"chunk number {i}" for i in range(60)})
    vectors = HashEmbedder(dimension=8).embed([f"question {i}" for i in range(700)])
    rows = chroma.query_many(vectors, 50)  # 35,000 results: over SQLite's variable limit at once
    assert len(rows) == 700 and all(len(hits) == 50 for hits in rows)
    assert [hit.chunk_id for hit in rows[699]] == [
        hit.chunk_id for hit in chroma.query(vectors[699], 50)
    ]


@pytest.fixture(scope="module")
def cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real cross-encoder folder: the bundled MiniLM with a seeded scoring head (no registry
    package bundles trained cross-encoder weights; this exercises loading and reordering)."""
    import torch
    from sentence_transformers import CrossEncoder

    from ragcycle.settings import load_settings

    torch.manual_seed(0)
    model = CrossEncoder(
        str(load_settings(config_file=None).embedding_model_path()),
        num_labels=1,
        local_files_only=True,
    )
    folder = tmp_path_factory.mktemp("cross-encoder")
    model.save(str(folder))
    return folder


def test_a_configured_cross_encoder_reorders_the_fused_top(
    settings: Settings, chroma: ChromaIndex, cross_encoder_path: Path, embedder: Any
) -> None:
    from sentence_transformers import CrossEncoder

    texts = {
        f"c{i}": f"Passage {i} about path parameters and routing number {i}." for i in range(8)
    }
    chroma.upsert(
        list(texts),
        embedder.embed(list(texts.values())),
        list(texts.values()),
        [{"doc_id": key} for key in texts],
    )
    question = "path parameters"
    configured = settings.with_overrides(
        {"retrieval": {"reranker_path": str(cross_encoder_path), "rerank_top_n": 8}}
    )
    plan = search_plan(configured, chroma, "hybrid")
    assert plan.reranker is not None
    reranked = retrieve(question, chroma, embedder, 8, plan=plan).hits
    scores = CrossEncoder(str(cross_encoder_path), local_files_only=True).predict(
        [(question, text) for text in texts.values()]
    )
    by_score = [key for _, key in sorted(zip(-scores, texts, strict=True))]
    assert [hit.chunk_id for hit in reranked] == by_score
    fused = retrieve(question, chroma, embedder, 8, plan=search_plan(settings, chroma, "hybrid"))
    assert [hit.chunk_id for hit in fused.hits] != by_score  # the reranker changed the order


def test_a_reranker_path_without_a_model_names_the_setting(
    settings: Settings, chroma: ChromaIndex, tmp_path: Path
) -> None:
    from ragcycle.errors import ConfigError

    bad = settings.with_overrides({"retrieval": {"reranker_path": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"retrieval\.reranker_path"):
        search_plan(bad, chroma)


def test_retrieval_mode_is_served_config_but_not_index_config(settings: Settings) -> None:
    """A hybrid challenger is evaluated on the live collection (query time only), while another
    embedding backend writes other vectors and so builds its own."""
    from tasks.challengers import share_key
    from tasks.versions import serving_config

    live = serving_config(settings.with_overrides({"retrieval": {"mode": "dense"}}))
    hybrid = serving_config(settings.with_overrides({"retrieval": {"mode": "hybrid"}}))
    int8 = serving_config(
        settings.with_overrides(
            {"retrieval": {"mode": "dense"}, "embedding": {"backend": "onnx-int8"}}
        )
    )
    assert live["retrieval"]["mode"] == "dense" and hybrid["retrieval"]["mode"] == "hybrid"
    assert hybrid != live
    assert share_key("corpus", hybrid) == share_key("corpus", live)
    assert int8["embedding"]["backend"] == "onnx-int8"
    assert share_key("corpus", int8) != share_key("corpus", live)
