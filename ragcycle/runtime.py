"""Point the third-party libraries at ragcycle's settings before they are imported.

Prefect, MLflow, Hugging Face and Chroma read their configuration from environment variables,
some of them at import time, so this must run before ``import prefect``. It is the one place that
writes the environment; values a user exported explicitly win over ragcycle's defaults.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ragcycle.settings import Settings

__all__ = [
    "StopSignals",
    "Terminated",
    "configure_environment",
    "leave",
    "library_environment",
    "quiet_console",
    "quiet_console_tracebacks",
    "script_path",
    "start_local_prefect",
    "stop_process",
    "stop_temporary_prefect",
]

# Offline and quiet by default: no telemetry, no hub look-ups.
_OFFLINE_DEFAULTS: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # transformers draws a "Loading weights" bar on every model load: ragcycle's own bars say
    # what takes long, a sub-second load is noise on stderr.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_UI_ENABLED": "true",
    # The ephemeral server's 20 s start-up budget is missed on a busy 2-core machine (every flow
    # command then dies); its database migrations alone take seconds there.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Traces written synchronously: async export exhausts SQLite's connection pool under
    # mlflow.genai.evaluate, and feedback logged right after a call needs its trace to exist.
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_GENAI_EVAL_MAX_WORKERS": "4",
    # A git repo may be absent (a user's wheel install): MLflow should not warn about it.
    "GIT_PYTHON_REFRESH": "quiet",
}


def library_environment(settings: Settings) -> dict[str, str]:
    """The environment variables the libraries need for these settings."""
    env = dict(_OFFLINE_DEFAULTS)
    env["PREFECT_HOME"] = str(settings.prefect_home)
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env["PREFECT_LOGGING_LEVEL"] = settings.log_level.upper()
    if settings.prefect.api_url:
        env["PREFECT_API_URL"] = settings.prefect.api_url
    # Flow-run links (in MLflow tags, in printed output) point at the UI a person opens, not
    # at the temporary server a command ran on.
    env["PREFECT_UI_URL"] = settings.prefect_ui_url
    env["PREFECT_API_REQUEST_TIMEOUT"] = str(settings.prefect.request_timeout_seconds)
    env["PREFECT_CLIENT_MAX_RETRIES"] = str(settings.prefect.client_max_retries)
    env["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(settings.mlflow.request_timeout_seconds)
    env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(settings.mlflow.request_max_retries)
    env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(settings.mlflow.request_backoff_factor)
    if settings.verbose:
        env["RAGCYCLE_VERBOSE"] = "true"  # flows load their own settings: pass --verbose on
    # MLflow's client reads credentials for a server with basic-auth from these variables only.
    if settings.mlflow.username:
        env["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
    if settings.mlflow.password is not None:
        env["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
    return env


def configure_environment(settings: Settings, *, override: bool = False) -> dict[str, str]:
    """Export the libraries' environment and create the data dir; returns what was set.

    Without ``override``, variables the user already exported are kept, so ``PREFECT_API_URL`` set
    by a Prefect worker, for instance, still wins.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    applied: dict[str, str] = {}
    for key, value in library_environment(settings).items():
        if override or key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # a DEBUG line per index build
    if not settings.verbose:
        quiet_console_tracebacks()
    return applied


class _WithoutTraceback(logging.Formatter):
    """A console handler's own formatter, minus the traceback: a failed flow's traceback stays
    in Prefect's API log (the UI) while the terminal gets the one-line error."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks() -> None:
    """Leave tracebacks out of what Prefect's console handler prints (``--verbose`` keeps them).

    Prefect installs its console handler on the root logger when it is imported; before that
    there is nothing to change, and each flow calls this again once Prefect is loaded.
    """
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ != "PrefectConsoleHandler":
            continue
        if not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


def quiet_console() -> None:
    """Only warnings and errors on the terminal, for commands that narrate themselves (the
    demo): Prefect's per-task INFO lines still reach its API, so the UI keeps every log, and
    MLflow's store banners stay out of the walkthrough."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.WARNING)
    # MLflow sets its loggers' level from this variable when it is imported, later than now.
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def start_local_prefect(settings: Settings, wait_seconds: float = 300) -> None:
    """Start this process's temporary Prefect server now, one process at a time per data dir.

    Without a configured server every command starts its own, on the SQLite database under the
    data dir; two commands starting at once on a new data dir both run its migrations and one
    fails ("no such table"). Starting here under a file lock lets the first create the schema
    and the second find it; the flows then reuse the server this started.
    """
    if settings.prefect.api_url:
        return
    from filelock import FileLock
    from prefect.client.orchestration import get_client

    lock = FileLock(settings.prefect_home / "start.lock", timeout=wait_seconds)
    with lock, get_client(sync_client=True) as client:
        client.api_healthcheck()


def script_path(name: str) -> str:
    """A console script installed beside this interpreter, not whichever is first on PATH."""
    return str(Path(sys.executable).parent / name)


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread like Ctrl-C's KeyboardInterrupt, so that a
    command unwinds (its runs marked, its locks released, its servers stopped) and exits 143."""


class StopSignals:
    """The stopping signal a command received, if any.

    SIGTERM raises :class:`Terminated`. Prefect's flow engine puts its own handler in front
    while a flow runs and, once it has recorded the crash, re-sends the signal to the one it
    found: with the default that kills the process on the spot (no ``atexit``, so its
    temporary server outlives it, and no final output); with this one the command ends.
    SIGINT raises ``KeyboardInterrupt`` as Python's own handler does, which Click turns into an
    ordinary exit; it is remembered so that the command still ends as a stopped one, on the
    short grace a person pressing Ctrl-C expects as much as a service manager does.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def install(self) -> StopSignals:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        # A shell without job control starts background commands with SIGINT ignored: keep it so.
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.received = signal.SIGTERM
        raise Terminated(signum)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.received = signal.SIGINT
        raise KeyboardInterrupt


def leave(code: int, *, stopped: bool = False) -> NoReturn:
    """End the process with ``code`` without hanging on threads a command left behind.

    A thread cannot be killed, and the interpreter joins every non-daemon thread before it
    exits (before ``atexit``, which is where Prefect stops its temporary server). Threads still
    running after a grace period would hold the process (and that server) for as long as they
    run, so then the server is stopped here and the process ends at once. A command ``stopped``
    by a signal has a shorter grace for both, so that it ends within the 15 s a service manager
    waits.
    """
    thread_grace, server_grace = (2.0, 1.5) if stopped else (5.0, 5.0)
    deadline = time.monotonic() + thread_grace
    for thread in _busy_threads():
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if not _busy_threads():
        if stopped:  # runs before Prefect's own atexit stop (LIFO), which waits up to 5 s
            atexit.register(stop_temporary_prefect, server_grace)
        # The interpreter's last garbage collections walk every object torch, spaCy, MLflow and
        # Prefect created, for seconds on a busy machine, to free memory the process is about to
        # give back anyway. Frozen objects are left out of them; finalizers still run.
        gc.freeze()
        sys.exit(code)
    stop_temporary_prefect(server_grace)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop_temporary_prefect(grace_seconds: float = 5.0) -> None:
    """Stop the temporary Prefect servers this process started (if it imported Prefect's),
    killing one that is still shutting down after ``grace_seconds``."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return
    for server in list(module.SubprocessASGIServer._instances.values()):
        if server.server_process is not None:
            # Prefect's server shares this process's group: signal it alone.
            steps = ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5.0))
            stop_process(server.server_process, steps, group=False)
        server.stop()  # Prefect's bookkeeping; its process has ended


def stop_process(
    process: subprocess.Popen[Any],
    steps: Sequence[tuple[signal.Signals, float]] = ((signal.SIGTERM, 10), (signal.SIGKILL, 5)),
    *,
    group: bool = True,
) -> None:
    """Send each signal of ``steps`` to the process (its whole group when ``group``) in turn,
    waiting its seconds, until the process has exited."""
    for sig, wait in steps:
        if process.poll() is not None:
            return
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _busy_threads() -> list[threading.Thread]:
    return [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon and thread.is_alive()
    ]
