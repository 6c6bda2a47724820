"""What the service holds between requests: the live version's warm asker, and the admission
control that keeps generation from being oversubscribed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ragcycle.errors import RagcycleError
from ragcycle.settings import Settings

__all__ = ["Admission", "LiveAsker", "OverloadedError"]

logger = logging.getLogger(__name__)


class OverloadedError(Exception):
    """Every generation slot is busy and the queue is full."""


class Admission:
    """At most ``in_flight`` answers generated at once, at most ``queue`` waiting for a slot.

    On 2 cores generation is the bottleneck: letting every request in only makes all of them
    slow. A request beyond the queue is refused at once (503 with Retry-After) instead.
    Used from the event loop only, so the counters need no lock.
    """

    def __init__(self, in_flight: int, queue: int) -> None:
        self._slots = asyncio.Semaphore(in_flight)
        self.in_flight_limit = in_flight
        self.queue_limit = queue
        self.waiting = 0
        self.running = 0
        self.refused = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.queue_limit:
            self.refused += 1
            raise OverloadedError
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()


class LiveAsker:
    """The asker of the live index version, looked up again at most every ``refresh_seconds``.

    A promotion or rollback is picked up without a restart. The new asker is built completely
    (collection opened, prompt loaded) before it replaces the old one, so no request meets a
    half-switched index; the model and embedder are loaded once per process and shared.
    A registry that cannot be read keeps the current version serving (and says so in the log).
    """

    def __init__(
        self,
        settings: Settings,
        build: Callable[[Settings], Any],
        live_version: Callable[[], int | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._build = build
        self._live_version = live_version
        self._clock = clock
        self._lock = threading.Lock()
        self._asker = build(settings)
        self._checked = clock()
        self.refresh_failures = 0

    @property
    def version(self) -> int | None:
        return getattr(self._asker, "version", None)

    def current(self) -> Any:
        if self._clock() - self._checked < self.settings.api.refresh_seconds:
            return self._asker
        with self._lock:
            if self._clock() - self._checked >= self.settings.api.refresh_seconds:
                self._checked = self._clock()
                self._refresh()
        return self._asker

    def _refresh(self) -> None:
        try:
            live = self._live_version()
            if live is not None and live != self.version:
                fresh = self._build(self.settings)
                logger.info("serving index version %s (was %s)", fresh.version, self.version)
                self._asker = fresh
        except RagcycleError as exc:
            self.refresh_failures += 1
            logger.warning("kept serving version %s: %s", self.version, exc)
