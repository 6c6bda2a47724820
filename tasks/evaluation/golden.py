"""Golden datasets: the questions an index is measured on, with what a right answer cites.

A golden set is JSONL, one question a line: ``question``, ``expected_answer`` (null when the
corpus cannot answer it), ``answer_key`` (optional: a short string, or a list of alternatives,
that any correct answer contains; scored without a judge), ``expected_sources`` (file names or
ids) and ``pages``. Bad lines are
reported with their number and skipped; the digest changes whenever the file does, so runs on
different versions of a set are never compared as if they were the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import DatasetError

__all__ = ["GoldenItem", "GoldenSet", "load_golden", "load_golden_task", "matches_source"]


@dataclass(frozen=True)
class GoldenItem:
    """One golden question; no answer and no sources means "not answerable from the corpus"."""

    line: int
    question: str
    expected_answer: str | None
    expected_sources: tuple[str, ...]
    pages: Mapping[str, tuple[int, ...]]
    answer_key: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return self.expected_answer is not None or bool(self.expected_sources)


@dataclass
class GoldenSet:
    """A loaded dataset: usable items, rejected lines, and a digest that changes with the file."""

    path: Path
    items: list[GoldenItem]
    errors: list[dict[str, Any]] = field(default_factory=list)
    digest: str = ""

    @property
    def name(self) -> str:
        return self.path.stem


# A golden question is something a user types; an answer a paragraph or two. Far longer lines
# are mistakes (a document pasted in), and evaluating them costs gigabytes for nothing.
MAX_QUESTION_CHARS = 2_000
MAX_ANSWER_CHARS = 20_000


def load_golden(
    path: Path,
    *,
    max_question_chars: int = MAX_QUESTION_CHARS,
    max_answer_chars: int = MAX_ANSWER_CHARS,
) -> GoldenSet:
    """Read a JSONL golden set; bad lines are reported with their number and reason (wrong type,
    missing, too long), the rest is kept."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    items: list[GoldenItem] = []
    errors: list[dict[str, Any]] = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(
                _parse_item(number, json.loads(line), max_question_chars, max_answer_chars)
            )
        except json.JSONDecodeError as exc:
            errors.append({"line": number, "error": f"invalid JSON: {exc.msg}"})
        except ValueError as exc:
            errors.append({"line": number, "error": str(exc)})
    if not items:
        raise DatasetError(f"dataset {path} has no usable question ({len(errors)} bad lines)")
    return GoldenSet(path, items, errors, hashlib.sha256(raw).hexdigest()[:16])


def _parse_item(
    number: int, data: Any, max_question_chars: int, max_answer_chars: int
) -> GoldenItem:
    if not isinstance(data, dict):
        raise ValueError(f"a line must be a JSON object, not {_json_type(data)}")
    if "question" not in data:
        raise ValueError("missing 'question'")
    question = data["question"]
    if not isinstance(question, str):
        raise ValueError(f"'question' must be a string, not {_json_type(question)}")
    if not question.strip():
        raise ValueError("empty 'question'")
    if len(question) > max_question_chars:
        raise ValueError(
            f"'question' has {len(question):,} characters, over the limit of {max_question_chars:,}"
        )
    answer = data.get("expected_answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"'expected_answer' must be a string or null, not {_json_type(answer)}")
    if answer is not None and len(answer) > max_answer_chars:
        raise ValueError(
            f"'expected_answer' has {len(answer):,} characters,"
            f" over the limit of {max_answer_chars:,}"
        )
    sources = data.get("expected_sources") or []
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ValueError("'expected_sources' must be a list of strings")
    pages = data.get("pages") or {}
    if not isinstance(pages, dict) or not all(
        isinstance(v, list) and all(isinstance(p, int) for p in v) for v in pages.values()
    ):
        raise ValueError("'pages' must map a source to a list of page numbers")
    return GoldenItem(
        number,
        question.strip(),
        answer,
        tuple(sources),
        {key: tuple(value) for key, value in pages.items()},
        _answer_key(data.get("answer_key"), answer),
    )


def _answer_key(value: Any, answer: str | None) -> tuple[str, ...]:
    """The alternatives of an ``answer_key``: a string or a list of non-empty strings."""
    if value is None:
        return ()
    keys = [value] if isinstance(value, str) else value
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError("'answer_key' must be a string or a non-empty list of strings")
    if not all(k.strip() for k in keys):
        raise ValueError("'answer_key' has an empty string")
    if answer is None:
        raise ValueError("'answer_key' given for a question with no 'expected_answer'")
    return tuple(k.strip() for k in keys)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, as the person who wrote the line sees it."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    names |= {list: "an array", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def matches_source(doc_id: str, expected: str) -> bool:
    """A golden source names a document by its id (path under the ingest root) or file name."""
    return doc_id == expected or doc_id.endswith("/" + expected)


@task(name="load-golden-set", cache_policy=NO_CACHE)
def load_golden_task(path: str) -> GoldenSet:
    """Prefect edge of :func:`load_golden`."""
    return load_golden(Path(path))
