"""Which failures a Prefect task retries: outages, never mistakes.

A Chroma or MLflow server that blips is worth another try; a setting that cannot work, a model
that was never pulled or a dataset that cannot be read fails the same way every time, and
retrying it only delays the one line that says what to fix.
"""

from __future__ import annotations

from typing import Any

from ragcycle.errors import ConfigError, DatasetError, ModelError, StoppedError

__all__ = ["NEVER_RETRIED", "worth_retrying"]

NEVER_RETRIED: tuple[type[Exception], ...] = (ConfigError, DatasetError, ModelError, StoppedError)


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: False for errors that retrying cannot fix."""
    try:
        state.result()
    except NEVER_RETRIED:
        return False
    except Exception:
        return True
    return True
