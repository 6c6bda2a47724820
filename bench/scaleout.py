"""Scale-out benchmark: one ingest corpus under each task runner, as ratios to one thread.

Every variant ingests the same files into its own collection on one ``chroma run`` server (Dask
workers are other processes and need a server), with the embedding cache off so every variant
embeds everything. The baseline is the thread runner with one worker (partitions one after the
other) in the same process and the same run, because these machines are noisy.

    python bench/scaleout.py [--corpus DIR] [--limit N] [--workers N] [--json]
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import corpus_parser


def main() -> None:
    parser = corpus_parser(__doc__, default_limit=16)
    parser.add_argument("--workers", type=int, default=2, help="threads / Dask worker processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragcycle-scaleout-"))
    try:
        result = run(args.corpus, args.limit, args.workers, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['files']} files, {result['chunks']} chunks, baseline: threads x1")
    for name, row in result["variants"].items():
        print(f"  {name:<12} {row['seconds']:7.1f} s   {row['ratio']:.2f} x baseline time")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(corpus: Path, limit: int, workers: int, work: Path) -> dict[str, Any]:
    import httpx

    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings

    subset = work / "corpus"
    subset.mkdir()
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in files[:limit] if limit else files:
        shutil.copy(path, subset / path.name)
    port = free_port()
    chroma = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "chroma"),
            "run",
            "--path",
            str(work / "chroma"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        base = load_settings(data_dir=work / "data", progress=False)
        configure_environment(base, override=True)
        from flows.ingest import IngestRequest, ingest

        common: dict[str, Any] = {
            "data_dir": str(work / "data"),
            "progress": False,
            "chroma": {"url": url},
            "embedding": {"cache": False},
            "ingest": {"batch_documents": 2},
        }
        # Warm up: Prefect's ephemeral API, the model in this process.
        ingest(IngestRequest(paths=[str(subset)], collection="warm-up", overrides=common))
        variants = {
            "threads x1": {"task_runner": "threads", "max_workers": 1},
            f"threads x{workers}": {"task_runner": "threads", "max_workers": workers},
            f"dask x{workers}": {"task_runner": "dask", "max_workers": workers},
        }
        rows: dict[str, dict[str, float]] = {}
        chunks = 0
        for number, (name, runner) in enumerate(variants.items()):
            started = time.perf_counter()
            report = ingest(
                IngestRequest(
                    paths=[str(subset)],
                    collection=f"variant-{number}",
                    overrides={**common, "prefect": runner},
                )
            )
            rows[name] = {"seconds": time.perf_counter() - started}
            chunks = report["chunks"]["total"]
        baseline = rows["threads x1"]["seconds"]
        for row in rows.values():
            row["ratio"] = row["seconds"] / baseline
        return {"files": len(list(subset.iterdir())), "chunks": chunks, "variants": rows}
    finally:
        chroma.terminate()
        chroma.wait(10)


if __name__ == "__main__":
    main()
