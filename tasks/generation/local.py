"""The local backend: a GGUF model run in this process by llama.cpp (xllamacpp), offline.

xllamacpp's ``Server`` loads the model once and opens llama.cpp's own OpenAI-compatible listener
on 127.0.0.1 (a free port), so local answers go through the same chat-completions client as a
remote API: one code path for usage, timings and errors. The listener requires a key made up
per process, so no other local program can use the model through it.

A model is loaded once per process and configuration (loading SmolLM2-135M takes under a
second, a 1.5B model a few): the generator and a judge on the same file share it.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ragcycle.errors import ModelError
from tasks.generation.chat import OpenAIChatGenerator
from tasks.generation.context import ContextBudget
from tasks.models import ModelFile

__all__ = ["LocalGenerator", "LocalServer", "local_server"]

# Generation on a CPU is slow but never hangs: a long answer of a 1.5B model takes minutes on two
# cores, and a retry would only redo the same deterministic work.
LOCAL_TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class LocalServer:
    """A loaded model and the loopback address its OpenAI-compatible listener answers on."""

    server: Any
    base_url: str
    key: SecretStr
    threads: int
    batch_threads: int


@functools.lru_cache(maxsize=2)
def local_server(path: str, context_size: int, threads: int, batch_threads: int) -> LocalServer:
    """Load ``path`` once per process for this context size and these thread counts."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = context_size
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = batch_threads
    params.warmup = False
    params.verbosity = 0  # llama.cpp logs every request to stderr otherwise
    key = secrets.token_urlsafe(24)
    params.api_keys = [key]
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:  # the binding raises plain errors for unreadable models
        raise ModelError(f"llama.cpp cannot load {path}: {exc}") from None
    address = str(server.listening_address).rstrip("/")
    return LocalServer(server, f"{address}/v1", SecretStr(key), threads, batch_threads)


class LocalGenerator(OpenAIChatGenerator):
    """Answers with a local GGUF model; its cost is the CPU time the model took."""

    name = "local"
    structured_output = True

    def __init__(
        self,
        model: ModelFile,
        *,
        context_size: int = 4096,
        threads: int = 1,
        batch_threads: int = 2,
        temperature: float = 0.0,
        top_p: float | None = None,
        max_tokens: int = 256,
        stop: Sequence[str] = (),
        repeat_penalty: float = 1.0,
        context_budget: ContextBudget | None = None,
        min_score: float = 0.0,
    ) -> None:
        loaded = local_server(str(model.path), context_size, threads, batch_threads)
        super().__init__(
            loaded.base_url,
            model.name,
            api_key=loaded.key,
            timeout_seconds=LOCAL_TIMEOUT_SECONDS,
            max_retries=0,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=stop,
            # llama.cpp's own sampling parameter, beside the OpenAI ones it accepts.
            extra_body={"repeat_penalty": repeat_penalty} if repeat_penalty != 1.0 else None,
            context_budget=context_budget,
            min_score=min_score,
        )
        self.sha256 = model.sha256
        self.path = Path(model.path)
        self.threads = loaded.threads
        self.batch_threads = loaded.batch_threads

    def cpu_seconds(self, usage: dict[str, Any]) -> float:
        """llama.cpp's own prompt and generation time, times the threads of each phase."""
        timings = usage.get("timings") or {}
        prompt_ms = float(timings.get("prompt_ms", 0.0)) * self.batch_threads
        predicted_ms = float(timings.get("predicted_ms", 0.0)) * self.threads
        return (prompt_ms + predicted_ms) / 1000
