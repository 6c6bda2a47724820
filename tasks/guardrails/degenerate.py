"""Answers that are no answers: the prompt's scaffolding echoed back, a reply looping on itself,
or nothing but a number or punctuation.

Small local models do all three (seen with SmolLM2-135M: ``The context is: [1] (contract.md,
page 1) ...`` served as the answer, with the retrieved text and its personal data in it). No
library checks a RAG answer's shape against its own prompt layout, so these few patterns are
ours: the passage headers :func:`~tasks.generation.prompts.build_context` writes, the default
prompt's instructions, and repeated word 4-grams.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["UNUSABLE", "degenerate_reason"]

# What a user sees instead: an abstention claims nothing, where the fallback extractive answer
# would serve text whose quality is measured separately.
UNUSABLE = (
    "I can't give a reliable answer: the model's reply was not usable. The indexed documents"
    " may still hold the answer; try asking differently."
)

# A passage header as build_context writes it: "[2] (guide.pdf, page 3)" or "[1] (notes.md)".
_PASSAGE_HEADER = re.compile(
    r"\[\d+\]\s*\([^()\n]{0,200}?(?:\.(?:pdf|md|markdown|txt|html?)\b|,\s*page\s+\d+)[^()\n]*\)",
    re.IGNORECASE,
)
# The default prompt's own words and layout ("Context:" alone on a line, "Question: ...",
# then "Answer:"), not words a document could hold ("the context is important").
_INSTRUCTIONS = re.compile(
    r"\bthe context is\s*:|numbered context passages|cite the passages you use"
    r"|^\s*context\s*:\s*$|^\s*question\s*:.*\n\s*answer\s*:",
    re.IGNORECASE | re.MULTILINE,
)
_WORD = re.compile(r"[^\W\d_]{2,}")
_NUMBER = re.compile(r"\d{3,}")  # "1998" or "4,000" answers a question; a lone "1" does not
_TOKEN = re.compile(r"\w+")
# A loop repeats a word 4-gram three times or more, and half its 4-grams or more are repeats: quoted
# sentences that share a phrase (an extractive answer) have mostly distinct 4-grams.
_NGRAM = 4
_LOOP_COUNT = 3
_LOOP_DISTINCT = 0.5


def degenerate_reason(answer: str) -> str | None:
    """Why ``answer`` is not worth serving, or None: ``answer echoes the prompt`` or
    ``degenerate answer: ...`` (empty, no word and no number of three digits, or a loop)."""
    text = answer.strip()
    if not text:
        return "degenerate answer: empty"
    if _PASSAGE_HEADER.search(text) or _INSTRUCTIONS.search(text):
        return "answer echoes the prompt"
    if not _WORD.search(text) and not _NUMBER.search(text):
        return "degenerate answer: no words"
    # Numbers left out: "[2] The New York Times [3] The New York Times ..." loops all the same.
    tokens = [token.lower() for token in _TOKEN.findall(text) if not token.isdigit()]
    grams = Counter(zip(*(tokens[i:] for i in range(_NGRAM)), strict=False))
    total = sum(grams.values())
    if grams and max(grams.values()) >= _LOOP_COUNT and len(grams) / total <= _LOOP_DISTINCT:
        return "degenerate answer: repeats itself"
    return None
