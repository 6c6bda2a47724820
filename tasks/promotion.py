"""Promotion policy: which candidate index version, if any, may replace the live one.

Evaluation produces per-question scores; this module turns a champion's and each challenger's
into a decision. The rule (documented in the README, "The gate"):

1. Every candidate must meet the absolute thresholds.
2. Non-inferiority, paired: for every guarded metric the lower bound of the paired confidence
   interval of (candidate - champion) must lie above ``-tolerance``. Noise cannot sink a
   candidate, and a real drop beyond the tolerance cannot pass.
3. Superiority for challengers: a ``lifecycle.candidates`` entry changes how the application
   works, which is a risk worth taking only for a measured gain, so at least one guarded metric's
   lower bound must lie above 0. A refresh of the live config on a changed corpus and the
   operator's configured settings need only rule 2: the point of those is new documents, or a
   change someone asked for.
4. Among candidates that pass, those statistically indistinguishable from the best (on the mean
   of the guarded metrics, paired) compete on cost per question, then on p95 latency.

The gate metric names in settings carry a ``{k}`` placeholder; :func:`gate_names` fills it in
for the reindex gate and the monitor alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ragcycle.settings import LifecycleSettings
from tasks.evaluation.paired import PairedDelta, paired_delta

__all__ = ["Evaluated", "GateStats", "Verdict", "choose", "gate_candidate", "gate_names"]


def gate_names(
    lifecycle: LifecycleSettings, k: int | str
) -> tuple[dict[str, float], dict[str, float]]:
    """The gate's ``(tolerances, thresholds)`` by metric name, with ``{k}`` filled in (a number,
    or ``"k"`` for the names at each version's own k that the reindex gate compares)."""
    tolerances = {name.format(k=k): rule.tolerance for name, rule in lifecycle.gate.items()}
    thresholds = {name.format(k=k): value for name, value in lifecycle.thresholds.items()}
    return tolerances, thresholds


@dataclass(frozen=True)
class GateStats:
    """How the paired test is run: interval, power, and whether flaky questions count."""

    samples: int = 2000
    confidence: float = 0.95
    power: float = 0.8
    seed: int = 0
    exclude_flaky: bool = True


@dataclass
class Evaluated:
    """One evaluated version: its scores per question, summary metrics, cost and speed."""

    name: str
    per_question: Mapping[str, Mapping[str, float]]
    metrics: Mapping[str, float]
    flaky: Sequence[str] = ()
    requires_improvement: bool = False

    @property
    def cost_per_question(self) -> float:
        return float(self.metrics.get("cost_usd_per_question", math.nan))

    @property
    def latency_p95_ms(self) -> float:
        return float(self.metrics.get("latency_total_p95_ms", math.nan))


@dataclass
class Verdict:
    """The gate's answer for one candidate, with the evidence behind it."""

    name: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deltas: list[PairedDelta] = field(default_factory=list)
    excluded_flaky: list[str] = field(default_factory=list)

    def best_delta(self) -> PairedDelta | None:
        """The guarded metric that moved most in the candidate's favour."""
        scored = [d for d in self.deltas if not math.isnan(d.mean)]
        return max(scored, key=lambda d: d.ci_low, default=None)


def gate_candidate(
    candidate: Evaluated,
    champion: Evaluated | None,
    *,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    stats: GateStats = GateStats(),
) -> Verdict:
    """Rules 1-3 of the module docstring for one candidate against the live version."""
    verdict = Verdict(name=candidate.name, passed=True)
    for metric, minimum in sorted(thresholds.items()):
        value = float(candidate.metrics.get(metric, math.nan))
        if not value >= minimum:
            verdict.reasons.append(f"{metric} {value:.4f} is below the threshold {minimum}")
    if champion is None:
        verdict.passed = not verdict.reasons
        return verdict
    flaky = sorted(set(candidate.flaky) | set(champion.flaky)) if stats.exclude_flaky else []
    verdict.excluded_flaky = flaky
    for metric, tolerance in sorted(tolerances.items()):
        if not champion.per_question.get(metric) and not candidate.per_question.get(metric):
            # The golden set cannot measure it (no reference answers, no expected sources).
            verdict.warnings.append(f"{candidate.name}: {metric} not measured by this golden set")
            continue
        delta = paired_delta(
            metric,
            champion.per_question.get(metric, {}),
            candidate.per_question.get(metric, {}),
            exclude=flaky,
            samples=stats.samples,
            confidence=stats.confidence,
            power=stats.power,
            seed=stats.seed,
        )
        verdict.deltas.append(delta)
        if delta.questions == 0:
            verdict.reasons.append(f"{metric}: no question scored by both versions")
        elif not delta.ci_low > -tolerance:
            verdict.reasons.append(
                f"{metric} may be worse than live: delta {delta.mean:+.4f},"
                f" CI [{delta.ci_low:+.4f}, {delta.ci_high:+.4f}] reaches below -{tolerance}"
            )
        if delta.questions and delta.mde > tolerance:
            verdict.warnings.append(
                f"{candidate.name}: {metric}: {delta.questions} paired questions detect only"
                f" changes of {delta.mde:.3f} or more (tolerance {tolerance}); add golden questions"
            )
    if candidate.requires_improvement and not verdict.reasons:
        best = verdict.best_delta()
        if best is None or not best.ci_low > 0:
            verdict.reasons.append(_not_better(best))
    verdict.passed = not verdict.reasons
    return verdict


def _not_better(best: PairedDelta | None) -> str:
    if best is None:
        return "no guarded metric could be compared"
    return (
        f"no guarded metric improved beyond noise: best was {best.metric},"
        f" delta {best.mean:+.4f}, CI [{best.ci_low:+.4f}, {best.ci_high:+.4f}]"
    )


def choose(
    passed: Sequence[Evaluated], metrics: Sequence[str], stats: GateStats = GateStats()
) -> tuple[Evaluated | None, list[str]]:
    """Rule 4: the best passing candidate, or the cheapest (then fastest) of those that cannot
    be told apart from it. Returns the choice and one line of reasoning per candidate."""
    if not passed:
        return None, []
    quality = {c.name: _composite(c, metrics) for c in passed}
    best = max(passed, key=lambda c: _mean(quality[c.name]))
    notes: list[str] = []
    tied: list[Evaluated] = []
    for contender in passed:
        if contender is best:
            tied.append(contender)
            continue
        delta = paired_delta(
            "quality",
            quality[best.name],
            quality[contender.name],
            samples=stats.samples,
            confidence=stats.confidence,
            seed=stats.seed,
        )
        if delta.questions and delta.ci_high >= 0:
            tied.append(contender)
            notes.append(f"{contender.name} is indistinguishable from {best.name} in quality")
        else:
            notes.append(
                f"{contender.name} is worse than {best.name}: quality delta {delta.mean:+.4f},"
                f" CI [{delta.ci_low:+.4f}, {delta.ci_high:+.4f}]"
            )
    order = {c.name: i for i, c in enumerate(passed)}
    chosen = min(
        tied,
        key=lambda c: (
            _or_inf(c.cost_per_question),
            _or_inf(c.latency_p95_ms),
            order[c.name],
        ),
    )
    if len(tied) > 1:
        notes.append(
            f"{chosen.name} chosen among {len(tied)} equivalent candidates: cheapest per question"
            f" ({chosen.cost_per_question:.3g} USD), then fastest p95"
            f" ({chosen.latency_p95_ms:.0f} ms)"
        )
    return chosen, notes


def _composite(contender: Evaluated, metrics: Sequence[str]) -> dict[str, float]:
    """Per question, the mean of the guarded metrics it was scored on."""
    keys = set().union(*(contender.per_question.get(m, {}).keys() for m in metrics))
    composite: dict[str, float] = {}
    for key in keys:
        values = [
            contender.per_question[m][key]
            for m in metrics
            if key in contender.per_question.get(m, {})
        ]
        composite[key] = sum(values) / len(values)
    return composite


def _mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values) if values else -math.inf


def _or_inf(value: float) -> float:
    return math.inf if math.isnan(value) else value
