"""Answer quality of every backend: the extractive one and each local model pulled, on the sample
golden set and on a golden set over the shared PDFs, served as production serves them.

Per backend and set, judge-free: answer-key containment of the served answers (answerable
questions with an ``answer_key``), answered share of answerable questions, abstention on
unanswerable ones (an abstention or a withheld answer), share of raw replies that echo the
prompt's scaffolding or are otherwise degenerate, answer latency p50/p95 (retrieval and
generation), the share of answers the fallback served (generation.fallback), and the peak
resident memory of the process. Each backend runs in a fresh process.

    python bench/models.py [--models smollm2-135m,...] [--sets samples,shared]
                           [--max-tokens 128] [--limit 0] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SETS = {
    "samples": (REPO / "samples" / "corpus", REPO / "samples" / "golden.jsonl"),
    "shared": (
        REPO.parent / "shared" / "corpus" / "pdfs",
        REPO / "bench" / "data" / "shared_corpus_golden.jsonl",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", help="comma-separated catalogue models (default: all pulled)")
    parser.add_argument("--sets", default="samples,shared")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0, help="first N questions of a set (0: all)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--set", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with contextlib.redirect_stdout(sys.stderr):
            measured = worker(args)
        print(json.dumps(measured))
        return
    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-models-"))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else format_result(result))


def run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings
    from tasks.models import present

    models_dir = load_settings().models_path  # the checkout's pulled models
    backends = ["extractive", *sorted(present(models_dir))]
    if args.models:
        backends = ["extractive", *[m for m in backends[1:] if m in args.models.split(",")]]
    results: list[dict[str, Any]] = []
    for name in args.sets.split(","):
        corpus = SETS[name][0]
        if not corpus.exists():
            print(f"skipped {name}: {corpus} is absent", file=sys.stderr)
            continue
        data = work / name
        settings = load_settings(config_file=None, data_dir=data, progress=False)
        configure_environment(settings, override=True)
        from flows.ingest import IngestRequest, ingest

        ingest(IngestRequest(paths=[str(corpus)], overrides={"data_dir": str(data)}))
        for backend in backends:
            command = [sys.executable, __file__, "--worker", backend, "--set", name]
            command += ["--data", str(data), "--models-dir", str(models_dir)]
            command += ["--max-tokens", str(args.max_tokens), "--limit", str(args.limit)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # kept if cut short
    return {"max_tokens": args.max_tokens, "results": results}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Answer one golden set with one backend in this process, as production serves answers."""
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings

    generation: dict[str, Any] = {"backend": "extractive"}
    if args.worker != "extractive":
        generation = {"backend": "local", "local_model": args.worker}
        generation["max_tokens"] = args.max_tokens
    settings = load_settings(
        config_file=None,
        data_dir=args.data,
        models_dir=args.models_dir,
        progress=False,
        generation=generation,
    )
    configure_environment(settings, override=True)
    from tasks.answering import Parts, answer_many
    from tasks.embedding import embedder_from_settings
    from tasks.evaluation.golden import load_golden
    from tasks.generation.prompts import load_prompt
    from tasks.indexing.store import open_index
    from tasks.tracking.runs import mlflow_client
    from tasks.versions import resolve_serving

    mlflow_client(settings.mlflow_tracking_uri)
    serving = resolve_serving(settings)
    embedder = embedder_from_settings(settings)
    index = open_index(settings, serving.collection, create=False)
    parts = Parts.from_settings(
        settings, index, embedder, load_prompt(settings.generation.prompt_name, None)
    )
    items = load_golden(SETS[args.set][1]).items
    items = items[: args.limit] if args.limit else items
    k = settings.retrieval.k
    answered = answer_many(parts, [item.question for item in items], k, [None] * len(items))
    return {"backend": args.worker, "set": args.set, **measure(items, answered)}


def measure(items: list[Any], answered: list[Any]) -> dict[str, Any]:
    from tasks.evaluation.metrics import contains_key
    from tasks.evaluation.stats import percentile
    from tasks.guardrails.degenerate import degenerate_reason

    keyed, unassisted, answered_share, abstained, latencies = [], [], [], [], []
    echoes = degenerate = fallbacks = below = 0
    for item, one in zip(items, answered, strict=True):
        withheld = one.verdict.status == "fail"
        declined = bool(one.answer.abstained) or withheld
        if item.answer_key:
            keyed.append(0.0 if withheld else contains_key(one.verdict.answer, item.answer_key))
            # what generation.fallback = "abstain" would have served: nothing for these
            unassisted.append(0.0 if one.replaced is not None else keyed[-1])
        if item.answerable:
            answered_share.append(float(not declined))
        else:
            abstained.append(float(declined))
        raw = one.replaced or one.answer  # what the model said, served or not
        fallbacks += one.replaced is not None
        below += bool(one.answer.extras.get("below_min_score"))
        reason = degenerate_reason(raw.text) if not raw.abstained else None
        echoes += bool(reason and reason.startswith("answer echoes"))
        degenerate += reason is not None
        latencies.append(
            (float(one.retrieval.latency_ms.get("retrieve", 0.0)) + one.answer.generate_ms) / 1000
        )
    return {
        "questions": len(items),
        "key_contained": round(statistics.fmean(keyed), 3) if keyed else None,
        "key_contained_without_fallback": (
            round(statistics.fmean(unassisted), 3) if unassisted else None
        ),
        "answered_when_answerable": round(statistics.fmean(answered_share), 3),
        "abstained_when_unanswerable": round(statistics.fmean(abstained), 3) if abstained else None,
        "echo_share": round(echoes / len(items), 3),
        "degenerate_share": round(degenerate / len(items), 3),
        "fallback_share": round(fallbacks / len(items), 3),
        "below_min_score_share": round(below / len(items), 3),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 95), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"at most {result['max_tokens']} new tokens per answer",
        f"{'set':<8} {'backend':<20} {'key':>6} {'answered':>9} {'abstained':>10}"
        f" {'echo':>6} {'degen':>6} {'p50 s':>6} {'p95 s':>6} {'RSS MB':>7}",
    ]
    for row in result["results"]:
        cells = [row["key_contained"], row["answered_when_answerable"]]
        cells += [row["abstained_when_unanswerable"], row["echo_share"], row["degenerate_share"]]
        text = [("-" if value is None else f"{value:.3f}") for value in cells]
        lines.append(
            f"{row['set']:<8} {row['backend']:<20} {text[0]:>6} {text[1]:>9} {text[2]:>10}"
            f" {text[3]:>6} {text[4]:>6} {row['p50_s']:>6} {row['p95_s']:>6}"
            f" {row['peak_rss_mb']:>7}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
