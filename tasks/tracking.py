"""Tracking: what a run did, as reports people read (Prefect artifacts) and scripts parse (JSON).

MLflow logging of evaluation runs lives here too as it arrives; ingestion reports go to Prefect
artifacts, since an ingest is an operation on the index, not an experiment.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.indexing import PartitionResult
from tasks.loading import LoadFailure

__all__ = [
    "EvaluationRecord",
    "IngestReport",
    "QueryLog",
    "StageTimer",
    "ensure_experiment",
    "git_sha",
    "ingest_report_markdown",
    "mlflow_client",
    "prefect_run_tags",
    "publish_ingest_report",
]


class StageTimer:
    """Seconds per named stage, summed over repeated entries; partitions that ran side by side
    add up, so a stage can total more than the run's wall-clock time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begun)

    def add(self, name: str, seconds: float) -> None:
        """Count work timed elsewhere (a partition on a worker) towards a stage."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @property
    def total(self) -> float:
        return time.perf_counter() - self._started


@dataclass
class IngestReport:
    """The outcome of one ingest run; ``as_dict`` is the ``--json`` output."""

    collection: str
    documents: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("new", "changed", "unchanged", "removed", "failed"), 0
        )
    )
    chunks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("written", "deleted", "embedded", "total"), 0)
    )
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def record_failures(self, failures: list[LoadFailure]) -> None:
        for failure in failures:
            self.failed.append(
                {
                    "source": failure.source,
                    "doc_id": failure.doc_id,
                    "reason": failure.reason,
                    "status": failure.status,
                }
            )
        self.documents["failed"] = len(self.failed)

    def record_plan(self, unchanged: int, removed: int) -> None:
        self.documents["unchanged"] = unchanged
        self.documents["removed"] = removed

    def record_partition(self, result: PartitionResult, changed_ids: set[str]) -> None:
        """Count a partition's documents as new, changed or failed, and its chunk writes."""
        self.record_failures(result.failures)
        for doc_id, notes in result.warnings.items():
            self.documents["changed" if doc_id in changed_ids else "new"] += 1
            self.warnings.extend({"doc_id": doc_id, "warning": warning} for warning in notes)
        self.record_write(result.written, result.deleted, result.embedded)

    def record_write(self, written: int, deleted: int, embedded: int) -> None:
        self.chunks["written"] += written
        self.chunks["deleted"] += deleted
        self.chunks["embedded"] += embedded

    def finish(self, total_chunks: int, timer: StageTimer) -> None:
        self.chunks["total"] = total_chunks
        self.stage_seconds = dict(timer.seconds)
        self.seconds = timer.total

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["stage_seconds"] = {k: round(v, 3) for k, v in self.stage_seconds.items()}
        return data


def ingest_report_markdown(report: IngestReport) -> str:
    """The report as Markdown tables, for the Prefect UI."""
    lines = [
        f"# Ingest into `{report.collection}`",
        "",
        f"Finished in {report.seconds:.1f} s.",
        "",
        "| documents | count |",
        "|---|---:|",
        *(f"| {key} | {value} |" for key, value in report.documents.items()),
        "",
        "| chunks | count |",
        "|---|---:|",
        *(f"| {key} | {value} |" for key, value in report.chunks.items()),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {key} | {value:.2f} |" for key, value in report.stage_seconds.items()),
    ]
    if report.failed:
        lines += ["", "## Not indexed", "", "| file | status | reason |", "|---|---|---|"]
        lines += [
            f"| `{item['doc_id']}` | {item['status']} | {item['reason'].replace('|', '/')} |"
            for item in report.failed
        ]
    if report.warnings:
        lines += ["", "## Warnings", ""]
        lines += [f"- `{item['doc_id']}`: {item['warning']}" for item in report.warnings]
    return "\n".join(lines) + "\n"


@task(name="publish-ingest-report", cache_policy=NO_CACHE)
def publish_ingest_report(report: IngestReport) -> None:
    """Attach the report to the flow run as a Markdown artifact."""
    create_markdown_artifact(
        key=f"ingest-{_artifact_key(report.collection)}",
        markdown=ingest_report_markdown(report),
        description=f"ingest into {report.collection}",
    )


def _artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "default"


class QueryLog:
    """Every answered question, appended to a SQLite file the monitor reads for query drift."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS queries (id INTEGER PRIMARY KEY, at REAL NOT NULL,"
                " collection TEXT, question TEXT NOT NULL, chunk_ids TEXT, scores TEXT,"
                " best_score REAL, answer TEXT, abstained INTEGER, latency_ms TEXT,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, generator TEXT, prompt TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def append(self, record: dict[str, Any]) -> None:
        row = (
            time.time(),
            record.get("collection"),
            record["question"],
            json.dumps(record.get("chunk_ids", [])),
            json.dumps(record.get("scores", [])),
            record.get("best_score"),
            record.get("answer"),
            int(bool(record.get("abstained"))),
            json.dumps(record.get("latency_ms", {})),
            record.get("prompt_tokens", 0),
            record.get("completion_tokens", 0),
            record.get("generator"),
            record.get("prompt"),
        )
        with self._connect() as db:
            db.execute(
                "INSERT INTO queries (at, collection, question, chunk_ids, scores, best_score,"
                " answer, abstained, latency_ms, prompt_tokens, completion_tokens, generator,"
                " prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def recent(self, limit: int = 1000, since: float | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` queries (newest first), optionally only those after ``since``."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT * FROM queries WHERE at >= ? ORDER BY id DESC LIMIT ?",
                (since or 0.0, limit),
            ).fetchall()
        records = []
        for row in rows:
            record = dict(row)
            for key in ("chunk_ids", "scores", "latency_ms"):
                record[key] = json.loads(record[key] or "null")
            records.append(record)
        return records


def mlflow_client(tracking_uri: str) -> Any:
    """Point MLflow at ``tracking_uri`` and return a client for it."""
    import mlflow
    from mlflow import MlflowClient

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
    return {
        "prefect.flow_run_id": str(context.flow_run.id),
        "prefect.flow_run_name": str(context.flow_run.name),
        "prefect.flow_name": context.flow.name if context.flow else "",
    }


@dataclass
class EvaluationRecord:
    """Everything one evaluation run logs to MLflow."""

    experiment: str
    run_name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    rows: list[dict[str, Any]]
    dataset_rows: list[dict[str, Any]]
    dataset_source: str
    dataset_name: str
    report: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))


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
    metrics = {k: v for k, v in record.metrics.items() if _finite(v)}
    for name, (low, high) in record.ci.items():
        if _finite(low) and _finite(high):
            metrics[f"{name}_ci_low"] = low
            metrics[f"{name}_ci_high"] = high
    with mlflow.start_run(experiment_id=experiment_id, run_name=record.run_name) as run:
        mlflow.set_tags({**record.tags, **prefect_run_tags(), "git_sha": git_sha()})
        mlflow.log_params({k: str(v)[:6000] for k, v in record.params.items()})
        mlflow.log_metrics(metrics)
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
        mlflow.log_dict(record.report, "eval_report.json")
        if genai_scorers:
            _genai_evaluate(record.rows, genai_scorers)
        return str(run.info.run_id)


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (json.dumps(value) if isinstance(value, list | dict) else value)
        for key, value in row.items()
    }


def _genai_evaluate(rows: list[dict[str, Any]], names: list[str]) -> None:
    """Record rows with MLflow's GenAI evaluation; scorers read the scores computed already."""
    import mlflow
    from mlflow.genai.scorers import scorer

    def make(name: str) -> Any:
        def read(outputs: dict[str, Any]) -> float | None:
            value = outputs.get("scores", {}).get(name)
            return None if value is None or value != value else float(value)

        return scorer(name=name)(read)

    data = [
        {
            "inputs": {"question": row["question"]},
            "outputs": {
                "answer": row["answer"],
                "sources": row["sources"],
                "scores": {name: row.get(name) for name in names},
            },
            "expectations": {
                "expected_answer": row["expected_answer"] or "",
                "expected_sources": row["expected_sources"],
            },
        }
        for row in rows
    ]
    mlflow.genai.evaluate(data=data, scorers=[make(name) for name in names])


def evaluation_markdown(
    title: str, metrics: dict[str, float], ci: dict[str, tuple[float, float]]
) -> str:
    """Metrics with their confidence intervals as a Markdown table, for a Prefect artifact."""
    lines = [f"# {title}", "", "| metric | value | 95% CI |", "|---|---:|---|"]
    for name, value in metrics.items():
        low, high = ci.get(name, (float("nan"), float("nan")))
        interval = f"[{low:.3f}, {high:.3f}]" if _finite(low) else ""
        lines.append(f"| {name} | {value:.4f} | {interval} |")
    return "\n".join(lines) + "\n"


@task(name="log-evaluation", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
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


@task(name="publish-evaluation", cache_policy=NO_CACHE)
def publish_evaluation(
    key: str, title: str, metrics: dict[str, float], ci: dict[str, tuple[float, float]]
) -> None:
    """The metrics table as a Markdown artifact on the flow run."""
    create_markdown_artifact(
        key=_artifact_key(key), markdown=evaluation_markdown(title, metrics, ci), description=title
    )


def log_lifecycle_decision(
    *,
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
) -> str:
    """One MLflow run per lifecycle decision (promote / reject / no-op / ok / reindex)."""
    import mlflow

    experiment_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=decision) as run:
        mlflow.set_tags({"ragcycle.kind": "lifecycle", "decision": decision, **prefect_run_tags()})
        mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        for row in table:
            for column in ("candidate", "live", "value"):
                value = row.get(column)
                if isinstance(value, float) and _finite(value):
                    mlflow.log_metric(f"{column}.{row['metric']}", value)
        mlflow.log_dict({"decision": decision, "reasons": reasons, "table": table}, "decision.json")
        return str(run.info.run_id)


def decision_markdown(
    title: str, decision: str, reasons: list[str], table: list[dict[str, Any]]
) -> str:
    lines = [f"# {title}", "", f"**Decision: {decision}**", ""]
    lines += [f"- {reason}" for reason in reasons] or ["- all checks passed"]
    if table:
        lines += ["", "| metric | candidate | live | verdict |", "|---|---:|---:|---|"]
        for row in table:
            lines.append(
                f"| {row['metric']} | {row.get('candidate', float('nan')):.4f} |"
                f" {row.get('live', float('nan')):.4f} | {row.get('verdict', '')} |"
            )
    return "\n".join(lines) + "\n"


@task(name="record-decision", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def record_decision_task(
    tracking_uri: str,
    artifact_location: str | None,
    experiment: str,
    title: str,
    decision: str,
    reasons: list[str],
    params: dict[str, Any],
    table: list[dict[str, Any]],
) -> str:
    """The decision as an MLflow run and a Markdown artifact on the flow run."""
    run_id = log_lifecycle_decision(
        tracking_uri=tracking_uri,
        artifact_location=artifact_location,
        experiment=experiment,
        decision=decision,
        reasons=reasons,
        params=params,
        table=table,
    )
    create_markdown_artifact(
        key=_artifact_key(f"decision-{experiment}"),
        markdown=decision_markdown(title, decision, reasons, table),
        description=title,
    )
    return run_id


def latest_runs(tracking_uri: str, prefix: str) -> dict[str, Any]:
    """The newest evaluation run and lifecycle decision, for ``ragcycle status``."""
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
                "metrics": dict(run.data.metrics),
                "params": {k: v for k, v in run.data.params.items() if k in {"drift", "reason"}},
            }
    return found


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
