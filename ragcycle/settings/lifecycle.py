"""Settings of the lifecycle: index versions, the promotion gate, candidates and the monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CANDIDATE_GROUPS",
    "Candidate",
    "GateRule",
    "LifecycleSettings",
    "ProductionLimits",
]


class GateRule(BaseModel):
    """How much a metric may fall below the live version's before a candidate is rejected."""

    tolerance: float = Field(0.02, ge=0)


# The settings groups a candidate may override: what the index holds and how it is queried and
# answered. Stores, servers and the lifecycle itself are not per-version choices.
CANDIDATE_GROUPS = ("embedding", "chunking", "ingest", "retrieval", "generation")


class Candidate(BaseModel):
    """A named challenger: settings overrides tried against the live version by ``reindex``.

    In ``ragcycle.toml``: ``[[lifecycle.candidates]]`` with ``name = "small-chunks"`` and
    ``chunking = {strategy = "fixed", size = 400, overlap = 80}``. The overrides are checked
    against the full settings when the settings load, so a typo names its key.
    """

    model_config = ConfigDict(extra="allow")

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

    @model_validator(mode="after")
    def _only_candidate_groups(self) -> Candidate:
        unknown = sorted(set(self.overrides) - set(CANDIDATE_GROUPS))
        if unknown:
            raise ValueError(
                f"candidate {self.name!r} overrides {', '.join(unknown)}; a candidate may"
                f" override only {', '.join(CANDIDATE_GROUPS)}"
            )
        return self

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ProductionLimits(BaseModel):
    """The monitor's production checks over the query log; a limit of null is not checked."""

    window_hours: float = Field(24, gt=0, description="how far back the monitor reads traffic")
    min_queries: int = Field(20, ge=1, description="fewer answers than this: rates not judged")
    min_rated: int = Field(5, ge=1, description="fewer ratings than this: feedback not judged")
    max_negative_feedback_rate: float | None = Field(0.3, ge=0, le=1)
    max_guardrail_fail_rate: float | None = Field(0.05, ge=0, le=1)
    max_guardrail_warning_rate: float | None = Field(0.5, ge=0, le=1)
    max_abstention_rate: float | None = Field(0.5, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(30_000, gt=0)
    max_tokens_per_day: float | None = Field(None, gt=0)
    max_cost_per_day_usd: float | None = Field(None, gt=0)
    question_min_similarity: float = Field(
        0.3, ge=0, le=1, description="a question this far from every golden one is uncovered"
    )
    max_uncovered_share: float | None = Field(
        0.5, ge=0, le=1, description="query drift: share of recent questions uncovered"
    )
    question_shift_alpha: float = Field(
        0.01, gt=0, lt=1, description="query drift also needs the MMD test's p under this"
    )
    judge_sample: int = Field(
        20,
        ge=0,
        description="live answers the judge grades per monitor run (groundedness), only when a"
        " judge is configured and passed its calibration; 0: none",
    )
    min_judged_groundedness: float | None = Field(
        0.5, ge=0, le=1, description="the judged live answers' mean groundedness at least"
    )


class LifecycleSettings(BaseModel):
    """Index versions, the quality gate, and the monitor's checks."""

    sources: list[Path] = Field(
        default_factory=list, description="files/folders the index mirrors (reindex, drift)"
    )
    golden_dataset: Path | None = Field(None, description="golden JSONL the gate evaluates")
    gate: dict[str, GateRule] = Field(
        default_factory=lambda: {
            "hit_rate_at_{k}": GateRule(tolerance=0.02),
            "mrr": GateRule(tolerance=0.03),
            "answer_similarity": GateRule(tolerance=0.03),
        },
        description="metric (``{k}`` filled in) -> allowed drop against the live version",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"hit_rate_at_{k}": 0.5},
        description="absolute minimums every promoted or monitored version must reach",
    )
    retention: int = Field(
        3, ge=2, description="index versions whose collections are kept, live and previous too"
    )
    build_timeout_minutes: float = Field(
        120, gt=0, description="a build older than this (on another host) counts as abandoned"
    )
    monitor_cron: str = Field("0 3 * * *", description="when the deployed monitor runs")
    baseline_runs: int = Field(
        5, ge=1, description="the baseline is the median of this many past evaluations"
    )
    query_window: int = Field(200, ge=1, description="recent logged queries checked for drift")
    query_drift_max_share: float = Field(
        0.3, ge=0, le=1, description="max share of recent queries retrieving nothing close"
    )
    production: ProductionLimits = Field(
        default_factory=lambda: ProductionLimits(), description="the monitor's production checks"
    )
    candidates: list[Candidate] = Field(
        default_factory=list,
        description="challengers a reindex builds and gates besides the configured settings",
    )
    gate_confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="1 - the gate's error rate: each non-inferiority test, and the family of all"
        " challengers' superiority tests together (Holm), run at this level",
    )
    gate_min_questions: int = Field(
        20, ge=1, description="fewer paired questions than this: the verdict carries a warning"
    )
    contender_timeout_minutes: float = Field(
        120, gt=0, description="a contender's build and evaluation taking longer fails the reindex"
    )
    gate_power: float = Field(
        0.8, gt=0, lt=1, description="power at which the minimum detectable effect is reported"
    )
    exclude_flaky: bool = Field(
        True, description="leave questions whose verdict flips across repeats out of the gate"
    )

    @field_validator("candidates")
    @classmethod
    def _unique_candidate_names(cls, candidates: list[Candidate]) -> list[Candidate]:
        names = [c.name for c in candidates]
        duplicated = sorted(
            {n for n in names if names.count(n) > 1} | ({"live", "configured"} & set(names))
        )
        if duplicated:
            raise ValueError(
                f"lifecycle.candidates: names must be unique and not 'live' or 'configured'"
                f" ({', '.join(duplicated)})"
            )
        return candidates
