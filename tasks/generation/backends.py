"""The generator the settings choose."""

from __future__ import annotations

from typing import Any

from ragcycle.settings import GenerationSettings
from tasks.generation.answers import Generator
from tasks.generation.chat import OpenAIChatGenerator, resolve_api_key
from tasks.generation.extractive import (
    ExtractiveGenerator,
    ModelSentenceScorer,
    SentenceScorer,
    StaticSentenceScorer,
    token_counter,
)

__all__ = ["generator_from_settings"]


def generator_from_settings(settings: GenerationSettings, embedder: Any) -> Generator:
    """The configured backend."""
    if settings.backend == "openai":
        return OpenAIChatGenerator(
            settings.base_url,
            settings.model,
            api_key=resolve_api_key(settings),
            timeout_seconds=settings.timeout_seconds,
            max_retries=settings.max_retries,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
    scorer: SentenceScorer = (
        StaticSentenceScorer(embedder)
        if settings.sentence_scoring == "static"
        else ModelSentenceScorer(embedder)
    )
    return ExtractiveGenerator(
        embedder,
        token_counter(embedder),
        min_score=settings.min_score,
        max_sentences=settings.max_sentences,
        scorer=scorer,
    )
