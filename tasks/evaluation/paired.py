"""Paired comparison of two evaluations on the same questions: is a difference real or noise?

Champion and challenger answer the same golden questions, so each question yields a difference
of each metric; the question-to-question spread (some questions are hard for every index) then
cancels out. Decisions use a sign-flip randomization test of the mean difference (exact for up to
:data:`EXACT_UP_TO` questions, Monte Carlo above): under "no difference" each question's
difference is as likely positive as negative, whatever the metric's distribution, so the test
keeps its error rate on 0/1 hit rates, on ties and on four questions alike, where a bootstrap
interval collapses to a point. The interval shown beside it and the minimum detectable effect
are Student-t based; a spread of exactly zero, which few questions show by chance, is replaced by
the rule-of-three bound (see :func:`spread`) so that they do not claim certainty either.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

from tasks.evaluation.metrics import (
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevant_in,
)

__all__ = [
    "DEPTH_METRICS",
    "EXACT_UP_TO",
    "PairedDelta",
    "at_depth",
    "flaky_questions",
    "minimum_detectable_effect",
    "paired_delta",
    "per_question",
    "ranked_relevance",
    "sign_flip_p",
    "spread",
]

# A question's verdict on a [0, 1] metric: passed at or above this mark. Used only to tell
# whether repeats of a non-deterministic generator disagree about the same question.
PASS_MARK = 0.5

# Up to this many questions every sign pattern is enumerated (2**14 = 16,384): an exact p-value.
EXACT_UP_TO = 14

# Every gate metric lies in [0, 1], so one question's difference lies in [-1, 1]: this wide.
DIFFERENCE_RANGE = 2.0


@dataclass(frozen=True)
class PairedDelta:
    """Mean per-question difference (challenger - champion) of one metric, with its interval,
    the smallest change the questions can detect, and the one-sided p-values the gate reads:
    ``p_worse`` of "worse by the tolerance or more", ``p_better`` of "not better"."""

    metric: str
    questions: int
    mean: float
    ci_low: float
    ci_high: float
    mde: float
    p_worse: float = math.nan
    p_better: float = math.nan
    depth: int | None = None  # the common k a retrieval metric was compared at

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "questions": self.questions,
            "delta": self.mean,
            "ci": [self.ci_low, self.ci_high],
            "mde": self.mde,
            "p_worse": self.p_worse,
            "p_better": self.p_better,
            "depth": self.depth,
        }


def per_question(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{metric: {question key: mean over repeats}}``; a question key is its golden-set line."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["line"]), []).append(row)
    result: dict[str, dict[str, float]] = {}
    for metric in metrics:
        values: dict[str, float] = {}
        for key, group in grouped.items():
            scored = [float(r[metric]) for r in group if _finite(r.get(metric))]
            if scored:
                values[key] = sum(scored) / len(scored)
        result[metric] = values
    return result


def flaky_questions(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    """Questions whose verdict on some metric flips across repeats (sorted by line)."""
    verdicts: dict[tuple[str, str], set[bool]] = {}
    for row in rows:
        for metric in metrics:
            value = row.get(metric)
            if isinstance(value, int | float) and _finite(value):
                key = (str(row["line"]), metric)
                verdicts.setdefault(key, set()).add(float(value) >= PASS_MARK)
    flipped = {question for (question, _), seen in verdicts.items() if len(seen) > 1}
    return sorted(flipped, key=lambda q: (len(q), q))


def spread(differences: np.ndarray) -> float:
    """The sample standard deviation of the differences; exactly zero (every question moved by
    the same amount, common for 0/1 metrics) is taken as the rule-of-three bound instead: with
    none of n questions seen to differ, up to 3/n of them (at most half) may, by up to the
    differences' whole range."""
    n = len(differences)
    observed = float(np.std(differences, ddof=1)) if n > 1 else 0.0
    if observed > 0:
        return observed
    share = min(0.5, 3 / max(n, 1))
    return DIFFERENCE_RANGE * math.sqrt(share * (1 - share))


def minimum_detectable_effect(
    differences: Sequence[float], *, confidence: float = 0.95, power: float = 0.8
) -> float:
    """The smallest true mean difference this many paired questions detect with ``power``.

    Student-t: (t_{1-a,n-1} + t_{power,n-1}) * spread / sqrt(n) for the gate's one-sided tests;
    infinite when no outcome of the sign-flip test could reach ``1 - confidence`` (2**-n above
    it: four questions can never show a change).
    """
    n = len(differences)
    alpha = 1 - confidence
    if n < 2 or 0.5**n > alpha:
        return math.inf
    t = scipy_stats.t.ppf(1 - alpha, n - 1) + scipy_stats.t.ppf(power, n - 1)
    return float(t * spread(np.asarray(differences, dtype=np.float64)) / math.sqrt(n))


def sign_flip_p(
    differences: np.ndarray, *, shift: float = 0.0, samples: int = 2000, seed: int = 0
) -> float:
    """One-sided p-value of "the mean difference is at most ``-shift``": how often flipping the
    signs of ``differences + shift`` at random gives a mean at least the observed one."""
    centred = np.asarray(differences, dtype=np.float64) + shift
    n = len(centred)
    if n == 0:
        return 1.0
    observed = centred.mean() - 1e-12  # ties count against the alternative
    if n <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(signs @ centred / n >= observed))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([1.0, -1.0]), size=(samples, n))
    extreme = int(np.sum(signs @ centred / n >= observed))
    return (1 + extreme) / (samples + 1)  # the observed pattern counts: a valid p-value


def paired_delta(
    metric: str,
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    *,
    exclude: Sequence[str] = (),
    tolerance: float = 0.0,
    samples: int = 2000,
    confidence: float = 0.95,
    power: float = 0.8,
    seed: int = 0,
    depth: int | None = None,
) -> PairedDelta:
    """The paired difference over questions both scored, tested both ways.

    Questions in ``exclude`` (the live version's flaky ones) are left out; a question only one
    side could score (NaN on the other) carries no paired evidence and is left out too.
    """
    skip = set(exclude)
    keys = sorted(k for k in champion.keys() & challenger.keys() if k not in skip)
    differences = np.asarray([challenger[k] - champion[k] for k in keys], dtype=np.float64)
    n = len(differences)
    if n == 0:
        return PairedDelta(metric, 0, math.nan, math.nan, math.nan, math.inf, 1.0, 1.0, depth)
    mean = float(differences.mean())
    mde = minimum_detectable_effect(list(differences), confidence=confidence, power=power)
    if n == 1:
        return PairedDelta(metric, 1, mean, -math.inf, math.inf, mde, 1.0, 1.0, depth)
    half = scipy_stats.t.ppf(1 - (1 - confidence) / 2, n - 1) * spread(differences) / math.sqrt(n)
    return PairedDelta(
        metric,
        n,
        mean,
        mean - float(half),
        mean + float(half),
        mde,
        p_worse=sign_flip_p(differences, shift=tolerance, samples=samples, seed=seed),
        p_better=sign_flip_p(differences, samples=samples, seed=seed + 1),
        depth=depth,
    )


# Retrieval metrics that depend on how deep the ranking is read, by their gate name (``{k}`` as
# "k"), computed from a question's ranked relevance and its number of expected sources.
DEPTH_METRICS: dict[str, Any] = {
    "hit_rate_at_k": lambda rel, expected, k: hit_rate_at_k(rel, k),
    "recall_at_k": lambda rel, expected, k: recall_at_k(rel, expected, k),
    "precision_at_k": lambda rel, expected, k: precision_at_k(rel, k),
    "ndcg_at_k": lambda rel, expected, k: ndcg_at_k([float(r) for r in rel], [1.0] * expected, k),
    "mrr": lambda rel, expected, k: mrr(rel, k),
}


def ranked_relevance(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per question (its first repeat): which retrieved documents were expected, in rank order,
    and how many were expected; questions without expected sources are left out."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row["line"])
        expected = list(row.get("expected_sources") or [])
        if key in found or not expected:
            continue
        ranked = list(row.get("retrieved_documents") or [])
        found[key] = {"relevant": relevant_in(ranked, expected), "expected": len(expected)}
    return found


def at_depth(metric: str, ranked: Mapping[str, Mapping[str, Any]], depth: int) -> dict[str, float]:
    """``metric`` (a :data:`DEPTH_METRICS` name) of every question, read ``depth`` deep."""
    compute = DEPTH_METRICS[metric]
    return {
        key: float(compute(list(item["relevant"]), int(item["expected"]), depth))
        for key, item in ranked.items()
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
