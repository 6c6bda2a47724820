"""A request to stop a run, seen by every thread working for it at its next step.

Python delivers a signal to the main thread only, and a thread cannot be killed: when a reindex
is stopped (SIGTERM, Ctrl-C) or a contender runs past its timeout, the main thread sets the
run's stop request and the contenders' threads, which check it between batches (an ingest
partition, an answer, a judge verdict), end with :class:`~ragcycle.errors.StoppedError` within
one step. The request lives in a context variable that :func:`stoppable` sets for one run:
Prefect runs each submitted task in a copy of the submitting context, so the run's threads share
it, and nothing outside the run (another flow in the same process, a later test) sees it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from ragcycle.errors import StoppedError

__all__ = [
    "StopRequest",
    "gather",
    "raise_if_stopped",
    "request_stop",
    "settle",
    "stop_message",
    "stoppable",
]


class StopRequest:
    """One run's stop: set once, with the reason first given."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._guard = threading.Lock()
        self.reason = ""

    def request(self, reason: str) -> None:
        with self._guard:
            if not self._event.is_set():
                self.reason = reason
                self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


_current: ContextVar[StopRequest | None] = ContextVar("ragcycle_stop_request", default=None)


@contextlib.contextmanager
def stoppable() -> Iterator[StopRequest]:
    """A run's stop request, shared by the threads its tasks run in."""
    stop = StopRequest()
    token = _current.set(stop)
    try:
        yield stop
    finally:
        _current.reset(token)


def request_stop(reason: str) -> None:
    """Ask every thread of the current run to stop at its next step."""
    stop = _current.get()
    if stop is not None:
        stop.request(reason)


def raise_if_stopped() -> None:
    """A step boundary: end this thread's work if its run was asked to stop."""
    stop = _current.get()
    if stop is not None and stop.requested:
        raise StoppedError(stop.reason or "stopped")


def stop_message(exc: BaseException) -> str:
    """How a run ended, in the words its failure record and the next person need."""
    if type(exc).__name__ in {"TerminationSignal", "Terminated"}:  # Prefect's bridge, ours
        return "stopped by SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "stopped by Ctrl-C (SIGINT)"
    if isinstance(exc, StoppedError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:500]


def gather(futures: Sequence[Any], timeout: float, *, setting: str = "") -> None:
    """Wait for Prefect futures of a thread pool, failing fast: the first that fails raises
    its error, and still waiting after ``timeout`` seconds raises :class:`StoppedError`
    naming ``setting``. Waits in short slices so that a signal is handled at once."""
    deadline = time.monotonic() + timeout
    pending = list(futures)
    while pending:
        for future in list(pending):
            future.wait(timeout=_POLL_SECONDS)
            if future.wrapped_future.done():
                pending.remove(future)
                if not future.state.is_completed():
                    future.result()  # raises what the task raised
        if pending and time.monotonic() > deadline:
            raise StoppedError(
                f"{len(pending)} of {len(futures)} still running after {timeout:g} s"
                + (f" ({setting})" if setting else "")
            )


def settle(futures: Sequence[Any], seconds: float) -> None:
    """Give stopped futures up to ``seconds`` in all to reach their next step and end."""
    deadline = time.monotonic() + seconds
    for future in futures:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        future.wait(timeout=remaining)


_POLL_SECONDS = 0.25
