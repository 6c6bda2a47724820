"""Growing the golden set from production, one reviewed question at a time.

A person accepts (or edits, or rejects) questions users asked; accepted ones become a new
version of the golden file. The file keeps its path, so settings, experiments and the gate go
on pointing at it; each earlier version is archived next to it (``golden.v1.jsonl``) and a
manifest (``golden.versions.json``) lists every version with its digest, the same digest every
evaluation run records, so any run can be traced back to the exact questions it was measured on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcycle.errors import DatasetError

__all__ = ["GoldenVersion", "Reviewed", "dataset_version", "publish_version", "versions_of"]


@dataclass(frozen=True)
class Reviewed:
    """A production question a person accepted into the golden set, as they left it."""

    question: str
    expected_answer: str | None
    expected_sources: list[str] = field(default_factory=list)
    query_id: int | None = None  # the logged answer it came from

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "question": self.question,
            "expected_answer": self.expected_answer,
            "expected_sources": self.expected_sources,
        }
        if self.query_id is not None:
            row["origin"] = {"query_id": self.query_id}
        return row


@dataclass(frozen=True)
class GoldenVersion:
    """One version of a golden file, as the manifest records it."""

    version: int
    digest: str
    rows: int
    added: int
    at: float
    archive: str | None  # the file this version lives in once superseded


def _digest(raw: bytes) -> str:
    # The digest load_golden reports and every evaluation run records.
    return hashlib.sha256(raw).hexdigest()[:16]


def _manifest_path(dataset: Path) -> Path:
    return dataset.with_name(f"{dataset.stem}.versions.json")


def versions_of(dataset: Path) -> list[GoldenVersion]:
    """Every recorded version of ``dataset``; a file never published through here is v1."""
    manifest = _manifest_path(dataset)
    if manifest.exists():
        try:
            entries = json.loads(manifest.read_text())
            return [GoldenVersion(**entry) for entry in entries]
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"unreadable golden-set manifest {manifest}: {exc}") from None
    if not dataset.exists():
        return []
    raw = dataset.read_bytes()
    rows = sum(1 for line in raw.splitlines() if line.strip())
    return [GoldenVersion(1, _digest(raw), rows, rows, dataset.stat().st_mtime, None)]


def dataset_version(dataset: Path, digest: str) -> int | None:
    """The version number of ``dataset`` whose digest is ``digest``, if it was recorded."""
    for entry in versions_of(dataset):
        if entry.digest == digest:
            return entry.version
    return None


def publish_version(dataset: Path, accepted: Sequence[Reviewed]) -> GoldenVersion:
    """Append ``accepted`` to ``dataset`` as its next version, archiving the current one.

    The new file is written beside the old one and renamed over it, so a reader never sees
    half a dataset, and a crash leaves the previous version in place.
    """
    if not accepted:
        raise DatasetError("nothing accepted: the golden set is unchanged")
    history = versions_of(dataset)
    current = dataset.read_bytes() if dataset.exists() else b""
    if history:
        latest = history[-1]
        archive = dataset.with_name(f"{dataset.stem}.v{latest.version}{dataset.suffix}")
        if not archive.exists():
            archive.write_bytes(current)
        history[-1] = GoldenVersion(**{**latest.__dict__, "archive": archive.name})
    if current and not current.endswith(b"\n"):
        current += b"\n"
    lines = "".join(json.dumps(item.row(), ensure_ascii=False) + "\n" for item in accepted)
    raw = current + lines.encode()
    _replace(dataset, raw)
    rows = sum(1 for line in raw.splitlines() if line.strip())
    published = GoldenVersion(
        version=(history[-1].version + 1) if history else 1,
        digest=_digest(raw),
        rows=rows,
        added=len(accepted),
        at=time.time(),
        archive=None,
    )
    manifest = [entry.__dict__ for entry in [*history, published]]
    _replace(_manifest_path(dataset), (json.dumps(manifest, indent=2) + "\n").encode())
    return published


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
