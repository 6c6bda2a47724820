"""Online evaluation: which live answers the judge grades, its grades written on the answers'
real MLflow traces, and the monitor's check on them. The judge is a scripted chat endpoint that
says "yes" exactly when the answer is in its context, so right and wrong grades are known; the
real judges and their calibration are tested in test_judge_calibration."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ragcycle.settings import Settings
from tests.fakes import ChatServer, HashEmbedder, completion

CHUNKS = {
    "hours": "The city museum opens at nine in the morning.",
    "tickets": "A ticket costs twelve euros.",
}


def grounded_judge(request: dict[str, Any]) -> tuple[int, Any, float]:
    """Yes when the proposed answer is written in the prompt's context, else no (and no to
    every question without a context)."""
    prompt = request["messages"][0]["content"]
    if not prompt.startswith("Context:"):
        return 200, completion("No"), 0.0
    context = prompt.split("Context:\n", 1)[1].split("\n\nQuestion:", 1)[0]
    answer = prompt.split("Proposed answer: ", 1)[1].split("\n", 1)[0].rstrip(".")
    return 200, completion("Yes" if answer in context else "No"), 0.0


def record(number: int, answer: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": number,
        "question": "When does the museum open?",
        "answer": answer,
        "collection": "online-test",
        "chunk_ids": ["hours", "tickets"],
        "trace_id": f"tr-{number}",
        "abstained": False,
        "guardrails": {"status": "pass"},
        **changes,
    }


def test_only_traced_served_answers_of_the_live_collection_are_sampled() -> None:
    from tasks.monitoring.online import sample_answers

    records = [
        record(1, "at nine"),
        record(2, "at nine", trace_id=None),
        record(3, "at nine", collection="older__v1"),
        record(4, "I don't know", abstained=True),
        record(5, "withheld", guardrails={"status": "fail"}),
        record(6, "twelve euros"),
    ]
    chosen = sample_answers(records, "online-test", 10, seed=4)
    assert sorted(r["id"] for r in chosen) == [1, 6]
    assert len(sample_answers(records, "online-test", 1, seed=4)) == 1
    again = [r["id"] for r in sample_answers(records * 5, "online-test", 3, seed=9)]
    assert again == [r["id"] for r in sample_answers(records * 5, "online-test", 3, seed=9)]


def test_only_a_judge_calibrated_on_faithfulness_may_grade() -> None:
    from tasks.evaluation.calibration import Calibration
    from tasks.monitoring.online import why_not_graded

    def calibration(pairwise: float, agreement: float) -> Calibration:
        figures = {"pairwise_accuracy": pairwise, "agreement": agreement}
        return Calibration("j", "verdict", "set", 40, 0.8, {"judge_faithfulness": figures})

    judge: Any = object()
    assert why_not_graded(None, None) is not None
    assert why_not_graded(judge, None) is not None
    assert why_not_graded(judge, calibration(0.95, 0.6)) is not None  # ranks, levels off
    assert why_not_graded(judge, calibration(0.7, 0.9)) is not None
    assert why_not_graded(judge, calibration(0.9, 0.85)) is None


def test_the_judges_grades_land_on_the_live_traces(settings: Settings, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from tasks.generation.chat import OpenAIChatGenerator
    from tasks.indexing.store import open_index
    from tasks.monitoring.online import CRITERION, grade_live_answers
    from tasks.tracking.runs import ensure_experiment, mlflow_client
    from tasks.tracking.traces import QueryTrace, log_judge_grades

    index = open_index(settings, "online-test")
    texts = list(CHUNKS.values())
    index.upsert(list(CHUNKS), HashEmbedder(8).embed(texts), texts, [{"doc_id": k} for k in CHUNKS])
    mlflow_client(settings.mlflow_tracking_uri)
    experiment = ensure_experiment("ragcycle-serving", None, settings.mlflow_tracking_uri)
    answers = ["at nine in the morning", "at ten", "twelve euros"]
    records = []
    for number, answer in enumerate(answers, start=1):
        trace = QueryTrace(experiment, "When does the museum open?", {})
        trace.close({"answer": answer}, {})()
        records.append(record(number, answer, trace_id=trace.trace_id))

    with ChatServer(responder=grounded_judge) as server:
        judge = OpenAIChatGenerator(server.url, "judge-model", timeout_seconds=5)
        grades = grade_live_answers(
            records, index, judge, k=2, context_chars=1500, formulation="verdict"
        )
    assert grades.scores == [1.0, 0.0, 1.0]
    assert grades.graded == 3 and grades.groundedness == pytest.approx(2 / 3)

    log_judge_grades(grades.trace_ids, CRITERION, [*grades.scores[:2], math.nan], "judge@v1")
    client = MlflowClient(settings.mlflow_tracking_uri)
    logged = []
    for trace_id in grades.trace_ids:
        found = client.get_trace(trace_id).info.assessments
        logged.append([(a.name, a.value, a.source.source_type, a.source.source_id) for a in found])
    assert logged == [
        [(CRITERION, 1.0, "LLM_JUDGE", "judge@v1")],
        [(CRITERION, 0.0, "LLM_JUDGE", "judge@v1")],
        [],  # a grade the judge could not give is not written
    ]


def test_judged_groundedness_under_its_limit_is_a_reason_to_reindex() -> None:
    from ragcycle.settings import ProductionLimits
    from tasks.monitoring import check_production, production_figures

    figures = production_figures([], {}, window_hours=24)
    limits = ProductionLimits(min_judged_groundedness=0.6)
    reasons, table = check_production(figures, limits)
    verdicts = {row["metric"]: row["verdict"] for row in table}
    assert reasons == [] and verdicts["production/judged_groundedness"] == "not checked"

    low = replace(figures, judged=12, judged_groundedness=0.41)
    reasons, table = check_production(low, limits)
    assert reasons == [
        "judged groundedness of live answers 0.41 over 12 sampled answers (min 0.60)"
    ]
    assert low.series()["judged_groundedness"] == 0.41
    good = replace(figures, judged=12, judged_groundedness=0.75)
    assert check_production(good, limits)[0] == []


def test_a_judge_that_fails_its_calibration_grades_no_live_answer(
    settings: Settings, tmp_path: Path
) -> None:
    """The monitor's path with a real calibration: this judge (yes only to verbatim answers)
    misses every paraphrased right answer of the calibration set, so it grades nothing."""
    from mlflow import MlflowClient

    from tasks.indexing.store import open_index
    from tasks.monitoring.online import judge_live_answers
    from tasks.tracking.runs import ensure_experiment, mlflow_client
    from tasks.tracking.traces import QueryTrace

    index = open_index(settings, "online-test")
    texts = list(CHUNKS.values())
    index.upsert(list(CHUNKS), HashEmbedder(8).embed(texts), texts, [{"doc_id": k} for k in CHUNKS])
    mlflow_client(settings.mlflow_tracking_uri)
    experiment = ensure_experiment("ragcycle-serving", None, settings.mlflow_tracking_uri)
    trace = QueryTrace(experiment, "When does the museum open?", {})
    trace.close({"answer": "at nine in the morning"}, {})()
    with ChatServer(responder=grounded_judge) as server:
        configured = settings.with_overrides(
            {
                "generation": {"base_url": server.url},
                "evaluation": {"judge": {"backend": "openai", "model": "judge-model"}},
            }
        )
        graded = judge_live_answers(
            [record(1, "at nine in the morning", trace_id=trace.trace_id)], index, configured
        )
        asked = len(server.requests)
    assert graded is None
    assert asked > 0  # the calibration ran against this judge
    assert (
        MlflowClient(settings.mlflow_tracking_uri).get_trace(trace.trace_id).info.assessments == []
    )
