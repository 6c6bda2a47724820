"""Names of evaluation metrics in MLflow: grouped, so a person can filter and chart them.

Inside ragcycle a metric keeps its flat name (``hit_rate_at_5``, ``cost_usd_per_question``):
settings, the gate, reports and the CLI use it. In MLflow it is logged once under a group,
``retrieval/hit_rate_at_5``, ``cost/usd_per_question``, because MLflow's UI sections charts by
the prefix before the first ``/`` and a filter like ``metrics.`retrieval/mrr` > 0.5`` reads
as what it means. Confidence bounds live apart, in the ``ci`` section, so each metric shows
once in its own section.

Runs logged before the scheme carry the flat names; :func:`read_metric` reads both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

__all__ = ["ci_names", "logged_metrics", "logged_name", "read_metric", "read_metrics"]

# (flat-name pattern, group, prefix the group replaces); first match wins.
_RULES: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern), group, strip)
    for pattern, group, strip in (
        (
            r"(hit_rate|recall|precision|ndcg|mrr|page_hit|page_recall)_at_\d+|mrr|page_hit_rate",
            "retrieval",
            "",
        ),
        (r"answer_(f1|similarity|relevance|contains_key)", "answer", "answer_"),
        (
            r"faithfulness|no_answer_correct|abstained_when_unanswerable|answered_when_answerable",
            "answer",
            "",
        ),
        (r"judge_\w+", "judge", "judge_"),
        (
            r"pii_in_answer|toxic_answer|pii_in_context|injection_in_context|flagged_rate",
            "guardrails",
            "",
        ),
        (r"guardrail_(fail|warning)", "guardrails", "guardrail_"),
        (r"latency_\w+", "latency", "latency_"),
        (r"cost_\w+", "cost", "cost_"),
        (r"(prompt|completion)_tokens_total|cpu_seconds_total", "cost", ""),
    )
)


def logged_name(name: str) -> str:
    """The MLflow name of the flat metric ``name``; names outside the scheme stay as they are."""
    for pattern, group, strip in _RULES:
        if pattern.fullmatch(name):
            return f"{group}/{name.removeprefix(strip)}"
    return name


def ci_names(name: str) -> tuple[str, str]:
    """The MLflow names of the lower and upper confidence bound of the flat metric ``name``."""
    logged = logged_name(name)
    return f"ci/{logged}/low", f"ci/{logged}/high"


def logged_metrics(
    metrics: Mapping[str, float], ci: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, float]:
    """``metrics`` and their bounds under their MLflow names; NaN is left out (MLflow would
    chart it as a gap anyway, and the search API cannot compare it)."""
    logged = {logged_name(k): float(v) for k, v in metrics.items() if math.isfinite(v)}
    for name, (low, high) in (ci or {}).items():
        if math.isfinite(low) and math.isfinite(high):
            low_name, high_name = ci_names(name)
            logged[low_name], logged[high_name] = float(low), float(high)
    return logged


def read_metric(run_metrics: Mapping[str, float], name: str) -> float:
    """The flat metric ``name`` of a run, logged under either scheme; NaN when absent."""
    for key in (logged_name(name), name):
        if key in run_metrics:
            return float(run_metrics[key])
    return math.nan


def read_metrics(run_metrics: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """The flat metrics ``names`` a run logged (absent ones left out)."""
    found = {name: read_metric(run_metrics, name) for name in names}
    return {name: value for name, value in found.items() if not math.isnan(value)}
