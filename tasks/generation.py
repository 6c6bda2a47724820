"""Generation: a question and its retrieved chunks become a cited answer.

Two backends behind one protocol:

- :class:`ExtractiveGenerator`, the offline default, needs no model weights: it picks the retrieved
  sentences closest to the question (same embedding model) and cites where they came from, and
  says it does not know when nothing retrieved is close enough.
- :class:`OpenAIChatGenerator` talks to any OpenAI-compatible chat-completions endpoint (OpenAI,
  Ollama, vLLM) with timeouts and retries with backoff on 429, 5xx and network errors.

Prompt templates are versioned in the MLflow prompt registry; every answer names its prompt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from ragcycle.errors import ConfigError, GenerationError
from ragcycle.settings import GenerationSettings
from tasks.indexing import Hit

__all__ = [
    "DEFAULT_PROMPT",
    "DONT_KNOW",
    "Answer",
    "ExtractiveGenerator",
    "Generator",
    "OpenAIChatGenerator",
    "PromptTemplate",
    "Source",
    "answer_retrievals",
    "build_context",
    "generator_from_settings",
    "load_prompt",
    "split_sentences",
]

DONT_KNOW = "I don't know: the indexed documents do not answer this question."

DEFAULT_PROMPT = (
    "Answer the question using only the numbered context passages below. Cite the passages you"
    " use as [1], [2], ... If the context does not contain the answer, reply exactly:"
    f' "{DONT_KNOW}"\n\nContext:\n{{{{context}}}}\n\nQuestion: {{{{question}}}}\nAnswer:'
)


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt with its registry identity; ``{{question}}`` and ``{{context}}`` are filled in."""

    name: str
    version: str
    template: str

    def format(self, *, question: str, context: str) -> str:
        return self.template.replace("{{question}}", question).replace("{{context}}", context)

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Source:
    """A cited chunk: file, page and retrieval score."""

    source: str
    page: int | None
    score: float
    chunk_id: str


@dataclass
class Answer:
    """A generated answer with everything needed to judge it, price it and trace it."""

    question: str
    text: str
    sources: list[Source]
    abstained: bool
    prompt_tokens: int
    completion_tokens: int
    generate_ms: float
    generator: str
    prompt: str  # registry URI, prompts:/<name>/<version>
    extras: dict[str, Any] = field(default_factory=dict)


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


class Generator(Protocol):
    """Turns a question and its hits into an :class:`Answer`."""

    name: str
    model: str

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
    ) -> Answer: ...


def build_context(hits: Sequence[Hit]) -> str:
    """Numbered passages with their source, the layout the default prompt cites."""
    blocks = []
    for number, hit in enumerate(hits, start=1):
        page = hit.metadata.get("page_start")
        where = f"{hit.metadata.get('source', hit.doc_id)}" + (f", page {page}" if page else "")
        blocks.append(f"[{number}] ({where})\n{hit.text}")
    return "\n\n".join(blocks)


def sources_of(hits: Sequence[Hit]) -> list[Source]:
    return [
        Source(
            source=str(hit.metadata.get("source", hit.doc_id)),
            page=int(hit.metadata["page_start"]) if "page_start" in hit.metadata else None,
            score=round(hit.score, 4),
            chunk_id=hit.chunk_id,
        )
        for hit in hits
    ]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n\s*\n|\n(?=#)|\n(?=[-*] )")


def split_sentences(text: str, *, min_chars: int = 20, max_chars: int = 400) -> list[str]:
    """Sentences of a chunk, PDF line breaks folded; fragments too short to answer dropped."""
    sentences = []
    for piece in _SENTENCE_END.split(text):
        sentence = " ".join(piece.split()).lstrip("#").strip()
        if len(sentence) >= min_chars:
            sentences.append(sentence[:max_chars])
    return sentences


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
        table = model[0].auto_model.get_input_embeddings().weight.detach().cpu().numpy()
        self.table = (table - table.mean(axis=0)).astype(np.float32)
        vocab = self.tokenizer.get_vocab()
        self.ignored = {vocab[w] for w in _STOPWORDS if w in vocab} | set(
            self.tokenizer.all_special_ids
        )

    def vector(self, text: str) -> np.ndarray:
        ids = [
            i
            for i in self.tokenizer.encode(text, add_special_tokens=False, verbose=False)
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


_STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or but is are was were be been being it its"
    " this that these those as which who whom what when where why how do does did can could will"
    " would should may might must has have had not no than then there their they them he she his"
    " her we our you your i me my".split()
)


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

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
    ) -> Answer:
        started = time.perf_counter()
        rendered = prompt.format(question=question, context=build_context(hits))
        best = max((hit.score for hit in hits), default=0.0)
        if not hits or best < self.min_score:
            return self._answer(question, DONT_KNOW, [], True, rendered, prompt, started)
        candidates = self._candidates(question, hits)
        if not candidates:
            return self._answer(question, DONT_KNOW, [], True, rendered, prompt, started)
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
        return self._answer(question, " ".join(parts), sources, False, rendered, prompt, started)

    def _candidates(self, question: str, hits: Sequence[Hit]) -> list[tuple[int, int, str]]:
        """(hit index, position, sentence), pre-ranked by word overlap to bound embedding work."""
        words = set(re.findall(r"\w+", question.lower()))
        found: list[tuple[int, int, str]] = []
        seen: set[str] = set()
        for hit_index, hit in enumerate(hits):
            for position, sentence in enumerate(split_sentences(hit.text)):
                if sentence not in seen:
                    seen.add(sentence)
                    found.append((hit_index, position, sentence))
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
        rendered: str,
        prompt: PromptTemplate,
        started: float,
    ) -> Answer:
        return Answer(
            question=question,
            text=text,
            sources=sources,
            abstained=abstained,
            prompt_tokens=self.count_tokens(rendered),
            completion_tokens=self.count_tokens(text),
            generate_ms=(time.perf_counter() - started) * 1000,
            generator=self.name,
            prompt=prompt.uri,
        )


class _RetryableError(Exception):
    """An HTTP failure worth another try (429, 5xx, timeouts, dropped connections)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatGenerator:
    """Any OpenAI-compatible ``/chat/completions`` endpoint; the key never leaves the header."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        max_tokens: int = 512,
        backoff_seconds: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"generation.base_url must be an http(s) URL, got {base_url!r}")
        self.model = model
        self.max_retries = max_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.backoff_seconds = backoff_seconds
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def generate(
        self,
        question: str,
        hits: Sequence[Hit],
        prompt: PromptTemplate,
        question_vector: np.ndarray,
    ) -> Answer:
        started = time.perf_counter()
        rendered = prompt.format(question=question, context=build_context(hits))
        text, usage = self.complete([{"role": "user", "content": rendered}])
        abstained = DONT_KNOW.split(":")[0].lower() in text.lower()
        cited = sorted({int(n) for n in re.findall(r"\[(\d+)\]", text) if 0 < int(n) <= len(hits)})
        return Answer(
            question=question,
            text=text,
            sources=sources_of([hits[n - 1] for n in cited] or list(hits)),
            abstained=abstained,
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            generate_ms=(time.perf_counter() - started) * 1000,
            generator=f"openai:{self.model}",
            prompt=prompt.uri,
        )

    def complete(self, messages: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
        """One chat completion as ``(text, usage)``; :class:`GenerationError` when it gives up."""
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _RetryableError)),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._post(messages)
        except _RetryableError as exc:
            raise GenerationError(
                f"chat completion failed after {self.max_retries + 1} attempts: {exc}"
            ) from None
        raise GenerationError("chat completion did not run")  # pragma: no cover - loop returns

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, 30.0)
        backoff = wait_exponential_jitter(initial=self.backoff_seconds, max=20, jitter=0.1)
        return float(backoff(state))

    def _post(self, messages: list[dict[str, str]]) -> tuple[str, dict[str, Any]]:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        try:
            response = self._client.post("/chat/completions", json=body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after")
            raise _RetryableError(
                f"HTTP {response.status_code}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise GenerationError(
                f"chat completion refused: HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            payload = response.json()
            text = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise GenerationError(
                f"malformed chat completion response: {response.text[:200]!r}"
            ) from None
        if not isinstance(text, str):
            raise GenerationError("malformed chat completion response: content is not text")
        usage = payload.get("usage") or {}
        return text.strip(), usage if isinstance(usage, dict) else {}


def load_prompt(
    name: str, version: str | None, *, default_template: str = DEFAULT_PROMPT
) -> PromptTemplate:
    """The prompt from MLflow's registry; the built-in default is registered as version 1 if absent.

    ``version`` is a number or an alias; without one the ``production`` alias wins, else the latest
    version. A store without a prompt registry is a configuration error, never a silent fallback.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            uri = (
                f"prompts:/{name}/{version}" if version.isdigit() else f"prompts:/{name}@{version}"
            )
            found = mlflow.genai.load_prompt(uri)
        else:
            found = mlflow.genai.load_prompt(f"prompts:/{name}@production", allow_missing=True)
            if found is None:
                found = mlflow.genai.load_prompt(f"prompts:/{name}@latest", allow_missing=True)
            if found is None:
                found = mlflow.genai.register_prompt(
                    name,
                    template=default_template,
                    commit_message="ragcycle default answer prompt",
                    tags={"created_by": "ragcycle"},
                )
    except MlflowException as exc:
        raise ConfigError(
            f"cannot use prompt {name!r} (version {version or 'default'}) from the MLflow prompt"
            f" registry at {mlflow.get_tracking_uri()}: {exc.message}. Use a database-backed"
            " tracking store or server (e.g. sqlite:///mlflow.db)"
        ) from None
    return PromptTemplate(name=name, version=str(found.version), template=str(found.template))


def answer_retrievals(
    retrievals: Sequence[Any], generator: Generator, prompt: PromptTemplate, k: int
) -> list[Answer]:
    """An answer for each retrieval, from its top ``k`` chunks."""
    return [generator.generate(r.question, r.top_chunks(k), prompt, r.vector) for r in retrievals]


def token_counter(embedder: Any) -> TokenCounter:
    """Counts tokens with the embedding model's tokenizer: offline, and close to LLM counts."""
    tokenizer = embedder.model.tokenizer

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False, verbose=False))

    return count


def resolve_api_key(settings: GenerationSettings) -> SecretStr | None:
    """The endpoint's key: from settings (env) first, else from a Prefect Secret block."""
    if settings.api_key is not None:
        return settings.api_key
    if settings.api_key_secret_block:
        from prefect.blocks.system import Secret

        try:
            block = Secret.load(settings.api_key_secret_block, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:
            raise ConfigError(
                f"Prefect Secret block {settings.api_key_secret_block!r} not found: {exc}"
            ) from None
        return SecretStr(str(block.get()))  # type: ignore[union-attr]
    return None


def generator_from_settings(settings: GenerationSettings, embedder: Any) -> Generator:
    """The configured backend."""
    if settings.backend == "openai":
        return OpenAIChatGenerator(
            settings.base_url,
            settings.model,
            api_key=resolve_api_key(settings),
            timeout_seconds=settings.timeout_seconds,
            max_retries=settings.max_retries,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )
    scorer: SentenceScorer = (
        StaticSentenceScorer(embedder)
        if settings.sentence_scoring == "static"
        else ModelSentenceScorer(embedder)
    )
    return ExtractiveGenerator(
        embedder,
        token_counter(embedder),
        min_score=settings.min_score,
        max_sentences=settings.max_sentences,
        scorer=scorer,
    )


@task(name="generate", task_run_name="generate-{label}", cache_policy=NO_CACHE)
def answer_retrievals_task(
    retrievals: list[Any],
    generator: Generator,
    prompt: PromptTemplate,
    k: int,
    label: str = "batch",
) -> list[Answer]:
    """Prefect edge of :func:`answer_retrievals` (retries live in the HTTP client)."""
    return answer_retrievals(retrievals, generator, prompt, k)


@task(name="load-prompt", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def load_prompt_task(name: str, version: str | None) -> PromptTemplate:
    """Prefect edge of :func:`load_prompt` (a tracking server can blip)."""
    return load_prompt(name, version)
