"""The extractive backend: answers made of retrieved sentences, with citations, and no model.

Deterministic and fast, for tests and benchmarks that measure retrieval rather than a model:
it picks the retrieved sentences closest to the question and cites where they came from, and
says it does not know when nothing retrieved is close enough.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from tasks.generation.answers import Answer, Source, TokenCounter, sources_of
from tasks.generation.prompts import DONT_KNOW, PromptTemplate
from tasks.indexing.store import Hit
from tasks.text import STOPWORDS
from tasks.text import split_sentences as sentences_in

__all__ = [
    "ExtractiveGenerator",
    "ModelSentenceScorer",
    "SentenceScorer",
    "StaticSentenceScorer",
    "distinct_sentences",
    "split_sentences",
    "token_counter",
]


def split_sentences(text: str, *, min_chars: int = 20, max_chars: int = 400) -> list[str]:
    """Sentences of a chunk, PDF line breaks folded; fragments too short to answer dropped."""
    sentences = []
    for piece in sentences_in(text):
        sentence = " ".join(piece.split()).lstrip("#").strip()
        if len(sentence) >= min_chars:
            sentences.append(sentence[:max_chars])
    return sentences


def distinct_sentences(
    hits: Sequence[Hit], split: Callable[[str], list[str]]
) -> list[tuple[int, int, str]]:
    """(hit index, position, sentence) of every sentence ``split`` finds, each text once: where
    it was met first (overlapping chunks repeat sentences)."""
    found: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for hit_index, hit in enumerate(hits):
        for position, sentence in enumerate(split(hit.text)):
            if sentence not in seen:
                seen.add(sentence)
                found.append((hit_index, position, sentence))
    return found


class SentenceScorer(Protocol):
    """Scores candidate sentences against a question; higher is more relevant."""

    def __call__(
        self, question: str, question_vector: np.ndarray, sentences: list[str]
    ) -> np.ndarray: ...


class ModelSentenceScorer:
    """Cosine between the question vector and each sentence encoded by the full model.

    The most faithful ranking, at ~5 ms per sentence on two CPU cores.
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def __call__(
        self, question: str, question_vector: np.ndarray, sentences: list[str]
    ) -> np.ndarray:
        vectors = self.embedder.embed(sentences)
        return np.asarray(vectors @ np.asarray(question_vector, dtype=np.float32))


class StaticSentenceScorer:
    """Cosine of bags of the model's own (static) word-piece embeddings, without a forward pass.

    The input embedding table of the same model, centred (BERT's raw table shares one dominant
    direction) and without stop-words, ranks sentences inside already-relevant chunks well at a
    fraction of a millisecond, which keeps ``ask`` within its latency budget.
    """

    def __init__(self, embedder: Any) -> None:
        model = embedder.model
        self.tokenizer = model.tokenizer
        self.lock = embedder.lock
        table = model[0].auto_model.get_input_embeddings().weight.detach().cpu().numpy()
        self.table = (table - table.mean(axis=0)).astype(np.float32)
        vocab = self.tokenizer.get_vocab()
        self.ignored = {vocab[w] for w in STOPWORDS if w in vocab} | set(
            self.tokenizer.all_special_ids
        )

    def vector(self, text: str) -> np.ndarray:
        with self.lock:
            encoded = self.tokenizer.encode(text, add_special_tokens=False, verbose=False)
            ids = [
                i
                for i in encoded
                if i not in self.ignored and self.tokenizer.convert_ids_to_tokens(i).isalnum()
            ]
        if not ids:
            return np.zeros(self.table.shape[1], dtype=np.float32)
        summed = self.table[ids].sum(axis=0)
        norm = float(np.linalg.norm(summed))
        return np.asarray(summed / norm if norm else summed, dtype=np.float32)

    def __call__(
        self, question: str, question_vector: np.ndarray, sentences: list[str]
    ) -> np.ndarray:
        query = self.vector(question)
        return np.asarray([float(self.vector(sentence) @ query) for sentence in sentences])


class ExtractiveGenerator:
    """Answers with the retrieved sentences most similar to the question, with citations."""

    name = "extractive"

    def __init__(
        self,
        embedder: Any,
        count_tokens: TokenCounter,
        *,
        min_score: float = 0.3,
        max_sentences: int = 3,
        max_candidates: int = 32,
        scorer: SentenceScorer | None = None,
    ) -> None:
        self.embedder = embedder
        self.count_tokens = count_tokens
        self.min_score = min_score
        self.max_sentences = max_sentences
        self.max_candidates = max_candidates
        self.scorer = scorer or ModelSentenceScorer(embedder)
        self.model = "extractive"
        self.sha256: str | None = None

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
        *,
        seed: int | None = None,
    ) -> Answer:
        """The best sentences, cited; deterministic, so ``seed`` changes nothing."""
        started = time.perf_counter()
        best = max((hit.score for hit in hits), default=0.0)
        if not hits or best < self.min_score:
            return self._answer(question, DONT_KNOW, [], True, prompt, started)
        candidates = self._candidates(question, hits)
        if not candidates:
            return self._answer(question, DONT_KNOW, [], True, prompt, started)
        scores = self.scorer(question, question_vector, [sentence for _, _, sentence in candidates])
        chosen = sorted(np.argsort(-scores)[: self.max_sentences].tolist())
        cited: list[int] = []
        parts = []
        for position in chosen:
            hit_index, _, sentence = candidates[position]
            if hit_index not in cited:
                cited.append(hit_index)
            parts.append(f"{sentence} [{cited.index(hit_index) + 1}]")
        sources = sources_of([hits[i] for i in cited])
        return self._answer(question, " ".join(parts), sources, False, prompt, started)

    def _candidates(self, question: str, hits: Sequence[Hit]) -> list[tuple[int, int, str]]:
        """(hit index, position, sentence), pre-ranked by word overlap to bound embedding work."""
        words = set(re.findall(r"\w+", question.lower()))
        found = distinct_sentences(hits, split_sentences)
        if len(found) <= self.max_candidates:
            return found

        def overlap(item: tuple[int, int, str]) -> tuple[int, int]:
            return (-len(words & set(re.findall(r"\w+", item[2].lower()))), item[0])

        return sorted(sorted(found, key=overlap)[: self.max_candidates], key=lambda c: c[:2])

    def _answer(
        self,
        question: str,
        text: str,
        sources: list[Source],
        abstained: bool,
        prompt: PromptTemplate,
        started: float,
    ) -> Answer:
        # No model reads a prompt here, so there are no prompt tokens to count or to pay for.
        return Answer(
            question=question,
            text=text,
            sources=sources,
            abstained=abstained,
            prompt_tokens=0,
            completion_tokens=self.count_tokens(text),
            generate_ms=(time.perf_counter() - started) * 1000,
            generator=self.name,
            prompt=prompt.uri,
        )


def token_counter(embedder: Any) -> TokenCounter:
    """Counts tokens with the embedding model's tokenizer: offline, and close to LLM counts."""
    tokenizer = embedder.model.tokenizer
    lock = embedder.lock

    def count(text: str) -> int:
        with lock:
            return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

    return count
