"""The Prefect task runner a flow fans its partitions out on, chosen by settings.

``threads`` (default) runs partitions in a thread pool inside the flow-run process: no set-up, and
loading one partition overlaps embedding another. ``dask`` runs them on a Dask cluster through
prefect-dask: a local cluster of worker processes, or an existing one at ``prefect.dask_address``
(Kubernetes, a VM fleet). Work pools scale flow runs; task runners scale the work inside one.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ragcycle.errors import ConfigError
from ragcycle.settings import Settings

__all__ = ["task_runner_from_settings"]


def task_runner_from_settings(settings: Settings) -> TaskRunner[Any]:
    """A fresh, not yet started task runner; enter it with ``with`` to start it."""
    config = settings.prefect
    if config.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=config.max_workers)
    if not settings.chroma.url:
        raise ConfigError(
            "prefect.task_runner = 'dask' runs partitions in other processes, and embedded Chroma"
            " is a single-process store: set chroma.url to a Chroma server (`chroma run`)"
        )
    try:
        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError:
        raise ConfigError(
            "prefect.task_runner = 'dask' needs prefect-dask: pip install 'ragcycle[dask]'"
        ) from None
    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.max_workers,
            "threads_per_worker": config.dask_threads_per_worker,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        },
    )
