"""Per-question metrics: how well retrieval ranked the answering documents, and how close and
how grounded an answer is.

Retrieval is scored at document level (a document ranks at its best chunk) because golden sets
name files, not chunks. Metrics return ``nan`` when there is nothing to score (recall of a
question with no relevant document), never a fake 0, and aggregates ignore those rows.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from tasks.evaluation.golden import matches_source
from tasks.text import STOPWORDS, split_sentences

__all__ = [
    "contains_key",
    "hit_rate_at_k",
    "mrr",
    "ndcg_at_k",
    "normalize_answer",
    "page_hit_and_recall",
    "precision_at_k",
    "recall_at_k",
    "relevant_in",
    "supported_share",
    "token_f1",
    "unsupported_sentences",
]


def relevant_in(ranked: Sequence[str], expected: Iterable[str]) -> list[bool]:
    wanted = list(expected)
    return [any(matches_source(doc_id, source) for source in wanted) for doc_id in ranked]


def page_hit_and_recall(
    chunks: Iterable[tuple[str, int | None, int | None]],
    expected: Mapping[str, Sequence[int]],
) -> tuple[float, float]:
    """Over served chunks ``(doc_id, first page, last page)``: whether any covers an expected
    page, and the share of expected (source, page) pairs some chunk covers. These are the pages
    an answer can cite, where a document's best chunk alone (``page_hit_rate``) misses the
    expected page whenever a second chunk of the same document is the one that holds it."""
    wanted = {(source, page) for source, pages in expected.items() for page in pages}
    if not wanted:
        return math.nan, math.nan
    covered: set[tuple[str, int]] = set()
    for doc_id, first, last in chunks:
        if first is None:
            continue
        end = first if last is None else last
        for source, page in wanted:
            if first <= page <= end and matches_source(doc_id, source):
                covered.add((source, page))
    return float(bool(covered)), len(covered) / len(wanted)


def hit_rate_at_k(relevance: Sequence[bool], k: int) -> float:
    return float(any(relevance[:k]))


def recall_at_k(relevance: Sequence[bool], total_relevant: int, k: int) -> float:
    if total_relevant == 0:
        return math.nan
    return sum(relevance[:k]) / total_relevant


def precision_at_k(relevance: Sequence[bool], k: int) -> float:
    return sum(relevance[:k]) / k


def mrr(relevance: Sequence[bool], k: int | None = None) -> float:
    for rank, relevant in enumerate(relevance[:k] if k else relevance, start=1):
        if relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(gains: Sequence[float], ideal_gains: Iterable[float], k: int) -> float:
    """nDCG with trec_eval's linear gains: sum(gain / log2(rank + 1)) over the ideal ordering."""
    ideal = sorted((g for g in ideal_gains if g > 0), reverse=True)[:k]
    if not ideal:
        return math.nan
    dcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains[:k]))
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg


_ARTICLES = re.compile(r"\b(a|an|the)\b")


_PUNCTUATION = str.maketrans("", "", string.punctuation)


_CITATION = re.compile(r"\s*\[\d+\]")


def normalize_answer(text: str) -> list[str]:
    """SQuAD's normalisation: lower case, no punctuation, articles or citation markers."""
    text = _CITATION.sub(" ", text).lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between an answer and the reference answer."""
    predicted, expected = normalize_answer(prediction), normalize_answer(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def contains_key(answer: str, keys: Sequence[str]) -> float:
    """1 if the answer contains one of the answer key's alternatives as whole words.

    Judge-free correctness: case, whitespace and Unicode forms (ligatures, full-width digits)
    are ignored, and a key is not found inside a longer word or number ("35" is not in "135").
    """
    text = _comparable(answer)
    for key in keys:
        pattern = r"(?<!\w)" + re.escape(_comparable(key)) + r"(?!\w)"
        if re.search(pattern, text):
            return 1.0
    return 0.0


def _comparable(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def supported_share(answer: str, contexts: Sequence[str], threshold: float = 0.8) -> float:
    """Share of answer sentences whose words (no stop-words) mostly occur in the context.

    A lexical check: cheap and deterministic, exact for extractive answers, a lower bound for
    paraphrases (the LLM-judge faithfulness covers those when a judge is configured).
    """
    sentences, unsupported = _support(answer, contexts, threshold)
    return 1 - len(unsupported) / len(sentences) if sentences else math.nan


def unsupported_sentences(
    answer: str, contexts: Sequence[str], threshold: float = 0.8
) -> list[str]:
    """The answer's sentences that the context does not support (see :func:`supported_share`)."""
    return _support(answer, contexts, threshold)[1]


def _support(answer: str, contexts: Sequence[str], threshold: float) -> tuple[list[str], list[str]]:
    context_words = set(normalize_answer(" ".join(contexts)))
    sentences = [s for s in split_sentences(_CITATION.sub("", answer)) if normalize_answer(s)]
    unsupported = []
    for sentence in sentences:
        words = [w for w in normalize_answer(sentence) if w not in STOPWORDS] or normalize_answer(
            sentence
        )
        if sum(w in context_words for w in words) / len(words) < threshold:
            unsupported.append(sentence.strip())
    return sentences, unsupported
