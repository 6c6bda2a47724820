"""Generation benchmark: each local model present, and the extractive backend, on the same
questions over the sample index, in one command.

Per backend: answer latency p50/p95, prompt and generation tokens/s (from llama.cpp's own
timings), model load seconds, and the peak resident memory of a process that answered with it,
beside the extractive process's peak as the baseline (both hold torch and the embedder). Each
backend runs in a fresh process of its own, so peaks and load times do not leak between them.
Targets on 2 cores: the default model's answer p95 <= 8 s at 128 new tokens, load <= 3 s.

    python bench/generate.py [--questions 30] [--max-tokens 128] [--threads 1:2,1:1]
                             [--models smollm2-135m,...] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"

# The sample golden set's questions, and more a reader of the same documents would ask.
EXTRA_QUESTIONS = [
    "What does the DMCA say about online service providers?",
    "Which title of the DMCA deals with vessel hull designs?",
    "What is the role of the Copyright Office under the DMCA?",
    "What did President Biden say about the price of insulin?",
    "What did the 2024 State of the Union say about NATO?",
    "What did President Biden propose about corporate taxes?",
    "What does the Zen of Python say about errors?",
    "According to the Zen of Python, how many obvious ways should there be to do it?",
    "How do I allow cross-origin requests from a frontend in FastAPI?",
    "What is a preflight request in CORS?",
    "Can background tasks use dependency injection in FastAPI?",
    "How do I override the default exception handler for validation errors?",
    "What status code does HTTPException use when I raise a 404?",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--threads",
        default="1:2",
        help="comma-separated GEN:PROMPT thread counts for the default model, e.g. 1:1,2:2,1:2",
    )
    parser.add_argument(
        "--models", help="comma-separated catalogue models (default: every one pulled)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--thread-count", default="1:2", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args)))
        return
    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-generate-"))
    try:
        result = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else format_result(result))


def questions(limit: int) -> list[str]:
    golden = [
        json.loads(line)["question"]
        for line in (SAMPLES / "golden.jsonl").read_text().splitlines()
        if line.strip()
    ]
    return (golden + EXTRA_QUESTIONS)[:limit]


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings
    from tasks.models import present

    data = work / "data"
    models_dir = load_settings().models_path  # the checkout's pulled models
    settings = load_settings(data_dir=data, progress=False)
    configure_environment(settings, override=True)
    from flows.ingest import IngestRequest, ingest

    ingest(IngestRequest(paths=[str(SAMPLES / "corpus")], overrides={"data_dir": str(data)}))
    models = present(models_dir)
    if args.models:
        models = {name: path for name, path in models.items() if name in args.models.split(",")}
    runs: list[tuple[str, str]] = [("extractive", "1:1")]
    runs += [("smollm2-135m", pair) for pair in args.threads.split(",") if "smollm2-135m" in models]
    runs += [(name, "1:2") for name in models if name != "smollm2-135m"]
    results = []
    for backend, threads in runs:
        command = [
            sys.executable,
            __file__,
            "--worker",
            backend,
            "--data",
            str(data),
            "--questions",
            str(args.questions),
            "--max-tokens",
            str(args.max_tokens),
            "--thread-count",
            threads,
            "--models-dir",
            str(models_dir),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    baseline = results[0]["peak_rss_mb"]
    for row in results:
        row["peak_rss_over_extractive_mb"] = round(row["peak_rss_mb"] - baseline, 1)
    return {"questions": args.questions, "max_tokens": args.max_tokens, "backends": results}


def worker(backend: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Answer every question with one backend in this process, and measure it."""
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings

    generation: dict[str, Any] = {"backend": "extractive"}
    threads, batch_threads = (int(n) for n in args.thread_count.split(":"))
    if backend != "extractive":
        generation = {
            "backend": "local",
            "local_model": backend,
            "max_tokens": args.max_tokens,
            "threads": threads,
            "batch_threads": batch_threads,
        }
    settings = load_settings(
        data_dir=data, models_dir=args.models_dir, progress=False, generation=generation
    )
    configure_environment(settings, override=True)
    from tasks.embedding import embedder_from_settings
    from tasks.evaluation.stats import percentile
    from tasks.generation.backends import generator_from_settings
    from tasks.generation.prompts import load_prompt
    from tasks.indexing.store import open_index
    from tasks.retrieval import retrieve_many
    from tasks.tracking.runs import mlflow_client

    mlflow_client(settings.mlflow_tracking_uri)
    embedder = embedder_from_settings(settings)
    index = open_index(settings, create=False)
    prompt = load_prompt(settings.generation.prompt_name, None)
    retrievals = retrieve_many(questions(args.questions), index, embedder, settings.retrieval.k)
    started = time.perf_counter()
    generator = generator_from_settings(settings, embedder)
    load_seconds = time.perf_counter() - started
    latencies, prompt_n, prompt_ms, predicted_n, predicted_ms = [], 0, 0.0, 0, 0.0
    completion_tokens = []
    for retrieval in retrievals:
        answer = generator.generate(
            retrieval.question, retrieval.top_chunks(settings.retrieval.k), prompt, retrieval.vector
        )
        latencies.append(answer.generate_ms / 1000)
        completion_tokens.append(answer.completion_tokens)
        timings = answer.extras.get("timings") or {}
        prompt_n += int(timings.get("prompt_n", 0))
        prompt_ms += float(timings.get("prompt_ms", 0.0))
        predicted_n += int(timings.get("predicted_n", 0))
        predicted_ms += float(timings.get("predicted_ms", 0.0))
    return {
        "backend": backend,
        "threads": args.thread_count if backend != "extractive" else None,  # gen:prompt
        "load_seconds": round(load_seconds, 2),
        "answer_p50_s": round(statistics.median(latencies), 3),
        "answer_p95_s": round(percentile(latencies, 95), 3),
        "prompt_tokens_per_s": round(prompt_n / prompt_ms * 1000, 1) if prompt_ms else None,
        "generation_tokens_per_s": round(predicted_n / predicted_ms * 1000, 1)
        if predicted_ms
        else None,
        "mean_completion_tokens": round(statistics.fmean(completion_tokens), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"{result['questions']} questions, at most {result['max_tokens']} new tokens per answer",
        f"{'backend':<22}{'threads':>8}{'load s':>8}{'p50 s':>8}{'p95 s':>8}"
        f"{'prompt t/s':>12}{'gen t/s':>9}{'RSS MB':>9}{'+RSS MB':>9}",
    ]
    for row in result["backends"]:
        lines.append(
            f"{row['backend']:<22}{row['threads'] or '-':>8}{row['load_seconds']:>8}"
            f"{row['answer_p50_s']:>8}{row['answer_p95_s']:>8}"
            f"{row['prompt_tokens_per_s'] or '-':>12}{row['generation_tokens_per_s'] or '-':>9}"
            f"{row['peak_rss_mb']:>9}{row['peak_rss_over_extractive_mb']:>9}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
