"""Failures as a person reads them: one line saying what went wrong and what to do.

ragcycle's own errors already say what to change; the libraries underneath fail with tracebacks
whose last line rarely says which server or setting is at fault. :func:`describe` maps the
known ones (the ephemeral Prefect server missing its start-up budget, a server that refuses
connections, a database another command holds) to a kind, a message and a hint, so the CLI
prints ``error: ...`` and, with ``--json``, ``{"error", "kind", "hint"}``. Tracebacks are for
``--verbose``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ragcycle.errors import (
    BusyError,
    ConfigError,
    ConflictError,
    DatasetError,
    FilterError,
    GenerationError,
    IndexStoreError,
    ModelError,
    RagcycleError,
    RegistryError,
    StoppedError,
    VersionError,
)

__all__ = ["Failure", "describe"]

_LINE = 400  # characters of a library's message kept in the one line


@dataclass(frozen=True)
class Failure:
    """What failed (``kind``), in one line, and what to do about it."""

    kind: str
    error: str
    hint: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_OWN: tuple[tuple[type[RagcycleError], str, str], ...] = (
    (ConfigError, "config", "fix the setting named above; `ragcycle config show` prints them all"),
    (RegistryError, "registry", "check mlflow.tracking_uri and that the MLflow server is up"),
    (IndexStoreError, "index", "check chroma.url (or chroma.path) and that Chroma is up"),
    (FilterError, "filter", "fix the where filter: see Chroma's metadata filtering docs"),
    (GenerationError, "generation", "check generation.base_url and the model server"),
    (ModelError, "model", "`ragcycle models list` shows what is pulled; `models pull NAME`"),
    (DatasetError, "dataset", "check the dataset path and its format"),
    (VersionError, "version", "`ragcycle index list` shows each version and its status"),
    (BusyError, "busy", "wait for it to finish, or set writer_wait_seconds to queue behind it"),
    (ConflictError, "conflict", "check `ragcycle index list`, then run the reindex again"),
    (StoppedError, "stopped", "run it again: it starts afresh and the live version is untouched"),
)

# Substrings of library messages -> (kind, what happened, what to do). First match wins.
_KNOWN: tuple[tuple[str, str, str, str], ...] = (
    (
        "Timed out while attempting to connect to ephemeral Prefect API server",
        "prefect",
        "the temporary Prefect server of this command did not start in time",
        "the machine is busy: retry, or run `prefect server start` and set prefect.api_url",
    ),
    (
        "no such table",
        "prefect",
        "Prefect's database is being created by another command on this data dir",
        "retry when the other command has started",
    ),
    (
        "database is locked",
        "busy",
        "another command is writing to a database in this data dir",
        "retry when it has finished",
    ),
    (
        "Connection refused",
        "connection",
        "a server refused the connection",
        "check that the server in the settings (MLflow, Chroma, Prefect, LLM) is running",
    ),
    (
        "Max retries exceeded",
        "connection",
        "a server could not be reached",
        "check that the server in the settings (MLflow, Chroma, Prefect, LLM) is running",
    ),
)


def describe(exc: BaseException) -> Failure:
    """The one-line account of ``exc``."""
    first = _first_line(exc)
    for kind_class, kind, hint in _OWN:
        if isinstance(exc, kind_class):
            return Failure(kind, first, hint)
    if isinstance(exc, RagcycleError):
        return Failure("error", first, "run again with --verbose for details")
    text = f"{type(exc).__name__}: {exc}"
    for needle, kind, happened, hint in _KNOWN:
        if needle in text:
            return Failure(kind, f"{happened} ({first})", hint)
    return Failure(
        "internal", f"{type(exc).__name__}: {first}", "run again with --verbose for the traceback"
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= _LINE else line[: _LINE - 1] + "…"
