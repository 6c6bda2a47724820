"""The local backend with the real default model: answers, tokens, seeds, and a local judge."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from tasks.evaluation.judges import JUDGE_CRITERIA, judge_rows
from tasks.generation.local import LocalGenerator
from tasks.generation.prompts import DEFAULT_PROMPT, PromptTemplate
from tasks.indexing.store import Hit
from tasks.models import CATALOGUE

pytestmark = pytest.mark.model

PROMPT = PromptTemplate("ragcycle-answer", "1", DEFAULT_PROMPT)
HITS = [
    Hit(
        chunk_id="dmca-1",
        text="The Digital Millennium Copyright Act (DMCA) was signed into law by President"
        " Clinton on October 28, 1998. It implements two 1996 WIPO treaties.",
        score=0.71,
        metadata={"doc_id": "dmca.pdf", "source": "dmca.pdf", "page_start": 1},
    ),
    Hit(
        chunk_id="museum-1",
        text="The city museum opens at nine and tickets cost twelve euros.",
        score=0.32,
        metadata={"doc_id": "museum.md", "source": "museum.md"},
    ),
]
QUESTION = "When was the DMCA signed into law?"


def generate(generator: LocalGenerator, seed: int | None = None) -> Any:
    return generator.generate(QUESTION, HITS, PROMPT, np.zeros(384), seed=seed)


def test_a_local_answer_has_sources_real_tokens_timings_and_its_model(local_model: Any) -> None:
    generator = LocalGenerator(local_model, max_tokens=24)
    answer = generate(generator)
    assert answer.text.strip()
    assert {source.source for source in answer.sources} <= {"dmca.pdf", "museum.md"}
    assert answer.sources, "an answer cites what it read"
    # The model's own tokenizer counted the rendered prompt: far more than the question alone.
    assert answer.prompt_tokens > 60
    assert 0 < answer.completion_tokens <= 24
    assert answer.extras["timings"]["predicted_n"] == answer.completion_tokens
    assert answer.cpu_seconds > 0
    assert answer.generator == "local:smollm2-135m"
    assert generator.sha256 == CATALOGUE["smollm2-135m"].sha256


def test_greedy_answers_are_reproducible(local_model: Any) -> None:
    generator = LocalGenerator(local_model, temperature=0.0, max_tokens=24)
    assert generate(generator, seed=1).text == generate(generator, seed=2).text


def test_a_sampled_answer_repeats_with_its_seed_and_varies_across_seeds(
    local_model: Any,
) -> None:
    generator = LocalGenerator(local_model, temperature=1.2, top_p=1.0, max_tokens=16)
    assert generate(generator, seed=11).text == generate(generator, seed=11).text
    assert len({generate(generator, seed=seed).text for seed in range(5)}) >= 2


def test_a_local_judge_always_returns_a_parseable_verdict(local_model: Any) -> None:
    judge = LocalGenerator(local_model, temperature=0.0, max_tokens=16)
    rows = [
        {
            "line": 1,
            "question": QUESTION,
            "answer": "It was signed on October 28, 1998 [1].",
            "expected_answer": "October 28, 1998",
        },
        {
            "line": 2,
            "question": "Who won in 1966?",
            "answer": "I don't know.",
            "expected_answer": None,
        },
    ]
    judge_rows(rows, [[HITS[0].text], [HITS[1].text]], judge)
    for row in rows:
        assert row["judge_failed"] == []
        for name in ("judge_faithfulness", "judge_relevance"):
            assert 0.0 <= row[name] <= 1.0, (name, row[name])
    assert 0.0 <= rows[0]["judge_correctness"] <= 1.0
    assert math.isnan(rows[1]["judge_correctness"]), "no reference answer, no correctness verdict"
    assert set(JUDGE_CRITERIA) <= set(rows[0])


def test_llama_cpp_ends_an_answer_at_a_stop_sequence_and_takes_a_repeat_penalty(
    local_model: Any,
) -> None:
    free = generate(LocalGenerator(local_model, max_tokens=24)).text
    words = free.split()
    assert len(words) >= 3, free
    stopped = generate(LocalGenerator(local_model, max_tokens=24, stop=[words[2]])).text
    assert words[2] not in stopped and free.startswith(stopped.strip())
    penalised = LocalGenerator(local_model, max_tokens=24, repeat_penalty=1.3)
    assert penalised.extra_body == {"repeat_penalty": 1.3}
    assert generate(penalised).text.strip()  # llama.cpp accepted the parameter
