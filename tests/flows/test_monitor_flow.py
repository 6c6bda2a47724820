from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from flows.evaluate import EvaluateRequest, evaluate
from flows.monitor import MonitorRequest, monitor
from flows.reindex import ReindexRequest, reindex
from tasks.monitoring import corpus_drift, query_drift, run_checks
from tasks.versions import VersionRegistry
from tests.conftest import REPO, make_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = REPO / "samples" / "golden.jsonl"


def test_checks_by_hand() -> None:
    from tasks.indexing.store import DocumentState

    states = {
        "a": DocumentState("a", chunks_by_hash={"h1": {"c1"}}),
        "b": DocumentState("b", chunks_by_hash={"h2": {"c2"}}),
    }
    assert corpus_drift({"a": "h1", "b": "h9", "c": "h3"}, states) == {
        "added": 1,
        "changed": 1,
        "removed": 0,
    }
    assert corpus_drift({"a": "h1"}, states) == {"added": 0, "changed": 0, "removed": 1}
    assert query_drift(
        [{"best_score": 0.1}, {"best_score": 0.5}, {"best_score": 0.2}, {"best_score": None}], 0.3
    ) == {"queries": 3, "low_score_share": 2 / 3}
    ok = run_checks(
        {"mrr": 0.9},
        thresholds={"mrr": 0.5},
        tolerances={"mrr": 0.05},
        baseline={"mrr": 0.92},
        corpus={"added": 0, "changed": 0, "removed": 0},
        queries={"queries": 10, "low_score_share": 0.1},
        query_max_share=0.3,
    )
    assert ok.decision == "ok" and ok.reasons == []
    bad = run_checks(
        {"mrr": 0.8},
        thresholds={"mrr": 0.85},
        tolerances={"mrr": 0.05},
        baseline={"mrr": 0.92},
        corpus={"added": 2, "changed": 0, "removed": 0},
        queries={"queries": 10, "low_score_share": 0.5},
        query_max_share=0.3,
    )
    assert bad.decision == "reindex" and len(bad.reasons) == 4


def test_monitor_detects_new_documents_and_the_reindex_recovers_quality(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    data = tmp_path / "data"
    held_back = tmp_path / "held_back"
    held_back.mkdir()
    shutil.move(str(sample_corpus / "pdfs" / "dmca_summary.pdf"), held_back / "dmca_summary.pdf")
    overrides = {
        "data_dir": str(data),
        "progress": False,
        "evaluation": {"mlflow_genai": False},
        "lifecycle": {"sources": [str(sample_corpus)], "golden_dataset": str(GOLDEN)},
    }
    assert reindex(ReindexRequest(reason="initial", overrides=overrides))["decision"] == "promoted"
    before = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=overrides))["metrics"]

    quiet = monitor(MonitorRequest(overrides=overrides))
    assert quiet["decision"] == "ok", quiet["reasons"]
    assert quiet["triggered"] is None

    # The answers to four golden questions arrive in a new document.
    shutil.move(str(held_back / "dmca_summary.pdf"), sample_corpus / "pdfs" / "dmca_summary.pdf")
    noticed = monitor(MonitorRequest(overrides=overrides))
    assert noticed["decision"] == "reindex"
    assert any("corpus changed" in reason and "1 added" in reason for reason in noticed["reasons"])
    assert noticed["triggered"]["decision"] == "promoted"
    settings = make_settings(data)
    live = VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection).live()
    assert live is not None and live.version == 2

    after = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=overrides))["metrics"]
    assert after["hit_rate_at_5"] > before["hit_rate_at_5"]
    assert after["mrr"] > before["mrr"]
    assert monitor(MonitorRequest(overrides=overrides, act=False))["decision"] == "ok"

    # The monitor's verdict run carries the plot of quality over its runs; the history it
    # plots is the three monitor evaluations, oldest first, across the promotion of v2.
    from mlflow import MlflowClient

    from tasks.tracking.plots import quality_over_time

    client = MlflowClient(settings.mlflow_tracking_uri)
    lifecycle = client.get_experiment_by_name("ragcycle-lifecycle")
    verdict = client.search_runs(
        [lifecycle.experiment_id],
        filter_string="attributes.run_name LIKE 'monitor ·%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    assert [a.path for a in client.list_artifacts(verdict.info.run_id)] == [
        "decision.json",
        "monitor-production-ragcycle.png",
        "monitor-ragcycle.png",
    ]
    # Each of the three monitor runs appended one point to the index's production series.
    production = client.search_runs(
        [lifecycle.experiment_id], filter_string="tags.`ragcycle.kind` = 'production'"
    )
    assert [run.info.run_name for run in production] == ["production · ragcycle"]
    points = client.get_metric_history(production[0].info.run_id, "production/queries")
    assert sorted(point.step for point in points) == [0, 1, 2]
    stamps = [point.timestamp for point in sorted(points, key=lambda point: point.step)]
    assert all(earlier < later for earlier, later in itertools.pairwise(stamps)), stamps
    evaluations = client.get_experiment_by_name("ragcycle-eval-golden")
    history = quality_over_time(client.search_runs([evaluations.experiment_id]))
    assert [quality.version for quality in history] == [1, 1, 2]


def test_negative_feedback_on_one_topic_fails_the_production_check_and_reindexes(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    """Users down-vote answers about one document; the evaluation and corpus are fine, so only
    the production check can notice, and the reindex it asks for runs."""
    from flows.ask import Asker
    from tasks.query_log import QueryLog

    data = tmp_path / "data"
    overrides: dict[str, Any] = {
        "data_dir": str(data),
        "progress": False,
        "evaluation": {"mlflow_genai": False},
        "lifecycle": {
            "sources": [str(sample_corpus)],
            "golden_dataset": str(GOLDEN),
            "production": {"min_queries": 8, "min_rated": 6},
        },
    }
    assert reindex(ReindexRequest(reason="initial", overrides=overrides))["decision"] == "promoted"
    asker = Asker(make_settings(data, lifecycle=overrides["lifecycle"]))
    log = QueryLog(data / "query_log.sqlite")
    unhappy = [
        "How do I run a FastAPI app in the debugger?",
        "How do I debug FastAPI with VS Code?",
        "What does uvicorn.run do when I debug?",
        "How do I set a breakpoint in my FastAPI app?",
        "Why does __name__ == '__main__' matter for debugging?",
    ]
    happy = [
        "How many titles is the DMCA divided into?",
        "What are background tasks in FastAPI?",
        "How do I allow CORS origins in FastAPI?",
    ]
    for question in unhappy:
        answer = asker.ask(question)
        assert answer.sources[0]["source"] == "markdown/fastapi-debugging.md"
        log.add_feedback(answer.query_id or 0, "down", "did not help")
    for question in happy:
        log.add_feedback(asker.ask(question).query_id or 0, "up")

    noticed = monitor(MonitorRequest(overrides=overrides))
    assert noticed["decision"] == "reindex"
    assert len(noticed["reasons"]) == 1, noticed["reasons"]
    reason = noticed["reasons"][0]
    assert reason.startswith("negative feedback on 62% of 8 rated answers over the last 24 h")
    assert "markdown/fastapi-debugging.md (5)" in reason
    production = noticed["production"]
    assert production["queries"] == 8 and production["negative_feedback_rate"] == 5 / 8
    from mlflow import MlflowClient

    triggered = noticed["triggered"]
    # It ran, and found nothing configured that differs from what serves: no candidate to build.
    assert triggered is not None and triggered["decision"] == "noop"
    run = MlflowClient(make_settings(data).mlflow_tracking_uri).get_run(triggered["run_id"])
    assert run.data.params["reason"].startswith("monitor: negative feedback on 62%")
