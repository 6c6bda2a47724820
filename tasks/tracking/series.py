"""Production figures as time series: one MLflow run per index that every monitor run appends
to, each point with its time and a step.

A run per monitor check (the decision runs) gives one value per run, which MLflow charts across
runs only as bars; points appended to one run are what its charts draw as lines over time. The
run is marked finished after each append: it holds series, not work in progress.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tasks.retrying import outage_task
from tasks.tracking.runs import ensure_experiment, mlflow_client

__all__ = ["PREFIX", "append_production", "append_production_task", "production_series"]

PREFIX = "production/"
_COUNT = "production/queries"  # logged by every append, so its history counts the points


def production_run(client: Any, experiment_id: str, index: str) -> str:
    """The index's production run, created (and finished) on first use."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`ragcycle.kind` = 'production' and tags.`ragcycle.index` = '{index}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    tags = {"ragcycle.kind": "production", "ragcycle.index": index}
    run = client.create_run(experiment_id, run_name=f"production · {index}", tags=tags)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def append_production(
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    index: str,
    figures: Mapping[str, float],
    when: float,
) -> str:
    """Append ``figures`` (measured at ``when``, epoch seconds) to the index's production run
    as ``production/<name>``; a figure that was not measured (NaN) leaves a gap."""
    from mlflow.entities import Metric

    client = mlflow_client(tracking_uri)
    run_id = production_run(
        client, ensure_experiment(experiment, artifact_location, tracking_uri), index
    )
    step = len(client.get_metric_history(run_id, _COUNT))
    stamp = int(when * 1000)
    points = [
        Metric(PREFIX + name, float(value), stamp, step)
        for name, value in figures.items()
        if math.isfinite(value)
    ]
    client.log_batch(run_id, metrics=points)
    return run_id


@outage_task("append-production")
def append_production_task(
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    index: str,
    figures: dict[str, float],
    when: float,
) -> str:
    """Prefect edge of :func:`append_production`; retried since a tracking server can blip."""
    return append_production(tracking_uri, artifact_location, experiment, index, figures, when)


def production_series(
    tracking_uri: str, run_id: str, names: Sequence[str]
) -> dict[str, list[tuple[datetime, float]]]:
    """Each figure's points, oldest first, as (time, value)."""
    client = mlflow_client(tracking_uri)
    series: dict[str, list[tuple[datetime, float]]] = {}
    for name in names:
        history = sorted(client.get_metric_history(run_id, PREFIX + name), key=lambda m: m.step)
        series[name] = [
            (datetime.fromtimestamp(m.timestamp / 1000, tz=UTC), float(m.value)) for m in history
        ]
    return series
