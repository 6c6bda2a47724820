"""The ingest plan: which files are new, changed, unchanged or gone, cut into partitions.

Decided from file hashes against the index's own records, so a half-written earlier run is
simply redone; partitions carry their files' records from before the run, so processing one
twice is the same as once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.indexing.store import DocumentState
from tasks.loading import Document, LoadFailure, SourceFile, file_content_hash

__all__ = [
    "IngestPlan",
    "Partition",
    "PartitionResult",
    "partition_plan",
    "plan_ingest",
    "plan_ingest_task",
    "stale_documents",
]


@dataclass
class IngestPlan:
    """What an ingest run must do, decided from file hashes against the index's own records."""

    new: list[SourceFile] = field(default_factory=list)
    changed: list[SourceFile] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unreadable: list[LoadFailure] = field(default_factory=list)

    @property
    def to_load(self) -> list[SourceFile]:
        return [*self.new, *self.changed]


def plan_ingest(
    sources: Sequence[SourceFile],
    states: Mapping[str, DocumentState],
    chunking_hash: str,
    prune_roots: Iterable[str] = (),
) -> IngestPlan:
    """Sort sources into new / changed / unchanged, and find indexed documents to remove.

    A document counts as unchanged only when its one indexed version has these bytes, this
    chunking and all its chunks; anything else (including a half-written earlier run) is redone.
    Only documents under ``prune_roots`` (directories ingested whole) can be removed, and a file
    that still exists but fails to load keeps its chunks.
    """
    plan = IngestPlan()
    seen: set[str] = set()
    for source in sources:
        seen.add(source.doc_id)
        try:
            content_hash = file_content_hash(source.path.read_bytes())
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            plan.unreadable.append(LoadFailure(str(source.path), source.doc_id, reason))
            continue
        state = states.get(source.doc_id)
        if state is None or not state.chunks_by_hash:
            plan.new.append(source)
        elif state.is_current(content_hash, chunking_hash):
            plan.unchanged.append(source.doc_id)
        else:
            plan.changed.append(source)
    roots = set(prune_roots)
    plan.removed = sorted(
        doc_id for doc_id, state in states.items() if doc_id not in seen and state.root in roots
    )
    return plan


@task(name="plan-ingest", cache_policy=NO_CACHE)
def plan_ingest_task(
    sources: list[SourceFile],
    states: dict[str, DocumentState],
    chunking_hash: str,
    prune_roots: list[str],
) -> IngestPlan:
    """Prefect edge of :func:`plan_ingest`."""
    return plan_ingest(sources, states, chunking_hash, prune_roots)


def stale_documents(
    documents: Sequence[Document], states: Mapping[str, DocumentState], chunking_hash: str
) -> list[Document]:
    """The documents whose current content and chunking are not fully indexed yet."""
    return [
        document
        for document in documents
        if not (
            document.doc_id in states
            and states[document.doc_id].is_current(document.content_hash, chunking_hash)
        )
    ]


@dataclass(frozen=True)
class Partition:
    """A slice of an ingest plan that one worker processes on its own.

    It carries the index records of its files from before the run, so a worker finds the stale
    chunks to delete without reading the whole collection, and a retried or repeated partition
    computes the same ids and the same deletions: processing it twice is the same as once.
    """

    label: str
    sources: tuple[SourceFile, ...]
    states: Mapping[str, DocumentState]


@dataclass
class PartitionResult:
    """What a partition did; small, so it travels back from a remote worker cheaply."""

    warnings: dict[str, list[str]]
    failures: list[LoadFailure]
    written: int
    deleted: int
    embedded: int
    seconds: dict[str, float]
    flagged: list[dict[str, Any]] = field(default_factory=list)  # the ingest scan's findings
    quarantined: int = 0
    truncated: int = 0  # chunks longer than the embedding model reads

    @property
    def files(self) -> int:
        return len(self.warnings) + len(self.failures)


def partition_plan(
    sources: Sequence[SourceFile], states: Mapping[str, DocumentState], size: int
) -> list[Partition]:
    """Cut the files to load into partitions of ``size`` files, in the plan's stable order."""
    if size < 1:
        raise ValueError(f"partition size must be positive, got {size}")
    partitions = []
    for number, start in enumerate(range(0, len(sources), size)):
        part = tuple(sources[start : start + size])
        partitions.append(
            Partition(
                label=f"batch-{number}",
                sources=part,
                states={s.doc_id: states[s.doc_id] for s in part if s.doc_id in states},
            )
        )
    return partitions
