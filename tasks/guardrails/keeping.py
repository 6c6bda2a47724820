"""What ragcycle keeps of a question and its answer: traces, the query log, evaluation tables and
the W&B mirror hold what was served, not what the model wrote.

The guardrails protect the answer a user sees; a stored copy outlives it and is read by more
people (anyone with the MLflow UI), so by default it keeps the served answer (redacted, or the
refusal of a withheld one), retrieved passages and questions with their personal data replaced
by its type. ``tracing.keep_raw`` and ``tracing.keep_raw_questions`` keep the raw text instead:
a privacy decision a team makes on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.guardrails.pii import PiiDetector, find_pii, redact

__all__ = ["Keeping"]


@dataclass(frozen=True)
class Keeping:
    """The stored copy of each text an answer involves; ``pii`` is the production detector."""

    pii: PiiDetector | None = None
    raw_answers: bool = False
    raw_questions: bool = False

    def question(self, question: str) -> str:
        """The question as stored: its personal data replaced unless raw questions are kept."""
        return question if self.raw_questions else self._redacted(question)

    def answer(self, generated: str, served: str) -> str:
        """The answer as stored: what was served unless raw answers are kept."""
        return generated if self.raw_answers else served

    def passage(self, text: str, scanned_pii: object = None) -> str:
        """A retrieved passage as stored. ``scanned_pii`` is the ingest scan's finding (the
        chunk's ``pii`` metadata): an empty one means the chunk holds none, so it is kept as
        it is without a second analysis."""
        if self.raw_answers or scanned_pii == "":
            return text
        return self._redacted(text)

    def _redacted(self, text: str) -> str:
        return redact(text, find_pii(text, self.pii))
