"""Promotion policy: whether a candidate index version may replace the live one.

This is lifecycle policy, not an evaluation stage: evaluation produces metrics, and the gate
turns two sets of them into a decision. The gate metric names in settings carry a ``{k}``
placeholder (``hit_rate_at_{k}``); :func:`gate_names` fills it in for the reindex gate and the
monitor alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragcycle.settings import LifecycleSettings

__all__ = ["GateDecision", "gate_names", "quality_gate"]


def gate_names(lifecycle: LifecycleSettings, k: int) -> tuple[dict[str, float], dict[str, float]]:
    """The gate's ``(tolerances, thresholds)`` by metric name, with ``{k}`` filled in."""
    tolerances = {name.format(k=k): rule.tolerance for name, rule in lifecycle.gate.items()}
    thresholds = {name.format(k=k): value for name, value in lifecycle.thresholds.items()}
    return tolerances, thresholds


@dataclass
class GateDecision:
    """Whether a candidate index may replace the live one, and why."""

    promote: bool
    reasons: list[str]
    table: list[dict[str, Any]]


def quality_gate(
    candidate: Mapping[str, float],
    live: Mapping[str, float] | None,
    *,
    tolerances: Mapping[str, float],
    thresholds: Mapping[str, float],
    candidate_ci: Mapping[str, Sequence[float]] | None = None,
    use_ci: bool = False,
) -> GateDecision:
    """Champion/challenger: every absolute threshold must hold, and no gate metric may fall
    below the live version's by more than its tolerance (with ``use_ci``, also the candidate's
    upper confidence bound must lie below the live value, so noise alone cannot reject)."""
    reasons: list[str] = []
    table: list[dict[str, Any]] = []
    for metric in sorted(set(tolerances) | set(thresholds)):
        value = float(candidate.get(metric, math.nan))
        live_value = float(live.get(metric, math.nan)) if live is not None else math.nan
        row: dict[str, Any] = {"metric": metric, "candidate": value, "live": live_value}
        verdict = "ok"
        if metric in thresholds and not value >= thresholds[metric]:
            verdict = "below threshold"
            reasons.append(f"{metric} {value:.4f} is below the threshold {thresholds[metric]}")
        if metric in tolerances and not math.isnan(live_value):
            drop = live_value - value
            upper = (candidate_ci or {}).get(metric, (math.nan, math.nan))[1]
            beyond_noise = not use_ci or math.isnan(upper) or upper < live_value
            if (math.isnan(value) or drop > tolerances[metric]) and beyond_noise:
                verdict = "worse than live"
                reasons.append(
                    f"{metric} fell from {live_value:.4f} to {value:.4f}"
                    f" (tolerance {tolerances[metric]})"
                )
        row["verdict"] = verdict
        table.append(row)
    return GateDecision(promote=not reasons, reasons=reasons, table=table)
