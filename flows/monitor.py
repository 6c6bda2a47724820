"""The ``monitor`` flow: evaluate the live index, check thresholds, baseline and drift, and ask
for a reindex when something is off — through a Prefect event that the ``reindex`` deployment's
trigger answers on a server, or by running ``reindex`` directly when no server is configured."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.events import emit_event
from pydantic import BaseModel, Field

from flows.evaluate import EvaluateRequest, evaluate
from flows.reindex import ReindexRequest, reindex
from ragcycle.errors import ConfigError
from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings
from tasks.embedding import embedder_from_settings
from tasks.evaluation.golden import load_golden
from tasks.indexing.store import open_index
from tasks.loading import discover_sources, hash_sources
from tasks.monitoring import (
    baseline_metrics,
    check_production,
    corpus_drift,
    measure_production_task,
    query_drift,
    run_checks_task,
    unindexed_of,
)
from tasks.monitoring.online import judge_live_answers
from tasks.promotion import gate_names
from tasks.query_log import QueryLog
from tasks.tracking.flow_runs import describe_flow_run, run_tags
from tasks.tracking.plots import plot_production_over_time, plot_quality_over_time
from tasks.tracking.runs import mlflow_client, record_decision
from tasks.tracking.series import append_production_task
from tasks.versions import resolve_serving

__all__ = [
    "QUALITY_DROPPED",
    "MonitorRequest",
    "index_resource",
    "monitor",
    "quality_plot_path",
]

QUALITY_DROPPED = "ragcycle.quality.dropped"


class MonitorRequest(BaseModel):
    """What to watch; defaults come from ``lifecycle`` settings."""

    dataset: str | None = None
    paths: list[str] | None = None
    act: bool = Field(True, description="on a failed check, trigger the reindex")
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


def index_resource(index_name: str) -> dict[str, str]:
    """The Prefect event resource for one logical index (what triggers match on)."""
    return {
        "prefect.resource.id": f"ragcycle.index.{index_name}",
        "prefect.resource.name": index_name,
    }


@flow(name="monitor")
def monitor(request: MonitorRequest) -> dict[str, Any]:
    """Check the live version; emit ``ragcycle.quality.dropped`` with the reasons if it fails."""
    logger = get_run_logger()
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    mlflow_client(settings.mlflow_tracking_uri)
    life = settings.lifecycle
    dataset = request.dataset or (str(life.golden_dataset) if life.golden_dataset else None)
    serving = resolve_serving(settings, overrides=request.overrides)
    live = serving.version
    paths = request.paths or [str(p) for p in life.sources] or (live.sources if live else [])
    if dataset is None or not paths:
        raise ConfigError(
            "the monitor needs lifecycle.golden_dataset, and lifecycle.sources or an ingest"
        )
    collection = serving.collection
    # Gate metrics are named with the live version's k, as its evaluations were.
    k = serving.settings.retrieval.k

    result = evaluate(
        EvaluateRequest(
            dataset=dataset,
            collection=settings.chroma.collection,
            version=live.version if live else None,
            config_file=request.config_file,
            overrides=request.overrides,
            role="monitor",
        )
    )
    tolerances, thresholds = gate_names(life, k)
    prefix = settings.mlflow.experiment_prefix
    baseline = baseline_metrics(
        settings.mlflow_tracking_uri,
        [result["experiment"], f"{prefix}-lifecycle"],
        list(tolerances),
        life.baseline_runs,
        exclude_run=result["run_id"],
        version=live.version if live else None,
        digest=result["dataset_digest"],
    )
    extensions = serving.settings.ingest.extensions
    files = hash_sources(discover_sources([Path(p) for p in paths], extensions))
    index = open_index(serving.settings, collection, create=False)
    states = index.document_states()
    drift = corpus_drift(
        files,
        states,
        built_snapshot=live.tags.get("corpus_snapshot") if live else None,
        unindexed=unindexed_of(live.tags.get("unindexed", "")) if live else {},
    )
    log = QueryLog(settings.query_log_path)
    queries = log.recent(life.query_window)
    checks = run_checks_task(
        result["metrics"],
        thresholds,
        tolerances,
        baseline,
        drift,
        query_drift(queries, serving.settings.generation.min_score),
        life.query_drift_max_share,
        result.get("unreliable_metrics", []),
        result.get("uncalibrated_metrics", []),
    )
    limits = life.production
    window = log.recent(limit=100_000, since=time.time() - limits.window_hours * 3600)
    production = measure_production_task(
        window,
        log.ratings(),
        [item.question for item in load_golden(Path(dataset)).items],
        embedder_from_settings(serving.settings),
        limits,
    )
    graded = judge_live_answers(window, index, serving.settings)
    if graded is not None:
        production = replace(
            production, judged=graded.graded, judged_groundedness=graded.groundedness
        )
    production_reasons, production_table = check_production(production, limits)
    checks.reasons += production_reasons
    checks.table += production_table
    params = {
        "collection": collection,
        "live_version": live.version if live else None,
        "evaluation_run": result["run_id"],
        "drift": checks.drift,
    }
    decision_run = record_decision(
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        f"{settings.mlflow.experiment_prefix}-lifecycle",
        f"Monitor of {settings.chroma.collection}",
        checks.decision,
        checks.reasons,
        params,
        checks.table,
        run_name=f"monitor · {checks.decision}",
        ui_url=settings.mlflow_ui_url,
        mirror=settings.wandb_mirror,
    )
    # The live index's quality across monitor runs, on the run of this verdict.
    plot_quality_over_time(
        settings.mlflow_tracking_uri,
        result["experiment"],
        sorted(set(tolerances) | set(thresholds)),
        quality_plot_path(settings),
        log_to_run=decision_run,
    )
    # Production as lines over time: the figures appended to the index's production run.
    production_run = append_production_task(
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        f"{prefix}-lifecycle",
        settings.chroma.collection,
        production.series(),
        time.time(),
    )
    plot_production_over_time(
        settings.mlflow_tracking_uri,
        production_run,
        settings.chroma.collection,
        production_plot_path(settings),
        log_to_run=decision_run,
    )
    describe_flow_run(
        f"monitor · {checks.decision}",
        run_tags(
            index=settings.chroma.collection,
            version=live.version if live else None,
            decision=checks.decision,
        ),
    )
    logger.info("Monitor decision: %s %s", checks.decision, checks.reasons)
    triggered: dict[str, Any] | None = None
    if checks.reasons and request.act:
        reason = "; ".join(checks.reasons)
        if settings.prefect.api_url:
            emit_event(
                event=QUALITY_DROPPED,
                resource=index_resource(settings.chroma.collection),
                payload={"reason": reason, "reasons": checks.reasons},
            )
            triggered = {"event": QUALITY_DROPPED}
        else:
            triggered = reindex(
                ReindexRequest(
                    reason=f"monitor: {reason}",
                    paths=paths,
                    dataset=dataset,
                    config_file=request.config_file,
                    overrides=request.overrides,
                )
            )
    return {
        "decision": checks.decision,
        "reasons": checks.reasons,
        "metrics": result["metrics"],
        "baseline": baseline,
        "drift": checks.drift,
        "production": production.as_dict(),
        "live_version": live.version if live else None,
        "triggered": triggered,
    }


def production_plot_path(settings: Settings) -> Path:
    """Where the monitor draws production over time (also on its MLflow run)."""
    return settings.data_dir / "plots" / f"monitor-production-{settings.chroma.collection}.png"


def quality_plot_path(settings: Settings) -> Path:
    """Where the monitor draws the live index's quality over its runs (also on its MLflow run)."""
    return settings.data_dir / "plots" / f"monitor-{settings.chroma.collection}.png"
