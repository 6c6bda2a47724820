"""What the service holds between requests: the live version's warm asker, and the admission
control that keeps generation from being oversubscribed."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ragcycle.errors import OverloadedError
from ragcycle.settings import Settings

__all__ = ["Admission", "LiveAsker"]

logger = logging.getLogger(__name__)


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
    """The asker of the live index version, looked up again every ``refresh_seconds``.

    A promotion or rollback is picked up without a restart. The lookup runs on a background
    thread, never on a request: a registry that is slow or down delays nobody's answer, and the
    current version keeps serving (the log says so). The new asker is built completely
    (collection opened, prompt loaded) before it replaces the old one, so no request meets a
    half-switched index; the model and embedder are loaded once per process and shared.
    """

    def __init__(
        self,
        settings: Settings,
        build: Callable[[Settings], Any],
        live_version: Callable[[], int | None],
    ) -> None:
        self.settings = settings
        self._build = build
        self._live_version = live_version
        self._asker = build(settings)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh_failures = 0

    @property
    def version(self) -> int | None:
        return getattr(self._asker, "version", None)

    def current(self) -> Any:
        """The asker to answer with; a plain read, so it never waits."""
        return self._asker

    def start(self) -> None:
        """Look up the live version every ``api.refresh_seconds`` until :meth:`stop`."""
        self._thread = threading.Thread(target=self._watch, name="live-version", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.api.refresh_seconds):
            self.refresh()

    def refresh(self) -> None:
        """Switch to the live version if it moved; a failed lookup keeps the current one."""
        try:
            live = self._live_version()
            if live is not None and live != self.version:
                fresh = self._build(self.settings)
                logger.info("serving index version %s (was %s)", fresh.version, self.version)
                self._asker = fresh
        except Exception as exc:  # the watcher must outlive any failed lookup, not only ours
            self.refresh_failures += 1
            logger.warning("kept serving version %s: %s", self.version, exc)
