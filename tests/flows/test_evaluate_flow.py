from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from ragcycle.cli import app
from tests.conftest import REPO, make_settings, shuffled_copy

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = REPO / "samples" / "golden.jsonl"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, embedder: Any, prefect_harness: None) -> Path:
    """The sample corpus ingested once for this module; returns the data dir."""
    data = tmp_path_factory.mktemp("eval-data")
    ingest(
        IngestRequest(
            paths=[str(REPO / "samples" / "corpus")],
            overrides={"data_dir": str(data), "progress": False},
        )
    )
    return data


def overrides(data: Path, **extra: Any) -> dict[str, Any]:
    return {"data_dir": str(data), "progress": False, **extra}


def test_evaluation_scores_and_logs_a_run(indexed: Path) -> None:
    result = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=overrides(indexed)))
    metrics = result["metrics"]
    assert result["questions"] == 17 and result["failed_rows"] == []
    assert metrics["hit_rate_at_5"] >= 0.9
    assert metrics["mrr"] >= 0.8
    assert metrics["abstained_when_unanswerable"] == 1.0
    assert metrics["answered_when_answerable"] >= 0.9
    assert metrics["faithfulness"] >= 0.9  # extractive answers quote the context
    assert 0 < metrics["latency_total_p50_ms"] <= metrics["latency_total_p95_ms"]
    low, high = result["ci"]["answer_f1"]
    assert low <= metrics["answer_f1"] <= high

    client = MlflowClient(tracking_uri=make_settings(indexed).mlflow_tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params["prompt_name"] == "ragcycle-answer"
    assert run.data.params["prompt_version"] == "1"
    assert run.data.params["generator"] == "extractive"
    assert run.data.params["k"] == "5"
    # Each metric once, in its group; bounds apart under ci/; no `x/mean` from genai.evaluate.
    logged = run.data.metrics
    assert logged["retrieval/hit_rate_at_5"] == pytest.approx(metrics["hit_rate_at_5"])
    assert logged["answer/f1"] == pytest.approx(metrics["answer_f1"])
    assert logged["latency/total_p95_ms"] == pytest.approx(metrics["latency_total_p95_ms"])
    assert logged["cost/usd_per_question"] == pytest.approx(metrics["cost_usd_per_question"])
    assert logged["guardrails/pii_in_answer"] == pytest.approx(metrics["pii_in_answer"])
    assert (logged["ci/answer/f1/low"], logged["ci/answer/f1/high"]) == pytest.approx((low, high))
    assert not [name for name in logged if name.endswith("/mean") or "_ci_" in name]
    assert "hit_rate_at_5" not in logged and "mrr" not in logged
    assert run.data.tags["ragcycle.kind"] == "evaluation"
    assert "prefect.flow_run_id" in run.data.tags
    # One dataset input, the golden set with MLflow's own digest (genai.evaluate's deduplicated).
    inputs = run.inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.source_type) for i in inputs] == [("golden", "local")]
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert {"eval_questions.json", "eval_report.json"} <= artifacts
    table = json.loads(
        Path(client.download_artifacts(result["run_id"], "eval_questions.json")).read_text()
    )
    assert len(table["data"]) == 17 and "answer_f1" in table["columns"]
    assert client.get_experiment(run.info.experiment_id).name == "ragcycle-eval-golden"
    # Every question went through the production path: guardrails and a trace with real spans.
    assert metrics["guardrail_fail"] == 0.0 and "guardrail_warning" in metrics
    first = dict(zip(table["columns"], table["data"][0], strict=True))
    assert first["guardrail_status"] in {"pass", "warning"}
    trace = client.get_trace(first["trace_id"])
    assert [span.span_type for span in trace.data.spans] == [
        "CHAIN",
        "RETRIEVER",
        "CHAT_MODEL",
        "GUARDRAIL",
    ]
    assert trace.info.tags["ragcycle.origin"] == "evaluation"
    assert trace.info.experiment_id == run.info.experiment_id


def test_a_damaged_index_scores_clearly_lower(indexed: Path) -> None:
    settings = make_settings(indexed)
    shuffled_copy(settings, "ragcycle__v1", "ragcycle-damaged")
    # The damage is to the vectors, which dense retrieval alone reads (BM25 reads the text).
    dense = overrides(indexed, retrieval={"mode": "dense"})
    good = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=dense))["metrics"]
    bad = evaluate(
        EvaluateRequest(dataset=str(GOLDEN), collection="ragcycle-damaged", overrides=dense)
    )["metrics"]
    assert bad["mrr"] < good["mrr"] - 0.3
    assert bad["answer_similarity"] < good["answer_similarity"]


def test_bad_dataset_lines_are_reported_and_the_rest_evaluated(
    indexed: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "mixed.jsonl"
    good_lines = GOLDEN.read_text().splitlines()[:3]
    bad = [
        "{oops",
        '{"expected_answer": "x"}',
        '{"question": 42}',
        json.dumps({"question": "q" * 3000}),
    ]
    dataset.write_text(
        "\n".join([good_lines[0], bad[0], good_lines[1], bad[1], good_lines[2], *bad[2:]]) + "\n"
    )
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{indexed}"\nprogress = false\n[evaluation]\nmlflow_genai = false\n'
    )
    shown = CliRunner().invoke(app, ["eval", str(dataset), "--json", "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    assert result["questions"] == 3
    assert result["skipped_lines"] == [
        {"line": 2, "reason": "invalid JSON: Expecting property name enclosed in double quotes"},
        {"line": 4, "reason": "missing 'question'"},
        {"line": 6, "reason": "'question' must be a string, not a number"},
        {"line": 7, "reason": "'question' has 3,000 characters, over the limit of 2,000"},
    ]


def test_repeats_give_intervals_over_questions(indexed: Path) -> None:
    result = evaluate(
        EvaluateRequest(
            dataset=str(GOLDEN),
            repeats=2,
            overrides=overrides(indexed, evaluation={"mlflow_genai": False}),
        )
    )
    assert result["questions"] == 17
    client = MlflowClient(tracking_uri=make_settings(indexed).mlflow_tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params["repeats"] == "2"
    assert run.data.metrics["ci/answer/f1/low"] <= run.data.metrics["answer/f1"]


def test_cli_ask_and_eval_json(indexed: Path, tmp_path: Path) -> None:
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{indexed}"\nprogress = false\n[evaluation]\nmlflow_genai = true\n'
    )
    runner = CliRunner()
    asked = runner.invoke(
        app, ["ask", "When was the DMCA signed into law?", "--json", "-c", str(config)]
    )
    assert asked.exit_code == 0, asked.output
    answer = json.loads(asked.stdout, parse_constant=lambda name: pytest.fail(name))
    assert set(answer) == {
        "answer",
        "sources",
        "latency_ms",
        "tokens",
        "generator",
        "guardrails",
        "index_version",
        "query_id",
        "trace_id",
        "cost_usd",
    }
    assert answer["index_version"] == 1 and answer["query_id"] >= 1
    assert answer["guardrails"]["status"] in {"pass", "warning"}
    assert answer["generator"] == {"backend": "extractive", "model": "extractive", "sha256": None}
    assert (
        answer["sources"][0]["source"] == "pdfs/dmca_summary.pdf"
        and answer["sources"][0]["page"] >= 1
    )
    assert "1998" in answer["answer"]
    assert answer["latency_ms"]["total"] >= answer["latency_ms"]["retrieve"] > 0

    from tasks.query_log import QueryLog

    logged = QueryLog(indexed / "query_log.sqlite").recent(1)[0]
    assert logged["question"] == "When was the DMCA signed into law?"
    assert logged["prompt"] == "prompts:/ragcycle-answer/1" and logged["best_score"] > 0.3

    evaluated = runner.invoke(app, ["eval", str(GOLDEN), "--k", "3", "--json", "-c", str(config)])
    assert evaluated.exit_code == 0, evaluated.output
    # the whole of stdout is one strict JSON object (no MLflow banner, no NaN)
    report = json.loads(evaluated.stdout, parse_constant=lambda name: pytest.fail(name))
    assert set(report) == {
        "run_id",
        "experiment",
        "metrics",
        "questions",
        "skipped_lines",
        "failed_rows",
        "judge",
    }
    assert "hit_rate_at_3" in report["metrics"] and report["questions"] == 17
    assert report["judge"] is None  # evaluation.judge.backend is "none" by default


@pytest.mark.slow
def test_evaluation_against_a_real_mlflow_server(indexed: Path, mlflow_server: str) -> None:
    result = evaluate(
        EvaluateRequest(
            dataset=str(GOLDEN),
            # The index's versions live in the data dir's own MLflow; this server knows none.
            collection="ragcycle__v1",
            overrides=overrides(indexed, mlflow={"tracking_uri": mlflow_server}),
        )
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(result["run_id"])
    assert run.data.metrics["retrieval/mrr"] == pytest.approx(result["metrics"]["mrr"])
    assert run.data.params["dataset_digest"]
    assert {"eval_questions.json", "eval_report.json"} <= {
        a.path for a in client.list_artifacts(result["run_id"])
    }
    assert any(p.name == "ragcycle-answer" for p in client.search_prompts())


def test_ask_flow_answers_with_sources(indexed: Path) -> None:
    from flows.ask import AskRequest, ask

    question = "What exception do I raise to return an HTTP error in a path operation?"
    state = ask(AskRequest(question=question, overrides=overrides(indexed)), return_state=True)
    result = state.result()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
    assert flow_run.name == f"ask · {question[:60]}"  # Prefect's templated run name, cut
    assert not result["abstained"]
    assert result["sources"][0]["source"] == "html/fastapi-handling-errors.html"
    unknown = ask(
        AskRequest(question="What is the boiling point of tungsten?", overrides=overrides(indexed))
    )
    assert unknown["abstained"] and unknown["sources"] == []


def test_openai_backend_with_judge_metrics(indexed: Path) -> None:
    from tests.fakes import ChatServer, completion

    def respond(request: dict[str, Any]) -> tuple[int, Any, float]:
        prompt = request["messages"][0]["content"]
        if prompt.startswith("You grade"):
            return (
                200,
                completion(
                    '{"score": 5}' if "compared with the reference" in prompt else "garbage"
                ),
                0.0,
            )
        return 200, completion("It is in the documents [1]."), 0.0

    with ChatServer(responder=respond) as server:
        generation = {
            "backend": "openai",
            "base_url": server.url,
            "model": "fake-llm",
            "api_key": "sk-secret-test",
        }
        evaluation = {
            "judge": {"backend": "openai", "model": "fake-llm", "formulation": "score"},
            "mlflow_genai": False,
            "prices": {"fake-llm": {"prompt": 1.0, "completion": 2.0}},
        }
        result = evaluate(
            EvaluateRequest(
                dataset=str(GOLDEN),
                overrides=overrides(indexed, generation=generation, evaluation=evaluation),
            )
        )
        asked = [r for r in server.requests if not r["messages"][0]["content"].startswith("You")]
    metrics = result["metrics"]
    # The 3 unanswerable questions retrieve nothing over generation.min_score: not asked.
    assert len(asked) == 14
    # A judge that gives every answer 5 ranks right and wrong answers alike: its calibration
    # catches it (every pair a tie), so its correctness is logged but never used.
    calibration = result["judge"]["calibration"]["criteria"]["judge_correctness"]
    assert calibration["pairwise_accuracy"] == 0.5 and calibration["tie_share"] == 1.0
    assert result["unreliable_metrics"] == [
        "judge_faithfulness",
        "judge_correctness",
        "judge_relevance",
    ]
    assert not {"judge_correctness", "judge_faithfulness", "judge_relevance"} & set(metrics)
    # every garbage verdict is counted, never dropped: 17 answers x (faithfulness, relevance)
    assert metrics["judge_faithfulness_parse_failures"] == 17
    assert metrics["judge_parse_failures"] == 34
    # 14 answers at 11 prompt and 7 completion tokens, priced per million tokens
    assert metrics["cost_usd_total"] == pytest.approx(14 * (11 * 1.0 + 7 * 2.0) / 1e6)
    run = MlflowClient(tracking_uri=make_settings(indexed).mlflow_tracking_uri).get_run(
        result["run_id"]
    )
    assert run.data.params["generator_model"] == "fake-llm" and run.data.params["judge"] == "True"
    assert run.data.params["judge_backend"] == "openai"
    assert run.data.params["judge_reliable"] == "False"
    assert run.data.metrics["judge/correctness"] == 1.0  # logged, marked, not decided on
    assert run.data.metrics["judge/correctness_pairwise_accuracy"] == 0.5
    assert run.data.tags["ragcycle.judge.unreliable"].split(",")[1] == "judge_correctness"
    assert "sk-secret-test" not in json.dumps(run.data.params) + json.dumps(run.data.tags)


def test_the_wandb_mirror_writes_under_the_data_dir_unless_given_a_dir(tmp_path: Path) -> None:
    default = make_settings(tmp_path / "data", wandb={"enabled": True})
    assert default.wandb_mirror.dir == (tmp_path / "data").resolve()
    chosen = make_settings(tmp_path / "data", wandb={"enabled": True, "dir": str(tmp_path / "w")})
    assert chosen.wandb_mirror.dir == (tmp_path / "w").resolve()


def test_an_evaluation_is_mirrored_to_wandb_offline(indexed: Path, tmp_path: Path) -> None:
    """The optional W&B mirror, in W&B's offline mode, read back from the run it wrote: the
    same name, config, grouped metrics and per-question table as the MLflow run, which stays
    the record (its id and page are in the W&B summary)."""
    from tasks.tracking.wandb_mirror import mirror_decision
    from tests.wandb_offline import offline_runs

    wandb = {"enabled": True, "mode": "offline", "project": "ragcycle-test", "dir": str(tmp_path)}
    result = evaluate(
        EvaluateRequest(
            dataset=str(GOLDEN),
            overrides=overrides(indexed, wandb=wandb, evaluation={"mlflow_genai": False}),
        )
    )
    client = MlflowClient(tracking_uri=make_settings(indexed).mlflow_tracking_uri)
    recorded = client.get_run(result["run_id"])
    [run] = offline_runs(tmp_path)  # the evaluation's only
    assert (run.name, run.group, run.job_type) == (
        recorded.info.run_name,
        "ragcycle-eval-golden",
        "evaluation",
    )
    assert run.config["k"] == 5 and run.config["generator"] == "extractive"
    assert run.history["retrieval/hit_rate_at_5"] == pytest.approx(
        recorded.data.metrics["retrieval/hit_rate_at_5"]
    )
    assert run.history["ci/answer/f1/low"] == pytest.approx(
        recorded.data.metrics["ci/answer/f1/low"]
    )
    assert run.summary["mlflow_run_id"] == result["run_id"]
    assert run.summary["mlflow_url"].endswith(f"/runs/{result['run_id']}")
    table = run.tables["questions"]
    assert len(table["data"]) == 17 and "question" in table["columns"]
    assert "collection:ragcycle__v1" in run.tags

    # A lifecycle decision mirrors as a run of its own, its gate rows as a table.
    mirror_decision(
        make_settings(indexed, wandb=wandb).wandb_mirror,
        name="reindex · v2 promoted",
        experiment="ragcycle-lifecycle",
        decision="promoted",
        reasons=["mrr +0.1"],
        params={"index": "ragcycle", "sources": ["a", "b"]},
        table=[{"metric": "mrr", "candidate": 0.9, "live": 0.8}],
        mlflow_run_id="r1",
    )
    [decision] = [r for r in offline_runs(tmp_path) if r.job_type == "lifecycle"]
    assert (decision.name, decision.job_type) == ("reindex · v2 promoted", "lifecycle")
    assert decision.summary["decision"] == "promoted" and decision.config["sources"] == '["a", "b"]'
    assert decision.tables["gate"]["data"] == [["mrr", 0.9, 0.8]]


def test_ask_prints_document_text_as_plain_text(tmp_path: Path, embedder: Any) -> None:
    """Regression: `ragcycle ask` printed answers through Rich markup: a document holding
    "[/dim]" crashed the command, and "[link=...]" became a link."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "markup.md").write_text(
        "# Markup\n\nThe escape hatch is [/dim] and the [link=http://example.invalid]portal"
        "[/link] closes at five o'clock every weekday.\n"
    )
    data = tmp_path / "data"
    ingest(IngestRequest(paths=[str(corpus)], overrides={"data_dir": str(data), "progress": False}))
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{data}"\nprogress = false\n')
    asked = CliRunner().invoke(
        app, ["ask", "When does the portal close every weekday?", "-c", str(config)]
    )
    assert asked.exit_code == 0, asked.output
    assert "[/dim]" in asked.stdout
    assert "[link=http://example.invalid]portal[/link]" in asked.stdout
