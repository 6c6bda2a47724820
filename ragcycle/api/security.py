"""The API is closed by default: every route but ``/health`` needs the key, and no request body
is read past ``api.max_body_bytes``.

Without a configured key the first start makes one, kept in the data dir with mode 0600, and
says where; ``api.auth = "none"`` opens the API, on a loopback host only unless ``--insecure``.
Both checks sit in one ASGI middleware in front of the app, so a request without the key is
refused before its body is read, and a body is cut off at the limit whether it declares its
length or is sent in chunks (Starlette's own parsing would read it whole first).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragcycle.errors import ConfigError
from ragcycle.settings import Settings

__all__ = [
    "KEY_FILE",
    "ASGIApp",
    "ApiKey",
    "Guard",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "is_loopback",
    "resolve_key",
]

KEY_FILE = "api_key"
OPEN_PATHS = frozenset({"/health"})
# Open to a client on this machine (a local Prometheus, `curl` on the host); from anywhere else
# they need the key like every other route.
LOOPBACK_PATHS = frozenset({"/metrics"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ApiKey:
    """The key requests must carry, where it came from, and whether it was made just now."""

    value: str
    origin: str  # "api.api_key", or the key file's path
    created: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_key(settings: Settings) -> ApiKey | None:
    """The key to require: ``api.api_key``, else the data dir's key file (made now, mode 0600,
    if absent); None when ``api.auth = "none"``."""
    if settings.api.auth == "none":
        return None
    if settings.api.api_key is not None:
        return ApiKey(settings.api.api_key.get_secret_value(), "api.api_key")
    path = settings.data_dir / KEY_FILE
    try:
        return ApiKey(_read_key(path), str(path))
    except FileNotFoundError:
        pass
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it first: use theirs
        return ApiKey(_read_key(path), str(path))
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return ApiKey(key, str(path), created=True)


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"the API key file {path} is empty: delete it to have a new key made")
    return key


class Guard:
    """ASGI middleware: the key first (before any body is read), then the body limit on the
    bytes actually received."""

    def __init__(self, app: ASGIApp, key: Callable[[], ApiKey | None], limit: int) -> None:
        self.app = app
        self.key = key
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self.key()
        if key is not None and not _open(scope) and not _carries(scope, key):
            await _reply(send, 401, "missing or wrong X-API-Key header")
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _reply(send, 413, self._too_large())
            return
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = replied = False

        async def counted_receive() -> Message:
            # Past the limit the 413 is sent from here and the app sees the client leave:
            # FastAPI turns any exception raised while it reads a body into its own 400.
            nonlocal received, replied
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if not started and not replied:
                        replied = True
                        await _reply(send, 413, self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if replied:  # the app's answer to a body it never got whole
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, watched_send)

    def _too_large(self) -> str:
        return f"request body over {self.limit} bytes (api.max_body_bytes)"


def _open(scope: Scope) -> bool:
    if scope["path"] in OPEN_PATHS:
        return True
    client = scope.get("client")
    return scope["path"] in LOOPBACK_PATHS and client is not None and is_loopback(client[0])


def _carries(scope: Scope, key: ApiKey) -> bool:
    """The key in ``X-API-Key``, or as a bearer token (Prometheus's scrape ``authorization``
    sends one)."""
    given = _header(scope, b"x-api-key")
    if given is None:
        bearer = _header(scope, b"authorization") or ""
        given = bearer[len("Bearer ") :] if bearer.startswith("Bearer ") else ""
    # Constant time, so the comparison does not leak how much of a guess was right.
    return hmac.compare_digest(given.encode(), key.value.encode())


def _header(scope: Scope, name: bytes) -> str | None:
    for header, value in scope.get("headers", []):
        if header.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
