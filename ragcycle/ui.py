"""The MLflow and Prefect UIs of a data dir, served on this machine by ``ragcycle ui``.

Without configured servers, every command runs Prefect in ephemeral mode and MLflow on SQLite,
and nothing is left listening afterwards: the runs are on disk, but no page shows them. This
starts the two projects' own servers (``mlflow server``, ``prefect server start``) on those
stores, on 127.0.0.1. A configured tracking server or Prefect server is only linked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ragcycle.errors import RagcycleError
from ragcycle.runtime import library_environment, script_path, stop_process
from ragcycle.settings import Settings

__all__ = [
    "UiServer",
    "answers",
    "free_port",
    "running_uis",
    "ui_servers",
    "wait_for_exit",
]


@dataclass
class UiServer:
    """One UI: where it answers, and the command serving it (none for a configured server)."""

    name: str
    url: str
    health: str
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    preferred_port: int | None = None  # the port links recorded in runs point at

    @property
    def started_here(self) -> bool:
        return bool(self.command)

    @property
    def moved(self) -> bool:
        """Whether it serves elsewhere than the port stored links use (that port was busy)."""
        return self.preferred_port is not None and not self.url.endswith(f":{self.preferred_port}")


def free_port(host: str, preferred: int) -> int:
    """``preferred`` when nothing listens there, else a port the system picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RagcycleError(f"no free port on {host}")


def ui_servers(settings: Settings) -> list[UiServer]:
    """The MLflow and Prefect UIs for ``settings``: local servers to start, or remote ones."""
    host, ui = settings.ui.host, settings.ui
    env = {**os.environ, **library_environment(settings)}
    env.pop("PREFECT_API_URL", None)  # the server serves its own API
    servers = []
    if settings.mlflow_tracking_uri.startswith(("http://", "https://")):
        url = settings.mlflow_ui_url
        servers.append(UiServer("mlflow", url, f"{url}/health"))
    else:
        from tasks.tracking.store_setup import prepare_tracking_store

        prepare_tracking_store(settings.mlflow_tracking_uri)  # whole before the server opens it
        port = free_port(host, ui.mlflow_port)
        url = f"http://{host}:{port}"
        artifact_root = settings.mlflow_artifact_location
        command = [
            script_path("mlflow"),
            "server",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            *(["--default-artifact-root", artifact_root] if artifact_root else []),
            # Runs keep their own artifact location (a folder under the data dir), read in place.
            "--no-serve-artifacts",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        servers.append(UiServer("mlflow", url, f"{url}/health", command, env, ui.mlflow_port))
    if settings.prefect.api_url:
        url = settings.prefect_ui_url
        servers.append(UiServer("prefect", url, f"{settings.prefect.api_url}/health"))
    else:
        port = free_port(host, ui.prefect_port)
        url = f"http://{host}:{port}"
        command = [
            script_path("prefect"),
            "server",
            "start",
            "--host",
            host,
            "--port",
            str(port),
        ]
        # The UI's JavaScript calls the API at PREFECT_UI_API_URL, 127.0.0.1:4200 unless told:
        # on any other port the pages load but show "Can't connect to Server API".
        prefect_env = {**env, "PREFECT_UI_URL": url, "PREFECT_UI_API_URL": f"{url}/api"}
        servers.append(
            UiServer("prefect", url, f"{url}/api/health", command, prefect_env, ui.prefect_port)
        )
    return servers


@contextmanager
def running_uis(
    servers: Sequence[UiServer], log_dir: Path, timeout: float = 180
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start the servers that are started here, wait until every UI answers, stop them after.

    Each runs in its own process group, so stopping it stops its workers too."""
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[tuple[UiServer, subprocess.Popen[bytes]]] = []
    try:
        for server in servers:
            if server.started_here:
                with (log_dir / f"{server.name}-ui.log").open("wb") as log:
                    process = subprocess.Popen(
                        server.command,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=server.env,
                        start_new_session=True,
                    )
                started.append((server, process))
        _wait_healthy(servers, started, log_dir, timeout)
        yield [process for _, process in started]
    finally:
        for _, process in started:
            stop_process(process)


def _wait_healthy(
    servers: Sequence[UiServer],
    started: Sequence[tuple[UiServer, subprocess.Popen[bytes]]],
    log_dir: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(servers)
    while waiting:
        for server, process in started:
            if process.poll() is not None:
                raise RagcycleError(
                    f"the {server.name} UI server exited with {process.returncode}: see"
                    f" {log_dir / f'{server.name}-ui.log'}"
                )
        waiting = [server for server in waiting if not answers(server.health)]
        if waiting and time.monotonic() > deadline:
            names = ", ".join(f"{s.name} ({s.health})" for s in waiting)
            raise RagcycleError(f"no answer from {names} after {timeout:.0f} s (logs in {log_dir})")
        if waiting:
            time.sleep(0.5)


def answers(url: str) -> bool:
    """Whether ``url`` answers 200 now (a health check)."""
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_exit(processes: Sequence[subprocess.Popen[bytes]]) -> int | None:
    """Block until one server exits (its code) or the user presses Ctrl-C (None)."""
    try:
        while True:
            for process in processes:
                if process.poll() is not None:
                    return process.returncode
            time.sleep(0.5)
    except KeyboardInterrupt:
        return None
