"""The ``reindex`` flow: build a candidate index version, gate it against the live one, and
promote it only if it is at least as good. The live version answers throughout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from ragcycle.errors import ConfigError
from ragcycle.runtime import configure_environment
from ragcycle.settings import load_settings
from tasks.indexing.store import open_chroma_client
from tasks.loading import discover_sources, hash_sources
from tasks.monitoring import unindexed_tag
from tasks.promotion import gate_names, quality_gate
from tasks.tracking.runs import mlflow_client, prefect_run_tags, record_decision_task
from tasks.versions import (
    VersionRegistry,
    corpus_snapshot,
    index_config,
    pending_build,
    target_key,
)

__all__ = ["ReindexRequest", "reindex"]


class ReindexRequest(BaseModel):
    """Why and what to rebuild; ``config`` changes the candidate (chunking, embedding model)."""

    reason: str = Field("manual", description="recorded with the decision")
    paths: list[str] | None = Field(None, description="sources (default: lifecycle.sources)")
    dataset: str | None = Field(None, description="golden set (default: lifecycle.golden_dataset)")
    config: dict[str, Any] = Field(default_factory=dict, description="candidate settings overrides")
    force: bool = Field(False, description="build even if the same target is live or building")
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@flow(name="reindex")
def reindex(request: ReindexRequest) -> dict[str, Any]:
    """Build, evaluate, compare, then promote or reject; a no-op when the target is live or
    already being built, so a burst of triggers leads to one rebuild."""
    logger = get_run_logger()
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    mlflow_client(settings.mlflow_tracking_uri)
    candidate_overrides = _merge(request.overrides, request.config)
    candidate_settings = load_settings(request.config_file, **candidate_overrides)
    paths = request.paths or [str(p) for p in settings.lifecycle.sources]
    if not paths:
        raise ConfigError("nothing to reindex: pass paths or set lifecycle.sources")
    dataset = request.dataset or (
        str(settings.lifecycle.golden_dataset) if settings.lifecycle.golden_dataset else None
    )
    registry = VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)
    sources = discover_sources([Path(p) for p in paths], candidate_settings.ingest.extensions)
    hashes = hash_sources(sources)
    snapshot = corpus_snapshot(hashes)
    target = target_key(snapshot, index_config(candidate_settings))
    experiment = f"{settings.mlflow.experiment_prefix}-lifecycle"
    params: dict[str, Any] = {
        "reason": request.reason,
        "target": target,
        "corpus_snapshot": snapshot,
        "index": settings.chroma.collection,
        **index_config(candidate_settings),
    }

    def record(
        decision: str, reasons: list[str], table: list[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        run_id = record_decision_task(
            settings.mlflow_tracking_uri,
            settings.mlflow_artifact_location,
            experiment,
            f"Reindex of {settings.chroma.collection}",
            decision,
            reasons,
            {**params, **extra},
            table,
        )
        logger.info(
            "Reindex decision: %s (%s)", decision, "; ".join(reasons) or "all checks passed"
        )
        return {"decision": decision, "reasons": reasons, "table": table, "run_id": run_id, **extra}

    redundant = (
        None
        if request.force
        else pending_build(registry, target, settings.lifecycle.build_timeout_minutes * 60)
    )
    if redundant is not None:
        why, version = redundant
        return record(
            "noop",
            [f"target {target} {why} (version {version.version})"],
            [],
            version=version.version,
        )

    live = registry.live()
    number, collection = registry.next_collection()
    registry.register(
        collection,
        {
            "target": target,
            "corpus_snapshot": snapshot,
            "reason": request.reason[:500],
            "embedding_model": candidate_settings.embedding.model_name,
            "chunking": candidate_settings.chunking.model_dump_json(),
            "chunking_hash": candidate_settings.chunking.config_hash(),
            "chroma": settings.chroma.url or "embedded",
            **{k.replace("prefect.", "prefect_"): v for k, v in prefect_run_tags().items()},
        },
    )
    try:
        report = ingest(
            IngestRequest(
                paths=paths,
                collection=collection,
                prune=True,
                config_file=request.config_file,
                overrides=candidate_overrides,
            )
        )
        registry.set_status(
            number,
            "ready",
            chunks=str(report["chunks"]["total"]),
            built_at=f"{time.time():.0f}",
            unindexed=unindexed_tag([item["doc_id"] for item in report["failed"]], hashes),
        )
        if dataset is None:
            if live is not None:
                raise ConfigError(
                    "a live version exists: set lifecycle.golden_dataset to gate a new one"
                )
            promote, reasons, table = True, ["first version: nothing to compare against"], []
        else:
            tags = {"ragcycle.index_version": str(number), "ragcycle.role": "candidate"}
            candidate = evaluate(
                EvaluateRequest(
                    dataset=dataset,
                    collection=collection,
                    config_file=request.config_file,
                    overrides=candidate_overrides,
                    tags=tags,
                )
            )
            live_metrics = None
            if live is not None:
                live_eval = evaluate(
                    EvaluateRequest(
                        dataset=dataset,
                        collection=live.collection,
                        config_file=request.config_file,
                        overrides=request.overrides,
                        tags={
                            "ragcycle.index_version": str(live.version),
                            "ragcycle.role": "champion",
                        },
                    )
                )
                live_metrics = live_eval["metrics"]
            tolerances, thresholds = gate_names(settings.lifecycle, settings.retrieval.k)
            gate = quality_gate(
                candidate["metrics"],
                live_metrics,
                tolerances=tolerances,
                thresholds=thresholds,
                candidate_ci=candidate["ci"],
                use_ci=settings.evaluation.repeats > 1,
            )
            promote, reasons, table = gate.promote, gate.reasons, gate.table
    except BaseException as exc:
        registry.set_status(number, "failed", failure=f"{type(exc).__name__}: {exc}"[:500])
        raise
    if promote:
        registry.promote(number)
        client = open_chroma_client(settings)
        dropped = registry.delete(
            registry.expired(settings.lifecycle.retention), client.delete_collection
        )
        return record(
            "promoted",
            reasons,
            table,
            version=number,
            collection=collection,
            previous=live.version if live else None,
            deleted_versions=dropped,
        )
    registry.set_status(number, "rejected", rejected_because="; ".join(reasons)[:500])
    open_chroma_client(settings).delete_collection(collection)
    return record(
        "rejected",
        reasons,
        table,
        version=number,
        collection=collection,
        live=live.version if live else None,
    )
