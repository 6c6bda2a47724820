"""Strict JSON out: what ``--json`` prints and what runs store must parse with any JSON parser.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON; metrics are ``nan`` by
design when there is nothing to score, so every value is made strict (``null``) on the way out.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

__all__ = ["StdoutGuard", "dumps", "strict"]


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict(item) for item in value]
    return value


def dumps(value: Any, *, indent: int | None = None) -> str:
    """Strict JSON text; objects JSON does not know (paths, dates) become their string."""
    return json.dumps(strict(value), allow_nan=False, default=str, indent=indent)


class StdoutGuard:
    """While a ``--json`` command runs, file descriptor 1 points at stderr: whatever a library
    prints, from Python or from C, cannot mix with the one JSON object, which :meth:`write`
    sends to the real stdout saved aside."""

    def __init__(self) -> None:
        self._saved: int | None = None

    def __enter__(self) -> StdoutGuard:
        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        return self

    def write(self, text: str) -> None:
        """One line on the real stdout."""
        sys.stdout.flush()  # what was printed before goes out (to stderr) first
        if self._saved is None:
            print(text)
            return
        data = (text + "\n").encode()
        while data:
            data = data[os.write(self._saved, data) :]

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            sys.stdout.flush()
            os.dup2(self._saved, 1)
            os.close(self._saved)
            self._saved = None
