"""Corpus drift is measured, never made up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tasks.indexing.store import DocumentState
from tasks.loading import UNREADABLE, SourceFile, hash_sources
from tasks.monitoring import baseline_metrics, corpus_drift, unindexed_of, unindexed_tag
from tasks.versions import corpus_snapshot


def indexed(**hashes: str) -> dict[str, DocumentState]:
    return {
        doc_id: DocumentState(doc_id, chunks_by_hash={digest: {f"{doc_id}-0"}})
        for doc_id, digest in hashes.items()
    }


def test_no_measured_change_reports_no_drift() -> None:
    """Regression: a snapshot that differed with nothing measured changed reported a made-up
    ``changed: 1`` (the monitor then asked for a reindex that nothing justified)."""
    current = {"a.md": "h1", "scan.pdf": "hs"}
    drift = corpus_drift(
        current, indexed(**{"a.md": "h1"}), built_snapshot="older", unindexed={"scan.pdf": ""}
    )
    assert drift == {"added": 0, "changed": 0, "removed": 0}


def test_an_unindexed_file_that_changed_counts_as_changed() -> None:
    current = {"a.md": "h1", "scan.pdf": "fixed"}
    drift = corpus_drift(
        current,
        indexed(**{"a.md": "h1"}),
        built_snapshot=corpus_snapshot({"a.md": "h1", "scan.pdf": "broken"}),
        unindexed={"scan.pdf": "broken"},
    )
    assert drift == {"added": 0, "changed": 1, "removed": 0}


def test_a_file_that_turns_unreadable_changes_the_snapshot(tmp_path: Path) -> None:
    """Regression: ``hash_sources`` dropped unreadable files, so they never counted as drift."""
    present = tmp_path / "a.md"
    present.write_text("text")
    sources = [
        SourceFile(present, tmp_path, "a.md"),
        SourceFile(tmp_path / "gone.md", tmp_path, "gone.md"),
    ]
    hashes = hash_sources(sources)
    assert hashes["gone.md"] == UNREADABLE and len(hashes["a.md"]) == 64
    drift = corpus_drift(hashes, indexed(**{"a.md": hashes["a.md"], "gone.md": "h2"}))
    assert drift == {"added": 0, "changed": 1, "removed": 0}


def test_the_unindexed_tag_round_trips_and_reads_older_lists() -> None:
    tag = unindexed_tag(["b.pdf", "a.pdf"], {"a.pdf": "ha", "b.pdf": "hb"})
    assert unindexed_of(tag) == {"a.pdf": "ha", "b.pdf": "hb"}
    assert unindexed_of('["old.pdf"]') == {"old.pdf": ""}
    long = unindexed_tag([f"file-{n:04d}.pdf" for n in range(500)], {}, limit=200)
    assert len(long) <= 200 and unindexed_of(long)  # truncated to valid JSON, never cut mid-way


def test_baseline_takes_only_comparable_runs_of_the_live_version(tmp_path: Path) -> None:
    """Regression: the baseline median mixed evaluations of other collections, rejected
    candidates and failed runs into the live version's history."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    evals = client.create_experiment("eval", artifact_location=(tmp_path / "a").as_uri())
    life = client.create_experiment("life", artifact_location=(tmp_path / "b").as_uri())

    def run(experiment: str, mrr: float, version: int, role: str, **extra: str) -> str:
        tags = {
            "ragcycle.kind": "evaluation",
            "ragcycle.dataset_digest": extra.pop("digest", "gold"),
            "ragcycle.index_version": str(version),
            "ragcycle.role": role,
        }
        created = client.create_run(experiment, tags=tags)
        client.log_metric(created.info.run_id, "mrr", mrr)
        client.set_terminated(created.info.run_id, extra.pop("status", "FINISHED"))
        return str(created.info.run_id)

    mlflow.set_tracking_uri(uri)
    run(evals, 0.80, 3, "monitor")
    run(life, 0.90, 3, "candidate configured")  # the run that promoted v3
    run(life, 0.70, 2, "champion")  # the version before, as champion
    run(life, 0.10, 4, "candidate small")  # a rejected challenger: a later number
    run(life, 0.15, 1, "candidate k1")  # a rejected challenger of an earlier reindex
    run(evals, 0.05, 3, "monitor", digest="other")  # another golden set
    run(evals, 0.01, 3, "monitor", status="FAILED")
    current = run(evals, 0.02, 3, "monitor")  # the evaluation being checked
    baseline = baseline_metrics(
        uri, ["eval", "life"], ["mrr"], 5, exclude_run=current, version=3, digest="gold"
    )
    assert baseline == {"mrr": 0.80}  # median of 0.80, 0.90 and 0.70


def production_record(
    qid: int, status: str = "pass", total_ms: float = 100.0, source: str = "a.md"
) -> dict[str, Any]:
    return {
        "id": qid,
        "question": f"q{qid}",
        "guardrails": {"status": status},
        "latency_ms": {"total": total_ms},
        "abstained": False,
        "prompt_tokens": 90,
        "completion_tokens": 10,
        "cost_usd": 0.001,
        "sources": [{"source": source, "page": None, "score": 0.8}],
    }


def test_production_figures_and_checks() -> None:
    from ragcycle.settings import ProductionLimits
    from tasks.monitoring import check_production, production_figures

    records = [production_record(i, source="a.md") for i in range(1, 7)]
    records += [production_record(7, "fail"), production_record(8, "warning", total_ms=5000)]
    records += [production_record(i, source="b.md") for i in range(9, 11)]
    # 1-4 rated down (one changed its mind to up), 9-10 rated up: 3 of 6 rated are down.
    ratings = {1: ["down"], 2: ["down"], 3: ["down"], 4: ["down", "up"], 9: ["up"], 10: ["up"]}
    figures = production_figures(records, ratings, window_hours=12)
    assert (figures.queries, figures.rated) == (10, 6)
    assert figures.negative_feedback_rate == 0.5
    assert figures.guardrail_fail_rate == 0.1 and figures.guardrail_warning_rate == 0.1
    assert figures.tokens_per_day == 10 * 100 * 2  # 12 h window, so twice per day
    assert figures.cost_per_day_usd == pytest.approx(0.02)
    assert figures.down_voted_sources == [["a.md", 3]]
    assert 100 < figures.latency_p95_ms <= 5000

    limits = ProductionLimits(min_queries=10, min_rated=5, max_guardrail_fail_rate=0.2)
    reasons, table = check_production(figures, limits)
    assert len(reasons) == 1 and reasons[0].startswith("negative feedback on 50% of 6 rated")
    assert "most down-voted sources: a.md (3)" in reasons[0]
    verdicts = {row["metric"]: row["verdict"] for row in table}
    assert verdicts["production/guardrail_fail_rate"] == "ok"
    assert verdicts["production/tokens_per_day"] == "not checked"  # no limit by default

    too_few = check_production(figures, ProductionLimits(min_queries=11, min_rated=7))
    assert too_few[0] == []


def test_question_shift_tells_a_moved_distribution_from_a_resample() -> None:
    from tasks.monitoring import question_shift

    rng = np.random.default_rng(3)
    topic = rng.normal(size=16)
    golden = topic + 0.3 * rng.normal(size=(30, 16))
    same = topic + 0.3 * rng.normal(size=(30, 16))
    other = rng.normal(size=16)
    other -= (other @ topic) / (topic @ topic) * topic  # a topic orthogonal to the golden one
    other *= np.linalg.norm(topic) / np.linalg.norm(other)
    elsewhere = other + 0.3 * rng.normal(size=(30, 16))
    steady = question_shift(same, golden)
    moved = question_shift(elsewhere, golden)
    assert steady["p_value"] > 0.05 and steady["uncovered_share"] == 0.0
    assert moved["p_value"] < 0.01 and moved["uncovered_share"] == 1.0
    assert moved["mmd2"] > steady["mmd2"]


def test_production_series_append_one_point_per_monitor_run(tmp_path: Path) -> None:
    """Points land on one run per index, in order, with their times; a figure not measured
    (NaN) is a gap, not a zero; the plot draws what was appended."""
    import math

    from tasks.tracking.plots import plot_production_over_time
    from tasks.tracking.series import append_production, production_series

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = {"queries": 40.0, "guardrail_fail_rate": 0.05, "latency_p95_ms": math.nan}
    second = {"queries": 55.0, "guardrail_fail_rate": 0.20, "latency_p95_ms": 7400.0}
    run = append_production(uri, None, "ragcycle-lifecycle", "docs", first, 1_800_000_000.0)
    again = append_production(uri, None, "ragcycle-lifecycle", "docs", second, 1_800_003_600.0)
    other = append_production(uri, None, "ragcycle-lifecycle", "faq", first, 1_800_000_000.0)
    assert again == run and other != run

    series = production_series(uri, run, ["queries", "guardrail_fail_rate", "latency_p95_ms"])
    assert [value for _, value in series["guardrail_fail_rate"]] == [0.05, 0.20]
    assert [when.timestamp() for when, _ in series["queries"]] == [1_800_000_000.0, 1_800_003_600.0]
    assert [value for _, value in series["latency_p95_ms"]] == [7400.0]

    drawn = plot_production_over_time(uri, run, "docs", tmp_path / "production.png")
    assert drawn is not None and drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
