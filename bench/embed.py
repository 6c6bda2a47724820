"""Embedding benchmark: each backend's chunks/s on the same texts, its nDCG@10 on BEIR sets, and
the ingest flow's throughput with it, as multiples of today's PyTorch path, in one run.

    python bench/embed.py [--corpus DIR] [--limit N] [--sets xquad_en,scifact]
                          [--backends torch-unsorted,onnx-int8] [--json]

Backends: ``torch-unsorted`` (the PyTorch path as ingestion ran it before batches were sorted by
length and sized for the CPU and files were parsed in worker processes: the baseline), ``torch``,
``torch-bf16``, ``onnx`` and ``onnx-int8`` (all sorted, batch size ``auto``). For each: raw
chunks/s of ``embedder.embed`` over the corpus's chunks (model warm, cache off), nDCG@10 of
``ragcycle benchmark beir`` on each set, and the ingest flow's chunks/s on the corpus (fresh
data dir, embedding cache off; load, chunk, scan, embed and write all counted) with its share
of the raw rate. ``speedup`` is the fastest flow among backends whose nDCG@10 is within 0.005 of
the PyTorch path's on every set, over the baseline's flow (target: >= 2).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, corpus_parser

BACKENDS: dict[str, dict[str, Any]] = {
    # the PyTorch path as ingestion ran it before: batches of 32 in the order given
    "torch-unsorted": {"backend": "torch", "sort_by_length": False, "batch_size": 32},
    "torch": {"backend": "torch", "sort_by_length": True},
    "torch-bf16": {"backend": "torch-bf16", "sort_by_length": True},
    "onnx": {"backend": "onnx", "sort_by_length": True},
    "onnx-int8": {"backend": "onnx-int8", "sort_by_length": True},
}
# The baseline is ingestion as it ran before this work: files parsed in the partition threads.
PIPELINE: dict[str, dict[str, Any]] = {"torch-unsorted": {"parse_processes": 0}}
NDCG_BOUND = 0.005
SHARED_BENCHMARKS = REPO.parent / "shared" / "benchmarks"


def main() -> None:
    parser = corpus_parser(__doc__)
    parser.add_argument("--sets", default="xquad_en,scifact", help="BEIR sets under ../shared")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="backends to run (torch-unsorted is always run: it is the baseline)",
    )
    args = parser.parse_args()
    names = [
        "torch-unsorted",
        *(n for n in args.backends.split(",") if n and n != "torch-unsorted"),
    ]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {sorted(BACKENDS)}")
    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-embed-"))
    try:
        sets = [s for s in args.sets.split(",") if s]
        result = run(args.corpus, args.limit, sets, work, names)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


def _settings(work: Path, name: str, **extra: Any) -> Any:
    from ragcycle.settings import load_settings

    return load_settings(
        config_file=None,
        data_dir=work / name,
        progress=False,
        embedding={**BACKENDS[name], "cache": False},
        **extra,
    )


def corpus_texts(corpus: Path, limit: int) -> list[str]:
    """What ingestion embeds for ``corpus``: its chunks' indexed text, default chunking."""
    from ragcycle.settings import load_settings
    from tasks.chunking import chunk_within_limit, flatten_chunks
    from tasks.embedding import token_budget
    from tasks.loading import load_documents, walk_sources

    settings = load_settings(config_file=None)
    sources, _ = walk_sources([corpus], settings.ingest.extensions)
    documents, _ = load_documents(sources[:limit] if limit else sources)
    budget = token_budget(str(settings.embedding_model_path()))
    kept, chunks, _ = chunk_within_limit(documents, settings.chunking, 10_000, budget)
    return [chunk.indexed_text for chunk in flatten_chunks(kept, chunks)]


def raw_rate(name: str, texts: list[str], work: Path) -> float:
    from tasks.embedding import embedder_from_settings

    embedder = embedder_from_settings(_settings(work, name))
    embedder.embed(texts[:64])  # load (and for ONNX, export) outside the clock
    started = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - started)


def flow_rate(name: str, corpus: Path, limit: int, work: Path) -> dict[str, float]:
    from flows.ingest import IngestRequest, ingest

    source = corpus
    if limit:
        from tasks.loading import walk_sources

        source = work / f"corpus-{name}"
        for item in walk_sources([corpus], [".pdf", ".md", ".txt", ".html", ".htm"])[0][:limit]:
            target = source / item.doc_id
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(item.path, target)
    overrides = {
        "data_dir": str(work / f"flow-{name}"),
        "progress": False,
        "embedding": {**BACKENDS[name], "cache": False},
        "ingest": PIPELINE.get(name, {}),
    }
    report = ingest(IngestRequest(paths=[str(source)], overrides=overrides))
    return {
        "chunks": report["chunks"]["written"],
        "seconds": report["seconds"],
        "chunks_per_second": report["chunks"]["written"] / report["seconds"],
        "embed_seconds": report["stage_seconds"].get("embed", 0.0),
    }


def ndcg(name: str, folder: Path, work: Path) -> float:
    from flows.benchmark import BeirRequest, benchmark_beir

    overrides = {
        "data_dir": str(work / "beir"),
        "progress": False,
        "embedding": {**BACKENDS[name], "cache": False},
    }
    return float(
        benchmark_beir(BeirRequest(folder=str(folder), overrides=overrides))["metrics"][
            "ndcg_at_10"
        ]
    )


def run(corpus: Path, limit: int, sets: list[str], work: Path, names: list[str]) -> dict[str, Any]:
    texts = corpus_texts(corpus, limit)
    result: dict[str, Any] = {"corpus": str(corpus), "chunks": len(texts), "backends": {}}
    folders = {name: SHARED_BENCHMARKS / name for name in sets}
    missing = [name for name, folder in folders.items() if not folder.is_dir()]
    if missing:
        result["skipped_sets"] = {
            name: "absent: ../shared/ is not beside this checkout" for name in missing
        }
    for name in names:
        entry: dict[str, Any] = {"raw_chunks_per_second": raw_rate(name, texts, work)}
        entry["flow"] = flow_rate(name, corpus, limit, work)
        entry["flow_share_of_raw"] = (
            entry["flow"]["chunks_per_second"] / entry["raw_chunks_per_second"]
        )
        # sorting changes the batches, not the vectors: the unsorted path scores as torch does
        entry["ndcg_at_10"] = {
            set_name: ndcg("torch" if name == "torch-unsorted" else name, folder, work)
            for set_name, folder in folders.items()
            if set_name not in missing
        }
        result["backends"][name] = entry
    base = result["backends"]["torch-unsorted"]
    # nDCG is the same model's whatever the batching, so the baseline's stands in for torch's
    reference = base["ndcg_at_10"]
    eligible = {
        name: entry
        for name, entry in result["backends"].items()
        if all(abs(entry["ndcg_at_10"][s] - reference[s]) <= NDCG_BOUND for s in reference)
    }
    fastest = max(eligible, key=lambda name: eligible[name]["flow"]["chunks_per_second"])
    result["fastest_within_bound"] = fastest
    result["speedup"] = (
        eligible[fastest]["flow"]["chunks_per_second"] / base["flow"]["chunks_per_second"]
    )
    result["raw_speedup"] = (
        eligible[fastest]["raw_chunks_per_second"] / base["raw_chunks_per_second"]
    )
    return result


def print_table(result: dict[str, Any]) -> None:
    print(f"{result['chunks']} chunks of {result['corpus']}")
    print(f"{'backend':<15}{'raw/s':>9}{'flow/s':>9}{'flow/raw':>10}  nDCG@10")
    for name, entry in result["backends"].items():
        scores = ", ".join(f"{s} {v:.4f}" for s, v in entry["ndcg_at_10"].items())
        print(
            f"{name:<15}{entry['raw_chunks_per_second']:>9.1f}"
            f"{entry['flow']['chunks_per_second']:>9.1f}{entry['flow_share_of_raw']:>10.2f}  {scores}"
        )
    print(
        f"speedup {result['speedup']:.2f}x (flow, {result['fastest_within_bound']} vs"
        f" torch-unsorted); raw {result['raw_speedup']:.2f}x"
    )


if __name__ == "__main__":
    main()
