"""The judge's calibration: figures worked by hand, verdicts read from log-probabilities, a
calibration kept once per judge, and unreliable judge metrics kept out of the gate and the
monitor. The real local judge is graded in tests/test_cli_judge.py."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragcycle.errors import DatasetError
from tasks.evaluation.calibration import (
    GradedRow,
    calibration_figures,
    load_graded_rows,
    stored_calibration,
)
from tasks.evaluation.judges import verdict_probability
from tasks.generation.chat import OpenAIChatGenerator
from tasks.monitoring.checks import run_checks
from tasks.promotion import Evaluated, gate_candidate

CALIBRATION = Path(__file__).resolve().parents[2] / "samples" / "judge_calibration.jsonl"


def labelled(question: str, correct: bool | None, supported: bool | None = None) -> GradedRow:
    labels = {"correct": correct, "supported": supported, "relevant": None}
    return GradedRow(1, question, "an answer", "a reference", (), labels)


def test_pairwise_accuracy_ties_and_agreement_by_hand() -> None:
    rows = [
        labelled("q1", True),  # right answer, scored 0.9
        labelled("q1", False),  # wrong, 0.2: ranked below the right one
        labelled("q1", False),  # wrong, 0.9: a tie with the right one
        labelled("q2", True),  # right, no verdict: its pair counts nothing
        labelled("q2", False),  # wrong, 0.1
        labelled("q3", None),  # unlabelled: in no figure
    ]
    scores = [0.9, 0.2, 0.9, math.nan, 0.1, 0.5]
    graded = [{"judge_correctness": s} for s in scores]
    figures = calibration_figures(rows, graded)["judge_correctness"]
    # Pairs: (0.9, 0.2) right way round, (0.9, 0.9) a tie, (nan, 0.1) no verdict.
    assert figures["pairs"] == 3
    assert figures["pairwise_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert figures["tie_share"] == pytest.approx(1 / 3)
    # Verdicts >= 0.5 against labels: T/T, F/F, T/F, nan/T, F/F -> 3 of 5.
    assert figures["labelled"] == 5
    assert figures["agreement"] == pytest.approx(3 / 5)
    assert math.isnan(calibration_figures(rows, graded)["judge_relevance"]["pairwise_accuracy"])


@pytest.mark.parametrize(
    ("text", "first_token", "expected"),
    [
        ("No", {"No": math.log(0.6), "Yes": math.log(0.3), "The": math.log(0.1)}, 1 / 3),
        ("Yes", {"Yes": math.log(0.5), " yes": math.log(0.2), "no": math.log(0.1)}, 0.7 / 0.8),
        ("Yes, it does.", {}, 1.0),  # an endpoint without log-probabilities
        ("no.", {}, 0.0),
    ],
)
def test_a_verdict_is_the_probability_of_yes(
    text: str, first_token: dict[str, float], expected: float
) -> None:
    assert verdict_probability(text, first_token) == pytest.approx(expected)


def test_a_reply_without_yes_or_no_is_no_verdict() -> None:
    assert math.isnan(verdict_probability("The answer is 4.", {"The": -0.1, "It": -2.0}))


def test_the_chat_client_asks_for_and_reads_first_token_logprobs() -> None:
    seen: list[dict[str, Any]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        alternatives = [{"token": "Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.5}]
        choice = {
            "message": {"content": "Yes"},
            "logprobs": {"content": [{"token": "Yes", "top_logprobs": alternatives}]},
        }
        return httpx.Response(200, json={"choices": [choice], "usage": {}})

    client = OpenAIChatGenerator(
        "http://judge.test/v1", "m", transport=httpx.MockTransport(respond)
    )
    text, usage = client.complete([{"role": "user", "content": "?"}], top_logprobs=10)
    assert text == "Yes"
    assert seen[0]["logprobs"] is True and seen[0]["top_logprobs"] == 10
    assert usage["first_token"] == {"Yes": -0.1, "No": -2.5}
    _, plain = client.complete([{"role": "user", "content": "?"}])
    assert "logprobs" not in seen[1] and "first_token" not in plain


class KeywordJudge:
    """Says yes with probability 0.9 when the answer repeats the reference, else 0.2."""

    name, model, sha256, structured_output = "fake", "keyword", None, False

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, messages: list[dict[str, str]], **options: Any) -> tuple[str, Any]:
        self.calls += 1
        prompt = messages[0]["content"]
        reference = prompt.split("Reference answer: ")[-1].split("\n")[0].rstrip(".")
        answer = prompt.split("Proposed answer: ")[-1].split("\n")[0]
        p = 0.9 if reference and reference in answer else 0.2
        return "Yes", {"first_token": {"Yes": math.log(p), "No": math.log(1 - p)}}


def test_a_calibration_is_taken_once_and_the_bar_applied_on_reading(tmp_path: Path) -> None:
    judge = KeywordJudge()
    folder = tmp_path / "calibrations"
    first = stored_calibration(
        judge, CALIBRATION, folder, min_accuracy=0.8, context_chars=500, formulation="verdict"
    )
    calls = judge.calls
    assert calls == first.rows * 3  # every row, every criterion (all rows have a reference)
    again = stored_calibration(
        judge, CALIBRATION, folder, min_accuracy=0.99, context_chars=500, formulation="verdict"
    )
    assert judge.calls == calls, "read back, not graded again"
    assert again.criteria == first.criteria and again.min_accuracy == 0.99
    # Repeating the reference ranks right answers above swapped ones, not paraphrases.
    correctness = first.criteria["judge_correctness"]
    assert 0.5 < correctness["pairwise_accuracy"] < 1.0
    assert first.reliable("judge_correctness") == (correctness["pairwise_accuracy"] >= 0.8)
    assert first.calibrated("judge_correctness") == (
        first.reliable("judge_correctness") and correctness["agreement"] >= 0.8
    )
    assert not again.reliable("judge_correctness")
    other = replace(first, min_accuracy=0.0)
    assert other.unreliable == [], "every criterion with figures passes a bar of 0"


def test_the_shipped_calibration_set_is_labelled_for_every_criterion() -> None:
    rows = load_graded_rows(CALIBRATION)
    assert len(rows) >= 100
    for label in ("correct", "supported", "relevant"):
        values = [row.labels[label] for row in rows]
        assert values.count(True) >= 20 and values.count(False) >= 20, label


def test_a_bad_row_to_grade_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "Q?", "answer": "A."}\n{"question": "Q?", "answer": 3}\n')
    with pytest.raises(DatasetError, match="line 2: 'answer'"):
        load_graded_rows(path)


def test_the_gate_and_the_monitor_never_use_an_unreliable_judges_metrics() -> None:
    table = {"judge_correctness": {"1": 0.1, "2": 0.1}}
    low = {"judge_correctness": 0.1}
    rules = {"tolerances": {}, "thresholds": {"judge_correctness": 0.9}}
    trusted = gate_candidate(Evaluated("c", table, low), None, **rules)
    assert not trusted.passed, "a reliable judge's metric is gated"
    untrusted = Evaluated("c", table, low, unreliable=["judge_correctness"])
    verdict = gate_candidate(untrusted, None, **rules)
    assert verdict.passed and any("judge_correctness not used" in w for w in verdict.warnings)
    # Ranking well but with absolute values off the labels: compared, never thresholded.
    uncalibrated = Evaluated("c", table, low, uncalibrated=["judge_correctness"])
    assert gate_candidate(uncalibrated, None, **rules).passed
    worse = Evaluated("c", table, low, uncalibrated=["judge_correctness"])
    better = Evaluated("live", {"judge_correctness": {"1": 0.9, "2": 0.9}}, {})
    compared = gate_candidate(worse, better, tolerances={"judge_correctness": 0.05}, thresholds={})
    assert not compared.passed, "an uncalibrated but reliable judge still guards drops"

    checks = {
        "thresholds": {"judge_correctness": 0.9},
        "tolerances": {},
        "baseline": {},
        "corpus": {},
        "queries": {},
        "query_max_share": 0.3,
    }
    assert run_checks(low, **checks).reasons
    result = run_checks(low, **checks, unreliable=["judge_correctness"])
    assert result.reasons == []
    assert result.table[0]["verdict"].startswith("not used")
    assert run_checks(low, **checks, uncalibrated=["judge_correctness"]).reasons == []
    dropped = {
        **checks,
        "tolerances": {"judge_correctness": 0.05},
        "baseline": {"judge_correctness": 0.9},
    }
    assert run_checks(low, **dropped, uncalibrated=["judge_correctness"]).reasons, (
        "a drop against the baseline is still checked"
    )
