"""``golden review`` walks a person through production questions into a new golden version."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ragcycle.cli import app
from tasks.query_log import QueryLog


def logged(log: QueryLog, question: str, answer: str, source: str) -> int:
    return log.append(
        {
            "question": question,
            "answer": answer,
            "best_score": 0.6,
            "sources": [{"source": source, "page": 2, "score": 0.6}],
            "guardrails": {"status": "pass"},
        }
    )


def test_review_accepts_edits_and_rejects_into_a_new_version(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{data}"\n')
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text('{"question": "Already golden?", "expected_sources": ["a.md"]}\n')
    log = QueryLog(data / "query_log.sqlite")
    keys = logged(log, "Who holds the release keys?", "Nobody knows.", "release.md")
    log.add_feedback(keys, "down", "wrong", "The release manager holds them.")
    again = logged(log, "Who holds the release keys?", "Nobody knows.", "release.md")
    log.add_feedback(again, "down")
    cors = logged(log, "cors how", "Use middleware.", "cors.md")
    log.add_feedback(cors, "down")
    spam = logged(log, "buy cheap watches", "I can't help.", "tasks.md")
    log.add_feedback(spam, "down")
    known = logged(log, "already golden?", "Yes.", "a.md")
    log.add_feedback(known, "down")

    runner = CliRunner()
    arguments = ["golden", "review", "--dataset", str(dataset), "-c", str(config)]
    # Most asked first, then newest: the keys question (twice), the spam, the CORS question.
    # Accept the first, keeping the user's expected answer and the cited source; reject the
    # spam; edit the CORS question and give its answer and source.
    keystrokes = "a\n\n\nr\ne\nHow do I enable CORS?\nAdd CORSMiddleware.\ncors.md\n"
    result = runner.invoke(app, arguments, input=keystrokes)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "candidate 1 of 3" in output and "asked 2x" in output
    assert "is now version 2: 3 questions (+2)" in output and "1 rejected" in output

    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert rows[1] == {
        "question": "Who holds the release keys?",
        "expected_answer": "The release manager holds them.",
        "expected_sources": ["release.md"],
        "origin": {"query_id": again},
    }
    assert rows[2]["question"] == "How do I enable CORS?"
    assert rows[2]["expected_sources"] == ["cors.md"]
    assert (tmp_path / "golden.v1.jsonl").exists()

    # Reviewed questions (accepted or rejected) and golden ones are not proposed again.
    again = runner.invoke(
        app, ["golden", "candidates", "--dataset", str(dataset), "-c", str(config), "--json"]
    )
    assert again.exit_code == 0 and json.loads(again.stdout) == []
    nothing = runner.invoke(app, arguments, input="")
    assert nothing.exit_code == 0 and "No candidates" in nothing.output
