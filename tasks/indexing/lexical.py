"""The lexical index: BM25 (bm25s) over a collection's chunks, kept on disk beside Chroma.

It is a view of the Chroma collection, never a second record of its own: :func:`sync_lexical`
compares the chunk ids Chroma holds with the ids of the current snapshot, tokenizes only the
chunks that are new, drops the ones Chroma no longer has (a changed document's old terms go with
its old chunks) and writes a new snapshot beside the old one before switching to it. So a crash
anywhere, during an ingest or during a sync, leaves either the old snapshot or the new one, and
the next sync (every ingest ends with one; opening an index out of step starts one) brings it
back in line with Chroma. Lexical hits are read back through Chroma (:meth:`VectorIndex.fetch`),
so a chunk that has left the collection is never served even from a stale snapshot.

Layout: ``<data_dir>/lexical/<collection>/`` holds snapshot folders and a ``CURRENT`` file
naming the live one; dropping a collection drops this folder (:func:`drop_lexical`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import Settings
from tasks.chunking.context import embedded_text
from tasks.indexing.store import VectorIndex, open_chroma_client
from tasks.locking import pid_alive

__all__ = [
    "LexicalIndex",
    "LexicalSnapshot",
    "LexicalSync",
    "collection_names",
    "drop_collection",
    "drop_lexical",
    "fingerprint",
    "lexical_root",
    "lexical_text",
    "open_lexical",
    "sync_lexical",
    "sync_lexical_task",
    "tokenize",
]

logger = logging.getLogger(__name__)

# Lucene's BM25 with its usual constants: the variant whose SciFact figure STACK.md records.
BM25_PARAMS: Mapping[str, Any] = {"k1": 1.5, "b": 0.75, "method": "lucene"}
_STOPWORDS = {
    "english": "en",
    "german": "de",
    "dutch": "nl",
    "french": "fr",
    "spanish": "es",
    "portuguese": "pt",
    "italian": "it",
    "russian": "ru",
    "swedish": "sv",
    "norwegian": "no",
}
_CURRENT = "CURRENT"
_FETCH_PAGE = 1000


def tokenize(texts: Sequence[str], language: str) -> list[list[str]]:
    """Lower-cased word tokens, stopwords out and stemmed for ``language`` ("none": neither)."""
    import bm25s

    stemmer = None
    if language != "none":
        import Stemmer

        stemmer = Stemmer.Stemmer(language)
    tokens = bm25s.tokenize(
        list(texts),
        stopwords=_STOPWORDS.get(language),
        stemmer=stemmer,
        return_ids=False,
        show_progress=False,
    )
    return [list(row) for row in tokens]


def lexical_text(text: str, metadata: Mapping[str, Any]) -> str:
    """What BM25 reads of a chunk: what the embedding model read (heading path, text without
    markup), so a chunk under "Path Parameters" matches a question about path parameters."""
    markup = metadata.get("format") in {"markdown", "html"}
    return embedded_text(text, str(metadata.get("heading_path") or ""), markup)


def fingerprint(ids: Iterable[str]) -> str:
    """One hash of a set of chunk ids; chunk ids hash their document's bytes and chunking, so
    equal fingerprints mean equal content."""
    digest = hashlib.sha256()
    for chunk_key in sorted(ids):
        digest.update(chunk_key.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class LexicalSnapshot:
    """One written state of the lexical index: chunk ids, their tokens and the BM25 matrix."""

    path: Path
    ids: list[str]
    terms: list[str]
    flat: np.ndarray  # token ids of every chunk, end to end
    offsets: np.ndarray  # chunk i's tokens are flat[offsets[i]:offsets[i + 1]]
    language: str
    fingerprint: str
    model: Any | None  # bm25s.BM25; None for an empty collection

    @classmethod
    def read(cls, path: Path) -> LexicalSnapshot:
        import bm25s

        meta = json.loads((path / "meta.json").read_text())
        arrays = np.load(path / "tokens.npz", allow_pickle=False)
        model = None
        if meta["count"]:
            model = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
        return cls(
            path,
            list(meta["ids"]),
            list(meta["terms"]),
            arrays["flat"],
            arrays["offsets"],
            meta["language"],
            meta["fingerprint"],
            model,
        )

    def tokens_of(self, row: int) -> np.ndarray:
        return self.flat[self.offsets[row] : self.offsets[row + 1]]


@dataclass(frozen=True)
class LexicalSync:
    """What a sync changed: chunks tokenized and added, chunks dropped, and the total after."""

    added: int
    removed: int
    total: int
    seconds: float

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _current_path(root: Path) -> Path | None:
    try:
        name = (root / _CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return root / name if name else None


def _read_current(root: Path) -> LexicalSnapshot | None:
    """The live snapshot; None when there is none or it cannot be read (the next sync rebuilds)."""
    for _ in range(3):  # a concurrent sync may replace the snapshot while it is being read
        path = _current_path(root)
        if path is None:
            return None
        try:
            return LexicalSnapshot.read(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("Lexical index at %s is unreadable (%s); it will be rebuilt", path, exc)
            return None
    return None


def _kept_tokens(
    snapshot: LexicalSnapshot | None, wanted: set[str]
) -> tuple[list[str], list[list[str]]]:
    """Ids and tokens of the snapshot's chunks that are still wanted (the rest is dropped)."""
    if snapshot is None:
        return [], []
    terms = np.asarray(snapshot.terms, dtype=object)
    ids: list[str] = []
    tokens: list[list[str]] = []
    for row, chunk_key in enumerate(snapshot.ids):
        if chunk_key in wanted:
            ids.append(chunk_key)
            tokens.append(list(terms[snapshot.tokens_of(row)]))
    return ids, tokens


def _new_tokens(index: VectorIndex, ids: Sequence[str], language: str) -> list[list[str]]:
    """Tokens of chunks the snapshot lacks, read back from Chroma a page at a time."""
    tokens: list[list[str]] = []
    for start in range(0, len(ids), _FETCH_PAGE):
        page = list(ids[start : start + _FETCH_PAGE])
        stored = {chunk.chunk_id: chunk for chunk in index.fetch(page)}
        texts = [
            lexical_text(stored[key].text, stored[key].metadata) if key in stored else ""
            for key in page
        ]
        tokens.extend(tokenize(texts, language))
    return tokens


def _write_snapshot(
    root: Path, ids: list[str], tokens: list[list[str]], language: str, print_: str
) -> Path:
    """Write a complete snapshot into a fresh folder, then point ``CURRENT`` at it atomically."""
    import bm25s
    from bm25s.tokenization import Tokenized

    vocab: dict[str, int] = {}
    rows = [[vocab.setdefault(term, len(vocab)) for term in row] for row in tokens]
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((t for row in rows for t in row), dtype=np.int32, count=int(offsets[-1]))
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    if ids:
        model = bm25s.BM25(**BM25_PARAMS)
        model.index(Tokenized(ids=rows, vocab=vocab), show_progress=False)
        model.save(str(staging / "bm25"), show_progress=False)
    np.savez(staging / "tokens.npz", flat=flat, offsets=offsets)
    meta = {
        "ids": ids,
        "terms": list(vocab),
        "language": language,
        "fingerprint": print_,
        "count": len(ids),
        "bm25": dict(BM25_PARAMS),
        "written_at": time.time(),
    }
    (staging / "meta.json").write_text(json.dumps(meta))
    final = root / f"snapshot-{print_[:16]}-{uuid.uuid4().hex[:8]}"
    staging.rename(final)
    pointer = root / f".{_CURRENT}-{uuid.uuid4().hex[:8]}"
    pointer.write_text(final.name)
    os.replace(pointer, root / _CURRENT)  # atomic: readers see the old snapshot or the new one
    return final


def _drop_other_snapshots(root: Path, keep: Path) -> None:
    """Remove replaced snapshots, and staging folders of syncs that died (a live one's stays)."""
    for entry in root.iterdir():
        if not entry.is_dir() or entry == keep:
            continue
        if entry.name.startswith(".staging-"):
            pid = entry.name.split("-")[1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
        shutil.rmtree(entry, ignore_errors=True)


def sync_lexical(index: VectorIndex, root: Path, language: str) -> LexicalSync:
    """Bring the lexical index at ``root`` in line with what ``index`` holds now."""
    begun = time.perf_counter()
    chroma_ids = index.all_ids()
    print_ = fingerprint(chroma_ids)
    snapshot = _read_current(root)
    if snapshot is not None and snapshot.language != language:
        snapshot = None  # other stemming: every chunk is tokenized again
    if snapshot is not None and snapshot.fingerprint == print_:
        return LexicalSync(0, 0, len(snapshot.ids), time.perf_counter() - begun)
    wanted = set(chroma_ids)
    ids, tokens = _kept_tokens(snapshot, wanted)
    have = set(ids)
    missing = [chunk_key for chunk_key in sorted(wanted) if chunk_key not in have]
    ids.extend(missing)
    tokens.extend(_new_tokens(index, missing, language))
    removed = len(snapshot.ids) - len(have) if snapshot is not None else 0
    written = _write_snapshot(root, ids, tokens, language, print_)
    _drop_other_snapshots(root, written)
    took = time.perf_counter() - begun
    logger.info(
        "Lexical index of %s: %d chunks added, %d removed, %d in all (%.1f s)",
        index.name,
        len(missing),
        removed,
        len(ids),
        took,
    )
    return LexicalSync(len(missing), removed, len(ids), took)


def drop_lexical(root: Path) -> None:
    """Remove a collection's lexical index with the collection."""
    shutil.rmtree(root, ignore_errors=True)


class LexicalIndex:
    """BM25 search over the live snapshot at ``root``, reloaded when a sync replaces it.

    A long-running server (the API) keeps one of these; each search checks ``CURRENT`` (one
    small read) and loads a newer snapshot when an ingest has written one.
    """

    def __init__(self, root: Path, language: str) -> None:
        self.root = root
        self.language = language
        self._snapshot: LexicalSnapshot | None = None
        self._loaded_from: Path | None = None
        self._lock = threading.Lock()

    def snapshot(self) -> LexicalSnapshot | None:
        current = _current_path(self.root)
        with self._lock:
            if current != self._loaded_from:
                self._snapshot = _read_current(self.root)
                self._loaded_from = self._snapshot.path if self._snapshot else None
            return self._snapshot

    def search(self, question: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` best chunk ids for ``question`` by BM25, with their scores (zero left out)."""
        snapshot = self.snapshot()
        if snapshot is None or snapshot.model is None:
            return []
        query = tokenize([question], self.language)[0]
        if not query:
            return []
        scores = np.asarray(snapshot.model.get_scores(query))
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n]
        ranked = top[np.argsort(-scores[top], kind="stable")]
        return [(snapshot.ids[row], float(scores[row])) for row in ranked if scores[row] > 0]

    def in_step_with(self, index: VectorIndex) -> bool:
        snapshot = self.snapshot()
        return (
            snapshot is not None
            and snapshot.language == self.language
            and snapshot.fingerprint == fingerprint(index.all_ids())
        )


def lexical_root(settings: Settings, collection: str) -> Path:
    return settings.lexical_path / collection


def open_lexical(settings: Settings, index: VectorIndex) -> LexicalIndex:
    """The lexical index of ``index``, synced first when it is missing or out of step (a
    collection built before lexical indexes existed, or an ingest killed before its sync)."""
    root = lexical_root(settings, index.name)
    lexical = LexicalIndex(root, settings.retrieval.lexical_language)
    if not lexical.in_step_with(index):
        sync_lexical(index, root, settings.retrieval.lexical_language)
    return lexical


def collection_names(settings: Settings) -> list[str]:
    """The collections the configured Chroma holds."""
    return [collection.name for collection in open_chroma_client(settings).list_collections()]


def drop_collection(settings: Settings, name: str) -> None:
    """Delete a collection from Chroma and its lexical index from disk; one already gone is
    not an error (a clean-up killed halfway is finished by the next)."""
    if name in collection_names(settings):
        open_chroma_client(settings).delete_collection(name)
    drop_lexical(lexical_root(settings, name))


@task(name="sync-lexical-index", task_run_name="lexical-{index.name}", cache_policy=NO_CACHE)
def sync_lexical_task(index: VectorIndex, settings: Settings) -> LexicalSync:
    """Prefect edge of :func:`sync_lexical`, run by the flow once its partitions are written."""
    return sync_lexical(
        index, lexical_root(settings, index.name), settings.retrieval.lexical_language
    )
