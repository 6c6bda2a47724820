"""The ``ragcycle`` command line.

Heavy libraries (torch, chromadb, mlflow, prefect) are imported inside commands, after the
environment is configured, so ``ragcycle --help`` stays fast and offline settings apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ragcycle.errors import RagcycleError
from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings

app = typer.Typer(
    name="ragcycle",
    help=(
        "Run the lifecycle of a RAG application: ingest documents into Chroma, ask questions,"
        " evaluate runs in MLflow, and keep quality up over time with Prefect flows."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
benchmark_app = typer.Typer(help="Standard retrieval benchmarks.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")
index_app = typer.Typer(help="Index versions: list, promote, roll back.", no_args_is_help=True)
app.add_typer(index_app, name="index")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="ragcycle.toml to read (default: $RAGCYCLE_CONFIG or ./ragcycle.toml).",
        dir_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object, for scripts.")]

console = Console()
err_console = Console(stderr=True)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command; configuration errors end the command with exit code 1."""
    try:
        settings = load_settings(config, **overrides)
    except RagcycleError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    configure_environment(settings)
    return settings


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


@config_app.command("show")
def config_show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the effective settings (file + RAGCYCLE_* env + defaults), secrets masked."""
    settings = _settings(config)
    data = settings.redacted()
    data["derived"] = {
        "chroma": settings.chroma.url or str(settings.chroma_path),
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "prefect": settings.prefect.api_url or f"ephemeral (PREFECT_HOME={settings.prefect_home})",
        "chunking_hash": settings.chunking.config_hash(),
    }
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
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
    settings = _settings(config, progress=not as_json)
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
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(report))
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


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    k: Annotated[int | None, typer.Option("--k", "-k", help="Chunks to retrieve.")] = None,
    where: Annotated[
        str | None,
        typer.Option(help='Chroma metadata filter as JSON, e.g. \'{"format": "pdf"}\'.'),
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection to ask.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a question from the index, citing file, page and score of each source.

    Runs in-process (no Prefect round trip) and appends the question to the query log the
    monitor reads.
    """
    settings = _settings(config)
    try:
        filter_ = json.loads(where) if where else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--where is not valid JSON: {exc}") from None
    from flows.ask import Asker

    try:
        result = Asker(settings, collection).ask(question, k, filter_).as_dict()
    except RagcycleError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(
            json.dumps({key: result[key] for key in ("answer", "sources", "latency_ms", "tokens")})
        )
        return
    console.print(result["answer"])
    for number, source in enumerate(result["sources"], start=1):
        page = f", page {source['page']}" if source["page"] else ""
        console.print(f"  [{number}] {source['source']}{page} (score {source['score']:.3f})")
    latency = result["latency_ms"]
    console.print(
        f"[dim]{latency['total']:.0f} ms (retrieve {latency['retrieve']:.0f}, generate"
        f" {latency['generate']:.0f}); tokens {result['tokens']}; {result['prompt']}[/dim]"
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
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the index on a golden dataset; one MLflow run per evaluation.

    Each JSONL line: `{"question", "expected_answer" (null: not answerable), "expected_sources",
    "pages"}`. Scores retrieval (hit rate, recall, precision, MRR, nDCG at k), answers
    (F1, similarity, faithfulness, relevance, no-answer behaviour), guardrails, latency and cost.
    """
    _settings(config, progress=not as_json)
    from flows.evaluate import EvaluateRequest, evaluate

    request = EvaluateRequest(
        dataset=str(dataset),
        k=k,
        repeats=repeats,
        collection=collection,
        config_file=str(config) if config else None,
    )
    try:
        result = evaluate(request)
    except RagcycleError as exc:
        raise _fail(exc) from None
    if as_json:
        keys = ("run_id", "experiment", "metrics", "questions", "failed_rows")
        typer.echo(json.dumps({key: result[key] for key in keys}, default=_json_number))
        return
    table = Table(
        "metric", "value", "95% CI", title=f"{result['experiment']} (run {result['run_id']})"
    )
    for name, value in result["metrics"].items():
        low, high = result["ci"].get(name, (None, None))
        interval = f"[{low:.3f}, {high:.3f}]" if low is not None and low == low else ""
        table.add_row(name, f"{value:.4f}", interval)
    console.print(table)
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
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score retrieval on a BEIR set (nDCG, recall, MRR at k), logged to MLflow.

    Mirrors MTEB (one chunk per document, `title + " " + text`, exact-recall HNSW) so the
    embedding model's published numbers are reproducible; the corpus gets its own collection
    and is embedded once (re-runs reuse it).
    """
    settings = _settings(config, progress=not as_json)
    from flows.benchmark import BeirRequest
    from flows.benchmark import benchmark_beir as beir_flow

    request = BeirRequest(
        folder=str(folder),
        split=split,
        k=k,
        chunking=settings.chunking.model_dump() if chunk else None,
        config_file=str(config) if config else None,
    )
    try:
        result = beir_flow(request)
    except RagcycleError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result, default=_json_number))
        return
    table = Table("metric", "value", title=f"{folder.name}/{split}: {result['queries']} queries")
    for name, value in result["metrics"].items():
        table.add_row(name, f"{value:.5f}")
    console.print(table)
    console.print(
        f"{result['docs']} documents, {result['seconds']:.1f} s, MLflow run {result['run_id']}"
    )


@app.command()
def reindex(
    reason: Annotated[str, typer.Option(help="Why; recorded with the decision.")] = "manual",
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Sources (default: lifecycle.sources).")
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(help="Golden set for the gate (default: lifecycle.golden_dataset)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Build even if the same target is live.")] = False,
    deployment: Annotated[
        bool,
        typer.Option(
            "--deployment",
            help="Submit the deployed `reindex` flow to the configured Prefect server instead"
            " of running it here.",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a new index version, evaluate it against the live one, promote it if it is no worse.

    The live version keeps answering while the candidate is built; a rejected or failed build
    leaves it untouched. Re-running for a target already live (or being built) is a no-op.
    """
    settings = _settings(config, progress=not as_json)
    parameters = {
        "reason": reason,
        "paths": [str(p) for p in paths] if paths else None,
        "dataset": str(dataset) if dataset else None,
        "force": force,
        "config_file": str(config) if config else None,
    }
    if deployment:
        if not settings.prefect.api_url:
            raise typer.BadParameter("--deployment needs prefect.api_url (a Prefect server)")
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        submitted = run_deployment("reindex/reindex", parameters={"request": parameters}, timeout=0)
        if not isinstance(submitted, FlowRun):  # only the async API returns a coroutine
            raise _fail(RagcycleError("run_deployment returned no flow run"))
        result: dict[str, Any] = {"flow_run_id": str(submitted.id), "state": submitted.state_name}
    else:
        from flows.reindex import ReindexRequest
        from flows.reindex import reindex as reindex_flow

        try:
            result = reindex_flow(ReindexRequest(**parameters))
        except RagcycleError as exc:
            raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result, default=_json_number))
        return
    console.print(f"[bold]{result.get('decision', result.get('state'))}[/bold]")
    for reason_line in result.get("reasons", []):
        console.print(f"  - {reason_line}")


@app.command()
def monitor(
    dataset: Annotated[
        Path | None, typer.Option(help="Golden set (default: lifecycle.golden_dataset).")
    ] = None,
    act: Annotated[
        bool, typer.Option("--act/--no-act", help="Trigger a reindex when a check fails.")
    ] = True,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the live index; check thresholds, the drop against its baseline, corpus and query
    drift; on a failed check, trigger the reindex (an event on a server, a direct run locally)."""
    _settings(config, progress=not as_json)
    from flows.monitor import MonitorRequest
    from flows.monitor import monitor as monitor_flow

    try:
        result = monitor_flow(
            MonitorRequest(
                dataset=str(dataset) if dataset else None,
                act=act,
                config_file=str(config) if config else None,
            )
        )
    except RagcycleError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result, default=_json_number))
        return
    console.print(f"[bold]{result['decision']}[/bold] (live version {result['live_version']})")
    for reason_line in result["reasons"]:
        console.print(f"  - {reason_line}")


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Serve the deployments (ingest, evaluate, monitor on its cron, reindex on quality drops)
    from this process against the configured Prefect server, until interrupted."""
    settings = _settings(config)
    if not settings.prefect.api_url:
        raise typer.BadParameter("serve needs a Prefect server: set prefect.api_url")
    from prefect import serve as prefect_serve

    from flows.deployments import build_deployments

    prefect_serve(*build_deployments(settings, str(config) if config else None))


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Live version, last evaluation and last lifecycle decision, from MLflow."""
    settings = _settings(config)
    registry = _registry(settings)
    from tasks.tracking import latest_runs

    live = registry.live()
    report = {
        "index": settings.chroma.collection,
        "live": live.as_dict() if live else None,
        **latest_runs(settings.mlflow_tracking_uri, settings.mlflow.experiment_prefix),
    }
    if as_json:
        typer.echo(json.dumps(report, default=_json_number))
        return
    console.print_json(json.dumps(report, default=_json_number))


def _registry(settings: Settings) -> Any:
    from tasks.tracking import mlflow_client
    from tasks.versions import VersionRegistry

    mlflow_client(settings.mlflow_tracking_uri)
    return VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)


@index_app.command("list")
def index_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every version of the index, with its status and aliases (champion = live)."""
    versions = [v.as_dict() for v in _registry(_settings(config)).versions()]
    if as_json:
        typer.echo(json.dumps(versions))
        return
    table = Table("version", "collection", "status", "aliases", "reason", title="index versions")
    for v in versions:
        table.add_row(
            str(v["version"]),
            v["collection"],
            v["status"],
            ",".join(v["aliases"]),
            v.get("reason", ""),
        )
    console.print(table)


@index_app.command("promote")
def index_promote(
    version: Annotated[int, typer.Argument(help="Version number to make live.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a version live by hand (the live one becomes `previous`)."""
    try:
        promoted = _registry(_settings(config)).promote(version)
    except RagcycleError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(promoted.as_dict()) if as_json else f"version {version} is live")


@index_app.command("rollback")
def index_rollback(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make the previous version live again."""
    try:
        restored = _registry(_settings(config)).rollback()
    except RagcycleError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps(restored.as_dict()) if as_json else f"version {restored.version} is live")


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) else str(value)


SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "samples" / "corpus"
SAMPLE_GOLDEN = SAMPLE_CORPUS.parent / "golden.jsonl"


@app.command()
def demo(
    corpus: Annotated[
        Path, typer.Option(help="Documents to use (default: the repository's sample corpus).")
    ] = SAMPLE_CORPUS,
    dataset: Annotated[
        Path, typer.Option(help="Golden set for the corpus.", dir_okay=False)
    ] = SAMPLE_GOLDEN,
    config: ConfigOption = None,
) -> None:
    """Walk the whole lifecycle on embedded defaults (no server needed).

    1. build and promote the first index version, 2. evaluate it (MLflow), 3. add a document the
    golden set asks about, 4. the monitor notices the corpus drift and 5. triggers a reindex that
    is evaluated against the live version and promoted, 6. the evaluation recovers. Ends with a
    plot of the gate metrics and the commands that open the MLflow and Prefect UIs on this data.
    """
    if not corpus.is_dir():
        raise typer.BadParameter(f"corpus folder {corpus} does not exist")
    settings = _settings(config)
    import shutil

    from flows.evaluate import EvaluateRequest, evaluate
    from flows.monitor import MonitorRequest, monitor
    from flows.reindex import ReindexRequest, reindex
    from tasks.tracking import plot_metric_history

    workdir = settings.data_dir.resolve() / "demo"
    live_corpus, held_back = workdir / "corpus", workdir / "held-back"
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(corpus, live_corpus)
    held_back.mkdir(parents=True)
    moved = _hold_back_one(live_corpus, held_back, dataset)
    overrides: dict[str, Any] = {
        "lifecycle": {"sources": [str(live_corpus)], "golden_dataset": str(dataset)},
        "chroma": {"collection": "demo"},
    }
    config_file = str(config) if config else None

    def show(title: str, metrics: dict[str, Any]) -> None:
        keys = ("hit_rate_at_5", "mrr", "answer_similarity", "abstained_when_unanswerable")
        console.print(f"{title}: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys))

    console.rule(f"[bold]1. First index version (without {moved.name})")
    first = reindex(
        ReindexRequest(
            reason="demo: initial build", force=True, config_file=config_file, overrides=overrides
        )
    )
    console.print(f"decision: {first['decision']} (version {first.get('version')})")
    console.rule("[bold]2. Evaluate the live version (logged to MLflow)")
    before = evaluate(
        EvaluateRequest(dataset=str(dataset), config_file=config_file, overrides=overrides)
    )
    show("before", before["metrics"])
    console.rule(f"[bold]3. The corpus changes: {moved.name} arrives")
    shutil.move(str(held_back / moved.name), moved)
    console.rule("[bold]4-5. The monitor notices and triggers the reindex")
    checked = monitor(MonitorRequest(config_file=config_file, overrides=overrides))
    console.print(f"monitor: {checked['decision']}: " + "; ".join(checked["reasons"]))
    triggered = checked.get("triggered") or {}
    console.print(f"reindex: {triggered.get('decision')} (version {triggered.get('version')})")
    console.rule("[bold]6. Evaluate again")
    after = evaluate(
        EvaluateRequest(dataset=str(dataset), config_file=config_file, overrides=overrides)
    )
    show("before", before["metrics"])
    show("after ", after["metrics"])
    plot = plot_metric_history(
        settings.mlflow_tracking_uri,
        after["experiment"],
        ["hit_rate_at_5", "mrr", "answer_similarity"],
        workdir / "gate_metrics.png",
    )
    console.rule("[bold]Where to look")
    data_dir = settings.data_dir.resolve()
    console.print(
        f"Plot of the gate metrics: {plot}\n"
        f"MLflow UI:  {_bin('mlflow')} ui --backend-store-uri {settings.mlflow_tracking_uri}"
        f" --host 127.0.0.1 --port 5000   (http://127.0.0.1:5000)\n"
        f"Prefect UI: PREFECT_HOME={settings.prefect_home} {_bin('prefect')} server start"
        " --host 127.0.0.1   (http://127.0.0.1:4200)\n"
        f"Index versions: {_bin('ragcycle')} index list   (data in {data_dir})"
    )


def _hold_back_one(corpus: Path, held_back: Path, dataset: Path) -> Path:
    """Move out the document most golden questions cite, so adding it back shows a recovery."""
    from collections import Counter

    cited: Counter[str] = Counter()
    for line in dataset.read_text().splitlines():
        if line.strip():
            cited.update(json.loads(line).get("expected_sources") or [])
    for name, _ in cited.most_common():
        matches = sorted(corpus.rglob(name))
        if matches:
            target = matches[0]
            target.rename(held_back / target.name)
            return target
    raise typer.BadParameter(f"no document of {corpus} is cited by {dataset}")


def _bin(name: str) -> str:
    """The path of a console script installed beside this interpreter."""
    import sys

    return str(Path(sys.executable).parent / name)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
