"""One writer per data dir: ingest, reindex and the demo take a lock; readers never do.

Embedded Chroma, the embedding cache and Prefect's SQLite database under one data dir are not
built for two writers at once, and two ingests of the same files would only do the work twice.
The lock is an OS file lock (``filelock``: released by the kernel when its holder dies, so a
killed run never leaves it stuck), re-entrant within a process so a reindex's ingest subflows
pass through it. A sidecar file names the holder for the message a second writer prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from ragcycle.errors import BusyError

__all__ = ["pid_alive", "registry_lock", "writer_lock"]


@contextmanager
def writer_lock(data_dir: Path, command: str, wait_seconds: float) -> Iterator[None]:
    """Hold the data dir's writer lock for ``command``, waiting up to ``wait_seconds``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(
        data_dir / "writer.lock", timeout=wait_seconds, thread_local=False, is_singleton=True
    )
    holder = data_dir / "writer.json"
    outermost = not lock.is_locked
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(_busy_message(holder, data_dir, wait_seconds)) from None
    try:
        if outermost:
            holder.write_text(
                json.dumps({"command": command, "pid": os.getpid(), "since": time.time()})
            )
        yield
    finally:
        if outermost:
            holder.unlink(missing_ok=True)  # no record naming a writer that has gone
        lock.release()


@contextmanager
def registry_lock(data_dir: Path, wait_seconds: float = 60) -> Iterator[None]:
    """Held while the live pointer is read and moved (a reindex's promotion, ``index promote``,
    ``index rollback``), so a check of what is live and the move that depends on it are one
    step. Short-lived, apart from the writer lock, which a reindex holds for its whole build.
    It orders writers on this machine; writers on other hosts sharing one MLflow server are
    caught by the compare-and-swap re-reading the live version under it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(data_dir / "registry.lock", timeout=wait_seconds, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(
            f"the live version of {data_dir} is being changed by another command"
            f" (waited {wait_seconds:g} s); try again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _busy_message(holder: Path, data_dir: Path, waited: float) -> str:
    try:
        record = json.loads(holder.read_text())
        since = datetime.fromtimestamp(float(record["since"]), tz=UTC)
        who = (
            f"another {record['command']} is running"
            f" (pid {record['pid']}, since {since:%H:%M:%S} UTC)"
        )
    except (OSError, ValueError, KeyError):
        who = "another writer is running"
    waited_for = f" after waiting {waited:g} s" if waited > 0 else ""
    return f"{who} on {data_dir}{waited_for}; set writer_wait_seconds to wait for it"


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine is still running (another user's counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
