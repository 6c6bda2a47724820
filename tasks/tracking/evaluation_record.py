"""What one evaluation run logs to MLflow, apart from the code that logs it: the run writer
(:mod:`tasks.tracking.runs`) and the GenAI views (:mod:`tasks.tracking.genai_views`) both read it,
and neither imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvaluationRecord"]


@dataclass
class EvaluationRecord:
    """Everything one evaluation run logs to MLflow."""

    experiment: str
    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    rows: list[dict[str, Any]]
    dataset_rows: list[dict[str, Any]]
    dataset_source: str
    dataset_name: str
    report: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    judge_metrics: list[str] = field(default_factory=list)
    judge_source: str = ""  # model@prompt of the judge whose verdicts judge_metrics hold
    parent_run_id: str | None = None  # a reindex run whose challenger this evaluation is
    prompt_uri: str | None = None  # prompts:/name/version the answers were written with
