"""Every --json output and stored report is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ragcycle import jsonout


def test_non_finite_numbers_become_null_at_any_depth() -> None:
    """Regression: NaN metrics were printed as a bare ``NaN`` (the ``default=`` hook never sees
    floats), so ``ragcycle eval --json | jq`` failed and decision.json held NaN."""
    data = {
        "metrics": {"mrr": math.nan, "ok": 0.5},
        "table": [{"live": math.inf}],
        "n": (1, -math.inf),
    }
    text = jsonout.dumps(data)
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "metrics": {"mrr": None, "ok": 0.5},
        "table": [{"live": None}],
        "n": [1, None],
    }


def test_objects_json_does_not_know_become_strings() -> None:
    assert json.loads(jsonout.dumps({"path": Path("/a/b")})) == {"path": "/a/b"}
