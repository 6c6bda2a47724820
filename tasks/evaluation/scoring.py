"""Scoring an evaluation: every answered question becomes one row of metrics, guardrail flags,
latency and cost, and the rows become a summary with confidence intervals.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import EvaluationSettings
from tasks.evaluation.golden import GoldenItem, matches_source
from tasks.evaluation.judges import JUDGE_CRITERIA, judge_reliability
from tasks.evaluation.metrics import (
    contains_key,
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    page_hit_and_recall,
    precision_at_k,
    recall_at_k,
    relevant_in,
    supported_share,
    token_f1,
)
from tasks.evaluation.stats import bootstrap_ci, nanmean, percentile
from tasks.guardrails.keeping import Keeping

__all__ = [
    "QUALITY_METRICS",
    "RATE_METRICS",
    "ScoringConfig",
    "Summary",
    "answer_cost",
    "answer_cost_parts",
    "score_row",
    "score_rows",
    "score_rows_task",
    "scoring_config",
    "summarize",
    "summarize_task",
]


@dataclass(frozen=True)
class ScoringConfig:
    """What scoring needs besides the answers: k, prices and guardrail thresholds."""

    k: int
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    price_cpu_hour: float = 0.0
    toxicity_threshold: float = 0.5
    priced: bool = False  # False: an API model without a price, whose cost reads 0
    pii: Any = None  # the production PII detector (guardrails.pii_entities, pii_score)
    keeping: Keeping = field(default_factory=Keeping)  # what the stored rows keep


# The placeholders redaction leaves in a served answer: a type, not content to support.
_PLACEHOLDER = re.compile(r"\[[A-Z_]+\]")


def scoring_config(
    evaluation: EvaluationSettings,
    backend: str,
    model: str,
    k: int,
    *,
    pii: Any = None,
    keeping: Keeping | None = None,
) -> ScoringConfig:
    """Prices and thresholds for one generator: tokens for APIs, CPU time for local models;
    ``pii`` and ``keeping`` as production detects and stores (see :class:`GuardConfig`)."""
    price = evaluation.prices.get(model)
    cpu_hour = price.cpu_hour if price and price.cpu_hour is not None else evaluation.cpu_hour_usd
    return ScoringConfig(
        k=k,
        price_prompt_per_mtok=price.prompt if price else 0.0,
        price_completion_per_mtok=price.completion if price else 0.0,
        price_cpu_hour=cpu_hour if backend == "local" else 0.0,
        toxicity_threshold=evaluation.toxicity_threshold,
        priced=price is not None or backend == "local",
        pii=pii,
        keeping=keeping or Keeping(pii),
    )


def answer_cost(answer: Any, config: ScoringConfig) -> float:
    """USD of one answer: API models cost their tokens; a local model costs the CPU time it
    took on this machine."""
    reading, writing = answer_cost_parts(answer, config)
    return reading + writing


def answer_cost_parts(answer: Any, config: ScoringConfig) -> tuple[float, float]:
    """USD of one answer's input and output, as MLflow's cost views split it: the prompt's
    tokens, and the completion's tokens plus the CPU time (llama.cpp times both phases as one
    answer, so a local model's CPU cost is counted as output)."""
    reading = answer.prompt_tokens * config.price_prompt_per_mtok / 1e6
    writing = answer.completion_tokens * config.price_completion_per_mtok / 1e6
    return float(reading), float(writing + answer.cpu_seconds * config.price_cpu_hour / 3600)


def score_row(
    item: GoldenItem,
    repeat: int,
    retrieval: Any,
    answer: Any,
    config: ScoringConfig,
    *,
    answer_vector: np.ndarray | None,
    expected_vector: np.ndarray | None,
    verdict: Any = None,
) -> dict[str, Any]:
    """Every per-question metric, guardrail flag and cost figure for one answered question.

    Answer metrics describe the answer served (``verdict.answer``): a redacted answer is scored
    as redacted, and one the guardrails withheld earns nothing. ``pii_in_answer`` counts
    generated answers in which the production detector found personal data (which the
    guardrails then redacted or withheld)."""
    from tasks.guardrails import check_contexts, check_text

    k = config.k
    documents = retrieval.documents()
    ranked = [doc.doc_id for doc in documents]
    relevance = relevant_in(ranked, item.expected_sources)
    answerable = item.answerable
    has_sources = bool(item.expected_sources)
    hits = retrieval.top_chunks(k)
    contexts = [hit.text for hit in hits]
    guard = check_text(answer.text, toxicity_threshold=config.toxicity_threshold, pii=config.pii)
    served = verdict.answer if verdict is not None else answer.text
    withheld = verdict is not None and verdict.status == "fail"
    scored = _PLACEHOLDER.sub("", served)
    context_pii = any(_has_pii(hit) for hit in hits)
    retrieve_ms = float(retrieval.latency_ms.get("retrieve", 0.0))
    cost = answer_cost(answer, config)
    row: dict[str, Any] = {
        "line": item.line,
        "repeat": repeat,
        "question": config.keeping.question(item.question),
        "answer": served,  # the stored copy: what a user would have received
        "expected_answer": item.expected_answer,
        "expected_sources": list(item.expected_sources),
        "retrieved_documents": ranked[:k],
        "sources": [f"{s.source}#p{s.page}" if s.page else s.source for s in answer.sources],
        "abstained": bool(answer.abstained),
        "best_score": float(retrieval.best_score),
        f"hit_rate_at_{k}": hit_rate_at_k(relevance, k) if has_sources else math.nan,
        f"recall_at_{k}": recall_at_k(relevance, len(item.expected_sources), k)
        if has_sources
        else math.nan,
        f"precision_at_{k}": precision_at_k(relevance, k) if has_sources else math.nan,
        "mrr": mrr(relevance, k) if has_sources else math.nan,
        f"ndcg_at_{k}": ndcg_at_k(
            [float(r) for r in relevance], [1.0] * len(item.expected_sources), k
        )
        if has_sources
        else math.nan,
        "page_hit_rate": _page_hit(documents[:k], item) if item.pages else math.nan,
        **_chunk_pages(hits, item, k),
        "answer_f1": (0.0 if withheld else token_f1(scored, item.expected_answer))
        if item.expected_answer is not None
        else math.nan,
        "answer_contains_key": (0.0 if withheld else contains_key(scored, item.answer_key))
        if item.answer_key
        else math.nan,
        "answer_similarity": _cosine(answer_vector, expected_vector)
        if item.expected_answer is not None and not answer.abstained and not withheld
        else (0.0 if item.expected_answer is not None else math.nan),
        "faithfulness": (0.0 if withheld else supported_share(scored, contexts))
        if not answer.abstained
        else math.nan,
        "answer_relevance": (0.0 if withheld else _cosine(answer_vector, retrieval.vector))
        if not answer.abstained
        else math.nan,
        "no_answer_correct": float(answer.abstained != answerable),
        "abstained_when_unanswerable": float(answer.abstained) if not answerable else math.nan,
        "answered_when_answerable": float(not answer.abstained and not withheld)
        if answerable
        else math.nan,
        "pii_in_answer": float(bool(guard.pii)),
        "pii_kinds": ",".join(guard.pii_kinds),
        "toxicity": guard.toxicity,
        "toxic_answer": float(guard.toxic),
        "pii_in_context": float(context_pii),
        "injection_in_context": float(bool(check_contexts(contexts))),
        "latency_retrieve_ms": retrieve_ms,
        "latency_generate_ms": float(answer.generate_ms),
        "latency_total_ms": retrieve_ms + float(answer.generate_ms),
        "prompt_tokens": int(answer.prompt_tokens),
        "completion_tokens": int(answer.completion_tokens),
        "cpu_seconds": float(answer.cpu_seconds),
        "cost_usd": cost,
    }
    if config.keeping.raw_answers:
        row["generated_answer"] = answer.text
    row["flagged"] = bool(
        row["pii_in_answer"] or row["toxic_answer"] or row["injection_in_context"]
    )
    return row


def _has_pii(hit: Any) -> bool:
    """PII in a retrieved chunk: what the ingest scan recorded, else found now (collections
    built before the scan existed)."""
    from tasks.guardrails import find_pii

    scanned = hit.metadata.get("pii")
    return bool(scanned) if scanned is not None else bool(find_pii(hit.text))


def _page_hit(documents: Sequence[Any], item: GoldenItem) -> float:
    """1 if a retrieved expected document's best chunk sits on one of the expected pages."""
    for document in documents:
        for source, pages in item.pages.items():
            if matches_source(document.doc_id, source) and document.page in pages:
                return 1.0
    return 0.0


def _chunk_pages(hits: Sequence[Any], item: GoldenItem, k: int) -> dict[str, float]:
    """Page hit and page recall over the ``k`` chunks an answer is written from."""
    spans = [
        (hit.doc_id, _page(hit.metadata.get("page_start")), _page(hit.metadata.get("page_end")))
        for hit in hits
    ]
    hit, recall = page_hit_and_recall(spans, item.pages)
    return {f"page_hit_at_{k}": hit, f"page_recall_at_{k}": recall}


def _page(value: Any) -> int | None:
    return int(value) if value is not None else None


def _cosine(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return math.nan
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator else math.nan


QUALITY_METRICS = (
    "hit_rate_at_{k}",
    "recall_at_{k}",
    "precision_at_{k}",
    "mrr",
    "ndcg_at_{k}",
    "page_hit_rate",
    "page_hit_at_{k}",
    "page_recall_at_{k}",
    "answer_f1",
    "answer_contains_key",
    "answer_similarity",
    "faithfulness",
    "answer_relevance",
    "no_answer_correct",
    "abstained_when_unanswerable",
    "answered_when_answerable",
)


RATE_METRICS = (
    "pii_in_answer",
    "toxic_answer",
    "pii_in_context",
    "injection_in_context",
    "guardrail_fail",
    "guardrail_warning",
)


@dataclass
class Summary:
    """Aggregated metrics with confidence intervals, ready to log."""

    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    questions: int
    rows: int


def summarize(
    rows: Sequence[Mapping[str, Any]],
    k: int,
    *,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Means over questions (repeats averaged first) with bootstrap intervals; latency
    percentiles, tokens and cost over all rows."""
    by_question: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_question.setdefault(int(row["line"]), []).append(row)
    metrics: dict[str, float] = {}
    ci: dict[str, tuple[float, float]] = {}
    judged = tuple(name for name in JUDGE_CRITERIA if rows and name in rows[0])
    for template in (*QUALITY_METRICS, *judged, *RATE_METRICS):
        name = template.format(k=k)
        per_question = [
            nanmean(float(r.get(name, math.nan)) for r in group) for group in by_question.values()
        ]
        metrics[name] = nanmean(per_question)
        ci[name] = bootstrap_ci(per_question, samples=samples, confidence=confidence, seed=seed)
    for stage in ("retrieve", "generate", "total"):
        values = [float(r[f"latency_{stage}_ms"]) for r in rows]
        metrics[f"latency_{stage}_p50_ms"] = percentile(values, 50)
        metrics[f"latency_{stage}_p95_ms"] = percentile(values, 95)
    metrics["prompt_tokens_total"] = float(sum(int(r["prompt_tokens"]) for r in rows))
    metrics["completion_tokens_total"] = float(sum(int(r["completion_tokens"]) for r in rows))
    metrics["cost_usd_total"] = float(sum(float(r["cost_usd"]) for r in rows))
    metrics["cost_usd_per_question"] = metrics["cost_usd_total"] / max(1, len(rows))
    metrics["cpu_seconds_total"] = float(sum(float(r.get("cpu_seconds", 0.0)) for r in rows))
    metrics["flagged_rate"] = nanmean(float(bool(r["flagged"])) for r in rows)
    if judged:
        metrics.update(_judge_figures(rows, judged))
    return Summary(metrics=metrics, ci=ci, questions=len(by_question), rows=len(rows))


def _judge_figures(rows: Sequence[Mapping[str, Any]], judged: Sequence[str]) -> dict[str, float]:
    """Parse failures per judge metric (never dropped silently) and the judge's reliability."""
    figures = {
        f"{name}_parse_failures": float(sum(name in r.get("judge_failed", ()) for r in rows))
        for name in judged
    }
    figures["judge_parse_failures"] = sum(figures.values())
    figures.update(judge_reliability(rows))
    return figures


def score_rows(
    items: Sequence[GoldenItem],
    repeats: Sequence[int],
    retrievals: Sequence[Any],
    answers: Sequence[Any],
    embedder: Any,
    config: ScoringConfig,
    verdicts: Sequence[Any] | None = None,
    trace_ids: Sequence[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Score every (item, repeat); answers and references are embedded in one batch.

    ``verdicts`` are the guardrails' decisions as production made them (and ``trace_ids`` the
    answers' traces): the row then says what a user would have been served.
    """
    served = [v.answer for v in verdicts] if verdicts else [a.text for a in answers]
    answer_texts = [_PLACEHOLDER.sub("", text) for text in served]
    references = [item.expected_answer or "" for item in items]
    vectors = embedder.embed([*answer_texts, *references]) if answers else np.zeros((0, 0))
    count = len(answers)
    rows = [
        score_row(
            item,
            repeat,
            retrieval,
            answer,
            config,
            answer_vector=vectors[i],
            expected_vector=vectors[count + i] if item.expected_answer is not None else None,
            verdict=verdicts[i] if verdicts else None,
        )
        for i, (item, repeat, retrieval, answer) in enumerate(
            zip(items, repeats, retrievals, answers, strict=True)
        )
    ]
    for row, verdict in zip(rows, verdicts or [], strict=False):
        row["guardrail_status"] = verdict.status
        row["guardrail_fail"] = float(verdict.status == "fail")
        row["guardrail_warning"] = float(verdict.status == "warning")
        row["guardrail_reasons"] = list(verdict.reasons)
    for row, trace_id in zip(rows, trace_ids or [], strict=False):
        row["trace_id"] = trace_id or ""
    return rows


@task(name="score", cache_policy=NO_CACHE)
def score_rows_task(
    items: list[GoldenItem],
    repeats: list[int],
    retrievals: list[Any],
    answers: list[Any],
    embedder: Any,
    config: ScoringConfig,
    verdicts: list[Any] | None = None,
    trace_ids: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`score_rows`."""
    return score_rows(items, repeats, retrievals, answers, embedder, config, verdicts, trace_ids)


@task(name="summarize", cache_policy=NO_CACHE)
def summarize_task(
    rows: list[dict[str, Any]], k: int, samples: int, confidence: float, seed: int
) -> Summary:
    """Prefect edge of :func:`summarize`."""
    return summarize(rows, k, samples=samples, confidence=confidence, seed=seed)
