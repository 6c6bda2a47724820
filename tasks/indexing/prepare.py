"""A partition's files made ready to embed: loaded, chunked and scanned, in a worker process.

Loading (pypdf), chunking and the PII scan are pure Python and hold the GIL: in the flow's
partition threads they ran one at a time and only overlapped embedding (measured on 51 PDFs:
load 32 s, scan 18 s, chunk 3 s of a 75 s ingest). Run in processes, they overlap each other
as well. Prefect's task runner fans out whole partitions, one runner per flow, so this stage
inside a partition uses the standard library's process pool; on a Dask runner the partition
is already in a worker process and prepares in place.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydantic import SecretStr

from ragcycle.settings import ChunkingSettings, Settings
from tasks.chunking import Chunk, chunk_within_limit, flatten_chunks
from tasks.embedding import token_budget
from tasks.guardrails import pii_detector
from tasks.guardrails.scan import ChunkFinding, scan_chunks
from tasks.loading import Document, LoadFailure, SourceFile, load_documents
from tasks.stopping import raise_if_stopped

__all__ = [
    "PreparedPartition",
    "Recipe",
    "parse_pool",
    "pool_size",
    "prepare_partition",
    "prepare_sources",
    "recipe_from_settings",
]

# Below this many files a pool costs more than it saves: each worker process imports pypdf,
# Presidio and spaCy (about 2 s on these machines) before its first file.
POOL_MIN_FILES = 32


@dataclass(frozen=True)
class Recipe:
    """How files become scanned chunks: plain values only, so it travels to a worker process
    (a detector or tokenizer is rebuilt there, once per process)."""

    chunking: ChunkingSettings
    passwords: tuple[SecretStr, ...] = ()
    min_pdf_chars_per_page: int = 0
    max_file_bytes: int | None = None
    max_chunks: int = 10_000
    scan_entities: tuple[str, ...] | None = None  # None: no scan
    scan_score: float = 0.4
    quarantine: bool = False
    model_path: str | None = None  # the embedding model's folder, whose tokenizer bounds chunks


@dataclass
class PreparedPartition:
    """A partition's documents and chunks, ready to embed, with what went wrong on the way."""

    documents: list[Document]
    chunks: dict[str, list[Chunk]]
    failures: list[LoadFailure]
    findings: dict[str, ChunkFinding]
    seconds: dict[str, float] = field(default_factory=dict)
    truncated: int = 0  # chunks still longer than the embedding model reads

    @property
    def ordered(self) -> list[Chunk]:
        """The chunks in document order: the row order of their vectors."""
        return flatten_chunks(self.documents, self.chunks)


def recipe_from_settings(settings: Settings) -> Recipe:
    guard = settings.guardrails
    return Recipe(
        chunking=settings.chunking,
        passwords=tuple(settings.ingest.pdf_passwords),
        min_pdf_chars_per_page=settings.ingest.min_pdf_chars_per_page,
        max_file_bytes=settings.ingest.max_file_bytes,
        max_chunks=settings.ingest.max_chunks_per_document,
        scan_entities=tuple(guard.pii_entities),
        scan_score=guard.pii_score,
        quarantine=guard.ingest_policy == "quarantine",
        model_path=str(settings.embedding_model_path()),
    )


def prepare_sources(sources: Sequence[SourceFile], recipe: Recipe) -> PreparedPartition:
    """Load, chunk and scan ``sources``; bad files are recorded, not raised."""
    seconds: dict[str, float] = {}
    begun = time.perf_counter()
    documents, failures = load_documents(
        sources,
        passwords=recipe.passwords,
        min_pdf_chars_per_page=recipe.min_pdf_chars_per_page,
        max_file_bytes=recipe.max_file_bytes,
    )
    seconds["load"], begun = time.perf_counter() - begun, time.perf_counter()
    raise_if_stopped()  # a no-op in a pool's process: the stop request is the run's threads'
    budget = token_budget(recipe.model_path) if recipe.model_path else None
    documents, chunks, too_long = chunk_within_limit(
        documents, recipe.chunking, recipe.max_chunks, budget
    )
    seconds["chunk"], begun = time.perf_counter() - begun, time.perf_counter()
    raise_if_stopped()
    findings: dict[str, ChunkFinding] = {}
    if recipe.scan_entities is not None:
        detector = pii_detector(recipe.scan_entities, recipe.scan_score)
        findings = scan_chunks(flatten_chunks(documents, chunks), detector)
    if recipe.quarantine:
        chunks = {
            doc_id: [chunk for chunk in kept if chunk.chunk_id not in findings]
            for doc_id, kept in chunks.items()
        }
    seconds["scan"] = time.perf_counter() - begun
    prepared = PreparedPartition(documents, chunks, [*failures, *too_long], findings, seconds)
    if budget is not None:
        prepared.truncated = sum(chunk.tokens > budget.limit for chunk in prepared.ordered)
    return prepared


def prepare_partition(
    sources: Sequence[SourceFile], recipe: Recipe, pool: Executor | None = None
) -> PreparedPartition:
    """:func:`prepare_sources` in ``pool`` when there is one, else in this thread."""
    if pool is None:
        return prepare_sources(sources, recipe)
    # File by file, so both processes work on one partition and the next partition's files
    # queue behind it: the partition that embeds next is ready first.
    futures = [pool.submit(prepare_sources, (source,), recipe) for source in sources]
    return merge_prepared([future.result() for future in futures])


def merge_prepared(parts: Sequence[PreparedPartition]) -> PreparedPartition:
    """One partition's worth of prepared files, in the order given; stage times add up."""
    merged = PreparedPartition([], {}, [], {})
    for part in parts:
        merged.documents.extend(part.documents)
        merged.chunks.update(part.chunks)
        merged.failures.extend(part.failures)
        merged.findings.update(part.findings)
        merged.truncated += part.truncated
        for stage, seconds in part.seconds.items():
            merged.seconds[stage] = merged.seconds.get(stage, 0.0) + seconds
    return merged


def pool_size(settings: Settings, files: int) -> int:
    """Worker processes for ``files`` to load: ``ingest.parse_processes``, where ``auto`` is
    one per partition worker once there are enough files to repay the start-up."""
    wanted = settings.ingest.parse_processes
    if wanted == "auto":
        return settings.prefect.max_workers if files >= POOL_MIN_FILES else 0
    return wanted


@contextmanager
def parse_pool(settings: Settings, files: int) -> Iterator[Executor | None]:
    """A process pool for the prepare stage of an in-process ingest, or None for no pool.

    Processes are spawned, never forked: a fork of a process that already runs torch's thread
    pool can deadlock in the child."""
    size = pool_size(settings, files)
    if size < 1:
        yield None
        return
    with ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
