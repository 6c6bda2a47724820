"""Text primitives shared by the stages: where sentences break, and which words carry no meaning.

Chunking cuts at sentence breaks when a paragraph is too long, the extractive generator picks
sentences to answer with, and the lexical faithfulness metric checks answers sentence by
sentence. They must agree on what a sentence is, so there is one definition here. A hand-written
rule rather than a library: the maintained sentence segmenters (spaCy, NLTK's punkt, pysbd) need
models or data files and cost milliseconds per call, where chunking calls this on every
paragraph of every document, and a regular expression that knows abbreviations do not precede a
capital is right for the prose ragcycle indexes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["STOPWORDS", "sentence_breaks", "split_sentences"]

# A sentence starts after ". ", "! " or "? " when a capital, a digit or an opening quote or
# bracket follows (so "e.g. the" and "approx. five" stay whole), right after a CJK full stop
# (those scripts put no space after it), and at block breaks: a blank line, a heading, a list item.
_SENTENCE_BREAK = re.compile(
    r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])"
    r"|(?<=[。！？])\s*"  # noqa: RUF001 (CJK sentence ends)
    r"|\n\s*\n|\n(?=#)|\n(?=[-*] )"
)


def sentence_breaks(text: str, start: int = 0, end: int | None = None) -> Iterator[int]:
    """Offsets in ``text[start:end]`` where a new sentence begins (after the gap before it)."""
    stop = len(text) if end is None else end
    for match in _SENTENCE_BREAK.finditer(text, start, stop):
        if start < match.end() < stop:
            yield match.end()


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, as written (line breaks inside a sentence kept)."""
    pieces = _SENTENCE_BREAK.split(text)
    return [piece for piece in pieces if piece.strip()]


# English function words: they say nothing about what a sentence is about, so sentence scoring
# and the lexical support check ignore them.
STOPWORDS = frozenset(
    "a about above after again against all am an and any are as at be because been before"
    " being below between both but by can could did do does doing don down during each few"
    " for from further had has have having he her here him his how i if in into is it its"
    " just may me might more most must my no nor not now of off on once only or other our out"
    " over own s same she should so some such t than that the their them then there these"
    " they this those through to too under until up very was we were what when where which"
    " while who whom why will with would you your".split()
)
