"""A reindex's contenders through the gate: verdicts, the choice, and the evidence a person
reads (``reindex --json``'s ``candidates``, the decision table in MLflow and Prefect)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.challengers import Contender
from tasks.promotion import Evaluated, GateStats, Verdict, at_common_depth, choose, gate
from tasks.versions import config_summary

__all__ = ["Outcome", "gate_contenders", "summarize_candidates"]

# Figures shown beside the gate metrics: what a version costs and how fast it answers.
_COST = "cost_usd_per_question"
_P95 = "latency_total_p95_ms"


class BuiltVersion(Protocol):
    """What the gate needs of a built contender (``flows.challenge.Built``)."""

    name: str
    version: int
    collection: str
    evaluation: dict[str, Any] | None


@dataclass
class Outcome:
    """Every contender's verdict, the one chosen (if any) and the reasons for the decision."""

    chosen: Any | None
    verdicts: dict[str, Verdict]
    reasons: list[str]
    table: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    champion_summary: dict[str, Any] | None = None


def gate_contenders(
    contenders: Sequence[Contender],
    built: Sequence[BuiltVersion],
    champion: Mapping[str, Any] | None,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    stats: GateStats,
) -> Outcome:
    """Gate each contender against the champion, then choose among those that pass."""
    by_name = {item.name: item for item in built}
    live = _evaluated("live", champion, False) if champion is not None else None
    scored = [
        _evaluated(c.name, evaluation, c.requires_improvement)
        for c in contenders
        if (evaluation := by_name[c.name].evaluation) is not None
    ]
    if live is not None:
        # Retrieval read at one depth for every comparison, the final choice's included.
        live, *scored = at_common_depth([live, *scored], list(tolerances))
    verdicts = gate(scored, live, tolerances=tolerances, thresholds=thresholds, stats=stats)
    for contender in contenders:
        verdicts.setdefault(contender.name, Verdict(contender.name, passed=True))
    passed = [item for item in scored if verdicts[item.name].passed]
    if all(by_name[c.name].evaluation is None for c in contenders):
        first = by_name[contenders[0].name]
        return Outcome(first, verdicts, ["first version: no golden set to compare against"])
    pick, notes = choose(passed, list(tolerances), stats)
    outcome = Outcome(
        chosen=by_name[pick.name] if pick is not None else None,
        verdicts=verdicts,
        reasons=_reasons(pick, verdicts, by_name, notes, live is None),
        table=_table(verdicts, champion, by_name),
        warnings=sorted({w for v in verdicts.values() for w in v.warnings}),
    )
    if champion is not None:
        outcome.champion_summary = {
            "metrics": _figures(champion["metrics"], tolerances),
            "version": champion.get("version"),
            "run_id": champion.get("run_id"),
            "flaky": list(champion.get("flaky", [])),
        }
    return outcome


def _evaluated(name: str, evaluation: Mapping[str, Any], improve: bool) -> Evaluated:
    return Evaluated(
        name=name,
        per_question=evaluation["per_question"],
        metrics=evaluation["metrics"],
        flaky=evaluation.get("flaky", []),
        requires_improvement=improve,
        k=evaluation.get("k"),
        ranked=evaluation.get("ranked", {}),
        unreliable=evaluation.get("unreliable_metrics", ()),
        uncalibrated=evaluation.get("uncalibrated_metrics", ()),
    )


def _reasons(
    pick: Evaluated | None,
    verdicts: Mapping[str, Verdict],
    by_name: Mapping[str, BuiltVersion],
    notes: list[str],
    first: bool,
) -> list[str]:
    if pick is not None:
        best = verdicts[pick.name].best_delta()
        evidence = (
            f": {best.metric} {best.mean:+.4f}, CI [{best.ci_low:+.4f}, {best.ci_high:+.4f}]"
            if best is not None
            else (": thresholds met, nothing to compare against" if first else "")
        )
        return [f"{pick.name} promoted as version {by_name[pick.name].version}{evidence}", *notes]
    scored = [(v, v.best_delta()) for v in verdicts.values()]
    ranked = [(v, d) for v, d in scored if d is not None]
    lines = []
    if ranked:
        verdict, best = max(ranked, key=lambda pair: pair[1].ci_low)
        lines.append(
            f"no candidate beat the live version: best was {verdict.name}, {best.metric}"
            f" delta {best.mean:+.4f}, CI [{best.ci_low:+.4f}, {best.ci_high:+.4f}]"
        )
    else:
        lines.append("no candidate passed the gate")
    for verdict in verdicts.values():
        lines += [f"{verdict.name}: {reason}" for reason in verdict.reasons]
    return lines


def _table(
    verdicts: Mapping[str, Verdict],
    champion: Mapping[str, Any] | None,
    by_name: Mapping[str, BuiltVersion],
) -> list[dict[str, Any]]:
    """One row per contender and gate metric: its value, the live value, the paired delta."""
    rows = []
    for name, verdict in verdicts.items():
        evaluation = by_name[name].evaluation or {}
        metrics = evaluation.get("metrics", {})
        for delta in verdict.deltas:
            live = champion["metrics"].get(delta.metric, math.nan) if champion else math.nan
            rows.append(
                {
                    "metric": f"{name}/{delta.metric}",
                    "candidate": float(metrics.get(delta.metric, math.nan)),
                    "live": float(live),
                    "delta": delta.mean,
                    "ci_low": delta.ci_low,
                    "ci_high": delta.ci_high,
                    "verdict": "ok" if verdict.passed else "; ".join(verdict.reasons)[:200],
                }
            )
    return rows


def _figures(metrics: Mapping[str, float], gated: Mapping[str, float]) -> dict[str, float]:
    return {name: float(metrics.get(name, math.nan)) for name in [*gated, _COST, _P95]}


def summarize_candidates(
    contenders: Sequence[Contender], built: Sequence[BuiltVersion], outcome: Outcome
) -> list[dict[str, Any]]:
    """Quality, cost and latency side by side, with each contender's verdict and evidence."""
    by_name = {item.name: item for item in built}
    chosen = outcome.chosen.name if outcome.chosen is not None else None
    summary = []
    for contender in contenders:
        item = by_name[contender.name]
        verdict = outcome.verdicts[contender.name]
        metrics = (item.evaluation or {}).get("metrics", {})
        gated = {d.metric: 0.0 for d in verdict.deltas}
        summary.append(
            {
                "name": contender.name,
                "kind": contender.kind,
                "version": item.version,
                "collection": item.collection,
                "config": contender.config,
                "config_summary": config_summary(contender.config),
                "metrics": _figures(metrics, gated) if metrics else {},
                "deltas": [d.as_dict() for d in verdict.deltas],
                "cost_usd_per_question": float(metrics.get(_COST, math.nan)),
                "latency_p95_ms": float(metrics.get(_P95, math.nan)),
                "evaluation_run": (item.evaluation or {}).get("run_id"),
                "flaky": list((item.evaluation or {}).get("flaky", [])),
                "excluded_flaky": verdict.excluded_flaky,
                "verdict": "promoted"
                if contender.name == chosen
                else ("passed, not chosen" if verdict.passed else "rejected"),
                "reasons": verdict.reasons,
                "warnings": verdict.warnings,
            }
        )
    return summary
