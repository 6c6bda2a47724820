"""What every command shares: the app and its groups, the common options, consoles, and the
mapping of ragcycle's errors to one line on stderr and exit code 1."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ragcycle.errors import RagcycleError
from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings

__all__ = [
    "ConfigOption",
    "JsonOption",
    "app",
    "benchmark_app",
    "config_app",
    "console",
    "err_console",
    "fail",
    "index_app",
    "models_app",
    "registry_for",
    "script_path",
    "settings_for",
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
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    """Settings for a command; configuration errors end the command with exit code 1."""
    try:
        settings = load_settings(config, **overrides)
    except RagcycleError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    configure_environment(settings)
    return settings


def fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def registry_for(settings: Settings) -> Any:
    from tasks.tracking.runs import mlflow_client
    from tasks.versions import VersionRegistry

    mlflow_client(settings.mlflow_tracking_uri)
    return VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)


def script_path(name: str) -> str:
    """The path of a console script installed beside this interpreter."""
    import sys

    return str(Path(sys.executable).parent / name)
