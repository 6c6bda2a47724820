"""The ``reindex`` flow: build the contenders (the configured settings, a refresh of the live
config, the ``lifecycle.candidates`` challengers), evaluate them and the live version on the same
golden questions, and promote the one the paired gate prefers, or none. The live version
answers throughout; see :mod:`tasks.challengers` and :mod:`tasks.promotion` for the rules."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.challenge import Built, GroupRequest, build_and_evaluate, evaluate_champion
from ragcycle.errors import ConfigError, ConflictError
from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings, merge_nested
from tasks.answering import GuardConfig
from tasks.challengers import Contender, plan_contenders, share_key
from tasks.indexing.lexical import collection_names, drop_collection
from tasks.locking import registry_lock, writer_lock
from tasks.promotion import GateStats, gate_names
from tasks.reindex_report import gate_contenders, summarize_candidates
from tasks.stopping import gather, request_stop, settle, stop_message, stoppable
from tasks.tracking.flow_runs import describe_flow_run, run_tags
from tasks.tracking.mlflow_threads import settle_autologging
from tasks.tracking.runs import (
    end_failed_run,
    mlflow_client,
    record_decision,
    start_lifecycle_run,
)
from tasks.versions import (
    IndexVersion,
    VersionRegistry,
    explicit_overrides,
    pending_build,
    settings_for_version,
)
from tasks.versions.records import CorpusState, corpus_state
from tasks.versions.retention import clean_up, fail_unfinished

__all__ = ["ReindexRequest", "reindex"]


class ReindexRequest(BaseModel):
    """Why and what to rebuild; ``config`` changes the configured contender."""

    reason: str = Field("manual", description="recorded with the decision")
    paths: list[str] | None = Field(
        None, description="sources (default: lifecycle.sources, else the live version's)"
    )
    dataset: str | None = Field(None, description="golden set (default: lifecycle.golden_dataset)")
    config: dict[str, Any] = Field(default_factory=dict, description="configured overrides")
    candidates: list[str] | None = Field(
        None, description="names of lifecycle.candidates to try (default: all)"
    )
    parallel: bool = Field(True, description="build and evaluate contenders side by side")
    force: bool = Field(False, description="build even if the same target is live or building")
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    """What the steps of one reindex share once the contenders are known."""

    request: ReindexRequest
    registry: VersionRegistry
    live: IndexVersion | None
    dataset: str | None
    experiment: str
    parent_run_id: str
    base_overrides: dict[str, Any]  # the request's overrides without serving-config groups


@flow(name="reindex")
def reindex(request: ReindexRequest) -> dict[str, Any]:
    """Build, evaluate, compare, then promote the best contender or none; a no-op when every
    contender is live or being built, so a burst of triggers leads to one rebuild."""
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    with writer_lock(settings.data_dir, "reindex", settings.writer_wait_seconds), stoppable():
        return _reindex(request, settings)


def _reindex(request: ReindexRequest, settings: Settings) -> dict[str, Any]:
    logger = get_run_logger()
    begun = time.perf_counter()
    mlflow_client(settings.mlflow_tracking_uri)
    # On this thread, before any contender thread imports: see tasks.tracking.mlflow_threads.
    settle_autologging()
    registry = VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)
    live = registry.live()
    paths = request.paths or [str(p) for p in settings.lifecycle.sources]
    paths = paths or (live.sources if live else [])
    if not paths:
        raise ConfigError(
            "nothing to reindex: pass paths, set lifecycle.sources, or `ragcycle ingest` first"
        )
    dataset = request.dataset or (
        str(settings.lifecycle.golden_dataset) if settings.lifecycle.golden_dataset else None
    )
    if dataset is None and live is not None:
        raise ConfigError("a live version exists: set lifecycle.golden_dataset to gate a new one")
    configured = load_settings(
        request.config_file, **merge_nested(request.overrides, request.config)
    )
    corpora: dict[tuple[str, ...], CorpusState] = {}

    def corpus_of(contender: Settings) -> CorpusState:
        key = tuple(contender.ingest.extensions)
        if key not in corpora:
            corpora[key] = corpus_state(paths, contender.ingest.extensions)
        return corpora[key]

    contenders, skipped = plan_contenders(
        configured,
        live,
        settings_for_version(settings, live) if live else None,
        corpus_of,
        configured_overrides=request.config,
        only=request.candidates,
        force=request.force,
    )
    if not request.force:
        contenders, busy = _not_being_built(registry, contenders, settings)
        skipped += busy
    experiment = f"{settings.mlflow.experiment_prefix}-lifecycle"
    index = settings.chroma.collection
    params: dict[str, Any] = {"reason": request.reason, "index": index, "sources": paths}
    if not contenders:
        return _record(
            logger, settings, experiment, "noop", skipped, params, [], {"skipped": skipped}
        )

    parent = start_lifecycle_run(
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        experiment,
        f"reindex · {index}",
    )
    base = {
        k: v for k, v in request.overrides.items() if k not in explicit_overrides(request.overrides)
    }
    context = _Context(request, registry, live, dataset, experiment, parent, base)
    workers = settings.prefect.max_workers if request.parallel else 1
    timeout = settings.lifecycle.contender_timeout_minutes * 60
    # On the main thread, where a signal interrupts it: a contender thread importing spaCy and
    # loading its model for the guardrails cannot be stopped, and that takes seconds.
    GuardConfig.from_settings(settings)
    settle_autologging()
    try:
        built, champion = _build_and_evaluate(
            _groups(contenders, context), context, workers, timeout
        )
    except BaseException as exc:
        _abandon(registry, settings, parent, exc)
        raise

    tolerances, thresholds = gate_names(settings.lifecycle, "k")  # each version at its own k
    stats = GateStats(
        samples=settings.evaluation.bootstrap_samples,
        confidence=settings.lifecycle.gate_confidence,
        power=settings.lifecycle.gate_power,
        seed=settings.evaluation.seed,
        exclude_flaky=settings.lifecycle.exclude_flaky,
        min_questions=settings.lifecycle.gate_min_questions,
    )
    outcome = gate_contenders(contenders, built, champion, tolerances, thresholds, stats)
    chosen = outcome.chosen
    if chosen is not None:
        try:
            with registry_lock(settings.data_dir, settings.writer_wait_seconds + 60):
                registry.promote_over(chosen.version, live.version if live else None)
        except ConflictError as exc:
            logger.warning("%s", exc)
            outcome.reasons.insert(0, str(exc))
            chosen = outcome.chosen = None
    _discard(registry, settings, built, keep=chosen.version if chosen else None)
    cleanup = clean_up(
        registry,
        keep=settings.lifecycle.retention,
        build_timeout_seconds=settings.lifecycle.build_timeout_minutes * 60,
        existing=partial(collection_names, settings),
        drop=partial(drop_collection, settings),
    )
    dropped = cleanup.deleted
    seconds = time.perf_counter() - begun
    extra = {
        "version": chosen.version if chosen else None,
        "collection": chosen.collection if chosen else None,
        "chosen": chosen.name if chosen else None,
        "previous": live.version if live else None,
        "live": chosen.version if chosen else (live.version if live else None),
        "deleted_versions": dropped,
        "cleaned_versions": sorted(cleanup.emptied + cleanup.abandoned),
        "candidates": summarize_candidates(contenders, built, outcome),
        "champion": outcome.champion_summary,
        "skipped": skipped,
        "warnings": outcome.warnings,
        "seconds": round(seconds, 1),
        "parallel": request.parallel,
    }
    decision = "promoted" if chosen else "rejected"
    name = f"reindex · v{chosen.version} promoted" if chosen else "reindex · none promoted"
    return _record(
        logger,
        settings,
        experiment,
        decision,
        outcome.reasons,
        params,
        outcome.table,
        extra,
        run_id=parent,
        run_name=name,
    )


class _StoppableThreadPool(ThreadPoolTaskRunner):  # type: ignore[type-arg]
    """Prefect's thread pool, except that leaving it on an error does not wait for threads
    still running: they stop at their next step (tasks.stopping), and a stop must not wait for
    a contender to finish its build."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is not None and self._executor is not None:
            for event in self._cancel_events.values():
                event.set()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


# How long a stopped reindex waits for its contenders to reach their next step and record
# themselves failed before it marks them itself (a SIGTERM must end the run within 15 s, and
# the CLI still has to record the stop and stop Prefect's temporary server after this).
STOP_GRACE_SECONDS = 4.0


def _build_and_evaluate(
    groups: list[tuple[str, GroupRequest]], context: _Context, workers: int, timeout: float
) -> tuple[list[Built], dict[str, Any] | None]:
    """Every group's build and evaluations, and the champion's evaluation, side by side; the
    first to fail, a signal, or ``timeout`` seconds stop them all."""
    with _StoppableThreadPool(max_workers=max(1, workers)) as runner:
        champion_future: PrefectFuture[dict[str, Any]] | None = (
            runner.submit(
                evaluate_champion,
                {
                    "registry": context.registry,
                    "version": context.live.version,
                    "dataset": context.dataset,
                    "experiment": context.experiment,
                    "parent_run_id": context.parent_run_id,
                    "config_file": context.request.config_file,
                    "overrides": context.base_overrides,
                },
            )
            if context.live is not None and context.dataset is not None
            else None
        )
        futures: list[PrefectFuture[list[Built]]] = [
            runner.submit(build_and_evaluate, {"request": group, "label": label})
            for label, group in groups
        ]
        waiting: list[PrefectFuture[Any]] = [*futures, *filter(None, [champion_future])]
        try:
            gather(waiting, timeout, setting="lifecycle.contender_timeout_minutes")
        except BaseException as exc:
            request_stop(stop_message(exc))
            settle(waiting, STOP_GRACE_SECONDS)
            raise
        built: list[Built] = [b for future in futures for b in future.result()]
        champion = champion_future.result() if champion_future is not None else None
    return built, champion


def _abandon(
    registry: VersionRegistry, settings: Settings, parent: str, exc: BaseException
) -> None:
    """What a failed, stopped or timed-out reindex leaves: its unfinished versions failed (the
    next reindex proceeds), its MLflow run FAILED; the live version is untouched."""
    why = stop_message(exc)
    try:
        fail_unfinished(registry, why)
    finally:
        end_failed_run(settings.mlflow_tracking_uri, parent)


def _not_being_built(
    registry: VersionRegistry, contenders: Sequence[Contender], settings: Settings
) -> tuple[list[Contender], list[str]]:
    timeout = settings.lifecycle.build_timeout_minutes * 60
    kept, busy = [], []
    for contender in contenders:
        pending = pending_build(registry, contender.target, timeout)
        if pending is None:
            kept.append(contender)
        else:
            why, version = pending
            busy.append(
                f"{contender.name}: target {contender.target} {why} (version {version.version})"
            )
    return kept, busy


def _groups(contenders: Sequence[Contender], context: _Context) -> list[tuple[str, GroupRequest]]:
    """Contenders that would hold the same chunks share one build; the live one's are reused."""
    live, request, base = context.live, context.request, context.base_overrides
    live_key = (
        share_key(live.tags.get("corpus_snapshot", ""), live.config) if live is not None else None
    )
    grouped: dict[str, list[Contender]] = {}
    for contender in contenders:
        grouped.setdefault(share_key(contender.corpus.snapshot, contender.config), []).append(
            contender
        )
    parallel = request.parallel and len(grouped) > 1
    return [
        (
            "+".join(c.name for c in members),
            GroupRequest(
                contenders=members,
                registry=context.registry,
                reason=request.reason,
                dataset=context.dataset,
                experiment=context.experiment,
                parent_run_id=context.parent_run_id,
                config_file=request.config_file,
                base_overrides=base,
                # --force rebuilds even what the live collection already holds.
                reuse_collection=(
                    live.collection if live and key == live_key and not request.force else None
                ),
                # Two progress displays at once would fight over the terminal.
                progress=not parallel and bool(base.get("progress", True)),
            ),
        )
        for key, members in grouped.items()
    ]


def _discard(
    registry: VersionRegistry, settings: Settings, built: Sequence[Built], keep: int | None
) -> None:
    """Reject every contender but the chosen one; drop collections no version still needs."""
    for item in built:
        if item.version == keep:
            continue
        registry.set_status(item.version, "rejected")
        if not registry.collection_in_use(item.collection, besides=item.version):
            drop_collection(settings, item.collection)


def _record(
    logger: Any,
    settings: Settings,
    experiment: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
    extra: dict[str, Any],
    *,
    run_id: str | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    name = run_name or f"reindex · {decision}"
    describe_flow_run(
        name,
        run_tags(index=settings.chroma.collection, decision=decision, version=extra.get("version")),
    )
    recorded = record_decision(
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        experiment,
        f"{settings.chroma.collection}: {name}",  # names the version it promoted, if any
        decision,
        reasons,
        params,
        table,
        run_id=run_id,
        run_name=name,
        extra=extra,
        ui_url=settings.mlflow_ui_url,
        mirror=settings.wandb_mirror,
    )
    logger.info("Reindex decision: %s (%s)", decision, "; ".join(reasons) or "all checks passed")
    return {"decision": decision, "reasons": reasons, "table": table, "run_id": recorded, **extra}
