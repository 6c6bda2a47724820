"""The ``benchmark-beir`` flow: a BEIR-format set ingested and scored like any evaluation.

Mirrors MTEB's retrieval setup by default (one whole-document chunk per corpus row, cosine
search) so the published numbers of the embedding model are reproducible; pass chunking
overrides to measure ragcycle's own chunking on the same set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from ragcycle.runtime import configure_environment
from ragcycle.settings import load_settings
from tasks.chunking import chunk_documents_task, flatten_chunks
from tasks.embedding import EmbeddingCache, embed_with_cache_task, embedder_from_settings
from tasks.evaluation.beir import (
    load_beir_corpus_task,
    load_beir_queries_task,
    score_beir_task,
    summarize_beir,
)
from tasks.indexing.lexical import sync_lexical_task
from tasks.indexing.plan import stale_documents
from tasks.indexing.store import document_states_task, open_index
from tasks.indexing.writes import write_documents_task
from tasks.retrieval import retrieve_many_task, search_plan
from tasks.tracking.flow_runs import describe_flow_run, run_tags
from tasks.tracking.runs import EvaluationRecord, log_evaluation_task, mlflow_client

__all__ = ["BeirRequest", "benchmark_beir"]

BATCH = 256


class BeirRequest(BaseModel):
    """Which BEIR folder, which split, and optional chunking instead of whole documents."""

    folder: str
    split: str = "test"
    k: int = Field(10, ge=1)
    chunking: dict[str, Any] | None = Field(
        None, description="chunking settings; default: one chunk per document, as MTEB"
    )
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


@flow(name="benchmark-beir")
def benchmark_beir(request: BeirRequest) -> dict[str, Any]:
    """Ingest the corpus into its own collection, retrieve for every judged query, score, log."""
    logger = get_run_logger()
    started = time.perf_counter()
    folder = Path(request.folder).resolve()
    chunking = request.chunking or {"strategy": "whole"}
    settings = load_settings(request.config_file, **{**request.overrides, "chunking": chunking})
    configure_environment(settings)
    mlflow_client(settings.mlflow_tracking_uri)
    name = folder.name
    backend = settings.embedding.backend
    suffix = "" if backend == "torch" else f"-{backend}"  # other vectors, another collection
    index = open_index(settings, f"beir-{name}-{settings.chunking.config_hash()}{suffix}")
    mode = settings.retrieval.mode
    describe_flow_run(
        f"benchmark · {name} · {mode}{suffix}",
        run_tags(dataset=name, collection=index.name, retrieval=mode, backend=backend),
    )
    embedder = embedder_from_settings(settings)
    cache = EmbeddingCache(settings.embedding_cache_path)
    chunking_hash = settings.chunking.config_hash()

    documents = load_beir_corpus_task(str(folder))
    states = document_states_task(index)
    todo = stale_documents(documents, states, chunking_hash)
    logger.info("%d documents, %d to index into %s", len(documents), len(todo), index.name)
    for start in range(0, len(todo), BATCH):
        batch = todo[start : start + BATCH]
        label = f"{start // BATCH}"
        chunks = chunk_documents_task(batch, settings.chunking, label=label)
        ordered = flatten_chunks(batch, chunks)
        vectors, _ = embed_with_cache_task(
            [c.indexed_text for c in ordered],
            [c.content_hash for c in ordered],
            embedder,
            cache,
            label=label,
        )
        write_documents_task(index, batch, chunks, vectors, states, chunking_hash, label=label)
    cache.close()
    sync_lexical_task(index, settings)
    plan = search_plan(settings, index)

    judged = load_beir_queries_task(str(folder), request.split)
    query_ids = list(judged.queries)
    multiplier = 1 if settings.chunking.strategy == "whole" else settings.retrieval.fetch_multiplier
    retrievals = retrieve_many_task(
        [judged.queries[q] for q in query_ids],
        index,
        embedder,
        request.k,
        multiplier,
        batched=True,  # a throughput benchmark: per-query latency is not what it measures
        plan=plan,
    )
    rows = score_beir_task(query_ids, retrievals, judged.qrels, request.k)
    metrics = summarize_beir(rows, request.k)
    seconds = time.perf_counter() - started
    experiment = f"{settings.mlflow.experiment_prefix}-beir-{name}"
    params = {
        "dataset": str(folder),
        "split": request.split,
        "collection": index.name,
        "embedding_model": settings.embedding.model_name,
        "chunking": settings.chunking.model_dump_json(),
        "k": request.k,
        "hnsw": settings.chroma.hnsw.model_dump_json(),
        "retrieval_mode": plan.mode,
        "embedding_backend": backend,
    }
    report = {
        "metrics": metrics,
        "queries": len(query_ids),
        "docs": len(documents),
        "params": params,
    }
    record = EvaluationRecord(
        experiment=experiment,
        run_name=f"beir-{name}-{request.split}-{plan.mode}",
        params=params,
        metrics={**metrics, "seconds": seconds},
        ci={},
        rows=rows,
        dataset_rows=[{"query_id": q, "query": judged.queries[q]} for q in query_ids],
        dataset_source=str(folder),
        dataset_name=f"{name}-{request.split}",
        report=report,
        tags={"ragcycle.kind": "benchmark"},
    )
    run_id = log_evaluation_task(
        record, settings.mlflow_tracking_uri, settings.mlflow_artifact_location
    )
    logger.info("BEIR %s/%s: %s (run %s)", name, request.split, metrics, run_id)
    return {
        "run_id": run_id,
        "experiment": experiment,
        "metrics": metrics,
        "queries": len(query_ids),
        "docs": len(documents),
        "seconds": round(seconds, 2),
        "retrieval_mode": plan.mode,
        "embedding_backend": backend,
    }
