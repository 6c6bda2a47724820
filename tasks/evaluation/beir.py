"""BEIR benchmark sets: corpus, judged queries and graded relevance, scored as MTEB does.

The corpus rows become documents of one page (``title + " " + text``, MTEB's input), so a
benchmark is ingested by the same chunking, embedding and indexing code as any corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import DatasetError
from tasks.evaluation.metrics import hit_rate_at_k, mrr, ndcg_at_k, precision_at_k, recall_at_k
from tasks.evaluation.stats import nanmean
from tasks.loading import Document, Page

__all__ = [
    "BeirQueries",
    "load_beir_corpus",
    "load_beir_corpus_task",
    "load_beir_queries",
    "load_beir_queries_task",
    "score_beir",
    "score_beir_task",
    "summarize_beir",
]


def load_beir_corpus(folder: Path) -> list[Document]:
    """BEIR ``corpus.jsonl`` as documents, one per row: ``title + " " + text`` as MTEB embeds it."""
    path = folder / "corpus.jsonl"
    documents: list[Document] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read BEIR corpus {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            doc_id = str(row["_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DatasetError(f"{path}:{number}: not a BEIR corpus row") from None
        text = f"{row.get('title') or ''} {row.get('text') or ''}".strip()
        documents.append(
            Document(
                doc_id=doc_id,
                source=f"{path}#{doc_id}",
                root=str(folder),
                content_hash=hashlib.sha256(text.encode()).hexdigest(),
                format="beir",
                pages=(Page(1, text),),
                title=str(row.get("title") or ""),
            )
        )
    return documents


@task(name="load-beir-corpus", cache_policy=NO_CACHE)
def load_beir_corpus_task(folder: str) -> list[Document]:
    """Prefect edge of :func:`load_beir_corpus`."""
    return load_beir_corpus(Path(folder))


@dataclass
class BeirQueries:
    """Judged queries of one split and their graded relevance judgements."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir_queries(folder: Path, split: str = "test") -> BeirQueries:
    """``queries.jsonl`` and ``qrels/<split>.tsv``; only queries with a judgement are kept."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    try:
        qrel_lines = qrels_path.read_text(encoding="utf-8").splitlines()
        query_lines = (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read BEIR set {folder}: {exc}") from None
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrel_lines, start=1):
        parts = line.rstrip("\n").split("\t")
        if number == 1 and not parts[-1].lstrip("-").isdigit():
            continue  # header row
        if len(parts) < 3:
            raise DatasetError(f"{qrels_path}:{number}: expected query-id, corpus-id, score")
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries: dict[str, str] = {}
    for line in query_lines:
        if line.strip():
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = str(row["text"])
    missing = set(qrels) - set(queries)
    if missing:
        raise DatasetError(f"{len(missing)} judged queries are missing from queries.jsonl")
    return BeirQueries(queries=queries, qrels=qrels)


def score_beir(
    query_ids: Sequence[str],
    retrievals: Sequence[Any],
    qrels: Mapping[str, Mapping[str, int]],
    k: int,
) -> list[dict[str, Any]]:
    """Per-query retrieval metrics at ``k`` against graded judgements (gain = judgement)."""
    rows = []
    for query_id, retrieval in zip(query_ids, retrievals, strict=True):
        judged = qrels[query_id]
        ranked = [document.doc_id for document in retrieval.documents(k)]
        gains = [float(max(judged.get(doc_id, 0), 0)) for doc_id in ranked]
        relevance = [gain > 0 for gain in gains]
        relevant_total = sum(1 for score in judged.values() if score > 0)
        rows.append(
            {
                "query_id": query_id,
                "question": retrieval.question,
                "retrieved": ranked,
                f"ndcg_at_{k}": ndcg_at_k(gains, [float(s) for s in judged.values()], k),
                f"recall_at_{k}": recall_at_k(relevance, relevant_total, k),
                f"precision_at_{k}": precision_at_k(relevance, k),
                f"mrr_at_{k}": mrr(relevance, k),
                f"hit_rate_at_{k}": hit_rate_at_k(relevance, k),
            }
        )
    return rows


def summarize_beir(rows: Sequence[Mapping[str, Any]], k: int) -> dict[str, float]:
    """Mean of each per-query metric, as MTEB reports them."""
    names = (
        f"ndcg_at_{k}",
        f"recall_at_{k}",
        f"precision_at_{k}",
        f"mrr_at_{k}",
        f"hit_rate_at_{k}",
    )
    return {name: nanmean(float(row[name]) for row in rows) for name in names}


@task(name="load-beir-queries", cache_policy=NO_CACHE)
def load_beir_queries_task(folder: str, split: str) -> BeirQueries:
    """Prefect edge of :func:`load_beir_queries`."""
    return load_beir_queries(Path(folder), split)


@task(name="score-beir", cache_policy=NO_CACHE)
def score_beir_task(
    query_ids: list[str], retrievals: list[Any], qrels: dict[str, dict[str, int]], k: int
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`score_beir`."""
    return score_beir(query_ids, retrievals, qrels, k)
