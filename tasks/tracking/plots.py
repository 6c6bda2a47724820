"""Plots of the lifecycle: metrics people would rather look at than read from a table."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.tracking.metric_names import read_metric
from tasks.tracking.runs import mlflow_client
from tasks.tracking.series import production_series

__all__ = [
    "TimedQuality",
    "VersionQuality",
    "plot_production_over_time",
    "plot_quality_by_version",
    "plot_quality_over_time",
    "quality_by_version",
    "quality_over_time",
]


@dataclass(frozen=True)
class VersionQuality:
    """The newest evaluation of one index version (its metrics as logged), and whether it was
    judged as a candidate."""

    version: int
    metrics: dict[str, float]
    candidate: bool
    run_id: str


def quality_by_version(runs: Iterable[Any]) -> list[VersionQuality]:
    """The newest evaluation run of each index version, by version number.

    Runs come newest first (MLflow's order); a version evaluated again later (the champion
    re-run beside a newer candidate) counts once, so the x axis is versions, not run order."""
    newest: dict[int, VersionQuality] = {}
    for run in runs:
        tags = run.data.tags
        number = tags.get("ragcycle.index_version", "")
        if not number.isdigit() or int(number) in newest:
            continue
        newest[int(number)] = VersionQuality(
            int(number),
            dict(run.data.metrics),
            tags.get("ragcycle.role", "").startswith("candidate"),
            run.info.run_id,
        )
    return [newest[number] for number in sorted(newest)]


def plot_quality_by_version(
    tracking_uri: str,
    experiment: str,
    metrics: Sequence[str],
    path: Path,
    *,
    promoted: Sequence[int] = (),
    log_to_run: str | None = None,
) -> Path | None:
    """A PNG of ``metrics`` per index version (x = version; hollow markers: judged as a
    candidate; dashed lines: promotions), logged as an artifact of ``log_to_run``."""
    client = mlflow_client(tracking_uri)
    versions = quality_by_version(_evaluations(client, experiment, 200))
    if not versions:
        return None
    figure, axis = _figure()
    numbers = [v.version for v in versions]
    for name in metrics:
        line = axis.plot(numbers, [read_metric(v.metrics, name) for v in versions], label=name)[0]
        for quality in versions:
            axis.plot(
                quality.version,
                read_metric(quality.metrics, name),
                marker="o",
                markersize=8,
                color=line.get_color(),
                markerfacecolor="white" if quality.candidate else line.get_color(),
            )
    for number in promoted:
        axis.axvline(number, color="grey", linestyle="--", linewidth=1)
        axis.annotate(f"v{number} promoted", (number, 1.02), ha="center", fontsize=8, color="grey")
    axis.set_xticks(numbers, [f"v{n}" for n in numbers])
    axis.set_xlabel("index version (hollow: evaluated as a candidate)")
    axis.set_title(f"{experiment}: quality per index version")
    return _save(figure, axis, path, client, log_to_run)


def _evaluations(client: Any, experiment: str, max_runs: int, where: str = "") -> list[Any]:
    """Evaluation runs of ``experiment``, newest first (none if it does not exist)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(
        client.search_runs(
            [found.experiment_id],
            filter_string="tags.`ragcycle.kind` = 'evaluation'" + where,
            order_by=["attributes.start_time DESC"],
            max_results=max_runs,
        )
    )


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and workers
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5))


def _save(figure: Any, axis: Any, path: Path, client: Any, log_to_run: str | None) -> Path:
    """Common finish of the lifecycle plots: scores on 0..1, a legend, a PNG on the run."""
    import matplotlib.pyplot as plt

    axis.set_ylim(0, 1.08)
    axis.set_ylabel("score")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    if log_to_run:
        client.log_artifact(log_to_run, str(path))
    return path


@dataclass(frozen=True)
class TimedQuality:
    """One monitor evaluation: when, of which index version, and what it measured."""

    when: datetime
    version: int | None
    metrics: dict[str, float]


def quality_over_time(runs: Iterable[Any]) -> list[TimedQuality]:
    """The monitor's evaluations, oldest first: the live index's quality as users got it."""
    found = [
        TimedQuality(
            datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC),
            int(number)
            if (number := run.data.tags.get("ragcycle.index_version", "")).isdigit()
            else None,
            dict(run.data.metrics),
        )
        for run in runs
        if run.data.tags.get("ragcycle.role") == "monitor"
    ]
    return sorted(found, key=lambda quality: quality.when)


def plot_quality_over_time(
    tracking_uri: str,
    experiment: str,
    metrics: Sequence[str],
    path: Path,
    *,
    log_to_run: str | None = None,
    max_runs: int = 500,
) -> Path | None:
    """A PNG of ``metrics`` over the monitor's evaluations (x = time), with a dashed line
    where the live version changed; logged as an artifact of ``log_to_run``."""
    client = mlflow_client(tracking_uri)
    monitored = " and tags.`ragcycle.role` = 'monitor'"
    history = quality_over_time(_evaluations(client, experiment, max_runs, monitored))
    if not history:
        return None
    figure, axis = _figure()
    times = [quality.when for quality in history]
    for name in metrics:
        axis.plot(times, [read_metric(q.metrics, name) for q in history], marker="o", label=name)
    for before, after in itertools.pairwise(history):
        if after.version != before.version and after.version is not None:
            axis.axvline(after.when, color="grey", linestyle="--", linewidth=1)
            axis.annotate(
                f"v{after.version} live", (after.when, 1.02), ha="center", fontsize=8, color="grey"
            )
    axis.set_xlabel("monitor run (UTC)")
    axis.set_title(f"{experiment}: quality of the live index over time")
    figure.autofmt_xdate()
    return _save(figure, axis, path, client, log_to_run)


# The production figures drawn, by panel: rates (0..1), p95 latency, and daily cost.
_RATES = (
    "negative_feedback_rate",
    "guardrail_fail_rate",
    "guardrail_warning_rate",
    "abstention_rate",
    "uncovered_question_share",
)


def plot_production_over_time(
    tracking_uri: str, run_id: str, index: str, path: Path, *, log_to_run: str | None = None
) -> Path | None:
    """A PNG of the production series of ``run_id`` (:mod:`tasks.tracking.series`): the rates,
    the p95 latency and the daily cost, one panel each over time; logged on ``log_to_run``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = production_series(
        tracking_uri, run_id, [*_RATES, "latency_p95_ms", "cost_per_day_usd"]
    )
    if not any(series.values()):
        return None
    figure, (rates, latency, cost) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    drawn = [name for name in _RATES if series[name]]
    for name in drawn:
        rates.plot(*zip(*series[name], strict=True), marker="o", label=name)
    rates.set_ylim(0, 1.05)
    rates.set_ylabel("share of answers")
    if drawn:
        rates.legend(loc="upper left", fontsize=8)
    rates.set_title(f"{index}: production over time (monitor runs)")
    for axis, name, scale, label in (
        (latency, "latency_p95_ms", 1000.0, "p95 latency (s)"),
        (cost, "cost_per_day_usd", 1.0, "cost per day (USD)"),
    ):
        if series[name]:
            times, values = zip(*series[name], strict=True)
            axis.plot(times, [value / scale for value in values], marker="o")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
    for axis in (rates, latency, cost):
        axis.grid(alpha=0.3)
    cost.set_xlabel("monitor run (UTC)")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    if log_to_run:
        mlflow_client(tracking_uri).log_artifact(log_to_run, str(path))
    return path
