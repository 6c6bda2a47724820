"""Golden datasets: the questions an index is measured on, with what a right answer cites.

A golden set is JSONL, one question a line: ``question``, ``expected_answer`` (null when the
corpus cannot answer it), ``expected_sources`` (file names or ids) and ``pages``. Bad lines are
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


def load_golden(path: Path) -> GoldenSet:
    """Read a JSONL golden set; bad lines are reported with their number, the rest is kept."""
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
            items.append(_parse_item(number, json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append({"line": number, "error": f"invalid JSON: {exc.msg}"})
        except ValueError as exc:
            errors.append({"line": number, "error": str(exc)})
    if not items:
        raise DatasetError(f"dataset {path} has no usable question ({len(errors)} bad lines)")
    return GoldenSet(path, items, errors, hashlib.sha256(raw).hexdigest()[:16])


def _parse_item(number: int, data: Any) -> GoldenItem:
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON object")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("missing or empty 'question'")
    answer = data.get("expected_answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError("'expected_answer' must be a string or null")
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
    )


def matches_source(doc_id: str, expected: str) -> bool:
    """A golden source names a document by its id (path under the ingest root) or file name."""
    return doc_id == expected or doc_id.endswith("/" + expected)


@task(name="load-golden-set", cache_policy=NO_CACHE)
def load_golden_task(path: str) -> GoldenSet:
    """Prefect edge of :func:`load_golden`."""
    return load_golden(Path(path))
