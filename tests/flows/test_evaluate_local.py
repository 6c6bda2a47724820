"""Evaluation with the real local model answering and judging: variance, verdicts, cost, MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from ragcycle.cli import app
from tasks.models import CATALOGUE
from tests.conftest import make_settings

pytestmark = [pytest.mark.model, pytest.mark.usefixtures("prefect_harness", "local_model")]

DOCUMENTS = {
    "dmca.md": "# DMCA\n\nThe Digital Millennium Copyright Act was signed into law by President"
    " Clinton on October 28, 1998. It implements two treaties of the World Intellectual Property"
    " Organization.",
    "museum.md": "# Museum\n\nThe city museum opens at nine in the morning. Tickets cost twelve"
    " euros for adults and are free for children.",
    "tides.md": "# Tides\n\nTides are caused mainly by the gravity of the Moon. Spring tides happen"
    " when the Sun and the Moon are aligned.",
}
GOLDEN = [
    {
        "question": "When was the DMCA signed?",
        "expected_answer": "October 28, 1998",
        "expected_sources": ["dmca.md"],
    },
    {
        "question": "How much is a museum ticket for an adult?",
        "expected_answer": "twelve euros",
        "expected_sources": ["museum.md"],
    },
    {
        "question": "What mainly causes tides?",
        "expected_answer": "the gravity of the Moon",
        "expected_sources": ["tides.md"],
    },
]
LOCAL = {"backend": "local", "temperature": 1.0, "max_tokens": 24}
CALIBRATION = Path(__file__).resolve().parents[2] / "samples" / "judge_calibration.jsonl"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three short documents ingested once; returns (data dir, golden set)."""
    root = tmp_path_factory.mktemp("local-eval")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in DOCUMENTS.items():
        (corpus / name).write_text(text)
    golden = root / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(row) for row in GOLDEN) + "\n")
    data = root / "data"
    # Version 1 records the generator it serves with: the local model, short answers.
    served = {"backend": "local", "max_tokens": 16}
    ingest(
        IngestRequest(
            paths=[str(corpus)],
            overrides={"data_dir": str(data), "progress": False, "generation": served},
        )
    )
    return data, golden


def test_local_answers_vary_across_repeats_and_a_local_judge_grades_them(
    small_index: tuple[Path, Path],
) -> None:
    data, golden = small_index
    # Two questions of the shipped calibration set (ten labelled answers) keep the test short.
    calibration = data.parent / "calibration.jsonl"
    calibration.write_text("".join(CALIBRATION.read_text().splitlines(keepends=True)[:10]))
    judge = {"backend": "local", "model": "smollm2-135m", "calibration_set": str(calibration)}
    overrides: dict[str, Any] = {
        "data_dir": str(data),
        "progress": False,
        "retrieval": {"k": 2},
        "generation": LOCAL,
        "evaluation": {"repeats": 3, "judge": judge},
    }
    result = evaluate(EvaluateRequest(dataset=str(golden), overrides=overrides))
    metrics = result["metrics"]
    judged = result["judge"]
    assert judged["model"] == "smollm2-135m" and judged["formulation"] == "verdict"
    assert judged["calibration"]["rows"] == 10
    criteria = ("judge_faithfulness", "judge_correctness", "judge_relevance")
    for name in criteria:
        # A criterion that failed its calibration is logged but never handed to a decision.
        figures = judged["calibration"]["criteria"][name]
        passed = figures["pairwise_accuracy"] >= 0.8
        assert (name in result["unreliable_metrics"]) == (not passed), (name, figures)
        assert (name in metrics) == passed
        if passed:
            assert 0.0 <= metrics[name] <= 1.0, (name, metrics[name])
    assert metrics["judge_parse_failures"] == 0  # "yes" or "no" is among the likeliest tokens
    assert 0.0 <= metrics["judge_lexical_agreement"] <= 1.0
    assert 0.0 <= metrics["judge_flip_share"] <= 1.0
    assert metrics["cpu_seconds_total"] > 0 and metrics["cost_usd_per_question"] > 0
    # priced at the default 0.0446 USD per CPU-hour (AWS c7i.large on demand, per vCPU)
    assert metrics["cost_usd_total"] == pytest.approx(metrics["cpu_seconds_total"] * 0.0446 / 3600)
    assert metrics["prompt_tokens_total"] > 9 * 40

    settings = make_settings(data)
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params["generator"] == "local"
    assert run.data.params["generator_model"] == "smollm2-135m"
    assert run.data.params["generator_sha256"] == CATALOGUE["smollm2-135m"].sha256
    assert run.data.params["judge_model"] == "smollm2-135m"
    assert run.data.params["judge_prompt"].startswith("judge-verdict-")
    for name in criteria:  # every verdict is logged, reliable or not, beside its calibration
        short = name.removeprefix("judge_")
        assert 0.0 <= run.data.metrics[f"judge/{short}"] <= 1.0
        assert f"judge/{short}_pairwise_accuracy" in run.data.metrics
    unreliable = run.data.tags.get("ragcycle.judge.unreliable", "")
    assert unreliable.split(",") == (result["unreliable_metrics"] or [""])

    table = json.loads(
        Path(client.download_artifacts(result["run_id"], "eval_questions.json")).read_text()
    )
    columns = table["columns"]
    answers: dict[int, set[str]] = {}
    for row in table["data"]:
        answers.setdefault(row[columns.index("line")], set()).add(row[columns.index("answer")])
    assert len(table["data"]) == 9
    assert max(len(texts) for texts in answers.values()) >= 2, "sampling made no difference"

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    traces = mlflow.search_traces(
        locations=[run.info.experiment_id], run_id=result["run_id"], return_type="list"
    )
    verdicts = [
        assessment
        for trace in traces
        for assessment in trace.info.assessments
        if assessment.name == "judge_faithfulness"
    ]
    assert verdicts, "judge verdicts are recorded as assessments on the rows' traces"
    assert {v.source.source_type for v in verdicts} == {"LLM_JUDGE"}
    assert all(v.source.source_id.startswith("local:smollm2-135m@judge-") for v in verdicts)
    code = [a for t in traces for a in t.info.assessments if a.name == "faithfulness"]
    assert code and {a.source.source_type for a in code} == {"CODE"}


def test_ask_json_names_the_local_model_and_prints_only_json(
    small_index: tuple[Path, Path],
) -> None:
    data, _ = small_index
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["ask", "When was the DMCA signed?", "--json"],
        # The session's environment says "extractive"; the live version's recorded config
        # (the local model, 16 tokens) is what it serves.
        env={"RAGCYCLE_DATA_DIR": str(data)},
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(name))
    assert answer["generator"] == {
        "backend": "local",
        "model": "smollm2-135m",
        "sha256": CATALOGUE["smollm2-135m"].sha256,
    }
    assert answer["tokens"]["prompt"] > 40 and 0 < answer["tokens"]["completion"] <= 16
    assert answer["sources"] and answer["sources"][0]["source"].endswith(".md")
    assert not math.isnan(answer["latency_ms"]["generate"])
