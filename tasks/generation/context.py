"""What of the retrieved chunks a model reads: the sentences closest to the question, under a
token budget.

Reading the prompt is most of a local answer's time on a CPU (k = 5 chunks of 256 tokens is
~1,200 prompt tokens, read at 80-140 tokens/s on two cores), while the answer is usually in one
or two sentences. Rankers that compress a RAG prompt exist (LLMLingua and kin), but each is a
second model to load and run per question; the sentence scorers the extractive backend already
uses rank a chunk's sentences in under a millisecond, so the budget is applied with them here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tasks.generation.answers import TokenCounter
from tasks.generation.extractive import SentenceScorer, distinct_sentences
from tasks.indexing.store import Hit
from tasks.text import split_sentences

__all__ = ["ContextBudget"]


@dataclass(frozen=True)
class ContextBudget:
    """Keep at most ``tokens`` tokens of the retrieved text, best sentences first."""

    tokens: int
    scorer: SentenceScorer
    count_tokens: TokenCounter

    def trim(self, question: str, question_vector: np.ndarray, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` with only their chosen sentences, in the order they were written; a hit with
        none chosen is left out, the others keep their rank. A sentence met twice (overlapping
        chunks) is kept once, where it was met first."""
        sentences = distinct_sentences(hits, _folded)
        if not sentences:
            return list(hits)
        scores = self.scorer(question, question_vector, [text for _, _, text in sentences])
        chosen: set[int] = set()
        spent = 0
        for position in np.argsort(-np.asarray(scores), kind="stable").tolist():
            cost = self.count_tokens(sentences[position][2])
            if spent + cost > self.tokens:
                continue  # a shorter, lower-ranked sentence may still fit
            chosen.add(position)
            spent += cost
        kept: dict[int, list[str]] = {}
        for position in sorted(chosen):
            hit_index, _, text = sentences[position]
            kept.setdefault(hit_index, []).append(text)
        return [
            dataclasses.replace(hit, text=" ".join(kept[index]))
            for index, hit in enumerate(hits)
            if index in kept
        ]


def _folded(text: str) -> list[str]:
    """The sentences of ``text`` with line breaks folded, none dropped for being short."""
    return [" ".join(piece.split()) for piece in split_sentences(text) if piece.strip()]
