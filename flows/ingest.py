"""The ``ingest`` flow: files -> documents -> chunks -> vectors -> Chroma, incrementally.

The unit of work is a partition of the ingest plan: :func:`ingest_partition` runs the stages
load -> chunk -> embed -> write on it. That sequence is orchestration, so it lives here with the
flow, as a task any worker of the task runner can run.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.runners import task_runner_from_settings
from ragcycle.errors import ConfigError
from ragcycle.progress import progress_bars
from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings
from tasks.embedding import (
    EmbeddingCache,
    ProgressCallback,
    TextEmbedder,
    embed_with_cache,
    embedder_from_settings,
)
from tasks.guardrails.scan import finding_metadata
from tasks.indexing.lexical import sync_lexical_task
from tasks.indexing.plan import Partition, PartitionResult, partition_plan, plan_ingest_task
from tasks.indexing.prepare import Recipe, parse_pool, prepare_partition, recipe_from_settings
from tasks.indexing.store import VectorIndex, document_states_task, open_index
from tasks.indexing.writes import remove_documents_task, write_documents
from tasks.loading import walk_sources
from tasks.locking import writer_lock
from tasks.retrying import outage_task
from tasks.stopping import raise_if_stopped
from tasks.tracking.flow_runs import describe_flow_run, run_tags
from tasks.tracking.reports import IngestReport, StageTimer, publish_ingest_report
from tasks.tracking.runs import log_lifecycle_decision, mlflow_client, start_lifecycle_run
from tasks.versions import VersionRegistry, resolve_serving
from tasks.versions.records import CorpusState, begin_first_version, built_tags, corpus_state

__all__ = [
    "IngestRequest",
    "ingest",
    "ingest_partition",
    "ingest_partition_task",
    "partition_size",
]


class IngestRequest(BaseModel):
    """What to ingest, and where; settings come from the config file, env and ``overrides``."""

    paths: list[str] = Field(
        default_factory=list, description="files or directories (default: lifecycle.sources)"
    )
    collection: str | None = Field(None, description="target collection (default: settings)")
    prune: bool | None = Field(None, description="remove deleted files' chunks (default: settings)")
    config_file: str | None = Field(None, description="ragcycle.toml to read")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="settings overrides (no secrets: they show in the UI)"
    )


def ingest_partition(
    partition: Partition,
    index: VectorIndex,
    embedder: TextEmbedder,
    cache: EmbeddingCache | None,
    recipe: Recipe,
    *,
    on_progress: ProgressCallback | None = None,
    pool: Executor | None = None,
) -> PartitionResult:
    """Load, chunk, scan (in ``pool`` when given), embed and write one partition; bad files are
    recorded, not raised.

    With a scan in the recipe every chunk is checked for PII and injection markers; flagged
    chunks are indexed with their findings, or left out when the recipe quarantines them."""
    raise_if_stopped()
    prepared = prepare_partition(partition.sources, recipe, pool)
    raise_if_stopped()
    seconds = dict(prepared.seconds)
    begun = time.perf_counter()
    ordered = prepared.ordered
    vectors, embedded = embed_with_cache(
        [chunk.indexed_text for chunk in ordered],
        [chunk.content_hash for chunk in ordered],
        embedder,
        cache,
        on_progress=on_progress,
    )
    seconds["embed"], begun = time.perf_counter() - begun, time.perf_counter()
    findings = prepared.findings
    scanned = (
        {chunk.chunk_id: finding_metadata(findings.get(chunk.chunk_id)) for chunk in ordered}
        if recipe.scan_entities is not None
        else None
    )
    written = write_documents(
        index,
        prepared.documents,
        prepared.chunks,
        vectors,
        partition.states,
        recipe.chunking.config_hash(),
        scanned,
    )
    seconds["index"] = time.perf_counter() - begun
    return PartitionResult(
        warnings={document.doc_id: list(document.warnings) for document in prepared.documents},
        failures=prepared.failures,
        written=written.written,
        deleted=written.deleted,
        embedded=embedded,
        seconds=seconds,
        flagged=[finding.as_dict() for finding in findings.values()],
        quarantined=len(findings) if recipe.quarantine else 0,
        truncated=prepared.truncated,
    )


@outage_task("ingest-partition", task_run_name="ingest-{partition.label}")
def ingest_partition_task(
    settings: Settings,
    collection: str,
    partition: Partition,
    on_progress: ProgressCallback | None = None,
    pool: Executor | None = None,
) -> PartitionResult:
    """Prefect edge of :func:`ingest_partition`, runnable on any worker of a task runner.

    It opens its own index client, model and cache (the model once per process), so the same
    task runs in a thread of the flow or in a Dask worker process on another machine. Retried
    because a Chroma server can blip; a retry redoes the partition, which is idempotent.
    """
    index = open_index(settings, collection)
    cache = EmbeddingCache(settings.embedding_cache_path) if settings.embedding.cache else None
    try:
        return ingest_partition(
            partition,
            index,
            embedder_from_settings(settings),
            cache,
            recipe_from_settings(settings),
            on_progress=on_progress,
            pool=pool,
        )
    finally:
        if cache is not None:
            cache.close()


def partition_size(files: int, settings: Settings) -> int:
    """Files per partition: ``ingest.batch_documents`` at most, and small enough that every
    worker gets two partitions, so one loads and scans while another embeds (a corpus of 12
    files in one partition of 16 ran its stages strictly one after another)."""
    workers = settings.prefect.max_workers
    return max(1, min(settings.ingest.batch_documents, -(-files // (2 * workers))))


def collection_exists(settings: Settings, name: str) -> bool:
    """Whether Chroma already holds ``name`` (an index from before versions were recorded)."""
    from tasks.indexing.store import open_chroma_client

    return name in {c.name for c in open_chroma_client(settings).list_collections()}


def _finish_first_version(
    registry: VersionRegistry,
    number: int,
    report: IngestReport,
    corpus: CorpusState,
    settings: Settings,
) -> None:
    failed = [item["doc_id"] for item in report.failed]
    tags = built_tags(corpus, report.chunks["total"], failed, settings)
    registry.set_status(number, "ready", **tags)
    promoted = registry.promote(number)
    registry.describe(
        number,
        f"Chroma collection `{promoted.collection}`, built by the first ingest:"
        f" {report.chunks['total']} chunks of {len(corpus.hashes)} documents.",
    )
    if promoted.run_id:
        # The version's source run says what happened: built from the first ingest, promoted.
        log_lifecycle_decision(
            tracking_uri=settings.mlflow_tracking_uri,
            artifact_location=settings.mlflow_artifact_location,
            experiment=_lifecycle_experiment(settings),
            decision="promoted",  # as a reindex that promotes records it
            reasons=[f"first ingest of {registry.index_name}: version {number} is live"],
            params={"index": registry.index_name, "collection": promoted.collection},
            table=[],
            run_id=promoted.run_id,
            run_name=f"ingest · {registry.index_name} v{number} promoted",
            extra={"ingest": report.as_dict()},
        )


def _lifecycle_experiment(settings: Settings) -> str:
    return f"{settings.mlflow.experiment_prefix}-lifecycle"


@flow(name="ingest", log_prints=False)
def ingest(request: IngestRequest) -> dict[str, Any]:
    """Bring the collection in line with the files: add new, redo changed, drop deleted ones."""
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    with writer_lock(settings.data_dir, "ingest", settings.writer_wait_seconds):
        return _ingest(request, settings)


def _ingest(request: IngestRequest, settings: Settings) -> dict[str, Any]:
    logger = get_run_logger()
    mlflow_client(settings.mlflow_tracking_uri)
    timer = StageTimer()
    serving = resolve_serving(settings, request.collection, overrides=request.overrides)
    settings = serving.settings  # a live version is updated with the config it was built with
    paths = [Path(p) for p in request.paths] or [Path(p) for p in settings.lifecycle.sources]
    if not paths and serving.version is not None:
        paths = [Path(p) for p in serving.version.sources]
    if not paths:
        raise ConfigError("nothing to ingest: pass paths or set lifecycle.sources")
    first = serving.version is None and not collection_exists(settings, serving.collection)
    registry = VersionRegistry(settings.mlflow_tracking_uri, serving.index)
    if first:
        # The first ingest of an index is its version 1, live once written: one path into the
        # index, so reindex, rollback and the monitor have a version to work from.
        corpus = corpus_state(paths, settings.ingest.extensions)
        created = begin_first_version(
            registry,
            settings,
            corpus,
            source_run=lambda: start_lifecycle_run(
                settings.mlflow_tracking_uri,
                settings.mlflow_artifact_location,
                _lifecycle_experiment(settings),
                f"ingest · {serving.index}",
            ),
        )
        logger.info("First ingest of %s: building version %d", serving.collection, created.version)
        target = created.collection
    else:
        target = serving.collection
    index = open_index(settings, target)
    number = created.version if first else (serving.version.version if serving.version else None)
    describe_flow_run(
        f"ingest · {serving.index}" + (f" v{number}" if number else ""),
        run_tags(index=serving.index, collection=target, version=number),
    )
    report = IngestReport(collection=index.name, policy=settings.guardrails.ingest_policy)
    chunking_hash = settings.chunking.config_hash()
    prune = settings.ingest.prune if request.prune is None else request.prune
    prune_roots = [str(p.expanduser().absolute()) for p in paths if prune and p.is_dir()]

    with timer.stage("plan"):
        sources, passed_over = walk_sources(paths, settings.ingest.extensions)
        report.warnings.extend(passed_over)
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

    partitions = partition_plan(plan.to_load, states, partition_size(len(plan.to_load), settings))
    changed_ids = {source.doc_id for source in plan.changed}
    runner = task_runner_from_settings(settings)
    in_process = isinstance(runner, ThreadPoolTaskRunner)
    # A pool (or a progress callback) cannot travel to another process: only threads share them.
    pool_files = len(plan.to_load) if in_process else 0
    with progress_bars(settings.progress) as bars, runner, parse_pool(settings, pool_files) as pool:
        files_bar = bars.bar("documents", total=len(plan.to_load))
        chunks_bar = bars.bar("chunks", total=None)
        futures: list[PrefectFuture[PartitionResult]] = [
            runner.submit(
                ingest_partition_task,
                {
                    "settings": settings,
                    "collection": index.name,
                    "partition": partition,
                    "on_progress": chunks_bar.advance if in_process else None,
                    "pool": pool,
                },
            )
            for partition in partitions
        ]
        for future in as_completed(futures):
            result = future.result()
            files_bar.advance(result.files)
            if not in_process:
                chunks_bar.advance(result.written)
            report.record_partition(result, changed_ids)
            for stage, seconds in result.seconds.items():
                timer.add(stage, seconds)
    with timer.stage("index"):
        removed_chunks = remove_documents_task(index, plan.removed, states)
    report.record_write(0, removed_chunks, 0)
    with timer.stage("lexical"):
        synced = sync_lexical_task(index, settings)
    report.lexical = {"added": synced.added, "removed": synced.removed, "total": synced.total}
    report.finish(index.count(), timer)
    publish_ingest_report(report)
    if first:
        _finish_first_version(registry, created.version, report, corpus, settings)
    elif serving.version is not None and serving.version.live:
        mirrored = [*serving.version.sources, *(str(p) for p in paths)]
        refreshed = corpus_state(mirrored, settings.ingest.extensions)
        failed = [item["doc_id"] for item in report.failed]
        tags = built_tags(refreshed, report.chunks["total"], failed, settings)
        registry.set_tags(serving.version.version, **tags)
    logger.info(
        "Ingest into %s done in %.1f s: %s; chunks %s; %d not indexed",
        index.name,
        report.seconds,
        report.documents,
        report.chunks,
        len(report.failed),
    )
    return report.as_dict()
