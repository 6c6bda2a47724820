"""The query log: every answered question, kept for the monitor and as the audit trail.

The monitor reads it for query drift; a person reads it to find out what the system said, from
what, and when. A SQLite file under the data dir, written by whoever answers (CLI, flows) and
opened per call, so several processes append to it safely.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

__all__ = ["QueryLog", "golden_candidates", "question_key"]


class QueryLog:
    """Every answered question, appended to a SQLite file the monitor reads for query drift."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS queries (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
                " collection TEXT, question TEXT NOT NULL, chunk_ids TEXT, scores TEXT,"
                " best_score REAL, answer TEXT, abstained INTEGER, latency_ms TEXT,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, generator TEXT, prompt TEXT)"
            )
            # Columns added after the first release: logs written before them stay readable.
            have = {row[1] for row in db.execute("PRAGMA table_info(queries)")}
            for column in (
                "index_version INTEGER",
                "sources TEXT",
                "guardrails TEXT",
                "trace_id TEXT",
                "session_id TEXT",
                "cost_usd REAL",
            ):
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE queries ADD COLUMN {column}")
            db.execute(
                "CREATE TABLE IF NOT EXISTS reviews (question_key TEXT PRIMARY KEY,"
                " decision TEXT NOT NULL, at REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
                " query_id INTEGER NOT NULL REFERENCES queries(id), rating TEXT NOT NULL,"
                " comment TEXT, expected_answer TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def append(self, record: dict[str, Any]) -> int:
        """Log one answered question; returns its query id."""
        row = (
            time.time(),
            record.get("collection"),
            record["question"],
            json.dumps(record.get("chunk_ids", [])),
            json.dumps(record.get("scores", [])),
            record.get("best_score"),
            record.get("answer"),
            int(bool(record.get("abstained"))),
            json.dumps(record.get("latency_ms", {})),
            record.get("prompt_tokens", 0),
            record.get("completion_tokens", 0),
            record.get("generator"),
            record.get("prompt"),
            record.get("index_version"),
            json.dumps(record.get("sources", [])),
            json.dumps(record.get("guardrails", {})),
            record.get("trace_id"),
            record.get("session_id"),
            record.get("cost_usd"),
        )
        with self._connect() as db:
            cursor = db.execute(
                "INSERT INTO queries (at, collection, question, chunk_ids, scores, best_score,"
                " answer, abstained, latency_ms, prompt_tokens, completion_tokens, generator,"
                " prompt, index_version, sources, guardrails, trace_id, session_id, cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            return int(cursor.lastrowid or 0)

    def get(self, query_id: int) -> dict[str, Any] | None:
        """One logged answer with its feedback: the audit record of ``query_id``."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM queries WHERE id = ?", (query_id,)).fetchone()
            if row is None:
                return None
            notes = db.execute(
                "SELECT at, rating, comment, expected_answer FROM feedback WHERE query_id = ?"
                " ORDER BY id",
                (query_id,),
            ).fetchall()
        record = _decoded(dict(row))
        record["feedback"] = [dict(note) for note in notes]
        return record

    def add_feedback(
        self,
        query_id: int,
        rating: str,
        comment: str | None = None,
        expected_answer: str | None = None,
    ) -> dict[str, Any] | None:
        """Record a user's verdict on an answer; returns the answer's trace and session ids, or
        None when no such query was logged."""
        with self._connect() as db:
            found = db.execute(
                "SELECT trace_id, session_id FROM queries WHERE id = ?", (query_id,)
            ).fetchone()
            if found is None:
                return None
            db.execute(
                "INSERT INTO feedback (at, query_id, rating, comment, expected_answer)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time(), query_id, rating, comment, expected_answer),
            )
        return {"trace_id": found[0], "session_id": found[1]}

    def add_review(self, question: str, decision: str) -> None:
        """Remember a person's decision on a candidate question (accepted or rejected), so the
        review never proposes it again."""
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO reviews (question_key, decision, at) VALUES (?, ?, ?)",
                (question_key(question), decision, time.time()),
            )

    def reviewed(self) -> set[str]:
        """Keys of every question a person already decided on."""
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT question_key FROM reviews")}

    def ratings(self) -> dict[int, list[str]]:
        """Every rating given, by query id."""
        with self._connect() as db:
            rows = db.execute("SELECT query_id, rating FROM feedback ORDER BY id").fetchall()
        found: dict[int, list[str]] = {}
        for query_id, rating in rows:
            found.setdefault(int(query_id), []).append(str(rating))
        return found

    def recent(self, limit: int = 1000, since: float | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` queries (newest first), optionally only those after ``since``."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM queries WHERE at >= ? ORDER BY id DESC LIMIT ?",
                (since or 0.0, limit),
            ).fetchall()
        return [_decoded(dict(row)) for row in rows]


def _decoded(record: dict[str, Any]) -> dict[str, Any]:
    for key in ("chunk_ids", "scores", "latency_ms", "sources", "guardrails"):
        record[key] = json.loads(record.get(key) or "null")
    return record


def question_key(question: str) -> str:
    """One question however it was typed: case and spacing aside."""
    return " ".join(question.lower().split())


def golden_candidates(
    records: list[dict[str, Any]],
    feedback: dict[int, list[str]],
    *,
    min_score: float,
    limit: int = 50,
    skip: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Questions users asked that the golden set should probably hold: answers rated down,
    answers the guardrails warned about or withheld, and questions whose best retrieval score
    is under ``min_score``. Repeats of one question (case and spacing aside) are merged, most
    frequent first, each with why it is here and its latest ``query_id`` to review. Questions
    whose :func:`question_key` is in ``skip`` (reviewed already, or golden already) are left out."""
    grouped: dict[str, dict[str, Any]] = {}
    for record in records:
        reasons = []
        if "down" in feedback.get(int(record["id"]), []):
            reasons.append("negative feedback")
        status = (record.get("guardrails") or {}).get("status", "pass")
        if status != "pass":
            reasons.append(f"guardrails {status}")
        if record.get("best_score") is not None and float(record["best_score"]) < min_score:
            reasons.append("low retrieval score")
        if not reasons:
            continue
        key = question_key(str(record["question"]))
        if skip and key in skip:
            continue
        entry = grouped.setdefault(
            key,
            {
                "question": record["question"],
                "count": 0,
                "reasons": [],
                "query_id": record["id"],
                "query_ids": [],
            },
        )
        entry["count"] += 1
        entry["query_ids"].append(int(record["id"]))
        entry["query_id"] = max(int(entry["query_id"]), int(record["id"]))
        entry["reasons"] = sorted(set(entry["reasons"]) | set(reasons))
    ranked = sorted(grouped.values(), key=lambda e: (-e["count"], -e["query_id"]))
    return ranked[:limit]
