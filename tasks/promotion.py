"""Promotion policy: which candidate index version, if any, may replace the live one.

Evaluation produces per-question scores; this module turns a champion's and the candidates'
into a decision. The rule (documented in docs/lifecycle.md, "The gate"):

1. Every candidate must meet the absolute thresholds.
2. Non-inferiority, paired: for every guarded metric the one-sided sign-flip test must reject
   "worse than live by ``tolerance`` or more" at ``1 - gate_confidence``. Requiring every metric
   to pass is an intersection-union test, so its error rate needs no correction.
3. Superiority for challengers: a ``lifecycle.candidates`` entry changes how the application
   works, which is a risk worth taking only for a measured gain, so some guarded metric must be
   shown better than live. Every challenger's every guarded metric is one hypothesis of one
   family, tested with Holm-Bonferroni at ``1 - gate_confidence``: the chance that any challenger
   no better than live is promoted stays within that level however many metrics and challengers
   a reindex tries (``bench/gate.py`` simulates it). A refresh of the live config on a changed
   corpus and the operator's configured settings need only rule 2: the point of those is new
   documents, or a change someone asked for.
4. Among candidates that pass, those statistically indistinguishable from the best (on the mean
   of the guarded metrics, paired) compete on cost per question, then on p95 latency.

Retrieval metrics that depend on k are compared at the smallest k among the versions compared,
so a candidate that retrieves more chunks gains nothing mechanically. Questions whose verdict
flips across repeats are left out only where the *live* version is flaky: a flaky candidate
keeps its questions, scored by the mean of its repeats, so its instability counts against it.

The gate metric names in settings carry a ``{k}`` placeholder; :func:`gate_names` fills it in
for the reindex gate and the monitor alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ragcycle.settings import LifecycleSettings
from tasks.evaluation.paired import DEPTH_METRICS, PairedDelta, at_depth, paired_delta

__all__ = [
    "Evaluated",
    "GateStats",
    "Verdict",
    "at_common_depth",
    "choose",
    "common_depth",
    "gate",
    "gate_candidate",
    "gate_names",
    "holm",
]


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
    """How the paired tests are run: level, power, draws, and whether flaky questions count."""

    samples: int = 2000
    confidence: float = 0.95
    power: float = 0.8
    seed: int = 0
    exclude_flaky: bool = True
    min_questions: int = 20  # fewer paired questions than this: a warning with the verdict

    @property
    def alpha(self) -> float:
        return 1 - self.confidence


@dataclass
class Evaluated:
    """One evaluated version: its scores per question, summary metrics, cost and speed, and
    (for comparing retrieval at a common depth) its k and each question's ranked relevance."""

    name: str
    per_question: Mapping[str, Mapping[str, float]]
    metrics: Mapping[str, float]
    flaky: Sequence[str] = ()
    requires_improvement: bool = False
    k: int | None = None
    ranked: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    unreliable: Sequence[str] = ()  # judge metrics whose judge failed its calibration
    uncalibrated: Sequence[str] = ()  # judge metrics whose absolute values mean little

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
    improved: list[str] = field(default_factory=list)  # metrics Holm found better than live

    def best_delta(self) -> PairedDelta | None:
        """The guarded metric that moved most in the candidate's favour."""
        scored = [d for d in self.deltas if not math.isnan(d.mean)]
        return max(scored, key=lambda d: d.ci_low, default=None)


def common_depth(versions: Sequence[Evaluated]) -> int | None:
    """The smallest k among ``versions``; None where some version lacks its k or its ranked
    relevance (an evaluation from before they were recorded)."""
    ks = [v.k for v in versions if v.ranked]
    if len(ks) < len(versions) or any(k is None for k in ks):
        return None
    return min(int(k) for k in ks if k is not None)


def at_common_depth(versions: Sequence[Evaluated], metrics: Sequence[str]) -> list[Evaluated]:
    """``versions`` with their k-dependent ``metrics`` re-read at :func:`common_depth`."""
    depth_metrics = [m for m in metrics if m in DEPTH_METRICS]
    depth = common_depth(versions)
    if not depth_metrics or depth is None:
        return list(versions)
    return [
        replace(
            version,
            per_question={
                **version.per_question,
                **{m: at_depth(m, version.ranked, depth) for m in depth_metrics},
            },
        )
        for version in versions
    ]


def holm(p_values: Mapping[Any, float], alpha: float) -> set[Any]:
    """The hypotheses Holm-Bonferroni rejects at family-wise level ``alpha``."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    rejected = set()
    for rank, (key, p) in enumerate(ordered):
        if not p <= alpha / (len(ordered) - rank):
            break
        rejected.add(key)
    return rejected


def gate(
    candidates: Sequence[Evaluated],
    champion: Evaluated | None,
    *,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    stats: GateStats = GateStats(),
) -> dict[str, Verdict]:
    """Rules 1-3 of the module docstring for every candidate of one reindex at once (the
    superiority family spans all of them). Returns each candidate's verdict by name."""
    verdicts: dict[str, Verdict] = {}
    untrusted = _untrusted([*candidates, *([champion] if champion else [])], tolerances, thresholds)
    tolerances = {m: t for m, t in tolerances.items() if m not in untrusted["ranking"]}
    thresholds = {m: t for m, t in thresholds.items() if m not in untrusted["values"]}
    skipped = sorted(set(untrusted["ranking"]) | set(untrusted["values"]))
    depth = None
    if champion is not None:
        depth = common_depth([champion, *candidates])
        champion, *candidates = at_common_depth([champion, *candidates], list(tolerances))
    for candidate in candidates:
        verdict = Verdict(name=candidate.name, passed=True)
        verdict.warnings += [f"{m} not used: its judge failed calibration" for m in skipped]
        verdict.reasons += _below_thresholds(candidate, thresholds)
        if champion is not None:
            _compare(verdict, candidate, champion, tolerances, stats, depth)
        verdicts[candidate.name] = verdict
    family = {
        (candidate.name, delta.metric): delta.p_better
        for candidate in candidates
        if candidate.requires_improvement and champion is not None
        for delta in verdicts[candidate.name].deltas
        if delta.questions
    }
    better = holm(family, stats.alpha)
    for candidate in candidates:
        verdict = verdicts[candidate.name]
        verdict.improved = sorted(metric for name, metric in better if name == candidate.name)
        challenged = candidate.requires_improvement and champion is not None
        if challenged and not verdict.reasons and not verdict.improved:
            verdict.reasons.append(_not_better(verdict, len(family), stats.alpha))
        verdict.passed = not verdict.reasons
    return verdicts


def gate_candidate(
    candidate: Evaluated,
    champion: Evaluated | None,
    *,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    stats: GateStats = GateStats(),
) -> Verdict:
    """:func:`gate` for a single candidate."""
    return gate([candidate], champion, tolerances=tolerances, thresholds=thresholds, stats=stats)[
        candidate.name
    ]


def _untrusted(
    evaluated: Sequence[Evaluated], tolerances: Mapping[str, float], thresholds: Mapping[str, float]
) -> dict[str, list[str]]:
    """Gated judge metrics not to use: for comparisons where the judge ranks answers poorly
    (``ranking``), for thresholds also where its absolute values disagree with labels."""
    unreliable = {metric for item in evaluated for metric in item.unreliable}
    uncalibrated = unreliable | {metric for item in evaluated for metric in item.uncalibrated}
    return {
        "ranking": sorted(unreliable & set(tolerances)),
        "values": sorted(uncalibrated & set(thresholds)),
    }


def _below_thresholds(candidate: Evaluated, thresholds: Mapping[str, float]) -> list[str]:
    reasons = []
    for metric, minimum in sorted(thresholds.items()):
        value = float(candidate.metrics.get(metric, math.nan))
        if not value >= minimum:
            reasons.append(f"{metric} {value:.4f} is below the threshold {minimum}")
    return reasons


def _compare(
    verdict: Verdict,
    candidate: Evaluated,
    champion: Evaluated,
    tolerances: Mapping[str, float],
    stats: GateStats,
    depth: int | None,
) -> None:
    """Rule 2 for every guarded metric, with the warnings a small golden set deserves."""
    flaky = sorted(champion.flaky) if stats.exclude_flaky else []
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
            tolerance=tolerance,
            samples=stats.samples,
            confidence=stats.confidence,
            power=stats.power,
            seed=stats.seed,
            depth=depth if metric in DEPTH_METRICS else None,
        )
        verdict.deltas.append(delta)
        if delta.questions == 0:
            verdict.reasons.append(f"{metric}: no question scored by both versions")
        elif not delta.p_worse < stats.alpha:
            verdict.reasons.append(
                f"{metric} may be worse than live: delta {delta.mean:+.4f},"
                f" CI [{delta.ci_low:+.4f}, {delta.ci_high:+.4f}], p = {delta.p_worse:.3f} that"
                f" it is not {tolerance} or more below"
            )
        if delta.questions and delta.mde > tolerance:
            verdict.warnings.append(
                f"{candidate.name}: {metric}: {delta.questions} paired questions detect only"
                f" changes of {delta.mde:.3f} or more (tolerance {tolerance}); add golden questions"
            )
        if 0 < delta.questions < stats.min_questions:
            verdict.warnings.append(
                f"{candidate.name}: {metric}: only {delta.questions} paired questions"
                f" (fewer than {stats.min_questions}): the gate can tell little apart"
            )


def _not_better(verdict: Verdict, comparisons: int, alpha: float) -> str:
    best = min((d for d in verdict.deltas if d.questions), key=lambda d: d.p_better, default=None)
    if best is None:
        return "no guarded metric could be compared"
    return (
        f"no guarded metric improved beyond noise (Holm over {comparisons} comparisons at"
        f" {alpha:g}): best was {best.metric}, delta {best.mean:+.4f},"
        f" CI [{best.ci_low:+.4f}, {best.ci_high:+.4f}], p = {best.p_better:.3f}"
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
