"""Answers: what every generator returns, and the protocol a backend implements.

An :class:`Answer` carries everything needed to judge it, price it and trace it: the text, the
cited chunks, whether the backend abstained, token counts and time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.generation.prompts import PromptTemplate
from tasks.indexing.store import Hit

__all__ = [
    "Answer",
    "Generator",
    "Source",
    "TokenCounter",
    "answer_retrievals",
    "answer_retrievals_task",
    "sources_of",
]


@dataclass(frozen=True)
class Source:
    """A cited chunk: file, page and retrieval score."""

    source: str
    page: int | None
    score: float
    chunk_id: str


@dataclass
class Answer:
    """A generated answer with everything needed to judge it, price it and trace it."""

    question: str
    text: str
    sources: list[Source]
    abstained: bool
    prompt_tokens: int
    completion_tokens: int
    generate_ms: float
    generator: str
    prompt: str  # registry URI, prompts:/<name>/<version>
    extras: dict[str, Any] = field(default_factory=dict)


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


class Generator(Protocol):
    """Turns a question and its hits into an :class:`Answer`."""

    name: str
    model: str

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
    ) -> Answer: ...


def sources_of(hits: Sequence[Hit]) -> list[Source]:
    return [
        Source(
            source=str(hit.metadata.get("source", hit.doc_id)),
            page=int(hit.metadata["page_start"]) if "page_start" in hit.metadata else None,
            score=round(hit.score, 4),
            chunk_id=hit.chunk_id,
        )
        for hit in hits
    ]


def answer_retrievals(
    retrievals: Sequence[Any], generator: Generator, prompt: PromptTemplate, k: int
) -> list[Answer]:
    """An answer for each retrieval, from its top ``k`` chunks."""
    return [generator.generate(r.question, r.top_chunks(k), prompt, r.vector) for r in retrievals]


@task(name="generate", task_run_name="generate-{label}", cache_policy=NO_CACHE)
def answer_retrievals_task(
    retrievals: list[Any],
    generator: Generator,
    prompt: PromptTemplate,
    k: int,
    label: str = "batch",
) -> list[Answer]:
    """Prefect edge of :func:`answer_retrievals` (retries live in the HTTP client)."""
    return answer_retrievals(retrievals, generator, prompt, k)
