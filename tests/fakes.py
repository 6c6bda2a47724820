"""Deterministic stand-ins, used only around the stage under test, never as the stage itself."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


class HashEmbedder:
    """Maps each text to a fixed pseudo-random unit vector; counts what it was asked to embed."""

    def __init__(self, dimension: int = 16, model_id: str = "all-MiniLM-L6-v2") -> None:
        self.dimension = dimension
        self.model_id = model_id
        self.calls: list[int] = []

    def embed(
        self, texts: Sequence[str], *, on_progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.calls.append(len(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dimension)
            rows.append(vector / np.linalg.norm(vector))
        if on_progress is not None:
            on_progress(len(texts))
        return np.asarray(rows, dtype=np.float32)

    @property
    def embedded(self) -> int:
        return sum(self.calls)


class ChatServer:
    """A local chat-completions endpoint that plays back scripted responses."""

    def __init__(
        self,
        script: list[tuple[int, Any, float]] | None = None,
        responder: Callable[[dict[str, Any]], tuple[int, Any, float]] | None = None,
    ) -> None:
        self.script = list(script or [])
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(json.loads(self.rfile.read(length)))
                outer.headers.append(dict(self.headers))
                if outer.responder is not None:
                    status, body, delay = outer.responder(outer.requests[-1])
                else:
                    status, body, delay = outer.script.pop(0) if outer.script else (500, {}, 0.0)
                time.sleep(delay)
                payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(text: str, prompt: int = 11, completion_tokens: int = 7) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }
