"""Answering one question, the same way everywhere: retrieve, keep injected chunks out of the
prompt, generate, run the guardrails, and trace every stage.

``ragcycle ask``, the HTTP API and evaluations all call :func:`answer_question`, so an
evaluation measures exactly what production serves (guardrail rates included) and its traces
have the same spans as production traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import Settings
from tasks.embedding import TextEmbedder
from tasks.generation.answers import Answer, Generator
from tasks.generation.prompts import PromptTemplate
from tasks.guardrails import PiiDetector, Verdict, guard_answer, pii_detector, withhold_injected
from tasks.guardrails.keeping import Keeping
from tasks.guardrails.verdict import reason_kind
from tasks.indexing.store import Hit, VectorIndex
from tasks.retrieval import DENSE, Retrieval, SearchPlan, retrieve
from tasks.stopping import raise_if_stopped
from tasks.tracking.traces import QueryTrace, retrieved_documents

__all__ = [
    "Answered",
    "GuardConfig",
    "Parts",
    "TraceOptions",
    "answer_many",
    "answer_many_task",
    "answer_question",
    "open_trace",
]


@dataclass(frozen=True)
class GuardConfig:
    """What the guardrails act on, from ``guardrails.*`` and ``evaluation.toxicity_threshold``."""

    toxicity_threshold: float
    pii_action: str
    support_threshold: float
    withhold_injected: bool
    pii: PiiDetector
    keeping: Keeping = field(default_factory=Keeping)

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardConfig:
        guard = settings.guardrails
        detector = pii_detector(tuple(guard.pii_entities), guard.pii_score)
        return cls(
            toxicity_threshold=settings.evaluation.toxicity_threshold,
            pii_action=guard.pii_action,
            support_threshold=guard.support_threshold,
            withhold_injected=guard.withhold_injected,
            pii=detector,
            keeping=Keeping(
                detector, settings.tracing.keep_raw, settings.tracing.keep_raw_questions
            ),
        )


@dataclass
class Parts:
    """The warm parts one answer needs; built once per process or per evaluation."""

    index: VectorIndex
    embedder: TextEmbedder
    generator: Generator
    prompt: PromptTemplate
    guard: GuardConfig
    fetch_multiplier: int = 1
    plan: SearchPlan = DENSE
    # Answers from the same chunks when the generator's answer is unusable (it echoes the prompt
    # or is degenerate); None serves an abstention instead (generation.fallback).
    fallback: Generator | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, index: VectorIndex, embedder: TextEmbedder, prompt: PromptTemplate
    ) -> Parts:
        """The parts the settings choose, over an opened index: ``ask``, the API, evaluations
        and the model benchmark all answer with these."""
        from tasks.generation.backends import fallback_from_settings, generator_from_settings
        from tasks.retrieval import search_plan

        return cls(
            index=index,
            embedder=embedder,
            generator=generator_from_settings(settings, embedder),
            prompt=prompt,
            guard=GuardConfig.from_settings(settings),
            fetch_multiplier=settings.retrieval.fetch_multiplier,
            plan=search_plan(settings, index),
            fallback=fallback_from_settings(settings, embedder),
        )


@dataclass(frozen=True)
class TraceOptions:
    """Where a question's trace goes and what it is tagged with (index version, origin...)."""

    experiment_id: str
    tags: dict[str, str] = field(default_factory=dict)
    session_id: str | None = None


@dataclass
class Answered:
    """An answered question: what was retrieved, generated and served, and its open trace."""

    retrieval: Retrieval
    answer: Answer
    verdict: Verdict
    chunks: list[Hit]  # what the prompt saw
    trace: QueryTrace | None
    trace_id: str | None = None
    stored_question: str = ""  # the question as stored copies keep it
    guard_ms: float = 0.0
    replaced: Answer | None = None  # the generator's unusable answer, when the fallback's served

    def close_trace(self, tags: dict[str, str]) -> Callable[[], None]:
        """Finish the trace with the served answer; the callable writes it (a no-op untraced)."""
        if self.trace is None:
            return lambda: None
        return self.trace.close(
            {"answer": self.verdict.answer, "guardrails": self.verdict.as_dict()},
            {"ragcycle.guardrails": self.verdict.status, **tags},
            checks={"guardrails": self.verdict.status},
        )


def answer_question(
    parts: Parts,
    question: str,
    k: int,
    *,
    where: dict[str, Any] | None = None,
    seed: int | None = None,
    trace: QueryTrace | None = None,
    plan: SearchPlan | None = None,
) -> Answered:
    """Retrieve, withhold injected chunks, generate, judge: every stage a span of ``trace``
    (see :func:`open_trace`). On failure the trace records the failed stage; the caller
    closes and writes it."""
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey

    traced = trace
    plan = plan or parts.plan
    keeping = parts.guard.keeping
    # Redacted once: the trace opened with it, and the query log reuses it (Answered).
    stored_question = traced.question if traced else keeping.question(question)
    inputs: dict[str, Any] = {"question": stored_question, "k": k, "mode": plan.mode}
    with _step(traced, "retrieve", SpanType.RETRIEVER, inputs) as span:
        retrieval = retrieve(
            question,
            parts.index,
            parts.embedder,
            k,
            fetch_multiplier=parts.fetch_multiplier,
            where=where,
            plan=plan,
        )
        chunks = retrieval.top_chunks(k)
        if span is not None:
            _set(span, outputs=retrieved_documents(chunks, keeping.passage))
    withheld: dict[str, list[str]] = {}
    if parts.guard.withhold_injected:
        chunks, withheld = withhold_injected(chunks)
    model = {SpanAttributeKey.MODEL: parts.generator.model}
    inputs = {"question": stored_question, "chunks": [hit.chunk_id for hit in chunks]}
    with _step(traced, "generate", SpanType.CHAT_MODEL, inputs, model) as generated:
        answer = parts.generator.generate(
            question, chunks, parts.prompt, retrieval.vector, seed=seed
        )
        usage = {
            "input_tokens": answer.prompt_tokens,
            "output_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        }
        _set(generated, attributes={SpanAttributeKey.CHAT_USAGE: usage})
    with _step(traced, "guardrails", SpanType.GUARDRAIL) as span:
        begun = time.perf_counter()
        verdict = _guard(parts.guard, answer, chunks, withheld)
        # The spans are written before any fallback: they keep what the model said as stored
        # copies keep it (redacted unless tracing.keep_raw), and the verdict on what was served.
        stored_answer = {"answer": keeping.answer(answer.text, verdict.answer)}
        _set(generated, outputs=stored_answer)
        replaced = None
        if parts.fallback is not None and _unusable(verdict):
            replaced = answer
            answer = _fall_back(parts.fallback, question, chunks, parts.prompt, retrieval, answer)
            verdict = _guard(parts.guard, answer, chunks, withheld, replaced=verdict)
        guard_ms = (time.perf_counter() - begun) * 1000
        _set(span, outputs=verdict.as_dict(), inputs=stored_answer)
    trace_id = traced.trace_id if traced else None
    return Answered(
        retrieval, answer, verdict, chunks, traced, trace_id, stored_question, guard_ms, replaced
    )


def _guard(
    guard: GuardConfig,
    answer: Answer,
    chunks: Sequence[Hit],
    withheld: dict[str, list[str]],
    *,
    replaced: Verdict | None = None,
) -> Verdict:
    """The guardrails' verdict on ``answer``; after a fallback (``replaced``: the verdict on the
    unusable answer) that verdict's reasons come first, saying what was served instead, and a
    clean fallback is a ``warning``, not a pass."""
    verdict = guard_answer(
        answer.text,
        [hit.text for hit in chunks],
        toxicity_threshold=guard.toxicity_threshold,
        pii_action=guard.pii_action,
        support_threshold=guard.support_threshold,
        withheld=withheld if replaced is None else None,
        pii=guard.pii,
        abstained=answer.abstained,
    )
    if replaced is not None:
        served = f": the {answer.extras['fallback']} answer served instead"
        kept = [r + served if reason_kind(r) in _UNUSABLE else r for r in replaced.reasons]
        verdict.reasons = [*kept, *verdict.reasons]
        verdict.withheld_chunks = replaced.withheld_chunks
        verdict.status = "warning" if verdict.status == "pass" else verdict.status
    return verdict


_UNUSABLE = frozenset({"echo", "degenerate"})


def _unusable(verdict: Verdict) -> bool:
    return verdict.status == "fail" and any(reason_kind(r) in _UNUSABLE for r in verdict.reasons)


def _fall_back(
    fallback: Generator,
    question: str,
    chunks: list[Hit],
    prompt: PromptTemplate,
    retrieval: Retrieval,
    unusable: Answer,
) -> Answer:
    """The fallback's answer from the same chunks, with the model's tokens and time added: they
    were spent, and cost and latency must say so."""
    served = fallback.generate(question, chunks, prompt, retrieval.vector)
    return replace(
        served,
        prompt_tokens=unusable.prompt_tokens + served.prompt_tokens,
        completion_tokens=unusable.completion_tokens + served.completion_tokens,
        generate_ms=unusable.generate_ms + served.generate_ms,
        cpu_seconds=unusable.cpu_seconds + served.cpu_seconds,
        generator=unusable.generator,
        extras={**unusable.extras, "fallback": fallback.name},
    )


def answer_many(
    parts: Parts,
    questions: Sequence[str],
    k: int,
    seeds: Sequence[int | None],
    trace: TraceOptions | None = None,
) -> list[Answered]:
    """Each question answered as production would answer it, its trace written at once."""
    answered: list[Answered] = []
    for question, seed in zip(questions, seeds, strict=True):
        raise_if_stopped()
        traced = open_trace(parts, question, trace)
        try:
            one = answer_question(parts, question, k, seed=seed, trace=traced)
        except Exception:
            if traced is not None:
                traced.close({}, {"ragcycle.guardrails": "error"})()
            raise
        one.close_trace({})()
        one.trace = None  # written: only its id is needed from here on
        answered.append(one)
    return answered


@task(name="answer", task_run_name="answer-{label}", cache_policy=NO_CACHE)
def answer_many_task(
    parts: Parts,
    questions: list[str],
    k: int,
    seeds: list[int | None],
    trace: TraceOptions | None = None,
    label: str = "batch",
) -> list[Answered]:
    """Prefect edge of :func:`answer_many` (retries live in the generator's HTTP client)."""
    return answer_many(parts, questions, k, seeds, trace)


def open_trace(parts: Parts, question: str, trace: TraceOptions | None) -> QueryTrace | None:
    """The trace one question's stages are recorded in, tagged with what answers it."""
    if trace is None:
        return None
    tags = {
        "ragcycle.prompt": parts.prompt.uri,
        "ragcycle.generator": f"{parts.generator.name}:{parts.generator.model}",
        "ragcycle.collection": parts.index.name,
        **trace.tags,
    }
    stored = parts.guard.keeping.question(question)
    return QueryTrace(trace.experiment_id, stored, tags, trace.session_id)


@contextmanager
def _step(
    trace: QueryTrace | None,
    name: str,
    span_type: str,
    inputs: Any = None,
    attributes: dict[str, Any] | None = None,
) -> Iterator[Any]:
    if trace is None:
        yield None
        return
    with trace.step(name, span_type, inputs, attributes) as span:
        yield span


def _set(
    span: Any, outputs: Any = None, attributes: dict[str, Any] | None = None, inputs: Any = None
) -> None:
    if span is None:
        return
    if outputs is not None:
        span.set_outputs(outputs)
    if inputs is not None:
        span.inputs = inputs
    if attributes:
        span.set_attributes(attributes)
