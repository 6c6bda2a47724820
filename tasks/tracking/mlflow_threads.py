"""MLflow from several threads at once: what a reindex's parallel contenders need to be safe.

MLflow 3.17 documents ``mlflow.genai.evaluate`` as not thread-safe, and it can deadlock the whole
process. Its ``configure_autologging_for_evaluation`` registers a post-import hook for every
autologging flavor; for a flavor whose library is already imported (torch, transformers and
sklearn are, in every ragcycle process) the hook fires at once, *inside* MLflow's import-hook
lock, and imports ``mlflow.<flavor>``. MLflow's ``ImportHookFinder`` takes that same lock in
``find_spec`` for every import of a new module, so another thread importing anything holds its
module lock and waits for the hook lock, while the first waits for a module lock: AB-BA.

It also loses traces: an answer's trace that another thread writes while ``mlflow.genai.evaluate``
runs is, now and then, never stored (12 of 200 in a two-thread test), and reading it back fails
with "Trace not found". :class:`TraceGate` keeps the two apart: traces are written side by side,
and an evaluation waits until none is being written, and holds new ones back while it runs.

The deadlock fix is to make sure that hook never fires under the lock:
:func:`settle_autologging` disables autologging (ragcycle never uses it) for every flavor whose
library is imported, so the
evaluation set-up skips those flavors and registers hooks only for modules not imported yet,
which fire later through ``notify_module_loaded`` outside the lock (upstream fixed that path).
:func:`genai_evaluate_lock` additionally serializes the call itself, as MLflow asks, and
:func:`quiet_stdout` is the one process-wide stdout redirect, taken under a lock so that two
threads cannot restore each other's stream (that lost ``--json`` reports).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["TraceGate", "genai_evaluate_lock", "quiet_stdout", "settle_autologging", "trace_gate"]


def settle_autologging() -> list[str]:
    """Disable MLflow autologging for every flavor whose library is imported; returns the
    flavors it disabled now. Cheap when nothing new was imported since the last call."""
    from mlflow.ml_package_versions import FLAVOR_TO_MODULE_NAME
    from mlflow.utils.autologging_utils import (
        AUTOLOGGING_INTEGRATIONS,
        get_autolog_function,
        is_autolog_supported,
    )

    disabled = []
    for flavor, module in FLAVOR_TO_MODULE_NAME.items():
        if module not in sys.modules or not is_autolog_supported(flavor):
            continue
        if AUTOLOGGING_INTEGRATIONS.get(flavor, {}).get("disable", False):
            continue
        try:
            autolog = get_autolog_function(flavor)
        except Exception:  # a flavor MLflow cannot load here is one it cannot autolog either
            continue
        if autolog is not None:
            autolog(disable=True, silent=True)
            disabled.append(flavor)
    return disabled


class TraceGate:
    """Many trace writers at once, or one GenAI evaluation alone (a readers-writer lock that
    lets a waiting evaluation in first, so a stream of answers cannot starve it)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._writing = 0
        self._evaluating = False
        self._waiting = 0

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Held while one trace is opened, recorded and written."""
        with self._changed:
            while self._evaluating or self._waiting:
                self._changed.wait()
            self._writing += 1
        try:
            yield
        finally:
            with self._changed:
                self._writing -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def evaluating(self, wait_seconds: float = 300) -> Iterator[None]:
        """Held around ``mlflow.genai.evaluate``; after ``wait_seconds`` of traces still being
        written (one left open by a caller that never wrote it) it proceeds anyway."""
        deadline = time.monotonic() + wait_seconds
        with self._changed:
            self._waiting += 1
            try:
                while self._evaluating or (self._writing and time.monotonic() < deadline):
                    self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))
                self._evaluating = True
            finally:
                self._waiting -= 1
        try:
            yield
        finally:
            with self._changed:
                self._evaluating = False
                self._changed.notify_all()


@functools.cache
def trace_gate() -> TraceGate:
    """The process's one :class:`TraceGate` (MLflow's trace store is one per process)."""
    return TraceGate()


def genai_evaluate_lock() -> contextlib.AbstractContextManager[None]:
    """Held around ``mlflow.genai.evaluate``: one at a time, and no trace written meanwhile."""
    return trace_gate().evaluating()


@functools.cache
def _stdout_lock() -> threading.RLock:
    return threading.RLock()


@contextlib.contextmanager
def quiet_stdout(target: TextIO) -> Iterator[None]:
    """Send what libraries print to ``target`` while the block runs; one block at a time."""
    with _stdout_lock(), contextlib.redirect_stdout(target):
        yield
