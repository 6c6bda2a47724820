"""One MLflow trace per answered question: retrieval, generation and guardrail spans under a root.

The spans are built while the question is answered (in memory); ending the root span is what
writes the trace, and :meth:`QueryTrace.close` hands that back as a callable so a service can run
it where a slow or unreachable MLflow cannot stall an answer (see :mod:`tasks.tracking.shipping`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["QueryTrace", "log_user_feedback", "retrieved_documents"]


class QueryTrace:
    """The trace of one question; use :meth:`step` for each stage, then :meth:`close`."""

    def __init__(
        self,
        experiment_id: str,
        question: str,
        tags: dict[str, str],
        session_id: str | None = None,
    ) -> None:
        import mlflow
        from mlflow.entities import SpanType
        from mlflow.tracing.constant import TraceMetadataKey

        metadata = {TraceMetadataKey.TRACE_SESSION: session_id} if session_id else None
        self.root = mlflow.start_span_no_context(
            "ask",
            span_type=SpanType.CHAIN,
            inputs={"question": question},
            experiment_id=experiment_id,
            tags=tags,
            metadata=metadata,
        )
        self.trace_id: str = self.root.trace_id

    @contextmanager
    def step(
        self,
        name: str,
        span_type: str,
        inputs: Any = None,
        attributes: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        """A child span of the root for one stage; an exception marks it (and the trace) ERROR."""
        import mlflow

        span = mlflow.start_span_no_context(
            name, span_type=span_type, parent_span=self.root, inputs=inputs, attributes=attributes
        )
        try:
            yield span
        except BaseException as exc:
            span.end(status="ERROR", attributes={"error": f"{type(exc).__name__}: {exc}"})
            self.root.end(status="ERROR", outputs={"error": str(exc)})
            raise
        span.end()

    def close(self, outputs: dict[str, Any], tags: dict[str, str]) -> Callable[[], None]:
        """Record the outputs, the final tags and the end time now; the returned callable writes
        the trace to MLflow whenever it is called (at once, or from a background shipper)."""
        import mlflow
        from mlflow.tracing.provider import safe_set_span_in_context

        end_ns = time.time_ns()
        with safe_set_span_in_context(self.root):
            mlflow.update_current_trace(tags=tags)
        self.root.set_outputs(outputs)

        def export() -> None:
            self.root.end(end_time_ns=end_ns)

        return export


def retrieved_documents(hits: Sequence[Any]) -> list[dict[str, Any]]:
    """Hits in the shape MLflow's RETRIEVER spans render as documents."""
    return [
        {
            "id": hit.chunk_id,
            "page_content": hit.text,
            "metadata": {
                "doc_uri": hit.metadata.get("source", ""),
                "page": hit.metadata.get("page"),
                "chunk_id": hit.chunk_id,
                "score": round(float(hit.score), 4),
            },
        }
        for hit in hits
    ]


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
