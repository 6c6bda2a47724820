"""Retrieval: questions become vectors, vectors become ranked chunks and ranked documents.

Chunks are what the generator reads; documents are what evaluation scores, because a golden set
names the files that answer a question, not the chunks. A document ranks at its best chunk, so a
few extra chunks are fetched (``fetch_multiplier``) to fill ``k`` distinct documents.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.embedding import TextEmbedder
from tasks.indexing.store import Hit, VectorIndex

__all__ = ["RankedDocument", "Retrieval", "rank_documents", "retrieve", "retrieve_many"]


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


def retrieve_many(
    questions: Sequence[str],
    index: VectorIndex,
    embedder: TextEmbedder,
    k: int,
    *,
    fetch_multiplier: int = 1,
    where: Mapping[str, Any] | None = None,
    batched: bool = False,
) -> list[Retrieval]:
    """Top chunks for each question, each measured on its own (see :func:`_retrieve_one`).

    Serving answers one question at a time, so that is what an evaluation times too; batching
    saves a few milliseconds per question but reports latencies no user ever sees. ``batched``
    embeds and searches all at once for throughput benchmarks, whose latencies are then the
    batch time divided evenly.
    """
    if not questions:
        return []
    if not batched:
        return [_retrieve_one(q, index, embedder, k * fetch_multiplier, where) for q in questions]
    started = time.perf_counter()
    vectors = embedder.embed(list(questions))
    embedded = time.perf_counter()
    results = index.query_many(vectors, k * fetch_multiplier, where)
    searched = time.perf_counter()
    per_embed = (embedded - started) * 1000 / len(questions)
    per_search = (searched - embedded) * 1000 / len(questions)
    return [
        Retrieval(
            question,
            vector,
            hits,
            {"embed": per_embed, "search": per_search, "retrieve": per_embed + per_search},
        )
        for question, vector, hits in zip(questions, vectors, results, strict=True)
    ]


def _retrieve_one(
    question: str,
    index: VectorIndex,
    embedder: TextEmbedder,
    fetch: int,
    where: Mapping[str, Any] | None,
) -> Retrieval:
    """One question embedded and searched on its own, so its latency is its own: a batch
    divided evenly would report every question at the mean (p50 == p95)."""
    started = time.perf_counter()
    vector = embedder.embed([question])[0]
    embedded = time.perf_counter()
    hits = index.query(vector, fetch, where)
    searched = time.perf_counter()
    embed_ms, search_ms = (embedded - started) * 1000, (searched - embedded) * 1000
    return Retrieval(
        question,
        vector,
        hits,
        {"embed": embed_ms, "search": search_ms, "retrieve": embed_ms + search_ms},
    )


def retrieve(
    question: str,
    index: VectorIndex,
    embedder: TextEmbedder,
    k: int,
    *,
    fetch_multiplier: int = 1,
    where: Mapping[str, Any] | None = None,
) -> Retrieval:
    """Top chunks for one question."""
    return retrieve_many(
        [question], index, embedder, k, fetch_multiplier=fetch_multiplier, where=where
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
    )
