"""Embedding: text becomes normalized vectors with a local sentence-transformers model.

The model is loaded once per process (loading costs ~0.2 s, importing torch ~6 s) and always from
a local folder: a hub name would try the network. Vectors of chunk text already seen by the same
model come from an on-disk cache keyed by (model, content hash), so unchanged text is never
embedded twice, whatever document or collection it lands in.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.chunking.context import TokenBudget
from tasks.stopping import raise_if_stopped

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "EmbeddingCache",
    "ProgressCallback",
    "SentenceTransformerEmbedder",
    "TextEmbedder",
    "embed_in_length_order",
    "embed_with_cache",
    "embed_with_cache_task",
    "load_sentence_transformer",
    "model_lock",
    "model_max_tokens",
    "token_budget",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


class TextEmbedder(Protocol):
    """Anything that turns texts into an ``(n, dim)`` float32 array; ``model_id`` keys caches."""

    model_id: str

    def embed(
        self, texts: Sequence[str], *, on_progress: ProgressCallback | None = None
    ) -> np.ndarray: ...


def embed_in_length_order(
    texts: Sequence[str],
    encode: Callable[[list[str]], np.ndarray],
    batch_size: int,
    sort_by_length: bool,
    on_progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Encode ``texts`` a batch at a time, longest first when ``sort_by_length``, and return
    the rows in the order given.

    A batch is padded to its longest text, so batches of similar lengths waste no work on
    padding; sentence-transformers sorts only inside each ``encode`` call, and a call per batch
    (for progress) would leave the padding of mixed batches in place.
    """
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    order = (
        np.argsort([-len(text) for text in texts], kind="stable")
        if sort_by_length
        else np.arange(len(texts))
    )
    parts: list[np.ndarray] = []
    for offset in range(0, len(texts), batch_size):
        raise_if_stopped()
        rows = order[offset : offset + batch_size]
        parts.append(encode([texts[row] for row in rows]))
        if on_progress is not None:
            on_progress(len(rows))
    stacked = np.vstack(parts)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


def load_sentence_transformer(
    path: str, device: str, dtype: str = "float32"
) -> SentenceTransformer:
    """Load a model folder once per process (per dtype); later calls return the same object."""
    return _load_sentence_transformer(path, device, dtype)


@functools.lru_cache(maxsize=4)
def _load_sentence_transformer(path: str, device: str, dtype: str) -> SentenceTransformer:
    import torch
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        path,
        device=device,
        local_files_only=True,
        model_kwargs={"dtype": getattr(torch, dtype)},
    )


def model_lock(path: str, device: str, dtype: str = "float32") -> threading.RLock:
    """The lock of one loaded model (see :func:`_model_lock`)."""
    return _model_lock(path, device, dtype)


@functools.lru_cache(maxsize=4)
def _model_lock(path: str, device: str, dtype: str) -> threading.RLock:
    """One lock per loaded model: its fast tokenizer keeps padding and truncation state that
    every call resets, so two threads encoding at once (parallel reindex contenders, API
    requests) corrupt each other's batches. Inference gains nothing from running two encodes
    side by side on the same cores anyway."""
    return threading.RLock()


class SentenceTransformerEmbedder:
    """The real embedder: batched, normalized, from a local model folder, loaded lazily."""

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str,
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
        sort_by_length: bool = True,
        dtype: str = "float32",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model_path = model_path
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.sort_by_length = sort_by_length
        self.dtype = dtype

    @property
    def model(self) -> SentenceTransformer:
        return load_sentence_transformer(str(self.model_path), self.device, self.dtype)

    @property
    def lock(self) -> threading.RLock:
        """Held around every use of the model and its tokenizer (see :func:`model_lock`)."""
        return model_lock(str(self.model_path), self.device, self.dtype)

    @property
    def dimension(self) -> int:
        dim = self.model.get_sentence_embedding_dimension()
        return int(dim) if dim is not None else len(self.embed(["probe"])[0])

    def embed(
        self, texts: Sequence[str], *, on_progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """Encode ``texts`` in batches, reporting each finished batch to ``on_progress``."""
        return embed_in_length_order(
            texts, self._encode, self.batch_size, self.sort_by_length, on_progress
        )

    def _encode(self, batch: list[str]) -> np.ndarray:
        with self.lock:
            vectors = self.model.encode(
                batch,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_tensor=True,
                show_progress_bar=False,
            )
        rows = np.asarray(vectors.float().cpu().numpy(), dtype=np.float32)  # bf16 has no numpy
        if self.normalize and self.dtype != "float32":  # bf16 norms are off by up to ~0.4 %
            rows /= np.clip(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12, None)
        return rows


def model_max_tokens(folder: Path) -> int:
    """How many tokens the model reads: sentence-transformers' ``max_seq_length``, else 512."""
    config = folder / "sentence_bert_config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("max_seq_length") or 512)
    return 512


@functools.lru_cache(maxsize=4)
def token_budget(model_path: str) -> TokenBudget | None:
    """The model's own tokenizer and the number of tokens it reads (``max_seq_length``), from
    the model folder alone (no torch); None when the folder has no fast tokenizer file."""
    from tokenizers import Tokenizer

    folder = Path(model_path)
    if not (folder / "tokenizer.json").exists():
        logger.warning("%s has no tokenizer.json: chunks are not measured in tokens", folder)
        return None
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    limit = model_max_tokens(folder)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))]

    return TokenBudget(limit, count)


class EmbeddingCache:
    """Vectors by (model id, content hash) in a SQLite file; safe to share between threads.

    A cache, not a store: deleting the file only costs re-embedding.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, content_hash TEXT NOT"
            " NULL, vector BLOB NOT NULL, PRIMARY KEY (model, content_hash)) WITHOUT ROWID"
        )
        self._db.commit()

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._lock:
            for offset in range(0, len(unique), 500):
                part = unique[offset : offset + 500]
                marks = ",".join("?" * len(part))
                rows = self._db.execute(
                    f"SELECT content_hash, vector FROM embeddings WHERE model = ? AND"
                    f" content_hash IN ({marks})",
                    (model, *part),
                ).fetchall()
                for content_hash, blob in rows:
                    found[content_hash] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        rows = [
            (model, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items.items()
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def embed_with_cache(
    texts: Sequence[str],
    hashes: Sequence[str],
    embedder: TextEmbedder,
    cache: EmbeddingCache | None,
    *,
    on_progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, int]:
    """Vectors for ``texts`` (row ``i`` for ``texts[i]``) and how many were newly computed.

    Identical texts in one call are embedded once. Cached rows report progress immediately.
    """
    if len(texts) != len(hashes):
        raise ValueError("texts and hashes must have the same length")
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    known = cache.get_many(embedder.model_id, hashes) if cache is not None else {}
    if on_progress is not None and known:
        on_progress(sum(1 for h in hashes if h in known))
    todo: dict[str, str] = {}
    for text, content_hash in zip(texts, hashes, strict=True):
        if content_hash not in known and content_hash not in todo:
            todo[content_hash] = text
    if todo:
        duplicates = sum(1 for h in hashes if h not in known) - len(todo)

        def progress(count: int) -> None:
            if on_progress is not None:
                on_progress(count)

        vectors = embedder.embed(list(todo.values()), on_progress=progress)
        fresh = dict(zip(todo.keys(), vectors, strict=True))
        if cache is not None:
            cache.put_many(embedder.model_id, fresh)
        known.update(fresh)
        if on_progress is not None and duplicates:
            on_progress(duplicates)
    return np.vstack([known[h] for h in hashes]), len(todo)


@task(name="embed-chunks", task_run_name="embed-{label}", cache_policy=NO_CACHE, retries=0)
def embed_with_cache_task(
    texts: list[str],
    hashes: list[str],
    embedder: TextEmbedder,
    cache: EmbeddingCache | None,
    on_progress: ProgressCallback | None = None,
    label: str = "batch",
) -> tuple[np.ndarray, int]:
    """Prefect edge of :func:`embed_with_cache`."""
    return embed_with_cache(texts, hashes, embedder, cache, on_progress=on_progress)
