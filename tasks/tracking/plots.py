"""Plots of the lifecycle: metrics people would rather look at than read from a table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.tracking.runs import mlflow_client

__all__ = ["VersionQuality", "plot_quality_by_version", "quality_by_version"]


@dataclass(frozen=True)
class VersionQuality:
    """The newest evaluation of one index version, and whether it was judged as a candidate."""

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    versions = quality_by_version(
        client.search_runs(
            [found.experiment_id],
            filter_string="tags.`ragcycle.kind` = 'evaluation'",
            order_by=["attributes.start_time DESC"],
            max_results=200,
        )
    )
    if not versions:
        return None
    figure, axis = plt.subplots(figsize=(8, 4.5))
    numbers = [v.version for v in versions]
    for name in metrics:
        line = axis.plot(
            numbers, [v.metrics.get(name, float("nan")) for v in versions], label=name
        )[0]
        for quality in versions:
            axis.plot(
                quality.version,
                quality.metrics.get(name, float("nan")),
                marker="o",
                markersize=8,
                color=line.get_color(),
                markerfacecolor="white" if quality.candidate else line.get_color(),
            )
    for number in promoted:
        axis.axvline(number, color="grey", linestyle="--", linewidth=1)
        axis.annotate(f"v{number} promoted", (number, 1.02), ha="center", fontsize=8, color="grey")
    axis.set_xticks(numbers, [f"v{n}" for n in numbers])
    axis.set_ylim(0, 1.08)
    axis.set_xlabel("index version (hollow: evaluated as a candidate)")
    axis.set_ylabel("score")
    axis.set_title(f"{experiment}: quality per index version")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    if log_to_run:
        client.log_artifact(log_to_run, str(path))
    return path
