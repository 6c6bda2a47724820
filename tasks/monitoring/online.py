"""Online evaluation: the judge grades a sample of the answers users were served.

A golden set measures the questions someone wrote down; live traffic is what users ask. Each
monitor run samples up to ``lifecycle.production.judge_sample`` answered questions from the
query log, has the judge grade whether each served answer is supported by the chunks it was
retrieved with (``judge_faithfulness``, groundedness), and writes each grade on the answer's
trace as an LLM-judge assessment, so MLflow's Overview tab charts live quality over time.

Only a judge whose calibration found its faithfulness verdicts matching the labels grades
anything: an uncalibrated judge's grades would be noise driving a reindex (docs/evaluation.md).
"""

from __future__ import annotations

import logging
import math
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import Settings
from tasks.evaluation.calibration import Calibration, judge_calibration
from tasks.evaluation.judges import Formulation, Judge, judge_rows, judge_source
from tasks.indexing.store import VectorIndex
from tasks.tracking.traces import log_judge_grades

__all__ = [
    "CRITERION",
    "LiveGrades",
    "grade_live_answers",
    "grade_live_answers_task",
    "judge_live_answers",
    "sample_answers",
    "why_not_graded",
]

logger = logging.getLogger(__name__)

CRITERION = "judge_faithfulness"


@dataclass(frozen=True)
class LiveGrades:
    """The judge's grades of sampled live answers: one per trace, and their mean."""

    trace_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def groundedness(self) -> float:
        graded = [score for score in self.scores if not math.isnan(score)]
        return statistics.fmean(graded) if graded else math.nan

    @property
    def graded(self) -> int:
        return sum(not math.isnan(score) for score in self.scores)


def why_not_graded(judge: Judge | None, calibration: Calibration | None) -> str | None:
    """Why live answers are not graded this run, or None when the judge may grade them."""
    if judge is None:
        return "no judge is configured (evaluation.judge.backend = none)"
    if calibration is None:
        return "the judge has no calibration (no calibration set at hand)"
    if not calibration.calibrated(CRITERION):
        # A limit on the grades' level needs verdicts that match the labels, not only a ranking.
        return f"the judge failed its calibration on {CRITERION}: its grades would be noise"
    return None


def sample_answers(
    records: Sequence[Mapping[str, Any]], collection: str, size: int, seed: int
) -> list[Mapping[str, Any]]:
    """Up to ``size`` answers worth grading, at random (seeded): traced, served from
    ``collection`` (whose chunks can still be read), not abstentions, not withheld."""
    candidates = [
        record
        for record in records
        if record.get("trace_id")
        and record.get("collection") == collection
        and not record.get("abstained")
        and (record.get("guardrails") or {}).get("status") != "fail"
        and record.get("chunk_ids")
    ]
    return random.Random(seed).sample(candidates, min(size, len(candidates)))


def grade_live_answers(
    records: Sequence[Mapping[str, Any]],
    index: VectorIndex,
    judge: Judge,
    *,
    k: int,
    context_chars: int,
    formulation: Formulation,
) -> LiveGrades:
    """The judge's groundedness grade of each record's served answer against the top ``k``
    chunks it was answered from (read back from ``index``)."""
    contexts = []
    for record in records:
        chunks = index.fetch(list(record["chunk_ids"])[:k])
        contexts.append([chunk.text for chunk in chunks])
    rows = [
        {"question": record["question"], "answer": record["answer"], "expected_answer": None}
        for record in records
    ]
    judge_rows(
        rows,
        contexts,
        judge,
        context_chars=context_chars,
        formulation=formulation,
        criteria=(CRITERION,),
    )
    return LiveGrades(
        trace_ids=[str(record["trace_id"]) for record in records],
        scores=[float(row[CRITERION]) for row in rows],
    )


# The Prefect edge of grade_live_answers: the task made from the function itself.
grade_live_answers_task = task(name="grade-live-answers", cache_policy=NO_CACHE)(grade_live_answers)


def judge_live_answers(
    records: Sequence[Mapping[str, Any]], index: VectorIndex, settings: Settings
) -> LiveGrades | None:
    """Grade a sample of the window's answers served from ``index`` with the configured judge,
    and write each grade on its trace; None (and a log line saying why) when no judge may."""
    from tasks.generation.backends import judge_from_settings

    size = settings.lifecycle.production.judge_sample
    judging = settings.evaluation.judge
    judge = judge_from_settings(settings) if size else None
    reason = "lifecycle.production.judge_sample is 0" if not size else None
    reason = reason or why_not_graded(judge, judge_calibration(judge, judging, settings.data_dir))
    if reason is not None or judge is None:
        logger.info("Live answers not graded: %s", reason)
        return None
    # Seeded by the window's newest query: a re-run of the monitor grades the same answers.
    seed = int(records[0]["id"]) if records else 0
    chosen = sample_answers(records, index.name, size, seed)
    grades = grade_live_answers_task(
        chosen,
        index,
        judge,
        k=settings.retrieval.k,
        context_chars=judging.context_chars,
        formulation=judging.formulation,
    )
    log_judge_grades(
        grades.trace_ids, CRITERION, grades.scores, judge_source(judge, judging.formulation)
    )
    logger.info(
        "The judge graded %d of %d sampled live answers: groundedness %.3f",
        grades.graded,
        len(chosen),
        grades.groundedness,
    )
    return grades
