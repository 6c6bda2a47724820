from __future__ import annotations

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
