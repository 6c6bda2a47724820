"""Reports a person reads: what an ingest, an evaluation or a decision did, as Prefect artifacts.

An ingest is an operation on the index, not an experiment, so its report goes to the flow run in
Prefect (and to ``--json``); evaluations and decisions get a Markdown summary there too, beside
their MLflow runs.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.indexing.plan import PartitionResult
from tasks.loading import LoadFailure

__all__ = [
    "IngestReport",
    "StageTimer",
    "decision_markdown",
    "evaluation_markdown",
    "ingest_report_markdown",
    "publish_decision",
    "publish_evaluation",
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
        default_factory=lambda: dict.fromkeys(
            ("written", "deleted", "embedded", "truncated", "total"), 0
        )
    )
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    policy: str = "flag"  # guardrails.ingest_policy: what happened to flagged chunks
    flagged: list[dict[str, Any]] = field(default_factory=list)
    quarantined: int = 0
    lexical: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("added", "removed", "total"), 0)
    )

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
        self.flagged.extend(result.flagged)
        self.chunks["truncated"] += result.truncated
        self.quarantined += result.quarantined

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
    # The table above the "Not indexed" list counts what that list shows: failed and skipped
    # apart (the JSON's "failed" counts both, as "not indexed").
    documents = {key: value for key, value in report.documents.items() if key != "failed"}
    for status in ("failed", "skipped"):
        documents[status] = sum(item["status"] == status for item in report.failed)
    lines = [
        f"# Ingest into `{report.collection}`",
        "",
        f"Finished in {report.seconds:.1f} s.",
        "",
        "| documents | count |",
        "|---|---:|",
        *(f"| {key} | {value} |" for key, value in documents.items()),
        "",
        "| chunks | count |",
        "|---|---:|",
        *(f"| {key} | {value} |" for key, value in report.chunks.items()),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {key} | {value:.2f} |" for key, value in report.stage_seconds.items()),
    ]
    if report.flagged:
        verb = "kept out of the index" if report.quarantined else "indexed and flagged"
        lines += [
            "",
            f"## Chunks with personal data or injection markers ({verb})",
            "",
            "| document | chunk | page | PII | injection |",
            "|---|---:|---:|---|---|",
            *(
                f"| {f['doc_id']} | {f['chunk_index']} | {f['page']} | {', '.join(f['pii'])}"
                f" | {', '.join(f['injection'])} |"
                for f in report.flagged[:200]
            ),
        ]
    if report.failed:
        lines += ["", "## Not indexed", "", "| file | status | reason |", "|---|---|---|"]
        lines += [
            f"| `{item['doc_id']}` | {item['status']} | {item['reason'].replace('|', '/')} |"
            for item in report.failed
        ]
    if report.warnings:
        lines += ["", "## Warnings", ""]
        lines += [
            f"- `{item.get('doc_id') or item.get('path')}`: {item['warning']}"
            for item in report.warnings
        ]
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
    """Prefect artifact keys allow lowercase letters, digits and dashes only; a run of other
    characters is one dash, so ``demo__v2`` reads ``demo-v2`` in the artifacts list."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "default"


def _link_line(link: str | None) -> list[str]:
    return [f"[Open the run in MLflow]({link})", ""] if link else []


def evaluation_markdown(
    title: str,
    metrics: dict[str, float],
    ci: dict[str, tuple[float, float]],
    link: str | None = None,
) -> str:
    """Metrics with their confidence intervals as a Markdown table, for a Prefect artifact."""
    lines = [f"# {title}", "", *_link_line(link), "| metric | value | 95% CI |", "|---|---:|---|"]
    for name, value in metrics.items():
        low, high = ci.get(name, (float("nan"), float("nan")))
        interval = f"[{low:.3f}, {high:.3f}]" if math.isfinite(low) else ""
        lines.append(f"| {name} | {value:.4f} | {interval} |")
    return "\n".join(lines) + "\n"


@task(name="publish-evaluation", cache_policy=NO_CACHE)
def publish_evaluation(
    key: str,
    title: str,
    metrics: dict[str, float],
    ci: dict[str, tuple[float, float]],
    link: str | None = None,
) -> None:
    """The metrics table as a Markdown artifact on the flow run, linked to its MLflow run."""
    create_markdown_artifact(
        key=_artifact_key(key),
        markdown=evaluation_markdown(title, metrics, ci, link),
        description=title,
    )


def decision_markdown(
    title: str,
    decision: str,
    reasons: list[str],
    table: list[dict[str, Any]],
    link: str | None = None,
) -> str:
    lines = [f"# {title}", "", f"**Decision: {decision}**", "", *_link_line(link)]
    lines += [f"- {reason}" for reason in reasons] or ["- all checks passed"]
    if table:
        lines += ["", "| metric | candidate | live | verdict |", "|---|---:|---:|---|"]
        for row in table:
            lines.append(
                f"| {row['metric']} | {_cell(row.get('candidate'))} | {_cell(row.get('live'))}"
                f" | {row.get('verdict', '')} |"
            )
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    """A number to four places; a dash where there is none (no live version to compare)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return f"{value:.4f}"
    return "—"


def publish_decision(
    experiment: str,
    title: str,
    decision: str,
    reasons: list[str],
    table: list[dict[str, Any]],
    link: str | None = None,
) -> None:
    """The decision as a Markdown artifact on the flow run, one key per lifecycle experiment,
    linked to the MLflow run that records it."""
    create_markdown_artifact(
        key=_artifact_key(f"decision-{experiment}"),
        markdown=decision_markdown(title, decision, reasons, table, link),
        description=title,
    )
