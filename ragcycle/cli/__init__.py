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
from ragcycle.cli import judging  # noqa: F401
from ragcycle.cli import lifecycle  # noqa: F401
from ragcycle.cli import models  # noqa: F401
from ragcycle.cli import golden  # noqa: F401

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """The console script: every failure a command did not report ends as one line, a
    ``--json`` command's stdout holds its JSON object and nothing else, and a stopped command
    (SIGTERM, Ctrl-C) ends promptly without a traceback."""
    import contextlib
    import signal
    import sys

    from ragcycle import jsonout
    from ragcycle.cli.common import fail
    from ragcycle.errors import StoppedError
    from ragcycle.runtime import StopSignals, Terminated, leave
    from tasks.stopping import stop_message

    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    verbose = "-v" in arguments or "--verbose" in arguments
    guard = jsonout.StdoutGuard() if as_json else None
    signals = StopSignals().install()
    code, stopped = 0, False
    with guard if guard is not None else contextlib.nullcontext():
        try:
            app(standalone_mode=True, obj=guard)  # Click turns Ctrl-C into "Aborted!"
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if signals.received is signal.SIGINT:  # Click's "Aborted!" after Ctrl-C
                fail(
                    StoppedError(stop_message(KeyboardInterrupt())),
                    as_json=as_json,
                    verbose=verbose,
                    guard=guard,
                )
                code, stopped = 130, True  # 128 + SIGINT
        except (Terminated, _termination()) as exc:
            fail(StoppedError(stop_message(exc)), as_json=as_json, verbose=verbose, guard=guard)
            code, stopped = 143, True  # 128 + SIGTERM, as a shell reports a process it ended
        except Exception as exc:  # the last line of defence against a library's traceback
            if verbose:
                raise
            code = fail(exc, as_json=as_json, verbose=False, guard=guard).exit_code
    leave(code, stopped=stopped)


def _termination() -> type[BaseException]:
    """Prefect's SIGTERM exception (a BaseException of its own), once Prefect is loaded."""
    import sys

    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions.TerminationSignal if exceptions is not None else _NeverRaised


class _NeverRaised(BaseException):
    """Stands in for Prefect's exception in a command that never loaded Prefect."""
