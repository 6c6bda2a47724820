"""One MLflow trace per answered question: retrieval, generation and guardrail spans under a root.

The stages are recorded while the question is answered; :meth:`QueryTrace.close` hands back a
callable that writes the spans, so a service can run it where a slow or unreachable MLflow
cannot stall an answer (see :mod:`tasks.tracking.shipping`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tasks.tracking.mlflow_threads import trace_gate

__all__ = ["QueryTrace", "log_judge_grades", "log_user_feedback", "retrieved_documents"]


@dataclass
class _Stage:
    """One stage as it happened: written as a child span when the trace is written."""

    name: str
    span_type: str
    inputs: Any
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int = 0
    outputs: Any = None
    error: str | None = None

    def set_outputs(self, outputs: Any) -> None:
        self.outputs = outputs

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self.attributes.update(attributes)


class QueryTrace:
    """The trace of one question; use :meth:`step` for each stage, then :meth:`close`.

    Only the root span is opened while the question is answered (its id is the trace id an
    answer is returned with). The stages are recorded with their times and written as child
    spans when the trace is written, because MLflow sends each finished span to a tracking
    server as it ends: written live, an unreachable server would hold up every stage.
    """

    def __init__(
        self,
        experiment_id: str,
        question: str,
        tags: dict[str, str],
        session_id: str | None = None,
    ) -> None:
        from mlflow.tracing.constant import TraceMetadataKey

        metadata = {TraceMetadataKey.TRACE_SESSION: session_id} if session_id else None
        with trace_gate().writing():
            self.root = self._start_root(experiment_id, question, tags, metadata)
        self.trace_id: str = self.root.trace_id
        self.question = question  # as the trace stores it
        self._stages: list[_Stage] = []

    @staticmethod
    def _start_root(
        experiment_id: str, question: str, tags: dict[str, str], metadata: dict[str, str] | None
    ) -> Any:
        import mlflow
        from mlflow.entities import SpanType

        return mlflow.start_span_no_context(
            "ask",
            span_type=SpanType.CHAIN,
            inputs={"question": question},
            experiment_id=experiment_id,
            tags=tags,
            metadata=metadata,
        )

    def annotate(self, stage: str, attributes: dict[str, Any]) -> None:
        """Add ``attributes`` to a recorded stage's span: a figure known only once the answer
        is complete (its cost)."""
        next(s for s in self._stages if s.name == stage).set_attributes(attributes)

    @contextmanager
    def step(
        self,
        name: str,
        span_type: str,
        inputs: Any = None,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[_Stage]:
        """Record one stage; an exception marks it (and, when written, the trace) ERROR."""
        stage = _Stage(name, span_type, inputs, dict(attributes or {}), time.time_ns())
        self._stages.append(stage)
        try:
            yield stage
        except BaseException as exc:
            stage.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            stage.end_ns = time.time_ns()

    def close(
        self,
        outputs: dict[str, Any],
        tags: dict[str, str],
        checks: dict[str, str] | None = None,
    ) -> Callable[[], None]:
        """Record the outputs, the final tags and the end time now; the returned callable writes
        the trace to MLflow whenever it is called (at once, or from a background shipper).

        ``checks`` (name -> outcome, e.g. the guardrails' verdict) become assessments of the
        trace from code, which MLflow's Overview tab charts over time as the traces' quality."""
        end_ns = time.time_ns()
        failed = next((stage.error for stage in self._stages if stage.error), None)

        def export() -> None:
            with trace_gate().writing():
                write()

        def write() -> None:
            import mlflow
            from mlflow.tracing.provider import safe_set_span_in_context

            for stage in self._stages:
                span = mlflow.start_span_no_context(
                    stage.name,
                    span_type=stage.span_type,
                    parent_span=self.root,
                    inputs=stage.inputs,
                    attributes=stage.attributes,
                    start_time_ns=stage.start_ns,
                )
                if stage.error:
                    span.set_attribute("error", stage.error)
                span.end(
                    outputs=stage.outputs,
                    status="ERROR" if stage.error else "OK",
                    end_time_ns=stage.end_ns or end_ns,
                )
            with safe_set_span_in_context(self.root):
                mlflow.update_current_trace(tags=tags)
            self.root.end(
                outputs={"error": failed} if failed else outputs,
                status="ERROR" if failed else "OK",
                end_time_ns=end_ns,
            )
            for name, outcome in (checks or {}).items():
                _log_check(self.trace_id, name, outcome)

        return export


def retrieved_documents(
    hits: Sequence[Any], stored: Callable[[str, object], str] | None = None
) -> list[dict[str, Any]]:
    """Hits in the shape MLflow's RETRIEVER spans render as documents; ``stored`` gives the
    copy of a chunk's text to keep (from its text and the ingest scan's ``pii`` finding)."""
    return [
        {
            "id": hit.chunk_id,
            "page_content": stored(hit.text, hit.metadata.get("pii")) if stored else hit.text,
            "metadata": {
                "doc_uri": hit.metadata.get("source", ""),
                "page": hit.metadata.get("page"),
                "chunk_id": hit.chunk_id,
                "score": round(float(hit.score), 4),
            },
        }
        for hit in hits
    ]


def _log_check(trace_id: str, name: str, outcome: str) -> None:
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    source = AssessmentSource(AssessmentSourceType.CODE, source_id="ragcycle")
    mlflow.log_feedback(trace_id=trace_id, name=name, value=outcome, source=source)


def log_judge_grades(
    trace_ids: Sequence[str], name: str, scores: Sequence[float], judge_source: str
) -> None:
    """A judge's grades (0-1) on traces as LLM-judge assessments naming the judge; a grade the
    judge could not give (NaN) is not written."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    source = AssessmentSource(AssessmentSourceType.LLM_JUDGE, source_id=judge_source)
    for trace_id, score in zip(trace_ids, scores, strict=True):
        if not math.isnan(score):
            mlflow.log_feedback(trace_id=trace_id, name=name, value=score, source=source)


def log_user_feedback(
    trace_id: str, rating: str, comment: str | None, user: str | None, expected: str | None
) -> None:
    """A user's thumbs up or down on the trace, as HUMAN feedback MLflow's UI shows with it."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    source = AssessmentSource(AssessmentSourceType.HUMAN, source_id=user or "anonymous")
    mlflow.log_feedback(
        trace_id=trace_id,
        name="user_rating",
        value=rating == "up",
        source=source,
        rationale=comment,
    )
    if expected:
        mlflow.log_expectation(
            trace_id=trace_id, name="expected_answer", value=expected, source=source
        )
