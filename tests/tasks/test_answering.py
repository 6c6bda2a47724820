"""Answering one question end to end over a real index, embedder, extractive backend and
guardrails; the model is a scripted chat endpoint, so its reply can be made unusable at will."""

from __future__ import annotations

from typing import Any

import pytest

from ragcycle.settings import Settings
from tests.fakes import ChatServer, completion

DOCS = {
    "museum-hours": "The city museum opens at nine in the morning and closes at six.",
    "museum-tickets": "A ticket to the city museum costs twelve euros for adults.",
    "parking": "Parking near the station is free on Sundays.",
}
QUESTION = "When does the city museum open?"
ECHO = "The context is: [1] (museum-hours.md, page 1) The city museum opens at nine"


def _parts(settings: Settings, embedder: Any, url: str, fallback: str) -> Any:
    from tasks.answering import Parts
    from tasks.generation.prompts import load_prompt
    from tasks.indexing.store import open_index

    configured = settings.with_overrides(
        {"generation": {"backend": "openai", "base_url": url, "fallback": fallback}}
    )
    index = open_index(configured, "answering-test")
    texts = list(DOCS.values())
    metadata = [{"doc_id": key, "source": f"{key}.md"} for key in DOCS]
    index.upsert(list(DOCS), embedder.embed(texts), texts, metadata)
    prompt = load_prompt(configured.generation.prompt_name, None)
    return Parts.from_settings(configured, index, embedder, prompt)


@pytest.mark.parametrize("reply", [ECHO, "1", "the museum " * 30])
def test_an_unusable_answer_is_replaced_by_the_extractive_one(
    settings: Settings, embedder: Any, reply: str
) -> None:
    from tasks.answering import answer_question

    with ChatServer([(200, completion(reply, prompt=900, completion_tokens=60), 0.0)]) as server:
        parts = _parts(settings, embedder, server.url, "extractive")
        one = answer_question(parts, QUESTION, 2)

    assert one.replaced is not None and one.replaced.text == reply.strip()
    assert "opens at nine in the morning" in one.verdict.answer
    assert one.answer.sources[0].source == "museum-hours.md"
    assert one.verdict.status == "warning"
    assert one.verdict.reasons[0].endswith(": the extractive answer served instead")
    # the model's tokens were spent, so cost and latency still count them
    assert one.answer.prompt_tokens == 900 and one.answer.completion_tokens > 60
    assert one.answer.extras["fallback"] == "extractive"


def test_with_fallback_abstain_an_unusable_answer_is_an_abstention(
    settings: Settings, embedder: Any
) -> None:
    from tasks.answering import answer_question
    from tasks.guardrails.degenerate import UNUSABLE

    with ChatServer([(200, completion(ECHO), 0.0)]) as server:
        parts = _parts(settings, embedder, server.url, "abstain")
        one = answer_question(parts, QUESTION, 2)

    assert parts.fallback is None and one.replaced is None
    assert one.verdict.status == "fail" and one.verdict.answer == UNUSABLE
    assert one.verdict.reasons == ["answer echoes the prompt"]


def test_a_usable_answer_is_served_as_the_model_wrote_it(settings: Settings, embedder: Any) -> None:
    from tasks.answering import answer_question

    reply = "The city museum opens at nine in the morning [1]."
    with ChatServer([(200, completion(reply), 0.0)]) as server:
        parts = _parts(settings, embedder, server.url, "extractive")
        one = answer_question(parts, QUESTION, 2)

    assert one.replaced is None and one.verdict.answer == reply
    assert "fallback" not in one.answer.extras


def test_the_extractive_backend_has_no_fallback(settings: Settings, embedder: Any) -> None:
    from tasks.generation.backends import fallback_from_settings

    extractive = settings.with_overrides({"generation": {"backend": "extractive"}})
    assert fallback_from_settings(extractive, embedder) is None
    local = settings.with_overrides({"generation": {"backend": "local"}})
    assert getattr(fallback_from_settings(local, embedder), "name", None) == "extractive"
