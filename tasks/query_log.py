"""The query log: every answered question, kept for the monitor and as the audit trail.

The monitor reads it for query drift; a person reads it to find out what the system said, from
what, and when. A SQLite file under the data dir, written by whoever answers (CLI, flows) and
opened per call, so several processes append to it safely.
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["QueryLog", "QueryLogWriter", "golden_candidates", "new_query_id", "question_key"]


def new_query_id() -> int:
    """A query id made up where the answer is given, before anything is written: the log can
    then be written behind the answer, and several processes share one log without asking it
    for numbers. Random 52 bits: unique in practice, and exact in JavaScript clients."""
    return secrets.randbits(52) + 1


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
        """Log one answered question; returns its query id (``record["query_id"]`` if given)."""
        query_id = int(record.get("query_id") or new_query_id())
        row = (
            query_id,
            float(record.get("at") or time.time()),
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
            db.execute(
                "INSERT INTO queries (id, at, collection, question, chunk_ids, scores, best_score,"
                " answer, abstained, latency_ms, prompt_tokens, completion_tokens, generator,"
                " prompt, index_version, sources, guardrails, trace_id, session_id, cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return query_id

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
                "SELECT * FROM queries WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?",
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
                "at": record["at"],
            },
        )
        entry["count"] += 1
        entry["query_ids"].append(int(record["id"]))
        if float(record["at"]) > float(entry["at"]):
            entry["query_id"], entry["at"] = record["id"], record["at"]
        entry["reasons"] = sorted(set(entry["reasons"]) | set(reasons))
    ranked = sorted(grouped.values(), key=lambda e: (-e["count"], -float(e["at"])))
    return [{k: v for k, v in entry.items() if k != "at"} for entry in ranked[:limit]]


logger = logging.getLogger(__name__)


class QueryLogWriter:
    """Appends to the query log on a background thread, so a locked or slow log file delays the
    log, never an answer. Writes are retried until they land; beyond ``max_pending`` waiting
    records the oldest is dropped and counted (``/status`` shows the figures)."""

    def __init__(self, log: QueryLog, max_pending: int = 10_000, retry_seconds: float = 1.0):
        self.log = log
        self._records: collections.deque[dict[str, Any]] = collections.deque()
        self._pending: set[int] = set()
        self._max_pending = max_pending
        self._retry_seconds = retry_seconds
        self._changed = threading.Condition()
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> int:
        """Queue one answered question with its time; returns its query id at once."""
        query_id = int(record.get("query_id") or new_query_id())
        with self._changed:
            if len(self._records) >= self._max_pending:
                lost = self._records.popleft()
                self._pending.discard(int(lost["query_id"]))
                self.dropped += 1
                logger.error("query log backlog full: dropped query %s", lost["query_id"])
            self._records.append({**record, "query_id": query_id, "at": time.time()})
            self._pending.add(query_id)
            self._changed.notify_all()
        return query_id

    def wait_for(self, query_id: int, timeout: float) -> None:
        """Until ``query_id`` is written (or ``timeout`` passes): feedback may follow fast."""
        with self._changed:
            self._changed.wait_for(lambda: query_id not in self._pending, timeout)

    def stats(self) -> dict[str, int]:
        with self._changed:
            pending = len(self._records)
        return {
            "pending": pending,
            "written": self.written,
            "dropped": self.dropped,
            "failures": self.failures,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds), then stop."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._records or self._stopping)
                if not self._records:
                    return
                record = self._records[0]
            try:
                self.log.append(record)
            except sqlite3.Error as exc:
                self.failures += 1
                logger.warning("query log write failed, retrying: %s", exc)
                time.sleep(self._retry_seconds)
                continue
            with self._changed:
                if self._records and self._records[0] is record:
                    self._records.popleft()
                self._pending.discard(int(record["query_id"]))
                self.written += 1
                self._changed.notify_all()
