"""The ``ragcycle`` command line: it parses, calls a flow or a task, and prints.

Heavy libraries (torch, chromadb, mlflow, prefect) are imported inside commands, after the
environment is configured, so ``ragcycle --help`` stays fast and offline settings apply.

- :mod:`~ragcycle.cli.common`: the app, its groups, shared options and error handling.
- :mod:`~ragcycle.cli.pipeline`: ``config``, ``ingest``, ``ask``, ``eval``, ``benchmark``.
- :mod:`~ragcycle.cli.lifecycle`: ``reindex``, ``monitor``, ``serve``, ``status``, ``index``,
  ``demo``.
- :mod:`~ragcycle.cli.models`: ``models list``, ``models pull``.
- :mod:`~ragcycle.cli.golden`: ``golden candidates``, ``golden review``.
"""

from __future__ import annotations

from ragcycle.cli.common import app

# Each module registers its commands on ``app``; --help lists them in this order.
# isort: off
from ragcycle.cli import pipeline  # noqa: F401
from ragcycle.cli import lifecycle  # noqa: F401
from ragcycle.cli import models  # noqa: F401
from ragcycle.cli import golden  # noqa: F401

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The console script: every failure a command did not report ends as one line."""
    import sys

    import typer

    from ragcycle.cli.common import fail

    try:
        app(standalone_mode=True)
    except (typer.Exit, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # the last line of defence against a library's traceback
        arguments = sys.argv[1:]
        if "-v" in arguments or "--verbose" in arguments:
            raise
        sys.exit(fail(exc, as_json="--json" in arguments, verbose=False).exit_code)
