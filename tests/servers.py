"""Real servers on 127.0.0.1 for tests: started as subprocesses, health-checked, always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragcycle.runtime import stop_process
from ragcycle.ui import answers

BIN = Path(sys.executable).parent


@contextmanager
def running(
    command: Sequence[str],
    health: str | Callable[[], bool],
    *,
    log: Path,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; first wait until it is healthy: ``health`` is a URL
    that must answer 200, or a check that must return True."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as output:
        process = subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            cwd=cwd,
        )
        try:
            wait_healthy(process, health, timeout, log)
            yield process
        finally:
            stop(process)


def wait_healthy(
    process: subprocess.Popen[bytes],
    health: str | Callable[[], bool],
    timeout: float,
    log: Path,
) -> None:
    check = health if callable(health) else lambda: answers(str(health))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{tail(log)}")
        if check():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{process.args} not healthy after {timeout} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the whole process group, then SIGINT, then SIGKILL (Prefect workers need both)."""
    stop_process(process, ((signal.SIGTERM, 10), (signal.SIGINT, 5), (signal.SIGKILL, 5)))


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def executable(name: str) -> str:
    """A console script of this environment (the venv's, not whatever is first on PATH)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed in {BIN} or on PATH")
    return found


# PostgreSQL from Debian's packages, as a throw-away cluster of the test's own.


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None where it is not installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str = "ragcycle"

    def url(self, database: str, driver: str = "postgresql") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_postgres(port: int, databases: Sequence[str], log: Path) -> Iterator[Postgres]:
    """A new cluster on 127.0.0.1:``port`` (TCP only, trust auth, no fsync), with ``databases``."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    # Outside pytest's private temp tree, which the postgres user cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="ragcycle-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = Postgres(port)
    data = folder / "data"
    subprocess.run(
        _as_postgres_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                server.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]
        ),
        check=True,
        capture_output=True,
    )
    command = _as_postgres_user(
        [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
    )

    def ready() -> bool:
        probe = [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    try:
        with running(command, ready, log=log, timeout=60):
            for database in databases:
                subprocess.run(
                    [
                        str(bin_dir / "createdb"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-U",
                        server.user,
                        database,
                    ],
                    check=True,
                    capture_output=True,
                )
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Prefect's REST API, as the UI and the CLI use it.


def create_flow_run(api: str, deployment: str, parameters: dict[str, Any] | None = None) -> str:
    """Start a run of ``deployment`` ("flow/deployment"), with its own parameters by default."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30).json()
    for _ in range(10):  # a busy SQLite-backed server answers 503, as Prefect's client retries
        created = httpx.post(
            f"{api}/deployments/{found['id']}/create_flow_run",
            json={"parameters": parameters if parameters is not None else found["parameters"]},
            timeout=30,
        )
        if created.status_code != 503:
            break
        time.sleep(2)
    created.raise_for_status()
    return str(created.json()["id"])


def wait_final(api: str, flow_run_id: str, timeout: float = 300) -> str:
    """The final state type of a flow run, once it has one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()["state"]["type"]
        if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return str(state)
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s")


def flow_runs_of(api: str, deployment: str) -> list[dict[str, Any]]:
    deployment_id = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30).json()["id"]
    response = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
        timeout=30,
    )
    return list(response.json())


def wait_deployments(api: str, names: Sequence[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            httpx.get(f"{api}/deployments/name/{n}", timeout=30).status_code == 200 for n in names
        ):
            return
        time.sleep(1)
    raise AssertionError(f"deployments {names} were not registered")


def wait_automation(api: str, name_prefix: str, timeout: float = 60) -> dict[str, Any]:
    """The one automation whose name starts with ``name_prefix``. Serving creates a deployment's
    triggers only after the deployment itself, so the automation may lag the deployment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30).json()
        found = [a for a in automations if a["name"].startswith(name_prefix)]
        if found:
            [automation] = found
            return dict(automation)
        time.sleep(1)
    raise AssertionError(f"no automation named {name_prefix}... was created")


def emit_events(api: str, event: str, resource_id: str, count: int, env: dict[str, str]) -> None:
    """``count`` events at once, from another process, as a monitor elsewhere would send them."""
    script = (
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        f"for i in range({count}):\n"
        f"    emit_event(event={event!r}, resource={{'prefect.resource.id': {resource_id!r}}},"
        " payload={'reason': f'burst {i}'})\n"
        "EventsWorker.drain_all()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script], env={**env, "PREFECT_API_URL": api}, check=True, timeout=60
    )
