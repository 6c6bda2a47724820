"""LLM-as-judge metrics: a model grades each answer, read back as 0-1.

Three criteria, each a question of its own: is the answer grounded in the retrieved context
(``judge_faithfulness``), correct against the reference (``judge_correctness``, only where the
golden set has one), and relevant to the question (``judge_relevance``).

Two formulations. ``verdict`` (the default) asks one yes/no question per criterion, the
reference before the answer, and reads the probability of "yes" from the first token's
log-probabilities: small models rank answers far better this way than by writing a score, and a
probability has no ties. ``score`` asks for ``{"score": 1..5}`` (grammar-constrained on a local
model; an API judge's free text is parsed for JSON, JSON in prose, or a bare number). A reply
with no usable verdict is ``nan`` and counted as a parse failure, never a guess.

Whether any of this can be believed is measured, not assumed: :mod:`tasks.evaluation.calibration`
grades labelled rows with the same judge and formulation.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import GenerationError
from tasks.evaluation.stats import nanmean
from tasks.stopping import raise_if_stopped

__all__ = [
    "JUDGE_CRITERIA",
    "JUDGE_PROMPT",
    "SCORE_SCHEMA",
    "VERDICT_PROMPTS",
    "VERDICT_THRESHOLD",
    "Formulation",
    "Judge",
    "judge_params",
    "judge_prompt_id",
    "judge_reliability",
    "judge_rows",
    "judge_rows_task",
    "judge_source",
    "parse_judge_score",
    "verdict_probability",
]

Formulation = Literal["verdict", "score"]

JUDGE_PROMPT = """You grade a question-answering system. Reply with JSON only, like {{"score": 3}}.

Question: {question}
Reference answer: {reference}
Retrieved context:
{context}
System answer: {answer}

Score from 1 (worst) to 5 (best) how {criterion}
"""

JUDGE_CRITERIA = {
    "judge_faithfulness": "fully the system answer is supported by the retrieved context.",
    "judge_correctness": "correct the system answer is compared with the reference answer.",
    "judge_relevance": "well the system answer addresses the question.",
}

# One question per criterion, what the answer is checked against first.
VERDICT_PROMPTS = {
    "judge_faithfulness": "Context:\n{context}\n\nQuestion: {question}\nProposed answer:"
    " {answer}\n\nIs everything the proposed answer says stated in the context?"
    " Answer yes or no.",
    "judge_correctness": "Reference answer: {reference}\nQuestion: {question}\nProposed"
    " answer: {answer}\n\nDoes the proposed answer agree with the reference answer?"
    " Answer yes or no.",
    "judge_relevance": "Question: {question}\nProposed answer: {answer}\n\nDoes the proposed"
    " answer address the question? Answer yes or no.",
}
VERDICT_ALTERNATIVES = 10  # first-token alternatives asked for: "yes" and "no" are among them

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
}

# A verdict at or above this (a score of 3 of 5) counts as "supported" when the judge is compared
# with the lexical support metric and with itself across repeats.
VERDICT_THRESHOLD = 0.5

_FIRST_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class Judge(Protocol):
    """A chat model that grades: the local and the openai backends both are one."""

    name: str
    model: str
    sha256: str | None
    structured_output: bool

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        seed: int | None = None,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
    ) -> tuple[str, dict[str, Any]]: ...


def judge_prompt_id(formulation: Formulation = "verdict") -> str:
    """A short hash of the formulation's prompts: a verdict's source names it."""
    prompts: Any = VERDICT_PROMPTS if formulation == "verdict" else [JUDGE_PROMPT, JUDGE_CRITERIA]
    payload = json.dumps(prompts, sort_keys=True)
    return f"judge-{formulation}-" + hashlib.sha256(payload.encode()).hexdigest()[:8]


def verdict_probability(text: str, first_token: Mapping[str, float]) -> float:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives ("Yes", " yes", ...);
    without log-probabilities, the reply's first word (1 for yes, 0 for no); else ``nan``."""
    yes = sum(math.exp(lp) for token, lp in first_token.items() if _word(token) == "yes")
    no = sum(math.exp(lp) for token, lp in first_token.items() if _word(token) == "no")
    if yes + no > 0:
        return yes / (yes + no)
    word = _word(text.split()[0]) if text.split() else ""
    return {"yes": 1.0, "no": 0.0}.get(word, math.nan)


def _word(token: str) -> str:
    return token.strip().strip(".,!:;\"'").lower()


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
    rows: Sequence[dict[str, Any]],
    contexts: Sequence[Sequence[str]],
    judge: Judge,
    *,
    context_chars: int = 1500,
    formulation: Formulation = "verdict",
    criteria: Sequence[str] = tuple(JUDGE_CRITERIA),
) -> None:
    """Add judge scores (of ``criteria``) to each row in place, and the criteria that failed as
    ``judge_failed``.

    A call that fails or a reply without a usable verdict is ``nan`` for that criterion; a row
    without a reference answer gets no correctness verdict (``nan``, not a failure).
    """
    for row, context in zip(rows, contexts, strict=True):
        raise_if_stopped()
        failed: list[str] = []
        for name in criteria:
            if name == "judge_correctness" and not row.get("expected_answer"):
                row[name] = math.nan
                continue
            fields = {
                "question": row["question"],
                "reference": row.get("expected_answer") or "(none)",
                "context": "\n---\n".join(context)[:context_chars],
                "answer": row["answer"],
            }
            row[name] = _grade(judge, name, fields, formulation)
            if math.isnan(row[name]):
                failed.append(name)
        row["judge_failed"] = failed


def _grade(judge: Judge, name: str, fields: dict[str, str], formulation: Formulation) -> float:
    """One criterion's verdict on one answer, 0-1, or ``nan`` when the judge gave none."""
    if formulation == "verdict":
        prompt = VERDICT_PROMPTS[name].format(**fields)
        options: dict[str, Any] = {"max_tokens": 1, "top_logprobs": VERDICT_ALTERNATIVES}
    else:
        prompt = JUDGE_PROMPT.format(criterion=JUDGE_CRITERIA[name], **fields)
        options = {"json_schema": SCORE_SCHEMA if judge.structured_output else None}
    try:
        text, usage = judge.complete([{"role": "user", "content": prompt}], **options)
    except GenerationError:
        return math.nan
    if formulation == "verdict":
        return verdict_probability(text, usage.get("first_token") or {})
    return parse_judge_score(text)


def judge_reliability(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """How far the judge's faithfulness verdicts can be trusted, from the rows themselves.

    ``judge_lexical_agreement``: share of answered rows where the judge's verdict (score >= 3)
    agrees with the lexical support metric (>= half the sentences supported).
    ``judge_flip_share``: share of questions answered more than once whose verdict differs
    between repeats; ``nan`` without repeats.
    """
    agreements: list[float] = []
    verdicts: dict[int, set[bool]] = {}
    for row in rows:
        judged = float(row.get("judge_faithfulness", math.nan))
        if math.isnan(judged):
            continue
        verdict = judged >= VERDICT_THRESHOLD
        verdicts.setdefault(int(row["line"]), set()).add(verdict)
        lexical = float(row.get("faithfulness", math.nan))
        if not math.isnan(lexical):
            agreements.append(float(verdict == (lexical >= VERDICT_THRESHOLD)))
    counts = {int(row["line"]) for row in rows}
    repeated = [line for line in counts if sum(1 for r in rows if int(r["line"]) == line) > 1]
    flips = [float(len(verdicts.get(line, set())) > 1) for line in repeated if line in verdicts]
    return {
        "judge_lexical_agreement": nanmean(agreements),
        "judge_flip_share": nanmean(flips),
    }


def judge_source(judge: Judge | None, formulation: Formulation = "verdict") -> str:
    """The source of a verdict, as its MLflow assessment names it: judge model @ prompt."""
    if judge is None:
        return ""
    return f"{judge.name}:{judge.model}@{judge_prompt_id(formulation)}"


def judge_params(judge: Judge | None, formulation: Formulation = "verdict") -> dict[str, str]:
    """What an evaluation run records about its judge."""
    if judge is None:
        return {}
    return {
        "judge_backend": judge.name,
        "judge_model": judge.model,
        "judge_sha256": judge.sha256 or "",
        "judge_prompt": judge_prompt_id(formulation),
    }


@task(name="judge", cache_policy=NO_CACHE)
def judge_rows_task(
    rows: list[dict[str, Any]],
    contexts: list[list[str]],
    judge: Judge,
    context_chars: int,
    formulation: Formulation = "verdict",
) -> list[dict[str, Any]]:
    """Prefect edge of :func:`judge_rows`; returns the rows with judge metrics."""
    judge_rows(rows, contexts, judge, context_chars=context_chars, formulation=formulation)
    return rows
