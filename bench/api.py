"""HTTP API benchmark on loopback: requests/s and latency at 1, 4 and 16 concurrent clients,
with the extractive backend and with the local model, and the cost of tracing as a ratio.

Each configuration is a real ``ragcycle api`` process (uvicorn) on 127.0.0.1 over the sample
index. Tracing overhead compares two servers that run side by side, one tracing every answer
into MLflow and one not, with requests alternating between them one at a time, so machine noise
hits both alike: the ratio is traced p50 / untraced p50. Target: <= 1.10.
Bounded: at most ``--requests`` requests per level (``--local-requests`` with the local model)
and ``--max-seconds`` per level. Between levels the traced server writes out every trace it
holds, so each level pays for its own (``traces left``: how many were still waiting for a gap
between requests when the level ended).

    python bench/api.py [--requests 48] [--local-requests 12] [--max-seconds 90]
                        [--backends extractive,local] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
sys.path.insert(0, str(REPO))

from bench.generate import questions  # noqa: E402

LEVELS = (1, 4, 16)
BENCH_KEY = "bench-key"  # the API is closed by default: the benchmark sends this key


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=48, help="per level, extractive")
    parser.add_argument("--local-requests", type=int, default=12, help="per level, local model")
    parser.add_argument("--max-seconds", type=float, default=90, help="per level, at most")
    parser.add_argument("--backends", default="extractive,local")
    parser.add_argument(
        "--mlflow-server",
        action="store_true",
        help="trace into a local `mlflow server` instead of the embedded SQLite store",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-api-"))
    try:
        if args.mlflow_server:
            with mlflow_server(work) as url:
                result = run(work, args, url)
        else:
            result = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else format_result(result))


def run(work: Path, args: argparse.Namespace, tracking_uri: str | None = None) -> dict[str, Any]:
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings
    from tasks.models import present

    models_dir = load_settings().models_path  # the checkout's pulled models
    configure_environment(load_settings(data_dir=work, progress=False), override=True)
    from flows.ingest import IngestRequest, ingest

    asked = questions(30)
    backends = []
    for backend in args.backends.split(","):
        if backend == "local" and "smollm2-135m" not in present(models_dir):
            backends.append({"backend": "local", "skipped": "smollm2-135m is not pulled"})
            continue
        count = args.local_requests if backend == "local" else args.requests
        generation = (
            {"backend": "local", "local_model": "smollm2-135m", "max_tokens": 64}
            if backend == "local"
            else {"backend": "extractive"}
        )
        # The version records the generator it was built with, and serves with it: one index
        # per backend.
        data = work / f"data-{backend}"
        overrides = {"data_dir": str(data), "models_dir": str(models_dir), "generation": generation}
        if tracking_uri:
            overrides["mlflow"] = {"tracking_uri": tracking_uri}
        with contextlib_quiet():
            ingest(IngestRequest(paths=[str(SAMPLES / "corpus")], overrides=overrides))
        common = {
            "data": data,
            "models_dir": models_dir,
            "generation": generation,
            "tracking_uri": tracking_uri,
        }
        with (
            server(work, tracing=True, **common) as traced,
            server(work, tracing=False, **common) as untraced,
        ):
            # Alternation first, while neither server has seen a question: llama.cpp caches
            # the prompts it read, so a server that answered them before would be faster.
            overhead = alternate(traced, untraced, count, args.max_seconds, asked)
            levels = []
            for clients in LEVELS:
                drain(traced)  # each level pays for writing its own traces, not the last one's
                levels.append(level_run(traced, clients, count, args.max_seconds, asked))
                levels[-1]["traces_pending_after"] = drain(traced)
        backends.append({"backend": backend, "levels": levels, "tracing": overhead})
    store = "mlflow server" if tracking_uri else "embedded SQLite"
    return {"questions": len(asked), "tracking_store": store, "backends": backends}


@contextmanager
def mlflow_server(work: Path) -> Iterator[str]:
    """A local ``mlflow server`` (SQLite behind it, as a small deployment would run it)."""
    port = free_port()
    folder = work / "mlflow-server"
    folder.mkdir()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri"]
    command += [f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination"]
    command += [str(folder / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    with healthy_process(command, port, folder / "server.log") as url:
        yield url


@contextmanager
def healthy_process(command: list[str], port: int, log_path: Path) -> Iterator[str]:
    """Run ``command`` until the block ends, once its ``/health`` on ``port`` answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start: see {log_path}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@contextmanager
def contextlib_quiet() -> Iterator[None]:
    """Keep the ingest's logs off stdout, where --json goes."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        yield


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(
    work: Path,
    *,
    tracing: bool,
    data: Path,
    models_dir: Path,
    generation: dict[str, Any],
    tracking_uri: str | None,
) -> Iterator[str]:
    """A ``ragcycle api`` process on a free loopback port; yields its URL."""
    port = free_port()
    config = work / f"api-{port}.toml"
    lines = [
        f'data_dir = "{data}"',
        f'models_dir = "{models_dir}"',
        "progress = false",
        "[api]",
        f"port = {port}",
        f'api_key = "{BENCH_KEY}"',
        "max_queue = 64",
        *([f'[mlflow]\ntracking_uri = "{tracking_uri}"'] if tracking_uri else []),
        "[tracing]",
        f"enabled = {str(tracing).lower()}",
        "[generation]",
        *(f"{key} = {json.dumps(value)}" for key, value in generation.items()),
    ]
    config.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "ragcycle.cli", "api", "-c", str(config)]
    with healthy_process(command, port, work / f"api-{port}.log") as url:
        httpx.post(f"{url}/ask", json={"question": "warm up"}, timeout=120)
        yield url


def drain(url: str, timeout: float = 300) -> int:
    """Wait until the server has written every trace; returns how many were pending."""
    pending = httpx.get(f"{url}/status", timeout=30).json()["tracing"]["pending"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/status", timeout=30).json()["tracing"]["pending"] == 0:
            break
        time.sleep(0.5)
    return int(pending)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def level_run(
    url: str, clients: int, count: int, max_seconds: float, asked: list[str]
) -> dict[str, Any]:
    """``count`` requests from ``clients`` threads (or fewer, if ``max_seconds`` runs out)."""
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()
    issued = iter(range(count))
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal refused
        with httpx.Client(timeout=300, headers={"X-API-Key": BENCH_KEY}) as http:
            for number in issued:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                response = http.post(f"{url}/ask", json={"question": asked[number % len(asked)]})
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        refused += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "answered": len(latencies),
        "refused": refused,
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
    }


def alternate(
    traced: str, untraced: str, count: int, max_seconds: float, asked: list[str]
) -> dict[str, Any]:
    """One request at a time, alternating between the two servers: p50 of each and the ratio."""
    times: dict[str, list[float]] = {traced: [], untraced: []}
    deadline = time.monotonic() + max_seconds
    with httpx.Client(timeout=300, headers={"X-API-Key": BENCH_KEY}) as http:
        for number in range(count):
            if time.monotonic() > deadline:
                break
            for url in (traced, untraced) if number % 2 == 0 else (untraced, traced):
                started = time.perf_counter()
                http.post(f"{url}/ask", json={"question": asked[number % len(asked)]})
                times[url].append(time.perf_counter() - started)
    on, off = statistics.median(times[traced]), statistics.median(times[untraced])
    return {
        "pairs": len(times[traced]),
        "traced_p50_ms": round(on * 1000, 1),
        "untraced_p50_ms": round(off * 1000, 1),
        "ratio_p50": round(on / off, 3),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def format_result(result: dict[str, Any]) -> str:
    lines = [f"traces written to the {result['tracking_store']}"]
    for entry in result["backends"]:
        if "skipped" in entry:
            lines.append(f"{entry['backend']}: skipped ({entry['skipped']})")
            continue
        lines.append(f"{entry['backend']}")
        lines.append(
            f"{'clients':>9}{'answered':>10}{'503':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'traces left':>13}"
        )
        for level in entry["levels"]:
            lines.append(
                f"{level['clients']:>9}{level['answered']:>10}{level['refused']:>6}"
                f"{level['requests_per_s']:>8}{level['p50_ms']:>9}{level['p95_ms']:>9}"
                f"{level['traces_pending_after']:>13}"
            )
        tracing = entry["tracing"]
        lines.append(
            f"  tracing: p50 {tracing['traced_p50_ms']} ms traced vs {tracing['untraced_p50_ms']}"
            f" ms untraced over {tracing['pairs']} pairs: ratio {tracing['ratio_p50']}"
            " (target <= 1.10)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
