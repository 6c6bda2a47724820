"""Asking questions: retrieve, generate, log. A plain function for the CLI and services (no
Prefect round trip on the hot path) and a Prefect flow for scheduled or remote use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings
from tasks.answering import (
    Answered,
    Parts,
    TraceOptions,
    answer_question,
    open_trace,
)
from tasks.embedding import embedder_from_settings
from tasks.evaluation.scoring import answer_cost_parts, scoring_config
from tasks.generation.answers import Answer, generator_identity
from tasks.generation.prompts import load_prompt
from tasks.indexing.store import VectorIndex, open_index
from tasks.query_log import QueryLog
from tasks.retrieval import Retrieval, SearchPlan, search_plan
from tasks.tracking.runs import ensure_experiment, mlflow_client
from tasks.versions import resolve_serving

__all__ = ["AskRequest", "Asker", "ask", "ask_task"]


@dataclass
class AskResult:
    """An answer as ``ragcycle ask --json`` prints it."""

    answer: str
    sources: list[dict[str, Any]]
    latency_ms: dict[str, float]
    tokens: dict[str, int]
    abstained: bool
    prompt: str
    generator: dict[str, str | None]
    guardrails: dict[str, Any]
    index_version: int | None = None
    query_id: int | None = None
    trace_id: str | None = None
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Export = Callable[[], None]


def _export_now(export: Export) -> None:
    export()


class Asker:
    """Holds the warm parts (model, index, prompt, backend) so each question costs milliseconds.

    ``ship`` receives each finished trace's writer: by default it runs at once (the CLI); the
    API hands it to a background shipper so MLflow being slow never delays an answer.
    ``record`` appends an answer to the query log and returns its id: at once by default, from
    a background writer in the API.
    """

    def __init__(
        self,
        settings: Settings,
        collection: str | None = None,
        overrides: dict[str, Any] | None = None,
        ship: Callable[[Export], None] = _export_now,
        record: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        mlflow_client(settings.mlflow_tracking_uri)
        # The live version answers with the config it was gated with, not today's settings.
        serving = resolve_serving(settings, collection, overrides=overrides)
        settings = serving.settings
        self.settings = settings
        self.version = serving.version.version if serving.version else None
        embedder = embedder_from_settings(settings)
        index = open_index(settings, serving.collection, create=False)
        prompt = load_prompt(settings.generation.prompt_name, settings.generation.prompt_version)
        self.parts = Parts.from_settings(settings, index, embedder, prompt)
        self.index: VectorIndex = self.parts.index
        self._plans = {self.parts.plan.mode: self.parts.plan}
        self._plans_lock = threading.Lock()
        self.log = QueryLog(settings.query_log_path)
        self.record = record or self.log.append
        self.ship = ship
        generator = self.parts.generator
        self.pricing = scoring_config(
            settings.evaluation, generator.name, generator.model, settings.retrieval.k
        )
        self.experiment_id = (
            ensure_experiment(
                f"{settings.mlflow.experiment_prefix}-{settings.tracing.experiment}",
                settings.mlflow_artifact_location,
                settings.mlflow_tracking_uri,
            )
            if settings.tracing.enabled
            else None
        )

    def plan_for(self, mode: str | None) -> SearchPlan:
        """The search plan of a retrieval mode; a mode's lexical index opens on first use."""
        if mode is None:
            return self.parts.plan
        with self._plans_lock:
            if mode not in self._plans:
                self._plans[mode] = search_plan(self.settings, self.index, mode)
            return self._plans[mode]

    def ask(
        self,
        question: str,
        k: int | None = None,
        where: dict[str, Any] | None = None,
        session_id: str | None = None,
        origin: str = "cli",
        retrieval: str | None = None,
    ) -> AskResult:
        """Answer as :func:`answer_question` does, log it, and ship its trace.

        The answer returned (and logged) is the one a user may see: redacted, or replaced by a
        refusal when the guardrails withhold it.
        """
        k = k or self.settings.retrieval.k
        trace = None
        if self.experiment_id is not None:
            tags = {"ragcycle.origin": origin, "ragcycle.index_version": str(self.version or "")}
            trace = TraceOptions(self.experiment_id, tags, session_id)
        traced = open_trace(self.parts, question, trace)
        try:
            answered = answer_question(
                self.parts,
                question,
                k,
                where=where,
                seed=self.settings.generation.seed,
                trace=traced,
                plan=self.plan_for(retrieval),
            )
        except Exception:
            # A failed answer is traced too: MLflow's views count errors over time.
            if traced is not None:
                self.ship(traced.close({}, {"ragcycle.guardrails": "error"}))
            raise
        result = _result(answered, generator_identity(self.parts.generator))
        result.index_version = self.version
        result.trace_id = answered.trace_id
        reading, writing = answer_cost_parts(answered.answer, self.pricing)
        result.cost_usd = reading + writing
        if answered.trace is not None:  # where MLflow's Overview tab sums the cost
            from mlflow.tracing.constant import SpanAttributeKey

            cost = {"input_cost": reading, "output_cost": writing, "total_cost": result.cost_usd}
            answered.trace.annotate("generate", {SpanAttributeKey.LLM_COST: cost})
        result.query_id = self.record(
            {
                **_log_record(self.index.name, answered.retrieval, answered.answer, result),
                "question": answered.stored_question,
                "index_version": self.version,
                "trace_id": answered.trace_id,
                "session_id": session_id,
                "cost_usd": result.cost_usd,
            }
        )
        self.ship(answered.close_trace({"ragcycle.query_id": str(result.query_id)}))
        return result


def _result(answered: Answered, generator: dict[str, str | None]) -> AskResult:
    answer, verdict = answered.answer, answered.verdict
    retrieve_ms = answered.retrieval.latency_ms["retrieve"]
    total_ms = retrieve_ms + answer.generate_ms + answered.guard_ms
    return AskResult(
        answer=verdict.answer,
        sources=[{"source": s.source, "page": s.page, "score": s.score} for s in answer.sources],
        latency_ms={
            "retrieve": round(retrieve_ms, 2),
            "generate": round(answer.generate_ms, 2),
            "guardrails": round(answered.guard_ms, 2),
            "total": round(total_ms, 2),
        },
        tokens={"prompt": answer.prompt_tokens, "completion": answer.completion_tokens},
        abstained=answer.abstained,
        prompt=answer.prompt,
        generator=generator,
        guardrails=verdict.as_dict(),
    )


def _log_record(
    collection: str, retrieval: Retrieval, answer: Answer, result: AskResult
) -> dict[str, Any]:
    return {
        "collection": collection,
        "chunk_ids": [hit.chunk_id for hit in retrieval.hits],
        "scores": [round(hit.score, 4) for hit in retrieval.hits],
        "best_score": retrieval.best_score,
        "answer": result.answer,  # as served
        "abstained": answer.abstained,
        "latency_ms": result.latency_ms,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "generator": answer.generator,
        "prompt": answer.prompt,
        "sources": result.sources,
        "guardrails": result.guardrails,
    }


@task(name="ask-question", cache_policy=NO_CACHE)
def ask_task(
    asker: Asker, question: str, k: int | None = None, where: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One question as a Prefect task, for flows that answer questions as a step."""
    return asker.ask(question, k, where).as_dict()


class AskRequest(BaseModel):
    """One question for the ``ask`` flow."""

    question: str = Field(..., min_length=1)
    k: int | None = Field(None, ge=1)
    where: dict[str, Any] | None = Field(None, description="Chroma metadata filter")
    retrieval: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="retrieval mode (default: the version's config)"
    )
    collection: str | None = None
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


# Prefect's templated run name: the question, cut to what a runs list shows.
@flow(name="ask", flow_run_name="ask · {request.question:.60}")
def ask(request: AskRequest) -> dict[str, Any]:
    """Answer one question with citations; the question goes to the query log."""
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    return (
        Asker(settings, request.collection, request.overrides)
        .ask(request.question, request.k, request.where, retrieval=request.retrieval)
        .as_dict()
    )
