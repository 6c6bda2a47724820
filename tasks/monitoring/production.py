"""Production over a window: what users asked, what they said, what the guardrails did.

Every figure comes from the query log (answers as served, with their verdicts, latency, tokens
and cost) and its feedback table. Query drift is measured as a shift of the recent questions'
embeddings against the golden set's questions: a two-sample MMD test, so "users now ask about
something the golden set does not cover" is a statistic with a p-value, not a feeling.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import ProductionLimits

__all__ = [
    "ProductionFigures",
    "check_production",
    "measure_production",
    "measure_production_task",
    "production_figures",
    "question_shift",
]


@dataclass
class ProductionFigures:
    """The production side of a monitor run, over ``window_hours``."""

    window_hours: float
    queries: int
    rated: int
    negative_feedback_rate: float
    guardrail_fail_rate: float
    guardrail_warning_rate: float
    abstention_rate: float
    latency_p95_ms: float
    tokens_per_day: float
    cost_per_day_usd: float
    question_shift: dict[str, float] = field(default_factory=dict)
    down_voted_sources: list[list[Any]] = field(default_factory=list)  # [source, count], most first
    judged: int = 0  # live answers the judge graded (tasks.monitoring.online)
    judged_groundedness: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def series(self) -> dict[str, float]:
        """The figures a monitor run adds to the production time series (NaN: not measured)."""
        shift = self.question_shift
        return {
            "queries": float(self.queries),
            "negative_feedback_rate": self.negative_feedback_rate,
            "guardrail_fail_rate": self.guardrail_fail_rate,
            "guardrail_warning_rate": self.guardrail_warning_rate,
            "abstention_rate": self.abstention_rate,
            "latency_p95_ms": self.latency_p95_ms,
            "tokens_per_day": self.tokens_per_day,
            "cost_per_day_usd": self.cost_per_day_usd,
            "uncovered_question_share": shift.get("uncovered_share", math.nan),
            "question_shift_mmd2": shift.get("mmd2", math.nan),
            "judged_groundedness": self.judged_groundedness,
        }


def production_figures(
    records: Sequence[Mapping[str, Any]],
    ratings: Mapping[int, list[str]],
    window_hours: float,
    shift: Mapping[str, float] | None = None,
) -> ProductionFigures:
    """Rates, p95 latency and daily tokens and cost of the logged answers in the window.

    The negative-feedback rate is over rated answers (a user who says nothing said nothing);
    a query's latest rating counts.
    """
    latest = {qid: votes[-1] for qid, votes in ratings.items() if votes}
    rated = [r for r in records if int(r["id"]) in latest]
    down = [r for r in rated if latest[int(r["id"])] == "down"]
    statuses = [(r.get("guardrails") or {}).get("status", "pass") for r in records]
    latencies = [float((r.get("latency_ms") or {}).get("total", math.nan)) for r in records]
    tokens = sum(
        int(r.get("prompt_tokens") or 0) + int(r.get("completion_tokens") or 0) for r in records
    )
    cost = sum(float(r.get("cost_usd") or 0.0) for r in records)
    per_day = 24.0 / window_hours
    sources = Counter(
        source["source"]
        for r in down
        for source in (r.get("sources") or [])[:1]  # the top citation is what the answer used
    )
    return ProductionFigures(
        window_hours=window_hours,
        queries=len(records),
        rated=len(rated),
        negative_feedback_rate=_share(len(down), len(rated)),
        guardrail_fail_rate=_share(statuses.count("fail"), len(records)),
        guardrail_warning_rate=_share(statuses.count("warning"), len(records)),
        abstention_rate=_share(sum(bool(r.get("abstained")) for r in records), len(records)),
        latency_p95_ms=float(np.nanpercentile(latencies, 95)) if latencies else math.nan,
        tokens_per_day=tokens * per_day,
        cost_per_day_usd=cost * per_day,
        question_shift=dict(shift or {}),
        down_voted_sources=[[source, count] for source, count in sources.most_common(5)],
    )


def _share(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def question_shift(
    recent: np.ndarray,
    reference: np.ndarray,
    *,
    min_similarity: float = 0.3,
    permutations: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """How far recent questions moved from the reference (golden) questions.

    Two figures: the maximum mean discrepancy between the two sets of embeddings (RBF kernel,
    median-distance bandwidth) with a permutation p-value, which says *whether* the
    distribution moved; and the share of recent questions whose nearest reference question has
    a cosine similarity under ``min_similarity``, which says *how much* of the traffic the
    golden set no longer covers. Any real traffic differs from a small curated set somewhat,
    so significance alone would fire for ever; the check wants both.

    By hand: the test is twenty lines of numpy, while the drift libraries that ship it
    (alibi-detect, evidently) would each pull in a framework for it.
    """
    n, m = len(recent), len(reference)
    if n < 2 or m < 2:
        return {
            "mmd2": math.nan,
            "p_value": math.nan,
            "uncovered_share": math.nan,
            "recent": n,
            "reference": m,
        }
    unit_recent = recent / np.linalg.norm(recent, axis=1, keepdims=True)
    unit_reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    nearest = (unit_recent @ unit_reference.T).max(axis=1)
    pooled = np.vstack([recent, reference]).astype(np.float64)
    squared = np.maximum(
        (pooled**2).sum(1)[:, None] + (pooled**2).sum(1)[None, :] - 2 * pooled @ pooled.T, 0.0
    )
    off_diagonal = squared[~np.eye(len(pooled), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-squared / bandwidth)
    observed = _mmd2(kernel, np.arange(n), np.arange(n, n + m))
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        order = rng.permutation(n + m)
        if _mmd2(kernel, order[:n], order[n:]) >= observed:
            exceed += 1
    return {
        "mmd2": observed,
        "p_value": (exceed + 1) / (permutations + 1),
        "uncovered_share": float((nearest < min_similarity).mean()),
        "recent": n,
        "reference": m,
    }


def _mmd2(kernel: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased estimate of MMD² from a precomputed kernel matrix."""
    kaa, kbb, kab = kernel[np.ix_(a, a)], kernel[np.ix_(b, b)], kernel[np.ix_(a, b)]
    n, m = len(a), len(b)
    within_a = (kaa.sum() - np.trace(kaa)) / (n * (n - 1))
    within_b = (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
    return float(within_a + within_b - 2 * kab.mean())


def check_production(
    figures: ProductionFigures, limits: ProductionLimits
) -> tuple[list[str], list[dict[str, Any]]]:
    """The failed production checks (reasons) and a row per check for the decision table.

    A limit set to None is not checked, and rates are not judged on fewer than
    ``min_queries`` answers (``min_rated`` ratings).
    """
    reasons: list[str] = []
    table: list[dict[str, Any]] = []
    enough = figures.queries >= limits.min_queries
    checks = [
        (
            "negative_feedback_rate",
            figures.negative_feedback_rate,
            figures.rated >= limits.min_rated,
        ),
        ("guardrail_fail_rate", figures.guardrail_fail_rate, enough),
        ("guardrail_warning_rate", figures.guardrail_warning_rate, enough),
        ("abstention_rate", figures.abstention_rate, enough),
        ("latency_p95_ms", figures.latency_p95_ms, enough),
        ("tokens_per_day", figures.tokens_per_day, True),
        ("cost_per_day_usd", figures.cost_per_day_usd, True),
    ]
    for name, value, judged in checks:
        limit: float | None = getattr(limits, f"max_{name}")
        verdict = "not checked" if limit is None or not judged or math.isnan(value) else "ok"
        if limit is not None and verdict == "ok" and value > limit:
            verdict = "over limit"
            reasons.append(_reason(name, value, limit, figures))
        table.append(
            {"metric": f"production/{name}", "value": value, "limit": limit, "verdict": verdict}
        )
    reasons += _shift_reason(figures, limits, table)
    reasons += _groundedness_reason(figures, limits, table)
    return reasons, table


def _groundedness_reason(
    figures: ProductionFigures, limits: ProductionLimits, table: list[dict[str, Any]]
) -> list[str]:
    value, limit = figures.judged_groundedness, limits.min_judged_groundedness
    judged = limit is not None and figures.judged > 0 and not math.isnan(value)
    verdict = "ok" if judged else "not checked"
    reasons = []
    if limit is not None and judged and value < limit:
        verdict = "under limit"
        reasons.append(
            f"judged groundedness of live answers {value:.2f} over {figures.judged} sampled"
            f" answers (min {limit:.2f})"
        )
    table.append(
        {
            "metric": "production/judged_groundedness",
            "value": value,
            "limit": limit,
            "verdict": verdict,
        }
    )
    return reasons


def _reason(name: str, value: float, limit: float, figures: ProductionFigures) -> str:
    window = f"over the last {figures.window_hours:g} h"
    if name == "negative_feedback_rate":
        where = ", ".join(f"{source} ({count})" for source, count in figures.down_voted_sources)
        return (
            f"negative feedback on {value:.0%} of {figures.rated} rated answers {window}"
            f" (max {limit:.0%})" + (f"; most down-voted sources: {where}" if where else "")
        )
    if name.endswith("_rate"):
        label = name.replace("_", " ")
        return f"{label} {value:.0%} of {figures.queries} answers {window} (max {limit:.0%})"
    return f"{name.replace('_', ' ')} {value:,.4g} {window} (max {limit:,.4g})"


def _shift_reason(
    figures: ProductionFigures, limits: ProductionLimits, table: list[dict[str, Any]]
) -> list[str]:
    shift = figures.question_shift
    share, p_value = shift.get("uncovered_share", math.nan), shift.get("p_value", math.nan)
    limit, alpha = limits.max_uncovered_share, limits.question_shift_alpha
    judged = limit is not None and shift.get("recent", 0) >= limits.min_queries
    verdict = "not checked" if not judged or math.isnan(share) else "ok"
    reasons = []
    if limit is not None and verdict == "ok" and share > limit and p_value < alpha:
        verdict = "shifted"
        reasons.append(
            f"query drift: {share:.0%} of the last {int(shift['recent'])} questions are far from"
            f" every golden question (max {limit:.0%}; distribution shift MMD²"
            f" {shift['mmd2']:.3f}, p = {p_value:.3f})"
        )
    table.append(
        {
            "metric": "production/uncovered_question_share",
            "value": share,
            "limit": limit,
            "verdict": verdict,
        }
    )
    return reasons


def measure_production(
    records: Sequence[Mapping[str, Any]],
    ratings: Mapping[int, list[str]],
    golden_questions: Sequence[str],
    embedder: Any,
    limits: ProductionLimits,
) -> ProductionFigures:
    """:func:`production_figures` with the question shift of ``records`` against the golden
    questions, both embedded by the live version's model."""
    questions = [str(r["question"]) for r in records]
    shift: dict[str, float] = {}
    if questions and golden_questions:
        vectors = embedder.embed([*questions, *golden_questions])
        shift = question_shift(
            vectors[: len(questions)],
            vectors[len(questions) :],
            min_similarity=limits.question_min_similarity,
        )
    return production_figures(records, ratings, limits.window_hours, shift)


@task(name="measure-production", cache_policy=NO_CACHE)
def measure_production_task(
    records: list[dict[str, Any]],
    ratings: dict[int, list[str]],
    golden_questions: list[str],
    embedder: Any,
    limits: ProductionLimits,
) -> ProductionFigures:
    """Prefect edge of :func:`measure_production`."""
    return measure_production(records, ratings, golden_questions, embedder, limits)
