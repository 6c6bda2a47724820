"""Strict JSON out: what ``--json`` prints and what runs store must parse with any JSON parser.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON; metrics are ``nan`` by
design when there is nothing to score, so every value is made strict (``null``) on the way out.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "strict"]


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
