"""Plots of the lifecycle: metrics people would rather look at than read from a table."""

from __future__ import annotations

from pathlib import Path

from tasks.tracking.runs import mlflow_client

__all__ = ["plot_metric_history"]


def _run_label(tags: dict[str, str]) -> str:
    role = tags.get("ragcycle.role")
    collection = tags.get("ragcycle.collection", "?")
    return f"{collection} ({role})" if role else collection


def plot_metric_history(
    tracking_uri: str, experiment: str, metrics: list[str], path: Path
) -> Path | None:
    """A PNG of metrics over the evaluation runs of an experiment, oldest first, with each run's
    index collection as the x label; also logged to MLflow on a small run of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = list(
        reversed(
            client.search_runs(
                [found.experiment_id],
                filter_string="tags.`ragcycle.kind` = 'evaluation'",
                order_by=["attributes.start_time DESC"],
                max_results=50,
            )
        )
    )
    if not runs:
        return None
    figure, axis = plt.subplots(figsize=(9, 4.5))
    positions = list(range(1, len(runs) + 1))
    for name in metrics:
        axis.plot(
            positions,
            [r.data.metrics.get(name, float("nan")) for r in runs],
            marker="o",
            label=name,
        )
    axis.set_xticks(positions)
    axis.set_xticklabels([_run_label(r.data.tags) for r in runs], rotation=30, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("score")
    axis.set_title(f"{experiment}: gate metrics per evaluation run")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    with mlflow.start_run(experiment_id=found.experiment_id, run_name="metric-history"):
        mlflow.set_tag("ragcycle.kind", "plot")
        mlflow.log_artifact(str(path))
    return path
