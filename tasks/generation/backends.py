"""The generator, and the judge, that the settings choose."""

from __future__ import annotations

from typing import Any

from ragcycle.settings import GenerationSettings, Settings
from tasks.generation.answers import Generator
from tasks.generation.chat import OpenAIChatGenerator, resolve_api_key
from tasks.generation.context import ContextBudget
from tasks.generation.extractive import (
    ExtractiveGenerator,
    ModelSentenceScorer,
    SentenceScorer,
    StaticSentenceScorer,
    token_counter,
)
from tasks.models import model_file

__all__ = ["fallback_from_settings", "generator_from_settings", "judge_from_settings"]


def generator_from_settings(settings: Settings, embedder: Any) -> Generator:
    """The configured backend; a local model that is absent or corrupt is a ModelError."""
    config = settings.generation
    if config.backend == "local":
        from tasks.generation.local import LocalGenerator

        return LocalGenerator(
            model_file(config.local_model, settings.models_path, config.model_path),
            context_size=config.context_size,
            threads=config.threads,
            batch_threads=config.batch_threads,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            stop=config.stop,
            repeat_penalty=config.repeat_penalty,
            context_budget=_context_budget(config, embedder),
            min_score=config.min_score,
        )
    if config.backend == "openai":
        return OpenAIChatGenerator(
            config.base_url,
            config.model,
            api_key=resolve_api_key(config),
            timeout_seconds=config.timeout_seconds,
            max_retries=config.max_retries,
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_tokens,
            stop=config.stop,
            context_budget=_context_budget(config, embedder),
            min_score=config.min_score,
        )
    return _extractive(config, embedder)


def fallback_from_settings(settings: Settings, embedder: Any) -> Generator | None:
    """What answers when a model's answer is unusable (``generation.fallback``): the extractive
    backend over the same chunks, or None for an abstention (and for the extractive backend,
    whose answers are never unusable in that way)."""
    config = settings.generation
    if config.backend == "extractive" or config.fallback == "abstain":
        return None
    return _extractive(config, embedder)


def _extractive(config: GenerationSettings, embedder: Any) -> ExtractiveGenerator:
    return ExtractiveGenerator(
        embedder,
        token_counter(embedder),
        min_score=config.min_score,
        max_sentences=config.max_sentences,
        scorer=_sentence_scorer(config, embedder),
    )


def _sentence_scorer(config: GenerationSettings, embedder: Any) -> SentenceScorer:
    if config.sentence_scoring == "static":
        return StaticSentenceScorer(embedder)
    return ModelSentenceScorer(embedder)


def _context_budget(config: GenerationSettings, embedder: Any) -> ContextBudget | None:
    if config.context_tokens == 0:
        return None
    return ContextBudget(
        config.context_tokens, _sentence_scorer(config, embedder), token_counter(embedder)
    )


def judge_from_settings(settings: Settings) -> OpenAIChatGenerator | None:
    """The judge of evaluations, greedy (temperature 0) so its verdicts are reproducible; None
    when judging is off."""
    judge = settings.evaluation.judge
    if judge.backend == "none":
        return None
    if judge.backend == "local":
        from tasks.generation.local import LocalGenerator

        return LocalGenerator(
            model_file(judge.model, settings.models_path, judge.model_path),
            context_size=settings.generation.context_size,
            threads=settings.generation.threads,
            batch_threads=settings.generation.batch_threads,
            temperature=0.0,
            max_tokens=judge.max_tokens,
        )
    config = settings.generation
    return OpenAIChatGenerator(
        config.base_url,
        judge.model,
        api_key=resolve_api_key(config),
        timeout_seconds=config.timeout_seconds,
        max_retries=config.max_retries,
        temperature=0.0,
        max_tokens=judge.max_tokens,
    )
