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

__all__ = ["QueryLog"]


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

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def append(self, record: dict[str, Any]) -> None:
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
        )
        with self._connect() as db:
            db.execute(
                "INSERT INTO queries (at, collection, question, chunk_ids, scores, best_score,"
                " answer, abstained, latency_ms, prompt_tokens, completion_tokens, generator,"
                " prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def recent(self, limit: int = 1000, since: float | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` queries (newest first), optionally only those after ``since``."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM queries WHERE at >= ? ORDER BY id DESC LIMIT ?",
                (since or 0.0, limit),
            ).fetchall()
        records = []
        for row in rows:
            record = dict(row)
            for key in ("chunk_ids", "scores", "latency_ms"):
                record[key] = json.loads(record[key] or "null")
            records.append(record)
        return records
