"""Writes to the index: a document's chunks go in, its stale chunks go out.

Every write is an upsert of deterministic ids, and new chunks are written before old ones are
deleted, so a crash in between leaves the previous version searchable and the next run finishes
the job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.chunking import Chunk, flatten_chunks
from tasks.indexing.store import DocumentState, Metadata, VectorIndex
from tasks.loading import Document
from tasks.retrying import outage_task

__all__ = [
    "WriteResult",
    "chunk_metadata",
    "remove_documents",
    "remove_documents_task",
    "stale_chunk_ids",
    "write_documents",
    "write_documents_task",
]


def chunk_metadata(
    document: Document,
    chunk: Chunk,
    *,
    chunk_count: int,
    chunking: str,
    scanned: Mapping[str, Any] | None = None,
) -> Metadata:
    """The metadata stored with a chunk: enough to cite it and to tell if it is current, plus
    the ingest scan's findings (``scanned``: flagged, pii, injection) where it ran."""
    return {
        **(scanned or {}),
        "doc_id": document.doc_id,
        "source": document.doc_id,
        "file_name": document.doc_id.rsplit("/", 1)[-1],
        "path": document.source,
        "root": document.root,
        "title": document.title[:300],
        "format": document.format,
        "doc_hash": document.content_hash,
        "chunk_index": chunk.index,
        "chunk_count": chunk_count,
        "chunking": chunking,
        "content_hash": chunk.content_hash,
        "start": chunk.start,
        "end": chunk.end,
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "section": chunk.section,
        "heading_path": chunk.heading_path,
        "tokens": chunk.tokens,
    }


def stale_chunk_ids(state: DocumentState | None, keep: Iterable[str]) -> set[str]:
    """Ids of a document's chunks that are not in ``keep`` (old versions, other chunkings)."""
    if state is None:
        return set()
    return state.chunk_ids - set(keep)


@dataclass(frozen=True)
class WriteResult:
    written: int
    deleted: int


def write_documents(
    index: VectorIndex,
    documents: Sequence[Document],
    chunks: dict[str, list[Chunk]],
    vectors: np.ndarray,
    states: Mapping[str, DocumentState],
    chunking: str,
    scanned: Mapping[str, Mapping[str, Any]] | None = None,
) -> WriteResult:
    """Upsert the chunks of ``documents`` (``vectors`` row by row), then drop stale ones.

    New chunks are written before old ones are deleted, so a crash in between leaves the previous
    version searchable; the next run sees two versions and finishes the job.
    """
    ordered = flatten_chunks(documents, chunks)
    by_id = {document.doc_id: document for document in documents}
    ids = [chunk.chunk_id for chunk in ordered]
    texts = [chunk.text for chunk in ordered]
    metadatas = [
        chunk_metadata(
            by_id[chunk.doc_id],
            chunk,
            chunk_count=len(chunks[chunk.doc_id]),
            chunking=chunking,
            scanned=scanned.get(chunk.chunk_id) if scanned is not None else None,
        )
        for chunk in ordered
    ]
    stale: set[str] = set()
    for document in documents:
        keep = (chunk.chunk_id for chunk in chunks[document.doc_id])
        stale |= stale_chunk_ids(states.get(document.doc_id), keep)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} chunks but {len(vectors)} vectors")
    if ids:
        index.upsert(ids, vectors, texts, metadatas)
    if stale:
        index.delete(sorted(stale))
    return WriteResult(written=len(ids), deleted=len(stale))


def remove_documents(
    index: VectorIndex, doc_ids: Iterable[str], states: Mapping[str, DocumentState]
) -> int:
    """Delete every chunk of the given documents; returns how many chunks went."""
    doomed: set[str] = set()
    for doc_id in doc_ids:
        state = states.get(doc_id)
        if state is not None:
            doomed |= state.chunk_ids
    if doomed:
        index.delete(sorted(doomed))
    return len(doomed)


@outage_task("write-chunks", delays=(1, 5), task_run_name="write-{label}")
def write_documents_task(
    index: VectorIndex,
    documents: list[Document],
    chunks: dict[str, list[Chunk]],
    vectors: np.ndarray,
    states: dict[str, DocumentState],
    chunking: str,
    label: str = "batch",
) -> WriteResult:
    """Prefect edge of :func:`write_documents`; retried because a Chroma server can blip."""
    return write_documents(index, documents, chunks, vectors, states, chunking)


@outage_task("remove-documents", delays=(1, 5))
def remove_documents_task(
    index: VectorIndex, doc_ids: list[str], states: dict[str, DocumentState]
) -> int:
    """Prefect edge of :func:`remove_documents`."""
    return remove_documents(index, doc_ids, states)
