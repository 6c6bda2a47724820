"""The query log as audit trail and as the source of golden-set candidates."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ragcycle.cli import app
from tasks.query_log import QueryLog, golden_candidates


def log_answer(log: QueryLog, question: str, best: float, status: str = "pass") -> int:
    return log.append(
        {
            "question": question,
            "best_score": best,
            "answer": "an answer",
            "sources": [{"source": "a.md", "page": None, "score": best}],
            "guardrails": {"status": status, "reasons": []},
            "index_version": 3,
        }
    )


def test_the_audit_record_has_the_answer_as_served_and_its_feedback(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / "q.sqlite")
    query_id = log_answer(log, "Where is the key?", 0.7, status="warning")
    assert log.add_feedback(query_id, "down", "wrong place", "In the drawer.") == {
        "trace_id": None,
        "session_id": None,
    }
    assert log.add_feedback(query_id + 1, "up") is None
    record = log.get(query_id)
    assert record is not None and record["index_version"] == 3
    assert record["guardrails"]["status"] == "warning"
    assert record["feedback"][0]["expected_answer"] == "In the drawer."
    assert log.get(query_id + 1) is None


def test_candidates_are_the_troubled_questions_merged_most_frequent_first(
    tmp_path: Path,
) -> None:
    log = QueryLog(tmp_path / "q.sqlite")
    fine = log_answer(log, "How do I start?", 0.9)
    first = log_answer(log, "Where is the key?", 0.9)
    log_answer(log, "where is  the KEY?", 0.9, status="warning")
    log_answer(log, "What is the boiling point of tungsten?", 0.1)
    log.add_feedback(first, "down")
    log.add_feedback(fine, "up")
    found = golden_candidates(log.recent(), log.ratings(), min_score=0.3)
    assert [(e["question"], e["count"]) for e in found] == [
        ("where is  the KEY?", 2),
        ("What is the boiling point of tungsten?", 1),
    ]
    assert found[0]["reasons"] == ["guardrails warning", "negative feedback"]
    assert found[1]["reasons"] == ["low retrieval score"]

    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n')
    (tmp_path / "q.sqlite").rename(tmp_path / "query_log.sqlite")
    shown = CliRunner().invoke(app, ["golden", "candidates", "--json", "-c", str(config)])
    assert shown.exit_code == 0, shown.output
    assert [e["count"] for e in json.loads(shown.stdout)] == [2, 1]
