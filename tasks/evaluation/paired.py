"""Paired comparison of two evaluations on the same questions: is a difference real or noise?

Champion and challenger answer the same golden questions, so each question yields a difference
of each metric; the question-to-question spread (some questions are hard for every index) then
cancels out, and a paired bootstrap of the mean difference needs far fewer questions than two
independent means would. The minimum detectable effect says how large a change the golden set
can see at all, so a "no difference" from a tiny set is not mistaken for "no worse".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "PairedDelta",
    "flaky_questions",
    "minimum_detectable_effect",
    "paired_delta",
    "per_question",
]

# A question's verdict on a [0, 1] metric: passed at or above this mark. Used only to tell
# whether repeats of a non-deterministic generator disagree about the same question.
PASS_MARK = 0.5


@dataclass(frozen=True)
class PairedDelta:
    """Mean per-question difference (challenger - champion) of one metric, with its interval."""

    metric: str
    questions: int
    mean: float
    ci_low: float
    ci_high: float
    mde: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "questions": self.questions,
            "delta": self.mean,
            "ci": [self.ci_low, self.ci_high],
            "mde": self.mde,
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


def minimum_detectable_effect(
    differences: Sequence[float], *, confidence: float = 0.95, power: float = 0.8
) -> float:
    """The smallest true mean difference this many paired questions detect with ``power``.

    The normal approximation (z_{1-a/2} + z_power) * sd / sqrt(n) of a paired design; with no
    spread in the differences every change is visible (0), with fewer than two questions none
    is (inf).
    """
    n = len(differences)
    if n < 2:
        return math.inf
    spread = float(np.std(np.asarray(differences, dtype=np.float64), ddof=1))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2) + NormalDist().inv_cdf(power)
    return z * spread / math.sqrt(n)


def paired_delta(
    metric: str,
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    *,
    exclude: Sequence[str] = (),
    samples: int = 2000,
    confidence: float = 0.95,
    power: float = 0.8,
    seed: int = 0,
) -> PairedDelta:
    """Paired percentile bootstrap of the mean difference over questions both scored.

    Questions in ``exclude`` (flaky ones) are left out; a question only one side could score
    (NaN on the other) carries no paired evidence and is left out too.
    """
    skip = set(exclude)
    keys = sorted(k for k in champion.keys() & challenger.keys() if k not in skip)
    differences = np.asarray([challenger[k] - champion[k] for k in keys], dtype=np.float64)
    if len(differences) == 0:
        return PairedDelta(metric, 0, math.nan, math.nan, math.nan, math.inf)
    mean = float(differences.mean())
    mde = minimum_detectable_effect(list(differences), confidence=confidence, power=power)
    if len(differences) == 1:
        return PairedDelta(metric, 1, mean, -math.inf, math.inf, mde)
    rng = np.random.default_rng(seed)
    draws = differences[rng.integers(0, len(differences), size=(samples, len(differences)))]
    means = draws.mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDelta(metric, len(differences), mean, float(low), float(high), mde)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
