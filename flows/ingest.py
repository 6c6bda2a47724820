"""The ``ingest`` flow: files -> documents -> chunks -> vectors -> Chroma, incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from ragcycle.progress import progress_bars
from ragcycle.runtime import configure_environment
from ragcycle.settings import load_settings
from tasks.chunking import chunk_documents_task, flatten_chunks
from tasks.embedding import EmbeddingCache, embed_with_cache_task, embedder_from_settings
from tasks.indexing import (
    document_states_task,
    open_index,
    plan_ingest_task,
    remove_documents_task,
    write_documents_task,
)
from tasks.loading import discover_sources, load_documents_task
from tasks.tracking import IngestReport, StageTimer, mlflow_client, publish_ingest_report
from tasks.versions import resolve_collection

__all__ = ["IngestRequest", "ingest"]


class IngestRequest(BaseModel):
    """What to ingest, and where; settings come from the config file, env and ``overrides``."""

    paths: list[str] = Field(..., min_length=1, description="files or directories to ingest")
    collection: str | None = Field(None, description="target collection (default: settings)")
    prune: bool | None = Field(None, description="remove deleted files' chunks (default: settings)")
    config_file: str | None = Field(None, description="ragcycle.toml to read")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="settings overrides (no secrets: they show in the UI)"
    )


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@flow(name="ingest", log_prints=False)
def ingest(request: IngestRequest) -> dict[str, Any]:
    """Bring the collection in line with the files: add new, redo changed, drop deleted ones."""
    logger = get_run_logger()
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    mlflow_client(settings.mlflow_tracking_uri)
    timer = StageTimer()
    index = open_index(settings, resolve_collection(settings, request.collection))
    report = IngestReport(collection=index.name)
    chunking_hash = settings.chunking.config_hash()
    prune = settings.ingest.prune if request.prune is None else request.prune
    paths = [Path(p) for p in request.paths]
    prune_roots = [str(p.expanduser().absolute()) for p in paths if prune and p.is_dir()]

    with timer.stage("plan"):
        sources = discover_sources(paths, settings.ingest.extensions)
        states = document_states_task(index)
        plan = plan_ingest_task(sources, states, chunking_hash, prune_roots)
    report.record_plan(unchanged=len(plan.unchanged), removed=len(plan.removed))
    report.record_failures(plan.unreadable)
    logger.info(
        "Found %d files: %d not yet indexed, %d changed, %d unchanged; %d indexed documents gone",
        len(sources),
        len(plan.new),
        len(plan.changed),
        len(plan.unchanged),
        len(plan.removed),
    )

    embedder = embedder_from_settings(settings)
    cache = EmbeddingCache(settings.embedding_cache_path) if settings.embedding.cache else None
    changed_ids = {source.doc_id for source in plan.changed}
    with progress_bars(settings.progress) as bars:
        load_bar = bars.bar("loading", total=len(plan.to_load))
        embed_bar = bars.bar("embedding")
        for number, batch in enumerate(_batches(plan.to_load, settings.ingest.batch_documents)):
            label = f"batch-{number}"
            with timer.stage("load"):
                documents, failures = load_documents_task(
                    batch,
                    settings.ingest.pdf_passwords,
                    settings.ingest.min_pdf_chars_per_page,
                    label=label,
                )
            load_bar.advance(len(batch))
            report.record_failures(failures)
            report.record_loaded(documents, changed_ids)
            with timer.stage("chunk"):
                chunks = chunk_documents_task(documents, settings.chunking, label=label)
            ordered = flatten_chunks(documents, chunks)
            embed_bar.grow(len(ordered))
            with timer.stage("embed"):
                vectors, embedded = embed_with_cache_task(
                    [chunk.text for chunk in ordered],
                    [chunk.content_hash for chunk in ordered],
                    embedder,
                    cache,
                    on_progress=embed_bar.advance,
                    label=label,
                )
            with timer.stage("index"):
                written = write_documents_task(
                    index, documents, chunks, vectors, states, chunking_hash, label=label
                )
            report.record_write(written.written, written.deleted, embedded)
    with timer.stage("index"):
        removed_chunks = remove_documents_task(index, plan.removed, states)
    report.record_write(0, removed_chunks, 0)
    if cache is not None:
        cache.close()
    report.finish(index.count(), timer)
    publish_ingest_report(report)
    logger.info(
        "Ingest into %s done in %.1f s: %s; chunks %s; %d not indexed",
        index.name,
        report.seconds,
        report.documents,
        report.chunks,
        len(report.failed),
    )
    return report.as_dict()
