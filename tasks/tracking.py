"""Tracking: what a run did, as reports people read (Prefect artifacts) and scripts parse (JSON).

MLflow logging of evaluation runs lives here too as it arrives; ingestion reports go to Prefect
artifacts, since an ingest is an operation on the index, not an experiment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.loading import Document, LoadFailure

__all__ = ["IngestReport", "StageTimer", "ingest_report_markdown", "publish_ingest_report"]


class StageTimer:
    """Wall-clock seconds per named stage, summed over repeated entries."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - begun

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

    def record_loaded(self, documents: list[Document], changed_ids: set[str]) -> None:
        """Count loaded documents as new or changed, and keep their extraction warnings."""
        for document in documents:
            self.documents["changed" if document.doc_id in changed_ids else "new"] += 1
            self.warnings.extend(
                {"doc_id": document.doc_id, "warning": warning} for warning in document.warnings
            )

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
