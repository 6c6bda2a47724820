"""An optional mirror of evaluation and lifecycle runs in Weights & Biases.

MLflow is the system of record: the gate, the monitor, ``status`` and the registry read it, and
nothing reads W&B back. Teams whose dashboards live in W&B get the same runs there: the config,
the metrics under the same grouped names (W&B sections charts by the prefix before ``/`` too),
the per-question table as a ``wandb.Table``, and the MLflow run's id and page in the summary so
one click leads to the record. A failed mirror logs a warning and never fails the flow: the
record is already in MLflow.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import WandbSettings
from tasks.tracking.metric_names import logged_metrics
from tasks.tracking.mlflow_threads import quiet_stdout

__all__ = [
    "MirroredRun",
    "evaluation_run",
    "mirror_decision",
    "mirror_evaluation_task",
    "mirror_run",
]

logger = logging.getLogger(__name__)


@dataclass
class MirroredRun:
    """What one mirrored run carries: plain values, so a flow builds it without wandb."""

    name: str
    group: str
    job_type: str
    config: dict[str, Any]
    metrics: dict[str, float]
    summary: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    table: list[Mapping[str, Any]] = field(default_factory=list)
    table_name: str = "questions"


def mirror_run(settings: WandbSettings, run: MirroredRun) -> str | None:
    """Write ``run`` to W&B; returns its W&B run id, or None when the mirror failed.

    ``settings`` are ``Settings.wandb_mirror``: its ``dir`` is resolved there, never guessed
    here from the working directory."""
    if settings.dir is None:
        raise ValueError("W&B mirror settings without a dir: pass Settings.wandb_mirror")
    try:
        return _write(settings, run, settings.dir)
    except Exception as exc:
        logger.warning("W&B mirror of %r failed: %s", run.name, exc)
        return None


def _write(settings: WandbSettings, run: MirroredRun, directory: Path) -> str:
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    options = wandb.Settings(
        silent=True,  # no banners: `--json` output owns stdout
        console="off",  # the flow's own output stays out of W&B's log capture
        disable_git=True,
        disable_code=True,
        x_disable_stats=True,  # system metrics of a short logging call say nothing
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
    )
    with quiet_stdout(sys.stderr):  # W&B prints its banners to stdout
        mirrored = wandb.init(
            project=settings.project,
            entity=settings.entity,
            dir=str(directory),
            mode=settings.mode,
            name=run.name,
            group=run.group,
            job_type=run.job_type,
            tags=[tag[:64] for tag in run.tags if tag],  # W&B caps a tag at 64 characters
            config=run.config,
            reinit="create_new",  # evaluations of one reindex log from parallel threads
            settings=options,
        )
        try:
            table = {run.table_name: _table(run.table)} if run.table else {}
            mirrored.log({**run.metrics, **table})  # one step: the figures and their rows
            mirrored.summary.update(run.summary)
        finally:
            mirrored.finish()
    return str(mirrored.id)


def _table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """Rows as a ``wandb.Table``; lists and dicts as JSON text (W&B columns are scalars)."""
    import wandb

    columns = list(dict.fromkeys(key for row in rows for key in row))
    data = [
        [
            json.dumps(value) if isinstance(value, list | dict) else value
            for value in (row.get(column) for column in columns)
        ]
        for row in rows
    ]
    return wandb.Table(columns=list[str | int](columns), data=data)


def evaluation_run(
    *,
    name: str,
    experiment: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    ci: Mapping[str, tuple[float, float]],
    rows: Sequence[Mapping[str, Any]],
    tags: Mapping[str, str],
    mlflow_run_id: str,
    mlflow_url: str | None,
) -> MirroredRun:
    """An evaluation as W&B sees it: the MLflow run's params, grouped metrics and table."""
    return MirroredRun(
        name=name,
        group=experiment,
        job_type="evaluation",
        config={k: v for k, v in params.items() if v is not None},
        metrics=logged_metrics(metrics, ci),
        summary={"mlflow_run_id": mlflow_run_id, "mlflow_url": mlflow_url or ""},
        tags=[f"{k.removeprefix('ragcycle.')}:{v}" for k, v in sorted(tags.items())],
        table=list(rows),
    )


@task(name="mirror-evaluation-to-wandb", cache_policy=NO_CACHE)
def mirror_evaluation_task(settings: WandbSettings, run: MirroredRun) -> str | None:
    """Prefect edge of :func:`mirror_run` for an evaluation."""
    return mirror_run(settings, run)


def mirror_decision(
    settings: WandbSettings,
    *,
    name: str,
    experiment: str,
    decision: str,
    reasons: Sequence[str],
    params: Mapping[str, Any],
    table: Sequence[Mapping[str, Any]],
    mlflow_run_id: str,
) -> str | None:
    """A lifecycle decision (promote, reject, monitor verdict) mirrored as a W&B run."""
    run = MirroredRun(
        name=name,
        group=experiment,
        job_type="lifecycle",
        config={k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in params.items()},
        metrics={},
        summary={"decision": decision, "reasons": list(reasons), "mlflow_run_id": mlflow_run_id},
        tags=[f"decision:{decision}"],
        table=list(table),
        table_name="gate",
    )
    return mirror_run(settings, run)
