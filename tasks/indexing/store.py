"""The vector store: a small protocol, and Chroma as its real implementation.

Retrieval and evaluation see only :class:`VectorIndex`, so they never import chromadb;
:class:`ChromaIndex` works over an embedded ``PersistentClient`` or a Chroma server. What is
indexed is derived from the chunks themselves (each carries its document's content hash and
chunk count), never from a side table that could disagree with them after a crash.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np
from chromadb.errors import InvalidArgumentError

from ragcycle.errors import ConfigError, FilterError, IndexStoreError
from ragcycle.settings import HnswSettings, Settings
from tasks.retrying import outage_task

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = [
    "ChromaIndex",
    "DocumentState",
    "Hit",
    "Metadata",
    "StoredChunk",
    "VectorIndex",
    "document_states_task",
    "open_chroma_client",
    "open_index",
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
class StoredChunk:
    """A chunk as the store holds it, looked up by id (lexical hits, the lexical index's sync)."""

    chunk_id: str
    text: str
    metadata: Mapping[str, Any]
    vector: np.ndarray | None = None


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

    def all_ids(self) -> list[str]: ...

    def fetch(
        self,
        ids: Sequence[str],
        where: Mapping[str, Any] | None = None,
        *,
        vectors: bool = False,
    ) -> list[StoredChunk]: ...

    def query(
        self, vector: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[Hit]: ...

    def query_many(
        self, vectors: np.ndarray, k: int, where: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...


# chromadb 1.5 starts an embedded store's shared system lazily and not thread-safely: two
# threads opening their first client on one path at once (a reindex's contenders and its
# champion) fail with "'RustBindingsAPI' object has no attribute 'bindings'". Opening is
# serialized; using the clients is not.
_EMBEDDED_START = threading.Lock()
_MAX_RESULTS_PER_CALL = 16_000


def _reachable(url: str, settings: Settings) -> None:
    """Ask the server's heartbeat first, within the configured timeouts: chromadb's client
    would make its own first requests (tenant checks) with no timeout at all."""
    import httpx

    timeout = httpx.Timeout(
        settings.chroma.request_timeout_seconds, connect=settings.chroma.connect_timeout_seconds
    )
    try:
        httpx.get(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=timeout).raise_for_status()
    except httpx.TimeoutException:
        raise IndexStoreError(f"Chroma at {url} did not answer in time (timed out)") from None
    except httpx.HTTPError as exc:
        raise IndexStoreError(f"cannot reach Chroma at {url}: {exc}") from None


def _bound_http_timeouts(client: Any, settings: Settings) -> None:
    """Give chromadb's HTTP session the configured timeouts.

    chromadb 1.5 builds its ``httpx.Client`` with ``timeout=None`` and offers no setting for
    it, so a server that accepts a connection and never answers would hang ragcycle for good.
    The session is private API; where it is not found the client keeps chromadb's behaviour.
    """
    import httpx

    session = getattr(getattr(client, "_server", None), "_session", None)
    if isinstance(session, httpx.Client):
        session.timeout = httpx.Timeout(
            settings.chroma.request_timeout_seconds, connect=settings.chroma.connect_timeout_seconds
        )


def open_chroma_client(settings: Settings) -> ClientAPI:
    """A Chroma client: HTTP when ``chroma.url`` is set, else embedded under the data dir."""
    import chromadb
    from chromadb.config import Settings as ChromaClientSettings

    chroma_settings = ChromaClientSettings(anonymized_telemetry=False, allow_reset=False)
    url = settings.chroma.url
    try:
        if url:
            parsed = urlparse(url)
            _reachable(url, settings)
            client = chromadb.HttpClient(
                host=parsed.hostname or "127.0.0.1",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
            _bound_http_timeouts(client, settings)
            return client
        settings.chroma_path.mkdir(parents=True, exist_ok=True)
        with _EMBEDDED_START:
            return chromadb.PersistentClient(
                path=str(settings.chroma_path), settings=chroma_settings
            )
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
            raise IndexStoreError(f"cannot open Chroma collection {self.name!r}: {exc}") from None
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
                raise IndexStoreError(f"Chroma upsert into {self.name!r} failed: {exc}") from None

    def delete(self, ids: Sequence[str]) -> None:
        ordered = sorted(ids)
        for start in range(0, len(ordered), self.batch_size):
            try:
                self.collection.delete(ids=ordered[start : start + self.batch_size])
            except Exception as exc:
                raise IndexStoreError(f"Chroma delete from {self.name!r} failed: {exc}") from None

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

    def all_ids(self) -> list[str]:
        """Every chunk id in the collection, page by page (ids only: nothing else is read)."""
        ids: list[str] = []
        page = 5000
        while True:
            try:
                result = self.collection.get(include=[], limit=page, offset=len(ids))
            except Exception as exc:
                raise IndexStoreError(f"Chroma read of {self.name!r} failed: {exc}") from None
            ids.extend(result["ids"])
            if len(result["ids"]) < page:
                return ids

    def fetch(
        self,
        ids: Sequence[str],
        where: Mapping[str, Any] | None = None,
        *,
        vectors: bool = False,
    ) -> list[StoredChunk]:
        """The chunks of ``ids`` that exist (and match ``where``), in the order of ``ids``."""
        include: list[str] = ["documents", "metadatas", *(["embeddings"] if vectors else [])]
        found: dict[str, StoredChunk] = {}
        wanted = list(dict.fromkeys(ids))
        for start in range(0, len(wanted), self.batch_size):
            try:
                result = self.collection.get(
                    ids=wanted[start : start + self.batch_size],
                    where=dict(where) if where else None,
                    include=include,  # type: ignore[arg-type]
                )
            except Exception as exc:
                raise IndexStoreError(f"Chroma read of {self.name!r} failed: {exc}") from None
            rows = result["ids"]
            texts = result["documents"] or [""] * len(rows)
            metadatas = result["metadatas"] or [{}] * len(rows)
            embeddings = result["embeddings"] if vectors else None
            for row, chunk_key in enumerate(rows):
                vector = np.asarray(embeddings[row]) if embeddings is not None else None
                found[chunk_key] = StoredChunk(
                    chunk_key, texts[row] or "", metadatas[row] or {}, vector
                )
        return [found[chunk_key] for chunk_key in wanted if chunk_key in found]

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
        """Top-``k`` hits for each row of ``vectors``, in as few round trips as Chroma allows."""
        # Chroma's embedded store binds queries x k SQL variables at once, and SQLite refuses
        # more than 32,766: 1,187 queries at k=50 failed with "too many SQL variables".
        per_call = max(1, _MAX_RESULTS_PER_CALL // max(1, k))
        if len(vectors) > per_call:
            return [
                hits
                for start in range(0, len(vectors), per_call)
                for hits in self.query_many(vectors[start : start + per_call], k, where)
            ]
        if len(vectors) == 0:
            return []
        try:
            result = self.collection.query(
                query_embeddings=np.asarray(vectors, dtype=np.float32),
                n_results=k,
                where=dict(where) if where else None,
                include=["documents", "metadatas", "distances"],
            )
        except (InvalidArgumentError, ValueError) as exc:
            # Chroma checks part of a filter in Python (ValueError), the rest in its engine.
            if where:
                raise FilterError(f"invalid where filter: {exc} (filter {dict(where)})") from None
            raise IndexStoreError(f"Chroma query on {self.name!r} failed: {exc}") from None
        except Exception as exc:
            raise IndexStoreError(f"Chroma query on {self.name!r} failed: {exc}") from None
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


@outage_task("read-index-state", delays=(1, 5))
def document_states_task(index: VectorIndex) -> dict[str, DocumentState]:
    """Prefect edge of :meth:`VectorIndex.document_states`."""
    return index.document_states()
