"""Ingestion benchmark: the ingest flow against a bare loop, in one process, as ratios.

The bare loop is what a hand-rolled script does: pypdf/loaders, the same chunker, ``model.encode``
and ``collection.add`` — no Prefect, no cache, no incremental bookkeeping. Both run after the
model and Prefect are warm, each into a fresh data dir, so the ratio isolates ragcycle's overhead.
A third run repeats the flow with nothing changed, reported as a share of the full run.

    python bench/ingest.py [--corpus DIR] [--limit N] [--json]
    python bench/ingest.py --memory [--corpus DIR] [--json]

Targets (issue 2): flow/bare <= 1.10; unchanged re-run <= 3 % of the full ingest.

``--memory`` measures peak resident memory instead: `ragcycle ingest` of a quarter of the corpus
and of all of it, each in a fresh process; memory bounded by the partition, not the corpus,
shows as a ratio near 1 (issue 14).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import corpus_parser


def main() -> None:
    parser = corpus_parser(__doc__)
    parser.add_argument("--memory", action="store_true", help="peak RSS, quarter vs whole")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragcycle-bench-"))
    try:
        result = memory(args.corpus, work) if args.memory else run(args.corpus, args.limit, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    elif args.memory:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)


def memory(corpus: Path, work: Path) -> dict[str, Any]:
    """Peak RSS of ingesting a quarter of the corpus and all of it, each in a fresh process."""
    from tasks.loading import discover_sources

    sources = discover_sources([corpus], [".pdf", ".md", ".markdown", ".txt", ".html", ".htm"])
    result: dict[str, Any] = {"corpus": str(corpus), "files": len(sources)}
    for name, share in (("quarter", 4), ("whole", 1)):
        subset = work / name
        for source in sources[: max(1, len(sources) // share)]:
            target = subset / source.doc_id
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source.path, target)
        command = [sys.executable, "-m", "ragcycle.cli", "ingest", str(subset), "--json"]
        env = {"RAGCYCLE_DATA_DIR": str(work / f"data-{name}"), "PATH": "/usr/bin:/bin"}
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout)
        result[name] = {
            "files": len(list(subset.rglob("*.*"))),
            "chunks": report["chunks"]["total"],
            "seconds": round(time.perf_counter() - started, 1),
            # Children are waited for one at a time, and their peak only grows.
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
        }
    result["whole_over_quarter"] = result["whole"]["peak_rss_mb"] / result["quarter"]["peak_rss_mb"]
    return result


def run(corpus: Path, limit: int, work: Path) -> dict[str, Any]:
    from ragcycle.runtime import configure_environment
    from ragcycle.settings import load_settings

    base = load_settings(data_dir=work / "warm", progress=False)
    configure_environment(base, override=True)

    from flows.ingest import IngestRequest, ingest
    from tasks.chunking import chunk_document
    from tasks.embedding import embedder_from_settings, encode_batch_size
    from tasks.indexing.store import open_chroma_client
    from tasks.loading import discover_sources, load_document

    sources = discover_sources([corpus], base.ingest.extensions)
    if limit:
        sources = sources[:limit]
    subset = work / "corpus"
    for source in sources:
        target = subset / source.doc_id
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.path, target)

    # Warm-up: pay torch import, model load and Prefect's ephemeral server start outside the timings.
    embedder = embedder_from_settings(base)
    model = embedder.model
    model.encode(["warm up"])
    warm = subset / "_warm"
    warm.mkdir()
    (warm / "w.md").write_text("warm up text for the benchmark " * 5)
    ingest(
        IngestRequest(
            paths=[str(warm)], overrides={"data_dir": str(work / "warm"), "progress": False}
        )
    )
    shutil.rmtree(warm)

    # Bare loop.
    bare_settings = load_settings(data_dir=work / "bare", progress=False)
    started = time.perf_counter()
    client = open_chroma_client(bare_settings)
    collection = client.get_or_create_collection(
        "bare",
        configuration={"hnsw": bare_settings.chroma.hnsw.model_dump()},
        embedding_function=None,  # type: ignore[arg-type]
    )
    bare_docs = bare_chunks = 0
    for source in discover_sources([subset], base.ingest.extensions):
        try:
            document = load_document(source)
        except Exception:
            continue
        chunks = chunk_document(document, bare_settings.chunking)
        if not chunks:
            continue
        vectors = model.encode(
            [c.text for c in chunks],
            batch_size=encode_batch_size(bare_settings.embedding),
            normalize_embeddings=True,
        )
        for start in range(0, len(chunks), 1000):
            part = chunks[start : start + 1000]
            collection.add(
                ids=[c.chunk_id for c in part],
                embeddings=vectors[start : start + 1000],
                documents=[c.text for c in part],
                metadatas=[{"doc_id": c.doc_id, "page_start": c.page_start} for c in part],
            )
        bare_docs += 1
        bare_chunks += len(chunks)
    bare_seconds = time.perf_counter() - started

    # The flow, full run then unchanged re-run.
    overrides = {"data_dir": str(work / "flow"), "progress": False}
    started = time.perf_counter()
    report = ingest(IngestRequest(paths=[str(subset)], overrides=overrides))
    flow_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rerun = ingest(IngestRequest(paths=[str(subset)], overrides=overrides))
    rerun_seconds = time.perf_counter() - started

    flow_docs = report["documents"]["new"]
    flow_chunks = report["chunks"]["written"]
    if (flow_docs, flow_chunks) != (bare_docs, bare_chunks):
        raise SystemExit(
            f"flow and bare loop disagree: {flow_docs, flow_chunks} vs {bare_docs, bare_chunks}"
        )
    return {
        "corpus": str(corpus),
        "files": len(sources),
        "documents": flow_docs,
        "chunks": flow_chunks,
        "bare": {
            "seconds": bare_seconds,
            "docs_per_s": bare_docs / bare_seconds,
            "chunks_per_s": bare_chunks / bare_seconds,
        },
        "flow": {
            "seconds": flow_seconds,
            "docs_per_s": flow_docs / flow_seconds,
            "chunks_per_s": flow_chunks / flow_seconds,
            "stage_seconds": report["stage_seconds"],
        },
        "flow_over_bare": flow_seconds / bare_seconds,
        "rerun": {
            "seconds": rerun_seconds,
            "share_of_full": rerun_seconds / flow_seconds,
            "embedded": rerun["chunks"]["embedded"],
        },
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"corpus {result['corpus']}: {result['files']} files, {result['documents']} documents indexed, {result['chunks']} chunks"
    )
    for name in ("bare", "flow"):
        row = result[name]
        print(
            f"  {name:5s} {row['seconds']:8.1f} s  {row['docs_per_s']:6.2f} docs/s  {row['chunks_per_s']:6.1f} chunks/s"
        )
    print(f"  flow/bare            {result['flow_over_bare']:.3f}   (target <= 1.10)")
    rerun = result["rerun"]
    print(
        f"  unchanged re-run     {rerun['seconds']:.2f} s = {100 * rerun['share_of_full']:.1f} % of the full run (target <= 3 %), {rerun['embedded']} embedded"
    )
    print(f"  flow stages: {result['flow']['stage_seconds']}")


if __name__ == "__main__":
    main()
