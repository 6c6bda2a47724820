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
    "generator_identity",
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
    cpu_seconds: float = 0.0  # CPU time this machine spent answering (local models)
    extras: dict[str, Any] = field(default_factory=dict)


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


class Generator(Protocol):
    """Turns a question and its hits into an :class:`Answer`.

    ``name`` is the backend, ``model`` what runs and ``sha256`` the model file's hash where the
    model is a file on this machine. ``seed`` picks one sample of a sampling backend, so repeat
    ``r`` of an evaluation can differ from repeat ``r + 1`` and still be reproduced.
    """

    name: str
    model: str
    sha256: str | None

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
        *,
        seed: int | None = None,
    ) -> Answer: ...


def generator_identity(generator: Generator) -> dict[str, str | None]:
    """What produced an answer, as ``ask --json`` and evaluation runs record it."""
    return {"backend": generator.name, "model": generator.model, "sha256": generator.sha256}


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
    retrievals: Sequence[Any],
    generator: Generator,
    prompt: PromptTemplate,
    k: int,
    seeds: Sequence[int | None] | None = None,
) -> list[Answer]:
    """An answer for each retrieval, from its top ``k`` chunks, with its seed if given."""
    chosen = list(seeds) if seeds is not None else [None] * len(retrievals)
    return [
        generator.generate(r.question, r.top_chunks(k), prompt, r.vector, seed=seed)
        for r, seed in zip(retrievals, chosen, strict=True)
    ]


@task(name="generate", task_run_name="generate-{label}", cache_policy=NO_CACHE)
def answer_retrievals_task(
    retrievals: list[Any],
    generator: Generator,
    prompt: PromptTemplate,
    k: int,
    seeds: list[int | None] | None = None,
    label: str = "batch",
) -> list[Answer]:
    """Prefect edge of :func:`answer_retrievals` (retries live in the HTTP client)."""
    return answer_retrievals(retrievals, generator, prompt, k, seeds)
