"""The lifecycle's commands: reindex, monitor, serve the deployments, status, index versions,
and the demo walkthrough."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ragcycle import jsonout
from ragcycle.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    console,
    echo_json,
    fail,
    index_app,
    registry_for,
    script_path,
    settings_for,
    settings_for_flows,
)
from ragcycle.errors import ConfigError, RagcycleError


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
    candidate: Annotated[
        list[str] | None,
        typer.Option(help="Try only this lifecycle.candidates entry (repeatable; default: all)."),
    ] = None,
    serial: Annotated[
        bool, typer.Option(help="Build and evaluate contenders one at a time.")
    ] = False,
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
    settings = settings_for_flows(config, progress=not as_json)
    parameters = {
        "reason": reason,
        "paths": [str(p) for p in paths] if paths else None,
        "dataset": str(dataset) if dataset else None,
        "force": force,
        "candidates": candidate or None,
        "parallel": not serial,
        "config_file": str(config) if config else None,
    }
    if deployment:
        if not settings.prefect.api_url:
            raise typer.BadParameter("--deployment needs prefect.api_url (a Prefect server)")
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment

        submitted = run_deployment("reindex/reindex", parameters={"request": parameters}, timeout=0)
        if not isinstance(submitted, FlowRun):  # only the async API returns a coroutine
            raise fail(RagcycleError("run_deployment returned no flow run"))
        result: dict[str, Any] = {"flow_run_id": str(submitted.id), "state": submitted.state_name}
    else:
        from flows.reindex import ReindexRequest
        from flows.reindex import reindex as reindex_flow

        try:
            result = reindex_flow(ReindexRequest(**parameters))
        except RagcycleError as exc:
            raise fail(exc) from None
    if as_json:
        echo_json(result)
        return
    console.print(f"[bold]{result.get('decision', result.get('state'))}[/bold]")
    for reason_line in result.get("reasons", []):
        console.print(f"  - {reason_line}")
    if result.get("candidates"):
        console.print(_candidates_table(result["candidates"]))


def _candidates_table(candidates: list[dict[str, Any]]) -> Table:
    """Quality, cost and latency of every contender side by side."""
    table = Table(title="Candidates")
    for column in ("candidate", "version", "config", "paired deltas (CI)", "USD/q", "p95 ms"):
        table.add_column(column)
    table.add_column("verdict")
    for item in candidates:
        deltas = "\n".join(
            f"{d['metric']} {d['delta']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
            for d in item["deltas"]
            if d["delta"] is not None
        )
        table.add_row(
            item["name"],
            str(item["version"]),
            item["config_summary"],
            deltas or "-",
            f"{item['cost_usd_per_question']:.2g}",
            f"{item['latency_p95_ms']:.0f}",
            item["verdict"],
        )
    return table


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
    settings_for_flows(config, progress=not as_json)
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
        raise fail(exc) from None
    if as_json:
        echo_json(result)
        return
    console.print(f"[bold]{result['decision']}[/bold] (live version {result['live_version']})")
    for reason_line in result["reasons"]:
        console.print(f"  - {reason_line}")


@app.command("prefect-yaml")
def prefect_yaml(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Render prefect.yaml (for `prefect deploy --all`) from the settings: the monitor's cron
    and the index the reindex trigger listens for, as `ragcycle serve` uses them."""
    settings = settings_for(config)
    from flows.deployments import render_prefect_yaml

    rendered = render_prefect_yaml(settings)
    if output is None:
        typer.echo(rendered, nl=False)
        return
    output.write_text(rendered)
    console.print(f"wrote {output}")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Interface (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: api.port).")] = None,
    insecure: Annotated[
        bool,
        typer.Option(help='Allow api.auth = "none" on a host other than loopback.'),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Serve the RAG application over HTTP: POST /ask, POST /feedback, GET /health, GET /status
    (schema at /docs). Answers come from the live index version, with guardrails on each.

    Every route but /health needs the X-API-Key header: api.api_key, or a key made on the
    first start and kept in <data_dir>/api_key (mode 0600; the log says where)."""
    from ragcycle.api.security import is_loopback

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = settings_for(config, api=overrides) if overrides else settings_for(config)
    if settings.api.auth == "none" and not is_loopback(settings.api.host) and not insecure:
        raise fail(
            ConfigError(
                f'api.auth = "none" would open every route to anyone who reaches'
                f" {settings.api.host}: pass --insecure if that is meant, or use a key"
            )
        )
    import uvicorn

    from ragcycle.api.app import create_app

    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port)


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Serve the deployments (ingest, evaluate, monitor on its cron, reindex on quality drops)
    from this process against the configured Prefect server, until interrupted."""
    settings = settings_for(config)
    if not settings.prefect.api_url:
        raise typer.BadParameter("serve needs a Prefect server: set prefect.api_url")
    from prefect import serve as prefect_serve

    from flows.deployments import build_deployments

    prefect_serve(*build_deployments(settings, str(config) if config else None))


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Live version, last evaluation and last lifecycle decision, from MLflow, with links to
    each in the MLflow UI and the Prefect UI (`ragcycle ui` serves both locally)."""
    settings = settings_for(config)
    registry = registry_for(settings)
    from tasks.tracking.runs import latest_runs

    live = registry.live()
    report = {
        "index": settings.chroma.collection,
        "live": live.as_dict() if live else None,
        "ui": {"mlflow": settings.mlflow_ui_url, "prefect": settings.prefect_ui_url},
        **latest_runs(
            settings.mlflow_tracking_uri, settings.mlflow.experiment_prefix, settings.mlflow_ui_url
        ),
    }
    if as_json:
        echo_json(report)
        return
    console.print_json(jsonout.dumps(report))


@app.command()
def ui(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Open the MLflow UI and the Prefect UI on this data dir's runs (127.0.0.1; Ctrl-C stops
    both). Configured tracking or Prefect servers are linked, not started."""
    import signal

    from ragcycle.ui import running_uis, ui_servers, wait_for_exit

    settings = settings_for(config)
    servers = ui_servers(settings)
    # A SIGTERM (a service manager, a test) stops the servers like Ctrl-C does. SIGINT is set
    # too: a shell without job control starts background commands with SIGINT ignored, Python
    # keeps that, and Ctrl-C (or `kill -INT`) then left the UI and both servers running.
    for stopping in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stopping, signal.default_int_handler)
    try:
        with running_uis(servers, settings.data_dir / "logs") as processes:
            urls = {server.name: server.url for server in servers}
            if as_json:
                echo_json({**urls, "started": [s.name for s in servers if s.started_here]})
            else:
                for server in servers:
                    where = "started here" if server.started_here else "configured server"
                    console.print(f"{server.name:>8} UI  {server.url}  ({where})")
                    if server.moved:
                        console.print(
                            f"          port {server.preferred_port} is busy: links stored in"
                            " runs point there"
                        )
                console.print("Ctrl-C stops both." if processes else "Nothing started here.")
            code = wait_for_exit(processes) if processes else None
    except (RagcycleError, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            return
        raise fail(exc, as_json=as_json) from None
    if code is not None:
        raise fail(RagcycleError(f"a UI server stopped by itself (exit {code})"), as_json=as_json)


@index_app.command("list")
def index_list(
    collection: Annotated[
        str | None, typer.Option(help="Index to list (default: chroma.collection).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every version of the index, with its status and aliases (champion = live)."""
    versions = [v.as_dict() for v in registry_for(settings_for(config), collection).versions()]
    if as_json:
        echo_json(versions)
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
    from tasks.locking import registry_lock

    settings = settings_for(config)
    try:
        with registry_lock(settings.data_dir):
            promoted = registry_for(settings).promote(version)
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        echo_json(promoted.as_dict())
    else:
        typer.echo(f"version {version} is live")


@index_app.command("rollback")
def index_rollback(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Make the previous version live again."""
    from tasks.locking import registry_lock

    settings = settings_for(config)
    try:
        with registry_lock(settings.data_dir):
            restored = registry_for(settings).rollback()
    except RagcycleError as exc:
        raise fail(exc) from None
    if as_json:
        echo_json(restored.as_dict())
    else:
        typer.echo(f"version {restored.version} is live")


# The repository's sample corpus (samples/ beside the packages in a checkout).
SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "samples" / "corpus"
SAMPLE_GOLDEN = SAMPLE_CORPUS.parent / "golden.jsonl"


class _ConsoleNarrator:
    """The demo's steps as rules and lines on the terminal."""

    def step(self, title: str) -> None:
        console.rule(f"[bold]{title}")

    def say(self, text: str) -> None:
        console.print(text)


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
    settings = settings_for_flows(config)
    from flows.demo import run_demo
    from ragcycle.runtime import quiet_console

    if not settings.verbose:
        quiet_console()  # the narrator tells the story; `--verbose` shows every run's log

    try:
        result = run_demo(
            settings, corpus, dataset, _ConsoleNarrator(), str(config) if config else None
        )
    except RagcycleError as exc:
        raise fail(exc) from None
    console.rule("[bold]Next steps")
    console.print(f"Plot of the gate metrics: {result.plot}")
    if result.monitor_plot:
        console.print(f"Quality over the monitor's runs: {result.monitor_plot}")
    ask, versions, uis = demo_next_steps(first_question(dataset), config)
    console.print(
        f"Ask the demo's index:\n  {ask}\n"
        f"Its versions:\n  {versions}\n"
        f"Open the MLflow and Prefect UIs on these runs (Ctrl-C stops them):\n  {uis}",
        soft_wrap=True,
    )


def first_question(dataset: Path) -> str:
    """The golden set's first question: one the demo's index can answer."""
    import json

    with dataset.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                return str(json.loads(line)["question"])
    return "What is this corpus about?"


def demo_next_steps(question: str, config: Path | None) -> list[str]:
    """What to run after the demo, exactly as printed (a test runs each one)."""
    import shlex

    from flows.demo import DEMO_COLLECTION

    ragcycle = script_path("ragcycle")
    tail = f" --config {shlex.quote(str(config))}" if config else ""
    return [
        f"{ragcycle} ask {shlex.quote(question)} --collection {DEMO_COLLECTION}{tail}",
        f"{ragcycle} index list --collection {DEMO_COLLECTION}{tail}",
        f"{ragcycle} ui{tail}",
    ]
