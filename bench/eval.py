"""Evaluation and query benchmarks, as ratios and percentiles measured in one process.

1. Evaluation overhead: questions/s of the ``evaluate`` flow (Prefect + MLflow logging) against a
   bare loop doing the same retrieval, generation and scoring with the same functions and no
   Prefect or MLflow. Target: flow/bare <= 1.2. Golden set: XQuAD-en questions with their SQuAD
   answers and the judged paragraph as source (``../shared/benchmarks/xquad_en``).
2. ``ask`` latency on a warm process over a 10k-chunk index (SciFact abstracts cut into small
   chunks), extractive backend. Target: p95 <= 50 ms. To build the index quickly its chunks are
   embedded with the model's input capped at 64 word pieces; query-time work is unchanged.

    python bench/eval.py [--questions 300] [--asks 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "benchmarks"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--asks", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (SHARED / "xquad_en").is_dir() or not (SHARED / "scifact").is_dir():
        raise SystemExit(f"needs {SHARED}/xquad_en and scifact (the team's shared benchmarks)")
    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-eval-"))
    try:
        result = run(work, args.questions, args.asks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result) if args.json else format_result(result))


def run(work: Path, questions: int, asks: int) -> dict[str, Any]:
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings

    settings = load_settings(
        data_dir=work / "data", progress=False, evaluation={"mlflow_genai": False}
    )
    configure_environment(settings, override=True)
    result: dict[str, Any] = {}
    golden = work / "xquad_golden.jsonl"
    write_golden(golden, questions)
    build_collection(
        settings, "bench-xquad", SHARED / "xquad_en", chunk_size=None, limit_chunks=None
    )
    result["evaluation"] = eval_overhead(settings, golden)
    build_collection(settings, "bench-10k", SHARED / "scifact", chunk_size=300, limit_chunks=10_000)
    result["ask"] = ask_latency(settings, "bench-10k", asks)
    return result


def write_golden(path: Path, limit: int) -> None:
    qrels: dict[str, str] = {}
    for line in (SHARED / "xquad_en" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, _ = line.split("\t")
        qrels[query_id] = doc_id
    rows = []
    for line in (SHARED / "xquad_en" / "qa.jsonl").read_text().splitlines():
        qa = json.loads(line)
        if qa["id"] in qrels:
            rows.append(
                {
                    "question": qa["question"],
                    "expected_answer": qa["answers"]["text"][0],
                    "expected_sources": [qrels[qa["id"]]],
                }
            )
    path.write_text("\n".join(json.dumps(row) for row in rows[:limit]) + "\n")


def build_collection(
    settings: Any, name: str, folder: Path, chunk_size: int | None, limit_chunks: int | None
) -> int:
    from tasks.chunking import chunk_documents, flatten_chunks
    from tasks.embedding import embedder_from_settings
    from tasks.evaluation.beir import load_beir_corpus
    from tasks.indexing.store import open_index
    from tasks.indexing.writes import write_documents

    chunking = settings.chunking.model_copy(
        update={"strategy": "whole"} if chunk_size is None else {"size": chunk_size, "overlap": 0}
    )
    documents = load_beir_corpus(folder)
    chunks = chunk_documents(documents, chunking)
    kept, total = [], 0
    for document in documents:
        if limit_chunks is not None and total >= limit_chunks:
            break
        kept.append(document)
        total += len(chunks[document.doc_id])
    embedder = embedder_from_settings(settings)
    model = embedder.model
    if limit_chunks is not None:
        model.max_seq_length = 64
    index = open_index(settings, name)
    for start in range(0, len(kept), 256):
        batch = kept[start : start + 256]
        ordered = flatten_chunks(batch, chunks)
        vectors = embedder.embed([c.text for c in ordered])
        write_documents(
            index,
            batch,
            {d.doc_id: chunks[d.doc_id] for d in batch},
            vectors,
            {},
            chunking.config_hash(),
        )
    model.max_seq_length = 256
    return index.count()


def eval_overhead(settings: Any, golden: Path) -> dict[str, Any]:
    from flows.evaluate import EvaluateRequest, evaluate
    from tasks.embedding import embedder_from_settings
    from tasks.evaluation.golden import load_golden
    from tasks.evaluation.scoring import ScoringConfig, score_rows, summarize
    from tasks.generation.answers import answer_retrievals
    from tasks.generation.backends import generator_from_settings
    from tasks.generation.prompts import load_prompt
    from tasks.indexing.store import open_index
    from tasks.retrieval import retrieve_many
    from tasks.tracking.runs import mlflow_client

    mlflow_client(settings.mlflow_tracking_uri)
    k = settings.retrieval.k
    overrides = {
        "data_dir": str(settings.data_dir),
        "progress": False,
        "evaluation": {"mlflow_genai": False},
    }
    # Warm-up: Prefect's ephemeral server, the prompt registry, the model.
    evaluate(EvaluateRequest(dataset=str(golden), collection="bench-xquad", overrides=overrides))

    started = time.perf_counter()
    items = load_golden(golden).items
    index = open_index(settings, "bench-xquad", create=False)
    embedder = embedder_from_settings(settings)
    generator = generator_from_settings(settings, embedder)
    prompt = load_prompt(settings.generation.prompt_name, None)
    retrievals: list[Any] = []
    answers: list[Any] = []
    for start in range(0, len(items), 64):
        found = retrieve_many(
            [i.question for i in items[start : start + 64]],
            index,
            embedder,
            k,
            fetch_multiplier=settings.retrieval.fetch_multiplier,
        )
        retrievals += found
        answers += answer_retrievals(found, generator, prompt, k)
    rows = score_rows(items, [0] * len(items), retrievals, answers, embedder, ScoringConfig(k=k))
    summarize(rows, k)
    bare = time.perf_counter() - started

    started = time.perf_counter()
    flow_result = evaluate(
        EvaluateRequest(dataset=str(golden), collection="bench-xquad", overrides=overrides)
    )
    flow = time.perf_counter() - started

    genai_overrides = {**overrides, "evaluation": {"mlflow_genai": True}}
    started = time.perf_counter()
    evaluate(
        EvaluateRequest(dataset=str(golden), collection="bench-xquad", overrides=genai_overrides)
    )
    genai = time.perf_counter() - started
    n = len(items)
    return {
        "questions": n,
        "bare_seconds": bare,
        "flow_seconds": flow,
        "flow_genai_seconds": genai,
        "bare_qps": n / bare,
        "flow_qps": n / flow,
        "flow_over_bare": flow / bare,
        "flow_genai_over_bare": genai / bare,
        "metrics": {
            key: flow_result["metrics"][key]
            for key in ("hit_rate_at_5", "mrr", "answer_f1", "answer_similarity")
        },
    }


def ask_latency(settings: Any, collection: str, asks: int) -> dict[str, Any]:
    from flows.ask import Asker
    from tasks.indexing.store import open_index

    chunks = open_index(settings, collection, create=False).count()
    asker = Asker(settings, collection)
    queries = [
        json.loads(line)["text"]
        for line in (SHARED / "scifact" / "queries.jsonl").read_text().splitlines()[: asks + 10]
    ]
    for query in queries[:10]:
        asker.ask(query)
    stages: dict[str, list[float]] = {"retrieve": [], "generate": [], "total": []}
    for query in queries[10:]:
        latency = asker.ask(query).latency_ms
        for stage, values in stages.items():
            values.append(latency[stage])
    return {
        "chunks": chunks,
        "asks": len(stages["total"]),
        **{f"{stage}_p50_ms": statistics.median(v) for stage, v in stages.items()},
        **{f"{stage}_p95_ms": sorted(v)[int(0.95 * len(v)) - 1] for stage, v in stages.items()},
    }


def format_result(result: dict[str, Any]) -> str:
    e, a = result["evaluation"], result["ask"]
    return "\n".join(
        [
            f"evaluation of {e['questions']} XQuAD questions (k=5, extractive):",
            f"  bare loop   {e['bare_seconds']:7.1f} s  {e['bare_qps']:6.1f} questions/s",
            f"  flow        {e['flow_seconds']:7.1f} s  {e['flow_qps']:6.1f} questions/s   flow/bare {e['flow_over_bare']:.3f} (target <= 1.2)",
            f"  flow+genai  {e['flow_genai_seconds']:7.1f} s                         flow/bare {e['flow_genai_over_bare']:.3f} (mlflow.genai.evaluate rows and traces)",
            f"  metrics     {json.dumps({k: round(v, 4) for k, v in e['metrics'].items()})}",
            f"ask over {a['chunks']} chunks, {a['asks']} questions, warm process:",
            f"  total    p50 {a['total_p50_ms']:6.1f} ms  p95 {a['total_p95_ms']:6.1f} ms (target p95 <= 50)",
            f"  retrieve p50 {a['retrieve_p50_ms']:6.1f} ms  p95 {a['retrieve_p95_ms']:6.1f} ms",
            f"  generate p50 {a['generate_p50_ms']:6.1f} ms  p95 {a['generate_p95_ms']:6.1f} ms",
        ]
    )


if __name__ == "__main__":
    main()
