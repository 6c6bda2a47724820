"""Indexing: chunks and their vectors are written to a Chroma collection, and read back.

The store sits behind :class:`VectorIndex` so retrieval and evaluation never import chromadb;
:class:`ChromaIndex` is the real implementation over an embedded ``PersistentClient`` or a Chroma
server. Every write is an upsert of deterministic ids. What is indexed is derived from the chunks
themselves (each carries its document's content hash and chunk count), never from a side table
that could disagree with them after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import ConfigError, IndexStoreError
from ragcycle.settings import HnswSettings, Settings
from tasks.chunking import Chunk, flatten_chunks
from tasks.loading import Document, LoadFailure, SourceFile, file_content_hash

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = [
    "ChromaIndex",
    "DocumentState",
    "Hit",
    "IngestPlan",
    "Partition",
    "PartitionResult",
    "VectorIndex",
    "WriteResult",
    "chunk_metadata",
    "open_chroma_client",
    "open_index",
    "partition_plan",
    "plan_ingest",
    "remove_documents",
    "write_documents",
]

logger = logging.getLogger(__name__)

Metadata = dict[str, str | int | float | bool]


@dataclass
class DocumentState:
    """What the index holds of one document: chunk ids per content hash, and whether complete."""

    doc_id: str
    root: str = ""
    chunks_by_hash: dict[str, set[str]] = field(default_factory=dict)
    expected_by_hash: dict[str, int] = field(default_factory=dict)
    chunking: set[str] = field(default_factory=set)

    @property
    def chunk_ids(self) -> set[str]:
        return set().union(*self.chunks_by_hash.values()) if self.chunks_by_hash else set()

    def is_current(self, content_hash: str, chunking_hash: str) -> bool:
        """True when exactly one complete version, of these bytes and this chunking, is indexed."""
        return (
            set(self.chunks_by_hash) == {content_hash}
            and self.chunking == {chunking_hash}
            and len(self.chunks_by_hash[content_hash]) == self.expected_by_hash.get(content_hash)
        )


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; ``score`` is cosine similarity (1 - distance) for cosine indexes."""

    chunk_id: str
    text: str
    score: float
    metadata: Mapping[str, Any]

    @property
    def doc_id(self) -> str:
        return str(self.metadata.get("doc_id", ""))


class VectorIndex(Protocol):
    """The operations ragcycle needs from a vector store."""

    name: str

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int: ...

    def document_states(self) -> dict[str, DocumentState]: ...

    def query(
        self, vector: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...

    def query_many(
        self, vectors: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...


def open_chroma_client(settings: Settings) -> ClientAPI:
    """A Chroma client: HTTP when ``chroma.url`` is set, else embedded under the data dir."""
    import chromadb
    from chromadb.config import Settings as ChromaClientSettings

    chroma_settings = ChromaClientSettings(anonymized_telemetry=False, allow_reset=False)
    url = settings.chroma.url
    try:
        if url:
            parsed = urlparse(url)
            return chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
        settings.chroma_path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)
    except Exception as exc:
        where = url or str(settings.chroma_path)
        raise IndexStoreError(f"cannot open Chroma at {where}: {exc}") from None


class ChromaIndex:
    """A Chroma collection holding one model's vectors; embeddings are always passed explicitly."""

    def __init__(
        self,
        client: ClientAPI,
        name: str,
        *,
        model_id: str,
        hnsw: HnswSettings,
        batch_size: int = 1000,
        create: bool = True,
    ) -> None:
        self.client = client
        self.name = name
        self.model_id = model_id
        self.batch_size = max(1, min(batch_size, client.get_max_batch_size()))
        self.collection = self._open(hnsw, create)

    def _open(self, hnsw: HnswSettings, create: bool) -> Collection:
        try:
            if create:
                collection = self.client.get_or_create_collection(
                    self.name,
                    configuration={"hnsw": hnsw.model_dump()},  # type: ignore[arg-type]
                    metadata={"embedding_model": self.model_id, "created_by": "ragcycle"},
                    embedding_function=None,
                )
            else:
                collection = self.client.get_collection(self.name, embedding_function=None)
        except Exception as exc:
            raise IndexStoreError(f"cannot open collection {self.name!r}: {exc}") from None
        built_with = (collection.metadata or {}).get("embedding_model")
        if built_with and built_with != self.model_id:
            raise ConfigError(
                f"collection {self.name!r} holds vectors of {built_with!r} but embedding.model_name"
                f" is {self.model_id!r}: use another chroma.collection or reindex"
            )
        return collection

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        texts: Sequence[str],
        metadatas: Sequence[Metadata],
    ) -> None:
        for start in range(0, len(ids), self.batch_size):
            end = start + self.batch_size
            try:
                self.collection.upsert(
                    ids=list(ids[start:end]),
                    embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                    documents=list(texts[start:end]),
                    metadatas=list(metadatas[start:end]),
                )
            except Exception as exc:
                raise IndexStoreError(f"upsert into {self.name!r} failed: {exc}") from None

    def delete(self, ids: Sequence[str]) -> None:
        ordered = sorted(ids)
        for start in range(0, len(ordered), self.batch_size):
            try:
                self.collection.delete(ids=ordered[start : start + self.batch_size])
            except Exception as exc:
                raise IndexStoreError(f"delete from {self.name!r} failed: {exc}") from None

    def count(self) -> int:
        return int(self.collection.count())

    def iter_metadata(self, page: int = 5000) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """Every (id, metadata) in the collection, page by page."""
        offset = 0
        while True:
            result = self.collection.get(include=["metadatas"], limit=page, offset=offset)
            ids = result["ids"]
            metadatas = result["metadatas"] or [{}] * len(ids)
            yield from zip(ids, metadatas, strict=True)
            if len(ids) < page:
                return
            offset += page

    def document_states(self) -> dict[str, DocumentState]:
        states: dict[str, DocumentState] = {}
        for chunk_key, meta in self.iter_metadata():
            doc_id = str(meta.get("doc_id", ""))
            state = states.setdefault(doc_id, DocumentState(doc_id, root=str(meta.get("root", ""))))
            doc_hash = str(meta.get("doc_hash", ""))
            state.chunks_by_hash.setdefault(doc_hash, set()).add(chunk_key)
            state.expected_by_hash[doc_hash] = int(meta.get("chunk_count", 0))
            state.chunking.add(str(meta.get("chunking", "")))
        return states

    def query(
        self, vector: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        return self.query_many(np.asarray([vector]), k, where)[0]

    def query_many(
        self, vectors: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each row of ``vectors``, in one round trip."""
        if len(vectors) == 0:
            return []
        try:
            result = self.collection.query(
                query_embeddings=np.asarray(vectors, dtype=np.float32),
                n_results=k,
                where=dict(where) if where else None,
                include=["documents", "metadatas", "distances"],
            )
        except Exception as exc:
            raise IndexStoreError(f"query on {self.name!r} failed: {exc}") from None
        rows: list[list[Hit]] = []
        for row, ids in enumerate(result["ids"]):
            texts = (result["documents"] or [])[row]
            metas = (result["metadatas"] or [])[row]
            distances = (result["distances"] or [])[row]
            rows.append(
                [
                    Hit(chunk_id=i, text=t or "", score=1.0 - float(d), metadata=m or {})
                    for i, t, m, d in zip(ids, texts, metas, distances, strict=True)
                ]
            )
        return rows


def open_index(
    settings: Settings,
    name: str | None = None,
    *,
    create: bool = True,
    client: ClientAPI | None = None,
) -> ChromaIndex:
    """The configured collection (or ``name``), created with ragcycle's HNSW settings if missing."""
    return ChromaIndex(
        client or open_chroma_client(settings),
        name or settings.chroma.collection,
        model_id=settings.embedding.model_name,
        hnsw=settings.chroma.hnsw,
        batch_size=settings.chroma.batch_size,
        create=create,
    )


def chunk_metadata(
    document: Document, chunk: Chunk, *, chunk_count: int, chunking: str
) -> Metadata:
    """The metadata stored with a chunk: enough to cite it and to tell if it is current."""
    return {
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
            by_id[chunk.doc_id], chunk, chunk_count=len(chunks[chunk.doc_id]), chunking=chunking
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


@task(
    name="write-chunks",
    task_run_name="write-{label}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
)
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


@task(name="remove-documents", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def remove_documents_task(
    index: VectorIndex, doc_ids: list[str], states: dict[str, DocumentState]
) -> int:
    """Prefect edge of :func:`remove_documents`."""
    return remove_documents(index, doc_ids, states)


@task(name="read-index-state", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def document_states_task(index: VectorIndex) -> dict[str, DocumentState]:
    """Prefect edge of :meth:`VectorIndex.document_states`."""
    return index.document_states()


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
