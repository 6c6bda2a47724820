"""Which failures a Prefect task retries: outages, never mistakes.

A Chroma or MLflow server that blips is worth another try; a setting that cannot work, a model
that was never pulled or a dataset that cannot be read fails the same way every time, and
retrying it only delays the one line that says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from ragcycle.errors import ConfigError, DatasetError, ModelError, StoppedError

__all__ = ["NEVER_RETRIED", "outage_task", "worth_retrying"]

P = ParamSpec("P")
R = TypeVar("R")

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


def outage_task(
    name: str, *, delays: tuple[int, ...] = (2, 10), task_run_name: str | None = None
) -> Callable[[Callable[P, R]], Task[P, R]]:
    """The Prefect edge every store-facing function shares: never cached, retried after each of
    ``delays`` seconds on an outage and never on a mistake (:func:`worth_retrying`)."""
    return task(
        name=name,
        task_run_name=task_run_name,
        cache_policy=NO_CACHE,
        retries=len(delays),
        retry_delay_seconds=list(delays),
        retry_condition_fn=worth_retrying,
    )
