from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from ragcycle.errors import GenerationError
from tasks.generation.chat import OpenAIChatGenerator
from tasks.generation.extractive import ExtractiveGenerator, split_sentences, token_counter
from tasks.generation.prompts import DONT_KNOW, PromptTemplate
from tasks.indexing.store import Hit
from tests.fakes import ChatServer, completion

PROMPT = PromptTemplate("test", "1", "Context:\n{{context}}\nQ: {{question}}\nA:")


def hit(text: str, score: float, source: str, page: int = 1) -> Hit:
    return Hit(
        chunk_id=f"id-{source}-{page}",
        text=text,
        score=score,
        metadata={"doc_id": source, "source": source, "page_start": page},
    )


def test_sentences_are_split_and_short_fragments_dropped() -> None:
    text = "Short. The first real sentence is here. And the second\nline continues it! 42"
    assert split_sentences(text) == [
        "The first real sentence is here.",
        "And the second line continues it!",
    ]


def test_extractive_answer_picks_relevant_sentences_and_cites(embedder: Any) -> None:
    generator = ExtractiveGenerator(embedder, token_counter(embedder), max_sentences=1)
    hits = [
        hit("The museum opens at nine. Tickets cost twelve euros for adults.", 0.6, "museum.md"),
        hit(
            "The DMCA was signed into law by President Clinton on October 28, 1998. "
            "It implements two WIPO treaties.",
            0.55,
            "dmca.pdf",
            1,
        ),
    ]
    question = "When was the DMCA signed into law?"
    answer = generator.generate(question, hits, PROMPT, embedder.embed([question])[0])
    assert not answer.abstained
    assert "October 28, 1998" in answer.text and answer.text.endswith("[1]")
    assert [s.source for s in answer.sources] == ["dmca.pdf"]
    assert answer.sources[0].page == 1
    assert answer.prompt_tokens == 0, "no model reads a prompt, so there are no prompt tokens"
    assert answer.completion_tokens > 0
    assert answer.prompt == "prompts:/test/1"


def test_extractive_says_it_does_not_know_below_the_threshold(embedder: Any) -> None:
    generator = ExtractiveGenerator(embedder, token_counter(embedder), min_score=0.3)
    weak = [hit("Completely unrelated text about gardening tools and soil.", 0.12, "garden.md")]
    answer = generator.generate("Who won in 1966?", weak, PROMPT, np.ones(384) / np.sqrt(384))
    assert answer.abstained and answer.text == DONT_KNOW and answer.sources == []
    assert generator.generate("q", [], PROMPT, np.ones(384)).abstained


@pytest.fixture
def fast_retry() -> Iterator[dict[str, Any]]:
    yield {"backoff_seconds": 0.01, "timeout_seconds": 2.0}


def test_openai_backend_answers_with_usage_and_citations(fast_retry: dict[str, Any]) -> None:
    hits = [
        hit("Paris is the capital of France.", 0.8, "france.md"),
        hit("Berlin is in Germany.", 0.5, "de.md"),
    ]
    with ChatServer([(200, completion("Paris [1]."), 0.0)]) as server:
        generator = OpenAIChatGenerator(
            server.url, "test-model", api_key=SecretStr("sk-test-123"), **fast_retry
        )
        answer = generator.generate("Capital of France?", hits, PROMPT, np.zeros(3))
    assert answer.text == "Paris [1]."
    assert (answer.prompt_tokens, answer.completion_tokens) == (11, 7)
    assert [s.source for s in answer.sources] == ["france.md"]
    assert answer.generator == "openai:test-model"
    sent = server.requests[0]
    assert (
        sent["model"] == "test-model" and "Paris is the capital" in sent["messages"][0]["content"]
    )
    assert server.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_below_min_score_the_model_is_not_asked_and_the_answer_abstains(
    fast_retry: dict[str, Any],
) -> None:
    """The extractive backend's rule holds for a model too: when nothing retrieved is close
    enough, the answer says so and the endpoint gets no request."""
    far = [hit("Berlin is in Germany.", 0.31, "de.md"), hit("Rome is old.", 0.2, "it.md")]
    close = [hit("Paris is the capital of France.", 0.36, "france.md")]
    with ChatServer([(200, completion("Paris [1]."), 0.0)]) as server:
        generator = OpenAIChatGenerator(server.url, "test-model", min_score=0.35, **fast_retry)
        declined = generator.generate("Capital of France?", far, PROMPT, np.zeros(3))
        assert server.requests == []
        answered = generator.generate("Capital of France?", close, PROMPT, np.zeros(3))
    assert declined.abstained and declined.text == DONT_KNOW and declined.sources == []
    assert declined.prompt_tokens == 0 and declined.extras == {"below_min_score": True}
    assert len(server.requests) == 1 and answered.text == "Paris [1]."


def test_openai_backend_retries_429_and_500_then_succeeds(fast_retry: dict[str, Any]) -> None:
    script = [
        (429, {"error": "slow down"}, 0.0),
        (500, {"error": "boom"}, 0.0),
        (200, completion("ok"), 0.0),
    ]
    with ChatServer(script) as server:
        generator = OpenAIChatGenerator(server.url, "m", max_retries=3, **fast_retry)
        text, usage = generator.complete([{"role": "user", "content": "hi"}])
    assert text == "ok" and usage["prompt_tokens"] == 11
    assert len(server.requests) == 3


def test_openai_backend_retries_a_timeout(fast_retry: dict[str, Any]) -> None:
    script = [(200, completion("late"), 3.0), (200, completion("on time"), 0.0)]
    with ChatServer(script) as server:
        generator = OpenAIChatGenerator(
            server.url, "m", max_retries=2, backoff_seconds=0.01, timeout_seconds=0.5
        )
        text, _ = generator.complete([{"role": "user", "content": "hi"}])
    assert text == "on time"


def test_openai_backend_gives_up_with_a_clear_error(fast_retry: dict[str, Any]) -> None:
    with ChatServer([(503, {}, 0.0)] * 3) as server:
        generator = OpenAIChatGenerator(server.url, "m", max_retries=2, **fast_retry)
        with pytest.raises(GenerationError, match="after 3 attempts: HTTP 503"):
            generator.complete([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "body", ["{not json", {"choices": []}, {"choices": [{"message": {"content": None}}]}]
)
def test_openai_backend_reports_malformed_responses(body: Any, fast_retry: dict[str, Any]) -> None:
    with ChatServer([(200, body, 0.0)]) as server:
        generator = OpenAIChatGenerator(server.url, "m", max_retries=0, **fast_retry)
        with pytest.raises(GenerationError, match="malformed"):
            generator.complete([{"role": "user", "content": "hi"}])


def test_client_errors_are_not_retried(fast_retry: dict[str, Any]) -> None:
    with ChatServer([(401, {"error": "bad key"}, 0.0), (200, completion("never"), 0.0)]) as server:
        generator = OpenAIChatGenerator(server.url, "m", max_retries=3, **fast_retry)
        with pytest.raises(GenerationError, match="HTTP 401"):
            generator.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


@pytest.mark.usefixtures("prefect_harness")
def test_api_key_comes_from_a_prefect_secret_block() -> None:
    from prefect.blocks.system import Secret

    from ragcycle.settings import GenerationSettings
    from tasks.generation.chat import resolve_api_key

    Secret(value="sk-from-block").save("llm-key", overwrite=True)
    key = resolve_api_key(GenerationSettings(api_key_secret_block="llm-key"))
    assert key is not None and key.get_secret_value() == "sk-from-block"
    assert str(key) == "**********"
    env_key = resolve_api_key(
        GenerationSettings(api_key=SecretStr("sk-env"), api_key_secret_block="llm-key")
    )
    assert env_key is not None and env_key.get_secret_value() == "sk-env"


def test_static_scorer_ranks_the_answering_sentence_first(embedder: Any) -> None:
    from tasks.generation.extractive import StaticSentenceScorer

    scorer = StaticSentenceScorer(embedder)
    sentences = [
        "Tickets for the museum cost twelve euros.",
        "The treaty was signed by President Clinton in October 1998.",
        "Rainfall in the region peaks in November.",
    ]
    scores = scorer("Which president signed the treaty?", np.zeros(384), sentences)
    assert int(np.argmax(scores)) == 1
    assert scorer("the of and", np.zeros(384), sentences).tolist() == [0.0, 0.0, 0.0]


def test_a_context_budget_keeps_the_answering_sentences_in_order(embedder: Any) -> None:
    from tasks.generation.context import ContextBudget
    from tasks.generation.extractive import StaticSentenceScorer

    count = token_counter(embedder)
    hits = [
        hit(
            "The museum was founded in 1901. Tickets for the museum cost twelve euros.\n"
            "Rainfall in the region peaks in November.",
            0.7,
            "museum.md",
        ),
        hit("Rainfall in the region peaks in November. Snow is rare.", 0.6, "weather.md"),
        hit("The treaty was signed by President Clinton in October 1998.", 0.5, "treaty.md"),
    ]
    answering = "Tickets for the museum cost twelve euros."
    budget = ContextBudget(count(answering) + 2, StaticSentenceScorer(embedder), count)
    trimmed = budget.trim("How much do museum tickets cost?", np.zeros(384), hits)
    assert [(h.chunk_id, h.text) for h in trimmed] == [("id-museum.md-1", answering)]
    assert trimmed[0].metadata == hits[0].metadata  # the source and page are still cited

    # Room for everything: every distinct sentence once, each where it was met first.
    whole = ContextBudget(10_000, StaticSentenceScorer(embedder), count).trim(
        "How much do museum tickets cost?", np.zeros(384), hits
    )
    assert [h.text for h in whole] == [
        "The museum was founded in 1901. Tickets for the museum cost twelve euros."
        " Rainfall in the region peaks in November.",
        "Snow is rare.",
        "The treaty was signed by President Clinton in October 1998.",
    ]


def test_the_chat_backend_sends_stop_sequences_extra_parameters_and_the_trimmed_context(
    embedder: Any, fast_retry: dict[str, Any]
) -> None:
    from tasks.generation.context import ContextBudget
    from tasks.generation.extractive import StaticSentenceScorer

    count = token_counter(embedder)
    hits = [
        hit("Berlin is in Germany. Its zoo is large.", 0.6, "de.md"),
        hit("Paris is the capital of France. It lies on the Seine.", 0.8, "france.md"),
    ]
    with ChatServer([(200, completion("Paris [1]."), 0.0)]) as server:
        generator = OpenAIChatGenerator(
            server.url,
            "test-model",
            stop=["\nQuestion:"],
            extra_body={"repeat_penalty": 1.1},
            context_budget=ContextBudget(
                count("Paris is the capital of France.") + 1, StaticSentenceScorer(embedder), count
            ),
            **fast_retry,
        )
        answer = generator.generate("What is the capital of France?", hits, PROMPT, np.zeros(3))
    sent = server.requests[0]
    assert sent["stop"] == ["\nQuestion:"] and sent["repeat_penalty"] == 1.1
    content = sent["messages"][0]["content"]
    assert "[1] (france.md, page 1)\nParis is the capital of France." in content
    assert "Berlin" not in content and "Seine" not in content
    # [1] is the first passage the model read: France, not the first hit retrieved.
    assert [s.source for s in answer.sources] == ["france.md"]
