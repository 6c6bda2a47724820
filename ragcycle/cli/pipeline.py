"""The RAG pipeline's commands: inspect the configuration, ingest, ask, evaluate, benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ragcycle import jsonout
from ragcycle.cli.common import (
    ConfigOption,
    JsonOption,
    RetrievalOption,
    app,
    benchmark_app,
    config_app,
    console,
    echo_json,
    err_console,
    fail,
    retrieval_overrides,
    settings_for,
    settings_for_flows,
)
from ragcycle.errors import RagcycleError


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings (file + RAGCYCLE_* env + defaults), secrets masked."""
    settings = settings_for(config)
    data = settings.redacted()
    data["derived"] = {
        "chroma": settings.chroma.url or str(settings.chroma_path),
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "prefect": settings.prefect.api_url or f"ephemeral (PREFECT_HOME={settings.prefect_home})",
        "chunking_hash": settings.chunking.config_hash(),
    }
    if as_json:
        echo_json(data, indent=2)
        return
    table = Table("setting", "value", title="ragcycle settings")
    for key, value in _flatten(data):
        table.add_row(key, str(value))
    console.print(table)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Files or directories, searched recursively (default: lifecycle.sources)."
        ),
    ] = None,
    collection: Annotated[
        str | None, typer.Option(help="Target collection (default: chroma.collection).")
    ] = None,
    prune: Annotated[
        bool | None,
        typer.Option(
            "--prune/--no-prune",
            help="Remove chunks of files deleted from a directory (default: ingest.prune).",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load, chunk, embed and index documents; re-runs only redo what changed.

    PDFs (page by page), Markdown, text and HTML. Files that cannot be read (corrupt, encrypted,
    image-only, empty) are listed with a reason and skipped; they never stop the run.
    """
    missing = [str(path) for path in paths or [] if not path.exists()]
    if missing:
        raise typer.BadParameter(f"no such file or directory: {', '.join(missing)}")
    settings = settings_for_flows(config, progress=not as_json)
    from flows.ingest import IngestRequest
    from flows.ingest import ingest as ingest_flow

    request = IngestRequest(
        paths=[str(path) for path in paths or []],
        collection=collection,
        prune=prune,
        config_file=str(config) if config else None,
        overrides={"progress": settings.progress},
    )
    try:
        report = ingest_flow(request)
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        echo_json(report)
        return
    _print_ingest_report(report)


def _print_ingest_report(report: dict[str, Any]) -> None:
    docs, chunks = report["documents"], report["chunks"]
    console.print(
        f"[bold]{report['collection']}[/bold]: "
        + ", ".join(f"{value} {key}" for key, value in docs.items())
        + f" documents; {chunks['written']} chunks written, {chunks['deleted']} deleted,"
        f" {chunks['embedded']} embedded, {chunks['total']} in the collection"
        f" ({report['seconds']:.1f} s)"
    )
    if report["failed"]:
        table = Table("file", "status", "reason", title="Not indexed")
        for item in report["failed"]:
            table.add_row(item["doc_id"], item["status"], item["reason"])
        console.print(table)
    for item in report["warnings"]:
        where = item.get("doc_id") or item.get("path")
        console.print(f"[yellow]warning:[/yellow] {where}: {item['warning']}", highlight=False)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    k: Annotated[int | None, typer.Option("--k", "-k", help="Chunks to retrieve.")] = None,
    where: Annotated[
        str | None,
        typer.Option(help='Chroma metadata filter as JSON, e.g. \'{"format": "pdf"}\'.'),
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection to ask.")] = None,
    retrieval: RetrievalOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the index, citing file, page and score of each source.

    Runs in-process (no Prefect round trip) and appends the question to the query log the
    monitor reads.
    """
    settings = settings_for(config)
    try:
        filter_ = json.loads(where) if where else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--where is not valid JSON: {exc}") from None
    from flows.ask import Asker

    try:
        mode = retrieval.value if retrieval else None
        result = Asker(settings, collection).ask(question, k, filter_, retrieval=mode).as_dict()
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        keys = (
            "answer",
            "sources",
            "latency_ms",
            "tokens",
            "generator",
            "guardrails",
            "index_version",
            "query_id",
            "trace_id",
            "cost_usd",
        )
        echo_json({key: result[key] for key in keys})
        return
    # Answers, reasons and source names come from documents: printed as plain text, never as
    # Rich markup (a document holding "[/dim]" crashed the command, "[link=...]" made links).
    console.print(Text(result["answer"]))
    guardrails = result["guardrails"]
    if guardrails["status"] != "pass":
        colour = "red" if guardrails["status"] == "fail" else "yellow"
        for reason in guardrails["reasons"]:
            console.print(Text.assemble((f"{guardrails['status']}:", colour), f" {reason}"))
    for number, source in enumerate(result["sources"], start=1):
        page = f", page {source['page']}" if source["page"] else ""
        console.print(Text(f"  [{number}] {source['source']}{page} (score {source['score']:.3f})"))
    latency = result["latency_ms"]
    console.print(
        f"[dim]{latency['total']:.0f} ms (retrieve {latency['retrieve']:.0f}, generate"
        f" {latency['generate']:.0f}); tokens {result['tokens']}; {result['prompt']};"
        f" {result['generator']['backend']}:{result['generator']['model']};"
        f" query {result['query_id']} (ragcycle audit), trace {result['trace_id']}[/dim]"
    )


@app.command("eval")
def eval_(
    dataset: Annotated[
        Path, typer.Argument(help="Golden JSONL dataset.", exists=True, dir_okay=False)
    ],
    k: Annotated[int | None, typer.Option("--k", "-k", help="Chunks per question.")] = None,
    repeats: Annotated[
        int | None, typer.Option(help="Answer each question N times (sampling backends).")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection to evaluate.")] = None,
    retrieval: RetrievalOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the index on a golden dataset; one MLflow run per evaluation.

    Each JSONL line: `{"question", "expected_answer" (null: not answerable), "expected_sources",
    "pages"}`. Scores retrieval (hit rate, recall, precision, MRR, nDCG at k), answers
    (F1, similarity, faithfulness, relevance, no-answer behaviour), guardrails, latency and cost.
    """
    settings_for_flows(config, progress=not as_json)
    from flows.evaluate import EvaluateRequest, evaluate

    request = EvaluateRequest(
        dataset=str(dataset),
        k=k,
        repeats=repeats,
        collection=collection,
        config_file=str(config) if config else None,
        overrides=retrieval_overrides(retrieval),
    )
    try:
        result = evaluate(request)
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        keys = ("run_id", "experiment", "metrics", "questions", "skipped_lines", "failed_rows")
        echo_json({key: result[key] for key in keys} | {"judge": result["judge"]})
        return
    table = Table(
        "metric", "value", "95% CI", title=f"{result['experiment']} (run {result['run_id']})"
    )
    for name, value in result["metrics"].items():
        low, high = result["ci"].get(name, (None, None))
        interval = f"[{low:.3f}, {high:.3f}]" if low is not None and low == low else ""
        table.add_row(name, f"{value:.4f}", interval)
    console.print(table)
    if unreliable := result["unreliable_metrics"]:
        console.print(
            "[yellow]judge metrics left out (their judge failed calibration; logged in MLflow,"
            f" never used by the gate or the monitor):[/yellow] {', '.join(unreliable)}"
        )
    for row in result["failed_rows"]:
        err_console.print(f"[yellow]line {row['line']}[/yellow]: {row['error']}")


@benchmark_app.command("beir")
def benchmark_beir(
    folder: Annotated[
        Path,
        typer.Argument(
            help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.",
            exists=True,
            file_okay=False,
        ),
    ],
    split: Annotated[str, typer.Option(help="qrels split to score.")] = "test",
    k: Annotated[int, typer.Option("--k", "-k", help="Cut-off of the metrics.")] = 10,
    chunk: Annotated[
        bool,
        typer.Option(help="Chunk documents with the configured chunker instead of whole rows."),
    ] = False,
    retrieval: RetrievalOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score retrieval on a BEIR set (nDCG, recall, MRR at k), logged to MLflow.

    Mirrors MTEB (one chunk per document, `title + " " + text`, exact-recall HNSW) so the
    embedding model's published numbers are reproducible; the corpus gets its own collection
    and is embedded once (re-runs reuse it).
    """
    settings = settings_for_flows(config, progress=not as_json)
    from flows.benchmark import BeirRequest
    from flows.benchmark import benchmark_beir as beir_flow

    request = BeirRequest(
        folder=str(folder),
        split=split,
        k=k,
        chunking=settings.chunking.model_dump() if chunk else None,
        config_file=str(config) if config else None,
        overrides=retrieval_overrides(retrieval),
    )
    try:
        result = beir_flow(request)
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        echo_json(result)
        return
    table = Table("metric", "value", title=f"{folder.name}/{split}: {result['queries']} queries")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.5f}")
    console.print(table)
    console.print(
        f"{result['docs']} documents, {result['seconds']:.1f} s, MLflow run {result['run_id']}"
    )


@app.command()
def audit(
    query_id: Annotated[int, typer.Argument(help="The query_id an answer came with.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Why did the system say this, from what: the answer as served, its sources and chunks,
    the guardrails' verdict, index version, prompt, model, latency, tokens and feedback."""
    settings = settings_for(config)
    from tasks.query_log import QueryLog

    record = QueryLog(settings.query_log_path).get(query_id)
    if record is None:
        raise fail(RagcycleError(f"no answer with query_id {query_id} in the query log"))
    if as_json:
        echo_json(record)
        return
    console.print_json(jsonout.dumps(record))
