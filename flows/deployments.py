"""Every deployment of ragcycle in one place: ingest, evaluate, monitor (on a cron schedule) and
reindex (triggered by ``ragcycle.quality.dropped`` events, one run at a time).

``ragcycle serve`` serves them from one process; ``prefect.yaml`` declares the same for
``prefect deploy`` and a worker on a process (or Kubernetes) work pool.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.monitor import QUALITY_DROPPED, index_resource, monitor
from flows.reindex import reindex
from ragcycle.settings import Settings

__all__ = ["build_deployments", "reindex_trigger"]


def reindex_trigger(
    index_name: str, request: dict[str, Any] | None = None
) -> DeploymentEventTrigger:
    """Run ``reindex`` when the monitor reports a quality drop for this index.

    Trigger parameters replace the deployment's whole ``request``, so they repeat its fields.
    """
    return DeploymentEventTrigger(
        name=f"reindex {index_name} on quality drop",
        expect={QUALITY_DROPPED},
        match={"prefect.resource.id": index_resource(index_name)["prefect.resource.id"]},
        parameters={
            "request": {**(request or {}), "reason": "monitor: {{ event.payload.reason }}"}
        },
    )


def build_deployments(settings: Settings, config_file: str | None = None) -> list[Any]:
    """Runner deployments for ``prefect.serve``; parameters carry no secrets, only a config path.

    Paths and the golden set come from the settings each run loads (``lifecycle.sources``,
    ``lifecycle.golden_dataset``), as with ``prefect.yaml``'s deployments.
    """
    request: dict[str, Any] = {"config_file": config_file} if config_file else {}
    one_at_a_time = ConcurrencyLimitConfig(
        limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
    )
    return [
        ingest.to_deployment(
            name="ingest",
            parameters={"request": dict(request)},
            concurrency_limit=one_at_a_time,
            tags=["ragcycle"],
        ),
        evaluate.to_deployment(
            name="evaluate", parameters={"request": dict(request)}, tags=["ragcycle"]
        ),
        monitor.to_deployment(
            name="monitor",
            parameters={"request": dict(request)},
            cron=settings.lifecycle.monitor_cron,
            concurrency_limit=one_at_a_time,
            tags=["ragcycle"],
        ),
        reindex.to_deployment(
            name="reindex",
            parameters={"request": dict(request)},
            triggers=[reindex_trigger(settings.chroma.collection, request)],
            concurrency_limit=one_at_a_time,
            tags=["ragcycle"],
        ),
    ]
