"""A judge proves itself before anyone believes it: graded rows, and the judge's calibration.

Rows to grade are JSONL: ``question``, ``answer``, optional ``reference`` and ``contexts`` (a
list of strings). A calibration set's rows also carry labels: ``correct``, ``supported`` and
``relevant`` (true, false or null), which is what the judge's verdicts are measured against.

Two figures per criterion, each over the rows labelled for it:

- pairwise accuracy: over every pair of one answer labelled true and one labelled false to the
  same question, the share the judge ranks the right way round (a tie counts a half, a missing
  verdict nothing). It says whether the score orders answers, which is what a gate compares.
- agreement: the share of rows whose verdict (score >= 0.5) matches the label.

A criterion is reliable when its pairwise accuracy reaches ``evaluation.judge.min_accuracy``:
its scores then order answers well enough for the gate's paired comparisons and the monitor's
drop against a baseline. Its absolute values are trusted (thresholds) only when its agreement
reaches the bar too: a small model's P(yes) can rank answers well and still sit below 0.5 for
right ones. Unreliable criteria are reported, marked, and never used by the gate or the monitor.
A calibration is kept on disk by judge model, formulation and calibration set, so it runs once,
not at every evaluation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import DatasetError
from ragcycle.settings import JudgeSettings
from tasks.evaluation.judges import (
    JUDGE_CRITERIA,
    VERDICT_THRESHOLD,
    Formulation,
    Judge,
    judge_prompt_id,
    judge_rows,
)
from tasks.evaluation.stats import nanmean

__all__ = [
    "LABELS",
    "Calibration",
    "GradedRow",
    "calibrate",
    "calibration_figures",
    "calibration_metrics",
    "grade",
    "grade_summary",
    "judge_calibration",
    "judge_calibration_task",
    "judge_summary",
    "load_graded_rows",
    "stored_calibration",
]

# The label each criterion is measured against.
LABELS = {
    "judge_faithfulness": "supported",
    "judge_correctness": "correct",
    "judge_relevance": "relevant",
}


@dataclass(frozen=True)
class GradedRow:
    """One answer to grade, with the labels a calibration row carries."""

    line: int
    question: str
    answer: str
    reference: str | None = None
    contexts: tuple[str, ...] = ()
    labels: Mapping[str, bool | None] = field(default_factory=dict)


@dataclass
class Calibration:
    """How well one judge's verdicts match a labelled set, per criterion."""

    judge: str
    formulation: str
    dataset: str
    rows: int
    min_accuracy: float
    criteria: dict[str, dict[str, float]]

    def reliable(self, criterion: str) -> bool:
        """Its scores rank right answers above wrong ones often enough to compare versions."""
        return self._passes(criterion, "pairwise_accuracy")

    def calibrated(self, criterion: str) -> bool:
        """Reliable, and its verdicts (score >= 0.5) match the labels: absolute values mean
        what they say, so thresholds may use them."""
        return self.reliable(criterion) and self._passes(criterion, "agreement")

    def _passes(self, criterion: str, figure: str) -> bool:
        return self.criteria.get(criterion, {}).get(figure, math.nan) >= self.min_accuracy

    @property
    def unreliable(self) -> list[str]:
        return [name for name in JUDGE_CRITERIA if not self.reliable(name)]

    @property
    def uncalibrated(self) -> list[str]:
        return [name for name in JUDGE_CRITERIA if not self.calibrated(name)]

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "reliable": not self.unreliable,
            "unreliable": self.unreliable,
            "uncalibrated": self.uncalibrated,
        }


def load_graded_rows(path: Path) -> list[GradedRow]:
    """Rows to grade; a bad line is an error naming its number (grading half a file misleads)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows = [_row(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if not rows:
        raise DatasetError(f"{path} has no row to grade")
    return rows


def _row(number: int, line: str) -> GradedRow:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"line {number}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"line {number}: a row must be a JSON object")
    for key in ("question", "answer"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise DatasetError(f"line {number}: '{key}' must be a non-empty string")
    reference = data.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise DatasetError(f"line {number}: 'reference' must be a string or null")
    contexts = data.get("contexts") or []
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DatasetError(f"line {number}: 'contexts' must be a list of strings")
    labels = {label: data.get(label) for label in LABELS.values()}
    if any(value is not None and not isinstance(value, bool) for value in labels.values()):
        raise DatasetError(f"line {number}: labels must be true, false or null")
    return GradedRow(number, data["question"], data["answer"], reference, tuple(contexts), labels)


def grade(
    rows: Sequence[GradedRow],
    judge: Judge,
    *,
    context_chars: int = 1500,
    formulation: Formulation = "verdict",
) -> list[dict[str, Any]]:
    """Every criterion's verdict on every row, as evaluation rows carry them."""
    graded: list[dict[str, Any]] = [
        {"line": r.line, "question": r.question, "answer": r.answer, "expected_answer": r.reference}
        for r in rows
    ]
    contexts = [list(row.contexts) for row in rows]
    judge_rows(graded, contexts, judge, context_chars=context_chars, formulation=formulation)
    return graded


def calibration_figures(
    rows: Sequence[GradedRow], graded: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Pairwise accuracy, tie share and agreement with the labels, per criterion."""
    figures: dict[str, dict[str, float]] = {}
    for criterion, label in LABELS.items():
        scored = [
            (row.question, bool(row.labels[label]), float(verdicts.get(criterion, math.nan)))
            for row, verdicts in zip(rows, graded, strict=True)
            if row.labels.get(label) is not None
        ]
        pairs = [
            (right, wrong)
            for (q1, good, right), (q2, bad, wrong) in product(scored, scored)
            if q1 == q2 and good and not bad
        ]
        figures[criterion] = {
            "pairwise_accuracy": nanmean(_ordered(right, wrong) for right, wrong in pairs),
            "tie_share": nanmean(float(right == wrong) for right, wrong in pairs),
            "agreement": nanmean(
                float(not math.isnan(score) and (score >= VERDICT_THRESHOLD) == good)
                for _, good, score in scored
            ),
            "pairs": float(len(pairs)),
            "labelled": float(len(scored)),
        }
    return figures


def _ordered(right: float, wrong: float) -> float:
    if math.isnan(right) or math.isnan(wrong):
        return 0.0
    return 1.0 if right > wrong else 0.5 if right == wrong else 0.0


def calibrate(
    judge: Judge,
    path: Path,
    *,
    min_accuracy: float,
    context_chars: int = 1500,
    formulation: Formulation = "verdict",
) -> Calibration:
    """Grade the labelled set at ``path`` with ``judge`` and measure it."""
    rows = load_graded_rows(path)
    graded = grade(rows, judge, context_chars=context_chars, formulation=formulation)
    return Calibration(
        judge=f"{judge.name}:{judge.model}",
        formulation=formulation,
        dataset=_digest(path),
        rows=len(rows),
        min_accuracy=min_accuracy,
        criteria=calibration_figures(rows, graded),
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _stored_path(folder: Path, judge: Judge, path: Path, formulation: Formulation) -> Path:
    """Where a judge's calibration on this set is kept: one file per model file (or API model),
    formulation and calibration set."""
    identity = json.dumps(
        [judge.name, judge.model, judge.sha256, judge_prompt_id(formulation), _digest(path)]
    )
    return folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:20]}.json"


def stored_calibration(
    judge: Judge,
    path: Path,
    folder: Path,
    *,
    min_accuracy: float,
    context_chars: int,
    formulation: Formulation,
) -> Calibration:
    """The judge's calibration: read from ``folder`` when this judge already took it, else run
    and kept there. ``min_accuracy`` is applied on reading, so changing it needs no rerun."""
    stored = _stored_path(folder, judge, path, formulation)
    if stored.is_file():
        data = json.loads(stored.read_text())
        for derived in ("reliable", "unreliable", "uncalibrated"):
            data.pop(derived, None)
        return Calibration(**{**data, "min_accuracy": min_accuracy})
    calibration = calibrate(
        judge,
        path,
        min_accuracy=min_accuracy,
        context_chars=context_chars,
        formulation=formulation,
    )
    folder.mkdir(parents=True, exist_ok=True)
    partial = stored.with_suffix(".tmp")
    partial.write_text(json.dumps(calibration.as_dict(), indent=2))
    partial.replace(stored)
    return calibration


def default_calibration_set() -> Path:
    """The labelled set shipped with the checkout (samples/ beside the packages)."""
    return Path(__file__).resolve().parents[2] / "samples" / "judge_calibration.jsonl"


def calibration_metrics(calibration: Calibration | None) -> dict[str, float]:
    """The judge's calibration as evaluation metrics (``judge_correctness_pairwise_accuracy``
    ...), logged beside the scores they qualify."""
    if calibration is None:
        return {}
    return {
        f"{criterion}_{figure}": value
        for criterion, figures in calibration.criteria.items()
        for figure, value in figures.items()
        if figure in ("pairwise_accuracy", "agreement")
    }


def judge_summary(
    judge: Judge | None, formulation: Formulation, calibration: Calibration | None
) -> dict[str, Any] | None:
    """What ``--json`` and the run report say of the judge; ``None`` when judging is off."""
    if judge is None:
        return None
    return {
        "backend": judge.name,
        "model": judge.model,
        "sha256": judge.sha256,
        "formulation": formulation,
        "calibration": calibration.as_dict() if calibration is not None else None,
        "reliable": calibration is not None and not calibration.unreliable,
        "unreliable": calibration.unreliable if calibration is not None else list(JUDGE_CRITERIA),
        "uncalibrated": calibration.uncalibrated
        if calibration is not None
        else list(JUDGE_CRITERIA),
    }


def calibration_set_of(configured: Path | None) -> Path | None:
    """The calibration set to use: the configured one, else the checkout's; ``None`` when the
    file is absent (an installed package without samples/): the judge is then uncalibrated."""
    path = configured or default_calibration_set()
    return path if path.is_file() else None


def judge_calibration(
    judge: Judge | None, judging: JudgeSettings, data_dir: Path
) -> Calibration | None:
    """The configured judge's calibration (taken once, then read from the data dir); ``None``
    when judging is off or no calibration set is at hand."""
    path = calibration_set_of(judging.calibration_set)
    if judge is None or path is None:
        return None
    return stored_calibration(
        judge,
        path,
        data_dir / "judge-calibrations",
        min_accuracy=judging.min_accuracy,
        context_chars=judging.context_chars,
        formulation=judging.formulation,
    )


@task(name="calibrate-judge", cache_policy=NO_CACHE)
def judge_calibration_task(
    judge: Judge | None, judging: JudgeSettings, data_dir: Path
) -> Calibration | None:
    """Prefect edge of :func:`judge_calibration`."""
    return judge_calibration(judge, judging, data_dir)


def grade_summary(rows: Sequence[GradedRow], graded: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per criterion: the mean verdict, rows graded and rows without a verdict; and where the
    rows carry labels, how well the verdicts match them (see :func:`calibration_figures`)."""
    summary: dict[str, Any] = {}
    for criterion in JUDGE_CRITERIA:
        values = [float(g.get(criterion, math.nan)) for g in graded]
        scored = [v for v in values if not math.isnan(v)]
        failed = sum(criterion in g.get("judge_failed", ()) for g in graded)
        summary[criterion] = {
            "mean": nanmean(scored) if scored else None,
            "graded": len(scored),
            "failed": failed,
        }
    if any(value is not None for row in rows for value in row.labels.values()):
        summary["against_labels"] = calibration_figures(rows, graded)
    return summary
