"""Retrieval: questions become ranked chunks and ranked documents.

Chunks are what the generator reads; documents are what evaluation scores, because a golden set
names the files that answer a question, not the chunks. A document ranks at its best chunk, so a
few extra chunks are fetched (``fetch_multiplier``) to fill ``k`` distinct documents.

A :class:`SearchPlan` says how chunks are ranked: by embedding similarity (``dense``), by BM25
(``lexical``), or both fused (``hybrid``: convex or RRF), optionally reordered by a
cross-encoder. Whatever ranks them, a hit's ``score`` stays the cosine similarity of chunk and
question, because that is what ``generation.min_score`` and the guardrails read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import Settings
from tasks.embedding import TextEmbedder
from tasks.indexing.lexical import LexicalIndex, open_lexical
from tasks.indexing.store import Hit, StoredChunk, VectorIndex
from tasks.retrieval.fusion import convex_fusion, reciprocal_rank_fusion
from tasks.retrieval.rerank import Reranker, load_reranker

__all__ = [
    "DENSE",
    "RankedDocument",
    "Retrieval",
    "SearchPlan",
    "rank_documents",
    "retrieve",
    "retrieve_many",
    "retrieve_many_task",
    "search_plan",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankedDocument:
    """A document in a ranking, at the score and page of its best chunk."""

    doc_id: str
    score: float
    page: int | None


@dataclass
class Retrieval:
    """What one question retrieved, and how long embedding and search took."""

    question: str
    vector: np.ndarray
    hits: list[Hit]
    latency_ms: dict[str, float] = field(default_factory=dict)

    def top_chunks(self, k: int) -> list[Hit]:
        return self.hits[:k]

    def documents(self, k: int | None = None) -> list[RankedDocument]:
        return rank_documents(self.hits)[:k] if k else rank_documents(self.hits)

    @property
    def best_score(self) -> float:
        return max((hit.score for hit in self.hits), default=0.0)


def rank_documents(hits: Sequence[Hit]) -> list[RankedDocument]:
    """Documents in order of their best chunk; hits must come best first."""
    ranked: dict[str, RankedDocument] = {}
    for hit in hits:
        if hit.doc_id not in ranked:
            page = hit.metadata.get("page_start")
            ranked[hit.doc_id] = RankedDocument(
                hit.doc_id, hit.score, int(page) if page is not None else None
            )
    return list(ranked.values())


@dataclass(frozen=True)
class SearchPlan:
    """How chunks are ranked for a question; the default is dense retrieval alone."""

    mode: str = "dense"
    lexical: LexicalIndex | None = None
    fusion: str = "convex"
    candidates: int = 50
    rrf_k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    reranker: Reranker | None = None
    rerank_top_n: int = 20

    def __post_init__(self) -> None:
        if self.mode != "dense" and self.lexical is None:
            raise ValueError(f"retrieval mode {self.mode!r} needs a lexical index")

    def ranked_depth(self, fetch: int) -> int:
        """How many ranked chunks to keep: what is served, or what the reranker reorders."""
        return max(fetch, self.rerank_top_n) if self.reranker is not None else fetch


DENSE = SearchPlan()


def search_plan(settings: Settings, index: VectorIndex, mode: str | None = None) -> SearchPlan:
    """The search plan of ``settings`` (or ``mode``) over ``index``: its lexical index opened
    (and synced when out of step) where the mode reads one, its reranker where one is set."""
    config = settings.retrieval
    mode = mode or config.mode
    reranker = None
    if config.reranker_path is not None:
        reranker = load_reranker(str(config.reranker_path), settings.embedding.device)
        logger.info("Reranking the top %d chunks with %s", config.rerank_top_n, reranker.path)
    else:
        logger.info("No reranker (retrieval.reranker_path is not set): the %s order is final", mode)
    return SearchPlan(
        mode=mode,
        lexical=open_lexical(settings, index) if mode != "dense" else None,
        fusion=config.fusion,
        candidates=config.candidates,
        rrf_k=config.rrf_k,
        dense_weight=config.dense_weight,
        lexical_weight=config.lexical_weight,
        reranker=reranker,
        rerank_top_n=config.rerank_top_n,
    )


def retrieve_many(
    questions: Sequence[str],
    index: VectorIndex,
    embedder: TextEmbedder,
    k: int,
    *,
    fetch_multiplier: int = 1,
    where: Mapping[str, Any] | None = None,
    batched: bool = False,
    plan: SearchPlan = DENSE,
) -> list[Retrieval]:
    """Top chunks for each question, each measured on its own (see :func:`_retrieve_one`).

    Serving answers one question at a time, so that is what an evaluation times too; batching
    saves a few milliseconds per question but reports latencies no user ever sees. ``batched``
    embeds and searches all at once for throughput benchmarks, whose latencies are then the
    batch time divided evenly.
    """
    if not questions:
        return []
    fetch = k * fetch_multiplier
    if not batched:
        return [_retrieve_one(q, index, embedder, fetch, where, plan) for q in questions]
    started = time.perf_counter()
    vectors = embedder.embed(list(questions))
    embedded = time.perf_counter()
    dense = (
        index.query_many(vectors, _dense_depth(plan, fetch), where)
        if plan.mode != "lexical"
        else None
    )
    hits = [
        _combine(question, vector, dense[row] if dense else [], index, fetch, where, plan)
        for row, (question, vector) in enumerate(zip(questions, vectors, strict=True))
    ]
    searched = time.perf_counter()
    per_embed = (embedded - started) * 1000 / len(questions)
    per_search = (searched - embedded) * 1000 / len(questions)
    return [
        Retrieval(
            question,
            vector,
            found,
            {"embed": per_embed, "search": per_search, "retrieve": per_embed + per_search},
        )
        for question, vector, found in zip(questions, vectors, hits, strict=True)
    ]


def _dense_depth(plan: SearchPlan, fetch: int) -> int:
    """How many dense hits to ask Chroma for: what is served, or what fusion ranks."""
    return plan.ranked_depth(fetch if plan.mode == "dense" else max(fetch, plan.candidates))


def _retrieve_one(
    question: str,
    index: VectorIndex,
    embedder: TextEmbedder,
    fetch: int,
    where: Mapping[str, Any] | None,
    plan: SearchPlan,
) -> Retrieval:
    """One question embedded and searched on its own, so its latency is its own: a batch
    divided evenly would report every question at the mean (p50 == p95)."""
    started = time.perf_counter()
    vector = embedder.embed([question])[0]
    embedded = time.perf_counter()
    dense = index.query(vector, _dense_depth(plan, fetch), where) if plan.mode != "lexical" else []
    hits = _combine(question, vector, dense, index, fetch, where, plan)
    searched = time.perf_counter()
    embed_ms, search_ms = (embedded - started) * 1000, (searched - embedded) * 1000
    return Retrieval(
        question,
        vector,
        hits,
        {"embed": embed_ms, "search": search_ms, "retrieve": embed_ms + search_ms},
    )


def _cosine(vector: np.ndarray, other: np.ndarray | None) -> float:
    if other is None:
        return 0.0
    norms = float(np.linalg.norm(vector) * np.linalg.norm(other))
    return float(np.dot(vector, other) / norms) if norms else 0.0


def _as_hit(chunk: StoredChunk, vector: np.ndarray) -> Hit:
    return Hit(chunk.chunk_id, chunk.text, _cosine(vector, chunk.vector), chunk.metadata)


def _combine(
    question: str,
    vector: np.ndarray,
    dense: list[Hit],
    index: VectorIndex,
    fetch: int,
    where: Mapping[str, Any] | None,
    plan: SearchPlan,
) -> list[Hit]:
    """The plan's ranking of chunks: dense as Chroma returned it, else the BM25 or fused order
    with lexical-only chunks read back through Chroma (so ``where`` and deletions hold)."""
    if plan.mode == "dense":
        hits = dense
    else:
        assert plan.lexical is not None  # checked by SearchPlan
        lexical = plan.lexical.search(question, max(fetch, plan.candidates))
        weights = [plan.dense_weight, plan.lexical_weight]
        if plan.mode == "lexical":
            order = [key for key, _ in lexical]
        elif plan.fusion == "rrf":
            ranked = [[hit.chunk_id for hit in dense], [key for key, _ in lexical]]
            order = [key for key, _ in reciprocal_rank_fusion(ranked, weights, plan.rrf_k)]
        else:
            scored = [[(hit.chunk_id, hit.score) for hit in dense], lexical]
            order = [key for key, _ in convex_fusion(scored, weights)]
        known = {hit.chunk_id: hit for hit in dense}
        # Twice the depth: room for chunks ``where`` filters out or Chroma lost.
        wanted = order[: plan.ranked_depth(fetch) * 2]
        stored = index.fetch([key for key in wanted if key not in known], where, vectors=True)
        known.update({chunk.chunk_id: _as_hit(chunk, vector) for chunk in stored})
        hits = [known[key] for key in wanted if key in known]
    if plan.reranker is not None:
        top = hits[: plan.rerank_top_n]
        reordered = plan.reranker.order(question, [hit.text for hit in top])
        hits = [top[i] for i in reordered] + hits[plan.rerank_top_n :]
    return hits[:fetch]


def retrieve(
    question: str,
    index: VectorIndex,
    embedder: TextEmbedder,
    k: int,
    *,
    fetch_multiplier: int = 1,
    where: Mapping[str, Any] | None = None,
    plan: SearchPlan = DENSE,
) -> Retrieval:
    """Top chunks for one question."""
    return retrieve_many(
        [question], index, embedder, k, fetch_multiplier=fetch_multiplier, where=where, plan=plan
    )[0]


@task(name="retrieve", task_run_name="retrieve-{label}", cache_policy=NO_CACHE)
def retrieve_many_task(
    questions: list[str],
    index: VectorIndex,
    embedder: TextEmbedder,
    k: int,
    fetch_multiplier: int = 1,
    where: dict[str, Any] | None = None,
    label: str = "batch",
    batched: bool = False,
    plan: SearchPlan = DENSE,
) -> list[Retrieval]:
    """Prefect edge of :func:`retrieve_many`."""
    return retrieve_many(
        questions,
        index,
        embedder,
        k,
        fetch_multiplier=fetch_multiplier,
        where=where,
        batched=batched,
        plan=plan,
    )
