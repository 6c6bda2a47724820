"""MLflow runs: evaluations and lifecycle decisions as runs a person can compare in the UI.

An evaluation is one run: params (index, model, chunking, prompt), metrics with their confidence
bounds, the per-question table, the golden set as a dataset input, and tags linking it to the
Prefect flow run and the git commit. Each lifecycle decision (promote, reject, monitor verdict)
is a run of its own, so the history of the index reads as a list of decisions.
"""

from __future__ import annotations

import functools
import json
import math
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

from ragcycle import jsonout
from ragcycle.settings import WandbSettings
from tasks.retrying import outage_task
from tasks.tracking.evaluation_record import EvaluationRecord
from tasks.tracking.genai_views import record_in_genai_views
from tasks.tracking.metric_names import logged_metrics, logged_name
from tasks.tracking.reports import publish_decision
from tasks.tracking.store_setup import prepare_tracking_store
from tasks.tracking.wandb_mirror import mirror_decision

__all__ = [
    "EvaluationRecord",
    "end_failed_run",
    "ensure_experiment",
    "git_sha",
    "latest_runs",
    "log_decision_task",
    "log_evaluation",
    "log_evaluation_task",
    "log_lifecycle_decision",
    "mlflow_client",
    "prefect_run_tags",
    "publish_decision_task",
    "record_decision",
    "run_url",
    "start_lifecycle_run",
]


def mlflow_client(tracking_uri: str) -> Any:
    """Point MLflow at ``tracking_uri`` and return a client for it (a new local store is
    created whole first: :mod:`tasks.tracking.store_setup`)."""
    import mlflow
    from mlflow import MlflowClient

    prepare_tracking_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(name: str, artifact_location: str | None, tracking_uri: str) -> str:
    """The experiment's id, created with artifacts under ``artifact_location`` if new."""
    client = mlflow_client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = artifact_location.rstrip("/") + "/" + name if artifact_location else None
    return str(client.create_experiment(name, artifact_location=location))


def git_sha(repo: Path | None = None) -> str:
    """The checkout's commit, or "unknown" outside git (a wheel install)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def prefect_run_tags() -> dict[str, str]:
    """Tags linking an MLflow run to the Prefect flow run it belongs to, if any."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    from prefect.utilities.urls import url_for

    tags = {
        "prefect.flow_run_id": str(context.flow_run.id),
        "prefect.flow_run_name": str(context.flow_run.name),
        "prefect.flow_name": context.flow.name if context.flow else "",
    }
    link = url_for(context.flow_run)
    if link:
        tags["prefect.flow_run_url"] = link
    return tags


def run_url(ui_url: str, tracking_uri: str, run_id: str) -> str:
    """The MLflow UI page of ``run_id``, for links from Prefect artifacts and the CLI."""
    experiment_id = mlflow_client(tracking_uri).get_run(run_id).info.experiment_id
    return run_page(ui_url, experiment_id, run_id)


def run_page(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's address of a run whose experiment is known."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def log_evaluation(
    record: EvaluationRecord,
    *,
    tracking_uri: str,
    artifact_location: str | None,
    genai_scorers: list[str] | None = None,
) -> str:
    """One MLflow run: params, metrics (+ CI bounds), the per-question table, the dataset as an
    input, the JSON report, tags; optionally the rows through ``mlflow.genai.evaluate`` so they
    show in MLflow's evaluation views with a trace each. Returns the run id."""
    import mlflow
    import pandas as pd

    experiment_id = ensure_experiment(record.experiment, artifact_location, tracking_uri)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=record.run_name, parent_run_id=record.parent_run_id
    ) as run:
        mlflow.set_tags({**record.tags, **prefect_run_tags(), "git_sha": git_sha()})
        mlflow.log_params({k: str(v)[:6000] for k, v in record.params.items()})
        mlflow.log_metrics(logged_metrics(record.metrics, record.ci))
        table = pd.DataFrame([_table_row(row) for row in record.rows])
        mlflow.log_table(data=table, artifact_file="eval_questions.json")
        with warnings.catch_warnings():
            # A local path matches two equivalent source types; MLflow picks one and says so.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                pd.DataFrame(record.dataset_rows),
                source=record.dataset_source,
                name=record.dataset_name,
            )
        mlflow.log_input(dataset, context="evaluation")
        mlflow.log_dict(jsonout.strict(record.report), "eval_report.json")
        if record.prompt_uri:
            # Shown as the run's "Registered prompts", and the run on the prompt's page.
            with _prompt_link_lock():  # MLflow: linking is not thread-safe
                mlflow.MlflowClient().link_prompt_version_to_run(run.info.run_id, record.prompt_uri)
        if genai_scorers:
            record_in_genai_views(record, genai_scorers, dataset)
        return str(run.info.run_id)


@functools.cache
def _prompt_link_lock() -> threading.Lock:
    return threading.Lock()


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (json.dumps(value) if isinstance(value, list | dict) else value)
        for key, value in row.items()
    }


@outage_task("log-evaluation")
def log_evaluation_task(
    record: EvaluationRecord,
    tracking_uri: str,
    artifact_location: str | None,
    genai_scorers: list[str] | None = None,
) -> str:
    """Prefect edge of :func:`log_evaluation`; retried since a tracking server can blip."""
    return log_evaluation(
        record,
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        genai_scorers=genai_scorers,
    )


def start_lifecycle_run(
    tracking_uri: str, artifact_location: str | None, experiment: str, name: str
) -> str:
    """An open run that a reindex's evaluations nest under; :func:`log_lifecycle_decision`
    with its ``run_id`` records the decision on it and ends it."""
    client = mlflow_client(tracking_uri)
    experiment_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=name,
        tags={"ragcycle.kind": "lifecycle", **prefect_run_tags(), "git_sha": git_sha()},
    )
    return str(run.info.run_id)


def end_failed_run(tracking_uri: str, run_id: str) -> None:
    """Mark an open lifecycle run failed, so a reindex that raised does not stay RUNNING."""
    mlflow_client(tracking_uri).set_terminated(run_id, status="FAILED")


def log_lifecycle_decision(
    *,
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
    run_id: str | None = None,
    run_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """One MLflow run per lifecycle decision (promote / reject / no-op / ok / reindex), or the
    decision recorded on the open run ``run_id`` (then ended)."""
    import mlflow

    experiment_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=run_name or decision,
    ) as run:
        if run_name:
            mlflow.set_tag("mlflow.runName", run_name)
        mlflow.set_tags({"ragcycle.kind": "lifecycle", "decision": decision, **prefect_run_tags()})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        for row in table:
            for column in ("candidate", "live", "value"):
                value = row.get(column)
                if isinstance(value, float) and math.isfinite(value):
                    mlflow.log_metric(f"{column}/{logged_name(row['metric'])}", value)
        mlflow.log_dict(
            jsonout.strict(
                {"decision": decision, "reasons": reasons, "table": table, **(extra or {})}
            ),
            "decision.json",
        )
        return str(run.info.run_id)


# The Prefect edge of log_lifecycle_decision: retried, since a tracking server can blip.
log_decision_task = outage_task("log-decision")(log_lifecycle_decision)


@outage_task("publish-decision")
def publish_decision_task(
    experiment: str,
    title: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
    mlflow_run_id: str,
    link: str | None = None,
    run_name: str | None = None,
    mirror: WandbSettings | None = None,
) -> None:
    """The recorded decision as a Markdown artifact on the flow run (linking to its MLflow run),
    and as a W&B run when ``mirror`` is enabled."""
    publish_decision(experiment, title, decision, reasons, table, link)
    if mirror is not None and mirror.enabled:
        mirror_decision(
            mirror,
            name=run_name or decision,
            experiment=experiment,
            decision=decision,
            reasons=reasons,
            params=params,
            table=table,
            mlflow_run_id=mlflow_run_id,
        )


def record_decision(
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    title: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
    run_id: str | None = None,
    run_name: str | None = None,
    extra: dict[str, Any] | None = None,
    ui_url: str | None = None,
    mirror: WandbSettings | None = None,
) -> str:
    """The decision as an MLflow run, then published (a Markdown artifact linking to the run's
    page under ``ui_url``, and a W&B run when ``mirror`` is enabled, ``Settings.wandb_mirror``).
    Two tasks, so a retry of the publishing never logs a second MLflow run."""
    run_id = log_decision_task(
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        experiment=experiment,
        decision=decision,
        reasons=reasons,
        params=params,
        table=table,
        run_id=run_id,
        run_name=run_name,
        extra=extra,
    )
    link = run_url(ui_url, tracking_uri, run_id) if ui_url else None
    publish_decision_task(
        experiment, title, decision, reasons, params, table, run_id, link, run_name, mirror
    )
    return run_id


def latest_runs(tracking_uri: str, prefix: str, ui_url: str | None = None) -> dict[str, Any]:
    """The newest evaluation run and lifecycle decision, for ``ragcycle status``, each with
    its MLflow UI page (under ``ui_url``) and its Prefect flow run's page."""
    client = mlflow_client(tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith(prefix)]
    ids = [e.experiment_id for e in experiments]
    found: dict[str, Any] = {"last_evaluation": None, "last_decision": None}
    if not ids:
        return found
    for key, kind in (("last_evaluation", "evaluation"), ("last_decision", "lifecycle")):
        runs = client.search_runs(
            ids,
            filter_string=f"tags.`ragcycle.kind` = '{kind}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs:
            run = runs[0]
            found[key] = {
                "run_id": run.info.run_id,
                "decision": run.data.tags.get("decision"),
                "collection": run.data.tags.get("ragcycle.collection"),
                "metrics": {k: v for k, v in run.data.metrics.items() if not k.startswith("ci/")},
                "params": {k: v for k, v in run.data.params.items() if k in {"drift", "reason"}},
                "mlflow_url": (
                    run_page(ui_url, run.info.experiment_id, run.info.run_id) if ui_url else None
                ),
                "prefect_url": run.data.tags.get("prefect.flow_run_url"),
            }
    return found
