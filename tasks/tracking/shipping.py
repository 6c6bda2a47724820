"""Writing traces and feedback to MLflow off the request path, bounded, and counted.

Written by hand because MLflow's own async trace queue (MLFLOW_ENABLE_ASYNC_TRACE_LOGGING) drops
a trace when full without counting it, and while the server is down it spends each trace on a
failed export: the service has to report what it buffered and lost (``/status``), and to hold
traces back until MLflow answers again instead of losing them one by one.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ShipperStats", "TraceShipper", "tracking_reachable"]

logger = logging.getLogger(__name__)

Job = Callable[[], None]


@dataclass
class ShipperStats:
    """What ``/status`` reports about tracing."""

    pending: int
    shipped: int
    dropped: int
    failures: int
    reachable: bool


class TraceShipper:
    """Runs trace and feedback writes in order on one background thread.

    ``reachable`` is asked before each write: while it says no, jobs wait (up to ``max_pending``;
    older ones are dropped and counted beyond that) and it is asked again every
    ``retry_seconds``, so the service recovers by itself when MLflow is back.

    While ``busy`` says requests are being answered, writes wait for a gap, up to
    ``max_delay`` seconds after a job came in (or until half the buffer is used): a trace
    written to an embedded store costs ~0.1 s of Python, and in the same process that time
    would come out of the answers being generated.
    """

    def __init__(
        self,
        reachable: Callable[[], bool],
        max_pending: int,
        retry_seconds: float,
        busy: Callable[[], bool] = lambda: False,
        max_delay: float = 0.0,
    ) -> None:
        self._reachable = reachable
        self._busy = busy
        self._max_delay = max_delay
        self._jobs: collections.deque[tuple[float, Job]] = collections.deque()
        self._max_pending = max_pending
        self._retry_seconds = retry_seconds
        self._wake = threading.Condition()
        self._stopping = False
        self.shipped = 0
        self.dropped = 0
        self.failures = 0
        self.up = True
        self._thread = threading.Thread(target=self._run, name="trace-shipper", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a write; never blocks. A full queue drops its oldest job."""
        with self._wake:
            if len(self._jobs) >= self._max_pending:
                self._jobs.popleft()
                self.dropped += 1
                logger.warning(
                    "trace buffer full (%d): dropped the oldest trace (%d dropped so far)",
                    self._max_pending,
                    self.dropped,
                )
            self._jobs.append((time.monotonic(), job))
            self._wake.notify()

    def stats(self) -> ShipperStats:
        with self._wake:
            pending = len(self._jobs)
        return ShipperStats(pending, self.shipped, self.dropped, self.failures, self.up)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending (for up to ``timeout`` seconds), then stop the thread."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._stopping:
                    self._wake.wait()
                if not self._jobs:
                    return
                queued, job = self._jobs[0]
            if self._should_wait(queued):
                time.sleep(0.02)
                continue
            if not self._check_reachable():
                if self._stopping:
                    return
                with self._wake:
                    self._wake.wait(self._retry_seconds)
                continue
            self._write(job)

    def _should_wait(self, queued: float) -> bool:
        if self._stopping or len(self._jobs) * 2 >= self._max_pending:
            return False
        return time.monotonic() - queued < self._max_delay and self._busy()

    def _check_reachable(self) -> bool:
        try:
            up = self._reachable()
        except Exception:
            up = False
        if up != self.up:
            logger.warning(
                "MLflow %s: traces %s",
                *(
                    ("reachable again", "are written again")
                    if up
                    else ("unreachable", "are buffered until it is back")
                ),
            )
            self.up = up
        return up

    def _write(self, job: Job) -> None:
        try:
            job()
            self.shipped += 1
        except Exception as exc:
            self.failures += 1
            logger.warning("a trace or feedback write failed and was dropped: %s", exc)
        with self._wake:
            if self._jobs and self._jobs[0][1] is job:
                self._jobs.popleft()


def tracking_reachable(tracking_uri: str, timeout: float = 2.0) -> bool:
    """Whether the MLflow tracking server answers its health check; a local store always does."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    import httpx

    try:
        return httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False
