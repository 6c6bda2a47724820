"""Generation benchmark: each local model present, and the extractive backend, on the same
questions over the sample index, in one command.

Per backend: answer latency p50/p95, prompt and generation tokens/s (from llama.cpp's own
timings), model load seconds, and the peak resident memory of a process that answered with it,
beside the extractive process's peak as the baseline (both hold torch and the embedder). Each
backend runs in a fresh process of its own, so peaks and load times do not leak between them.
The default model also runs at each ``--context-tokens`` budget (0: whole chunks).

``llama_cpp_best`` is what llama.cpp itself reaches with the default model on this machine, in
the same command: one fixed prompt of about the RAG prompt's length, answered at every thread
split, the best prompt and generation rates kept; ``ratio_to_llama_cpp`` divides the default
row's rates by those. ``default`` names the backend, model, threads and budget the default
settings answer with. Target on 2 cores: the default's answer p95 <= 8 s, load <= 3 s.

    python bench/generate.py [--questions 30] [--max-tokens 128] [--threads 1:2,1:1]
                             [--context-tokens 0,300] [--models smollm2-135m,...] [--json]
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
        "--context-tokens",
        default="",
        help="comma-separated budgets of retrieved text for the default model (default: the"
        " setting's value only)",
    )
    parser.add_argument(
        "--models", help="comma-separated catalogue models (default: every one pulled)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--thread-count", default="1:2", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "llama-cpp-best":
        print(json.dumps(llama_cpp_best(args)))
        return
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
    defaults = load_settings()
    models_dir = defaults.models_path  # the checkout's pulled models
    settings = load_settings(data_dir=data, progress=False)
    configure_environment(settings, override=True)
    from flows.ingest import IngestRequest, ingest

    ingest(IngestRequest(paths=[str(SAMPLES / "corpus")], overrides={"data_dir": str(data)}))
    models = present(models_dir)
    if args.models:
        models = {name: path for name, path in models.items() if name in args.models.split(",")}
    chosen = defaults.generation
    default_model = chosen.local_model if chosen.backend == "local" else None
    default_threads = f"{chosen.threads}:{chosen.batch_threads}"
    budgets = [int(n) for n in args.context_tokens.split(",") if n] or [chosen.context_tokens]
    runs: list[tuple[str, str, int]] = [("extractive", "1:1", 0)]
    if default_model in models:
        pairs = dict.fromkeys([default_threads, *args.threads.split(",")])
        runs += [(default_model, pair, chosen.context_tokens) for pair in pairs]
        runs += [
            (default_model, default_threads, budget)
            for budget in budgets
            if budget != chosen.context_tokens
        ]
    runs += [
        (name, default_threads, chosen.context_tokens) for name in models if name != default_model
    ]
    results = []
    for backend, threads, budget in runs:
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
            "--budget",
            str(budget),
        ]
        results.append(_child(command))
    baseline = results[0]["peak_rss_mb"]
    for row in results:
        row["peak_rss_over_extractive_mb"] = round(row["peak_rss_mb"] - baseline, 1)
    default = {
        "backend": chosen.backend,
        "model": default_model or chosen.backend,
        "threads": default_threads if default_model else None,
        "context_tokens": chosen.context_tokens,
    }
    report: dict[str, Any] = {
        "default": default,
        "questions": args.questions,
        "max_tokens": args.max_tokens,
        "backends": results,
    }
    if default_model in models:
        probe = ["--worker", "llama-cpp-best", "--models", default_model]
        limits = ["--models-dir", str(models_dir), "--max-tokens", str(args.max_tokens)]
        best = _child([sys.executable, __file__, *probe, *limits])
        row = next(
            r
            for r in results
            if r["backend"] == default_model
            and r["threads"] == default_threads
            and r["context_tokens"] == chosen.context_tokens
        )
        report["llama_cpp_best"] = best
        report["ratio_to_llama_cpp"] = {
            "prompt": round(row["prompt_tokens_per_s"] / best["prompt_tokens_per_s"], 3),
            "generation": round(
                row["generation_tokens_per_s"] / best["generation_tokens_per_s"], 3
            ),
        }
    return report


def _child(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:5])} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# About the default RAG prompt's length in tokens (k = 5 chunks of up to 256 tokens).
_PROBE_WORDS = 450


def llama_cpp_best(args: argparse.Namespace) -> dict[str, Any]:
    """llama.cpp's own rates for one model at every thread split on this machine: a plain
    completion of a fixed prompt, no retrieval, no guardrails, the best of each phase kept."""
    import os

    from tasks.generation.local import LocalGenerator
    from tasks.models import model_file

    model = model_file(args.models, args.models_dir, None)
    text = " ".join(f"word{n % 97}" for n in range(_PROBE_WORDS))
    prompt = [{"role": "user", "content": f"Summarise: {text}"}]
    cores = os.cpu_count() or 1
    rates: dict[str, dict[str, float]] = {}
    for threads in range(1, cores + 1):
        for batch_threads in range(1, cores + 1):
            generator = LocalGenerator(
                model, threads=threads, batch_threads=batch_threads, max_tokens=args.max_tokens
            )
            generator.complete(prompt[:1], max_tokens=1)  # warm: the next prompt is measured
            _, usage = generator.complete([{"role": "user", "content": f"Summarise again: {text}"}])
            timings = usage["timings"]
            prompt_tokens = int(timings["prompt_n"])
            rates[f"{threads}:{batch_threads}"] = {
                "prompt": 1000 * timings["prompt_n"] / timings["prompt_ms"],
                "generation": 1000 * timings["predicted_n"] / timings["predicted_ms"],
            }
    prompt_best = max(rates, key=lambda key: rates[key]["prompt"])
    generation_best = max(rates, key=lambda key: rates[key]["generation"])
    return {
        "model": args.models,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_s": round(rates[prompt_best]["prompt"], 1),
        "prompt_threads": prompt_best,
        "generation_tokens_per_s": round(rates[generation_best]["generation"], 1),
        "generation_threads": generation_best,
    }


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
            "context_tokens": args.budget,
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
    from tasks.versions import resolve_serving

    mlflow_client(settings.mlflow_tracking_uri)
    embedder = embedder_from_settings(settings)
    # The live version's collection, read with this worker's settings (not the version's).
    index = open_index(settings, resolve_serving(settings).collection, create=False)
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
        "context_tokens": args.budget if backend != "extractive" else None,
        "load_seconds": round(load_seconds, 2),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        # Tokens llama.cpp read per answer: a prefix cached from the last prompt is not re-read.
        "mean_prompt_tokens_read": round(prompt_n / len(latencies), 1) if latencies else None,
        "prompt_tokens_per_s": round(prompt_n / prompt_ms * 1000, 1) if prompt_ms else None,
        "generation_tokens_per_s": round(predicted_n / predicted_ms * 1000, 1)
        if predicted_ms
        else None,
        "mean_completion_tokens": round(statistics.fmean(completion_tokens), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"{result['questions']} questions, at most {result['max_tokens']} new tokens per answer;"
        f" default: {result['default']}",
        f"{'backend':<22}{'threads':>8}{'budget':>7}{'load s':>8}{'p50 s':>8}{'p95 s':>8}"
        f"{'prompt t/s':>12}{'gen t/s':>9}{'RSS MB':>9}{'+RSS MB':>9}",
    ]
    for row in result["backends"]:
        lines.append(
            f"{row['backend']:<22}{row['threads'] or '-':>8}{row['context_tokens'] or '-':>7}"
            f"{row['load_seconds']:>8}{row['p50_s']:>8}{row['p95_s']:>8}"
            f"{row['prompt_tokens_per_s'] or '-':>12}{row['generation_tokens_per_s'] or '-':>9}"
            f"{row['peak_rss_mb']:>9}{row['peak_rss_over_extractive_mb']:>9}"
        )
    if "llama_cpp_best" in result:
        lines.append(
            f"llama.cpp's own best: {result['llama_cpp_best']}; the default's ratio to it:"
            f" {result['ratio_to_llama_cpp']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
