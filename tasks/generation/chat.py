"""The chat backend: any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Ollama, vLLM).

Timeouts, and retries with backoff on 429, 5xx and network errors; the API key comes from
settings or a Prefect Secret block and never leaves the ``Authorization`` header.

Written on httpx and tenacity rather than the official ``openai`` client, which was tried
(3.57) and gets three things wrong for us: without a key in its arguments it falls back to
``OPENAI_API_KEY`` (and ``OPENAI_ORG_ID``, ``OPENAI_BASE_URL``) from the environment, so a key a
user exported for another tool would be sent to whatever server ragcycle points at (Ollama,
vLLM, llama.cpp), and it refuses keyless local endpoints unless given a fake key; a malformed
body surfaces as a bare ``json.JSONDecodeError`` or as a completion with no choices or no
content, which still has to be validated here; and it brings a second HTTP stack (httpx2) for
what is one POST. The retry policy itself is tenacity's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np
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
from tasks.generation.answers import Answer, sources_of
from tasks.generation.context import ContextBudget
from tasks.generation.prompts import DONT_KNOW, PromptTemplate, build_context
from tasks.indexing.store import Hit

__all__ = ["OpenAIChatGenerator", "resolve_api_key"]


class _RetryableError(Exception):
    """An HTTP failure worth another try (429, 5xx, timeouts, dropped connections)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OpenAIChatGenerator:
    """Any OpenAI-compatible ``/chat/completions`` endpoint; the key never leaves the header."""

    name = "openai"
    # Whether the endpoint is known to honour a JSON schema in ``response_format`` (llama.cpp
    # does; an arbitrary OpenAI-compatible server may reject the field).
    structured_output = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 4,
        temperature: float = 0.0,
        top_p: float | None = None,
        max_tokens: int = 512,
        backoff_seconds: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        stop: Sequence[str] = (),
        extra_body: dict[str, Any] | None = None,
        context_budget: ContextBudget | None = None,
        min_score: float = 0.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"generation.base_url must be an http(s) URL, got {base_url!r}")
        self.model = model
        self.max_retries = max_retries
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.extra_body = dict(extra_body or {})
        self.context_budget = context_budget
        self.min_score = min_score
        self.sha256: str | None = None
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
        *,
        seed: int | None = None,
    ) -> Answer:
        started = time.perf_counter()
        if self.min_score > 0 and max((hit.score for hit in hits), default=0.0) < self.min_score:
            # Nothing retrieved is close enough to hold the answer (generation.min_score, the
            # extractive backend's rule): say so rather than let the model guess.
            return Answer(
                question=question,
                text=DONT_KNOW,
                sources=[],
                abstained=True,
                prompt_tokens=0,
                completion_tokens=0,
                generate_ms=(time.perf_counter() - started) * 1000,
                generator=f"{self.name}:{self.model}",
                prompt=prompt.uri,
                extras={"below_min_score": True},
            )
        if self.context_budget is not None:
            hits = self.context_budget.trim(question, question_vector, hits)
        rendered = prompt.format(question=question, context=build_context(hits))
        text, usage = self.complete(
            [{"role": "user", "content": rendered}], seed=seed, stop=self.stop
        )
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
            generator=f"{self.name}:{self.model}",
            prompt=prompt.uri,
            cpu_seconds=self.cpu_seconds(usage),
            extras={"timings": usage["timings"]} if "timings" in usage else {},
        )

    def cpu_seconds(self, usage: dict[str, Any]) -> float:
        """CPU time this machine spent on a completion: none for a remote API."""
        return 0.0

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        seed: int | None = None,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
        stop: Sequence[str] = (),
    ) -> tuple[str, dict[str, Any]]:
        """One chat completion as ``(text, usage)``; :class:`GenerationError` when it gives up.

        ``usage`` is the response's token usage, plus its ``timings`` where the server reports
        them (llama.cpp does: prompt and generation milliseconds and tokens per second), and
        with ``top_logprobs`` the first token's most likely alternatives as ``first_token``
        (``{token: logprob}``; empty when the endpoint returns none).
        """
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _RetryableError)),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._post(
                        messages,
                        seed,
                        max_tokens or self.max_tokens,
                        json_schema,
                        top_logprobs,
                        stop,
                    )
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

    def _post(
        self,
        messages: list[dict[str, str]],
        seed: int | None,
        max_tokens: int,
        json_schema: dict[str, Any] | None,
        top_logprobs: int | None = None,
        stop: Sequence[str] = (),
    ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": max_tokens,
        }
        if stop:
            body["stop"] = list(stop)
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if seed is not None:
            body["seed"] = seed
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": json_schema},
            }
        if top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
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
        usage = dict(usage) if isinstance(usage, dict) else {}
        if isinstance(payload.get("timings"), dict):
            usage["timings"] = payload["timings"]
        if top_logprobs is not None:
            usage["first_token"] = _first_token_logprobs(payload["choices"][0])
        return text.strip(), usage


def _first_token_logprobs(choice: dict[str, Any]) -> dict[str, float]:
    """``{token: logprob}`` of the first generated token's alternatives, as OpenAI and llama.cpp
    return them (``logprobs.content[0].top_logprobs``); empty when absent or malformed."""
    try:
        alternatives = choice["logprobs"]["content"][0]["top_logprobs"]
        return {str(a["token"]): float(a["logprob"]) for a in alternatives}
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


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
