"""Asking questions: retrieve, generate, log. A plain function for the CLI and services (no
Prefect round trip on the hot path) and a Prefect flow for scheduled or remote use."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings
from tasks.audit import QueryLog
from tasks.embedding import embedder_from_settings
from tasks.generation.answers import Answer, Generator, generator_identity
from tasks.generation.backends import generator_from_settings
from tasks.generation.prompts import PromptTemplate, load_prompt
from tasks.guardrails import Verdict, guard_answer, withhold_injected
from tasks.indexing.store import VectorIndex, open_index
from tasks.retrieval import Retrieval, retrieve
from tasks.tracking.runs import mlflow_client
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Asker:
    """Holds the warm parts (model, index, prompt, backend) so each question costs milliseconds."""

    def __init__(
        self,
        settings: Settings,
        collection: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        mlflow_client(settings.mlflow_tracking_uri)
        # The live version answers with the config it was gated with, not today's settings.
        serving = resolve_serving(settings, collection, overrides=overrides)
        settings = serving.settings
        self.settings = settings
        self.version = serving.version.version if serving.version else None
        self.embedder = embedder_from_settings(settings)
        self.index: VectorIndex = open_index(settings, serving.collection, create=False)
        self.generator: Generator = generator_from_settings(settings, self.embedder)
        self.prompt: PromptTemplate = load_prompt(
            settings.generation.prompt_name, settings.generation.prompt_version
        )
        self.log = QueryLog(settings.data_dir / "query_log.sqlite")

    def ask(
        self, question: str, k: int | None = None, where: dict[str, Any] | None = None
    ) -> AskResult:
        """Retrieve, keep injected chunks out, generate, run the guardrails, log.

        The answer returned (and logged) is the one a user may see: redacted, or replaced by a
        refusal when the guardrails withhold it.
        """
        k = k or self.settings.retrieval.k
        retrieval = retrieve(question, self.index, self.embedder, k, where=where)
        chunks = retrieval.top_chunks(k)
        withheld: dict[str, list[str]] = {}
        if self.settings.guardrails.withhold_injected:
            chunks, withheld = withhold_injected(chunks)
        answer = self.generator.generate(
            question, chunks, self.prompt, retrieval.vector, seed=self.settings.generation.seed
        )
        guard = self.settings.guardrails
        verdict = guard_answer(
            answer.text,
            [hit.text for hit in chunks],
            toxicity_threshold=self.settings.evaluation.toxicity_threshold,
            pii_action=guard.pii_action,
            support_threshold=guard.support_threshold,
            withheld=withheld,
        )
        result = _result(retrieval, answer, generator_identity(self.generator), verdict)
        result.index_version = self.version
        result.query_id = self.log.append(
            {
                **_log_record(self.index.name, retrieval, answer, result),
                "index_version": self.version,
            }
        )
        return result


def _result(
    retrieval: Retrieval, answer: Answer, generator: dict[str, str | None], verdict: Verdict
) -> AskResult:
    retrieve_ms = retrieval.latency_ms["retrieve"]
    return AskResult(
        answer=verdict.answer,
        sources=[{"source": s.source, "page": s.page, "score": s.score} for s in answer.sources],
        latency_ms={
            "retrieve": round(retrieve_ms, 2),
            "generate": round(answer.generate_ms, 2),
            "total": round(retrieve_ms + answer.generate_ms, 2),
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
        "question": retrieval.question,
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
    collection: str | None = None
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


@flow(name="ask")
def ask(request: AskRequest) -> dict[str, Any]:
    """Answer one question with citations; the question goes to the query log."""
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    return (
        Asker(settings, request.collection, request.overrides)
        .ask(request.question, request.k, request.where)
        .as_dict()
    )
