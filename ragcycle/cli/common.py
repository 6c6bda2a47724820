"""What every command shares: the app and its groups, the common options, consoles, and the
mapping of ragcycle's errors to one line on stderr and exit code 1."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ragcycle.errors import RagcycleError
from ragcycle.runtime import configure_environment, script_path
from ragcycle.settings import Settings, load_settings

__all__ = [
    "ConfigOption",
    "JsonOption",
    "RetrievalOption",
    "app",
    "benchmark_app",
    "config_app",
    "console",
    "echo_json",
    "err_console",
    "fail",
    "golden_app",
    "index_app",
    "models_app",
    "registry_for",
    "retrieval_overrides",
    "script_path",
    "settings_for",
    "settings_for_flows",
]

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
models_app = typer.Typer(help="Local LLMs: the catalogue, pulling a model.", no_args_is_help=True)
app.add_typer(models_app, name="models")
golden_app = typer.Typer(help="Grow the golden set from what users asked.", no_args_is_help=True)
app.add_typer(golden_app, name="golden")

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


class RetrievalMode(StrEnum):
    dense = "dense"
    lexical = "lexical"
    hybrid = "hybrid"


RetrievalOption = Annotated[
    RetrievalMode | None,
    typer.Option(
        "--retrieval",
        help="dense (embeddings), lexical (BM25) or hybrid (both, fused: retrieval.fusion);"
        " default: the index version's config.",
        case_sensitive=False,
    ),
]


def retrieval_overrides(mode: RetrievalMode | None) -> dict[str, Any]:
    """Settings overrides that select ``mode`` (none when it is not given)."""
    return {"retrieval": {"mode": mode.value}} if mode is not None else {}


console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command; configuration errors end the command with exit code 1."""
    context = _current_context()
    if context is not None and context.find_root().params.get("verbose"):
        overrides["verbose"] = True
    try:
        settings = load_settings(config, **overrides)
    except RagcycleError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    configure_environment(settings)
    return settings


def settings_for_flows(config: Path | None, **overrides: Any) -> Settings:
    """:func:`settings_for`, then this process's Prefect (see ``start_local_prefect``)."""
    from ragcycle.runtime import start_local_prefect

    settings = settings_for(config, **overrides)
    try:
        start_local_prefect(settings)
    except Exception as exc:  # a Prefect that cannot start is reported like any failure
        raise fail(exc) from None
    return settings


def fail(
    exc: BaseException,
    *,
    as_json: bool | None = None,
    verbose: bool | None = None,
    guard: Any = None,
) -> typer.Exit:
    """Report ``exc`` in one line (and as a JSON object on stdout for ``--json`` commands);
    the traceback only with ``--verbose``. Returns the exit to raise.

    Inside a command both flags are read from the command line's parsed options; outside one
    (the console script's last line of defence) the caller passes them, and its stdout guard.
    """
    from ragcycle.failures import describe

    failure = describe(exc)
    context = _current_context()
    if verbose is None:
        verbose = bool(context and context.find_root().params.get("verbose"))
    if as_json is None:
        as_json = bool(context and context.params.get("as_json"))
    if verbose:
        err_console.print_exception(show_locals=False)
    err_console.print(f"[red]error:[/red] {failure.error}", markup=True, highlight=False)
    err_console.print(f"  hint: {failure.hint}", markup=False, highlight=False)
    if as_json:
        echo_json(failure.as_dict(), guard=guard)
    return typer.Exit(1)


def echo_json(value: Any, *, indent: int | None = None, guard: Any = None) -> None:
    """A ``--json`` command's object, on the real stdout even while libraries' prints are
    diverted to stderr (:class:`ragcycle.jsonout.StdoutGuard`, set up by the console script)."""
    from ragcycle import jsonout

    text = jsonout.dumps(value, indent=indent)
    if guard is None:
        context = _current_context()
        guard = context.find_root().obj if context is not None else None
    if isinstance(guard, jsonout.StdoutGuard):
        guard.write(text)
    else:
        typer.echo(text)


def _current_context() -> Any:
    """The command's parsed options; Typer 0.29 runs on its own vendored copy of click, whose
    context stack the ``click`` package does not see."""
    import importlib

    try:
        globals_module = importlib.import_module("typer._click.globals")
    except ImportError:  # a Typer that uses the click package itself
        globals_module = importlib.import_module("click.globals")
    return globals_module.get_current_context(silent=True)


@app.callback()
def _global_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of failures.")
    ] = False,
) -> None:
    """Options of every command; read back through the click context by :func:`fail`."""


def registry_for(settings: Settings, index: str | None = None) -> Any:
    """The versions of ``index`` (default: ``chroma.collection``)."""
    from tasks.tracking.runs import mlflow_client
    from tasks.versions import VersionRegistry

    mlflow_client(settings.mlflow_tracking_uri)
    return VersionRegistry(settings.mlflow_tracking_uri, index or settings.chroma.collection)
