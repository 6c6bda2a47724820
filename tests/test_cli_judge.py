"""``ragcycle judge`` with the real default local model: strict JSON, rows in order, and the
judge's calibration stated beside its scores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragcycle.cli import app
from tasks.models import CATALOGUE
from tests.conftest import MODELS_DIR

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("local_model")]

CALIBRATION = Path(__file__).resolve().parents[1] / "samples" / "judge_calibration.jsonl"


def test_the_local_judge_grades_rows_in_order_and_states_its_calibration(tmp_path: Path) -> None:
    lines = CALIBRATION.read_text().splitlines(keepends=True)
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(lines[:5]))  # one question, five labelled answers
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(lines[5:7])
        + json.dumps({"question": "Who wrote it?", "answer": "Martin Thoma."})  # no reference
        + "\n"
    )
    env = {
        "RAGCYCLE_DATA_DIR": str(tmp_path / "data"),
        "RAGCYCLE_MODELS_DIR": str(MODELS_DIR),
        "RAGCYCLE_EVALUATION__JUDGE__BACKEND": "local",
        "RAGCYCLE_EVALUATION__JUDGE__MODEL": "smollm2-135m",  # the model the suite pulls
        "RAGCYCLE_EVALUATION__JUDGE__CALIBRATION_SET": str(calibration),
    }
    result = CliRunner().invoke(app, ["judge", str(rows), "--json"], env=env)
    assert result.exit_code == 0, result.output
    graded = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(name))

    judge = graded["judge"]
    assert (judge["backend"], judge["model"]) == ("local", "smollm2-135m")
    assert judge["sha256"] == CATALOGUE["smollm2-135m"].sha256
    assert judge["calibration"]["rows"] == 5
    correctness = judge["calibration"]["criteria"]["judge_correctness"]
    assert correctness["pairs"] == 4  # right and paraphrase, each against altered and swapped
    assert (judge["reliable"], judge["unreliable"] == []) in {(True, True), (False, False)}

    assert [row["line"] for row in graded["rows"]] == [1, 2, 3]
    for row in graded["rows"]:
        for name in ("judge_faithfulness", "judge_relevance"):
            assert 0.0 <= row["scores"][name] <= 1.0
    assert graded["rows"][2]["scores"]["judge_correctness"] is None, "no reference, no verdict"
    summary = graded["summary"]
    assert summary["judge_correctness"]["graded"] == 2
    mean = summary["judge_relevance"]["mean"]
    expected = sum(row["scores"]["judge_relevance"] for row in graded["rows"]) / 3
    assert math.isclose(mean, expected)
    assert "against_labels" in summary  # the two calibration rows carry labels
