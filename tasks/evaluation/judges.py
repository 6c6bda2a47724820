"""LLM-as-judge metrics: a model grades each answer on a 1-5 scale, read back as 0-1.

Judges reply in free text however firmly they are asked for JSON, so the parser accepts JSON,
JSON inside prose or code fences, or a bare number, and anything else is ``nan``, never a guess.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

__all__ = ["JUDGE_CRITERIA", "JUDGE_PROMPT", "judge_rows", "judge_rows_task", "parse_judge_score"]

JUDGE_PROMPT = """You grade a question-answering system. Reply with JSON only, like {{"score": 3}}.
Score from 1 (worst) to 5 (best) how {criterion}

Question: {question}
Reference answer: {reference}
Retrieved context:
{context}
System answer: {answer}
"""


JUDGE_CRITERIA = {
    "judge_correctness": "correct the system answer is compared with the reference answer.",
    "judge_faithfulness": "fully the system answer is supported by the retrieved context.",
}


_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_judge_score(text: str) -> float:
    """A 1-5 judge score as 0-1; ``nan`` when the judge's reply holds no usable score.

    Accepts the JSON asked for, JSON wrapped in prose or code fences, or a bare number.
    """
    candidates: list[Any] = []
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            parsed = json.loads(text[start : end + 1])
            if isinstance(parsed, dict):
                candidates.append(parsed.get("score"))
        except json.JSONDecodeError:
            pass
    match = _FIRST_NUMBER.search(text)
    if match:
        candidates.append(match.group())
    for candidate in candidates:
        try:
            score = float(candidate)
        except (TypeError, ValueError):
            continue
        if 1.0 <= score <= 5.0:
            return (score - 1.0) / 4.0
    return math.nan


def judge_rows(
    rows: Sequence[dict[str, Any]], contexts: Sequence[Sequence[str]], judge: Any
) -> None:
    """Add LLM-judge scores to each row in place; a failed or malformed judgement is ``nan``.

    ``judge`` is anything with ``complete(messages) -> (text, usage)``, e.g. the openai backend.
    """
    from ragcycle.errors import GenerationError

    for row, context in zip(rows, contexts, strict=True):
        for name, criterion in JUDGE_CRITERIA.items():
            if name == "judge_correctness" and not row.get("expected_answer"):
                row[name] = math.nan
                continue
            prompt = JUDGE_PROMPT.format(
                criterion=criterion,
                question=row["question"],
                reference=row.get("expected_answer") or "(none)",
                context="\n---\n".join(context)[:6000],
                answer=row["answer"],
            )
            try:
                text, _ = judge.complete([{"role": "user", "content": prompt}])
            except GenerationError:
                row[name] = math.nan
                continue
            row[name] = parse_judge_score(text)


@task(name="judge", cache_policy=NO_CACHE)
def judge_rows_task(
    rows: list[dict[str, Any]], contexts: list[list[str]], judge: Any
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`judge_rows`; returns the rows with judge metrics."""
    judge_rows(rows, contexts, judge)
    return rows
