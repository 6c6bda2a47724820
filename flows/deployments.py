"""Every deployment of ragcycle in one place: ingest, evaluate, monitor (on a cron schedule) and
reindex (triggered by ``ragcycle.quality.dropped`` events, one run at a time).

``ragcycle serve`` serves them from one process; ``prefect.yaml`` declares the same for
``prefect deploy`` and a worker on a process (or Kubernetes) work pool.
"""

from __future__ import annotations

from string import Template
from typing import Any

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.monitor import QUALITY_DROPPED, index_resource, monitor
from flows.reindex import reindex
from ragcycle.settings import Settings

__all__ = ["build_deployments", "reindex_trigger", "render_prefect_yaml"]


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


# prefect.yaml is declarative and read by `prefect deploy`, which knows nothing of ragcycle's
# settings; rendering it from them keeps one source of truth for the schedule and the trigger.
_PREFECT_YAML = Template(
    """# Rendered from ragcycle's settings by `ragcycle prefect-yaml -o prefect.yaml`: the monitor's
# cron (lifecycle.monitor_cron) and the index the reindex trigger listens for (chroma.collection)
# come from the same settings `ragcycle serve` reads. Edit the settings, then render again.
# Deployments for `prefect deploy --all` and a worker: `prefect worker start --pool ragcycle`.
# The same set `ragcycle serve` serves from one process (flows/deployments.py).
#
# Entrypoints are module paths, so flows load from the installed ragcycle package wherever the
# worker runs (the image, a virtualenv). `prefect deploy` records the directory it ran from as the
# flow runs' working directory (/app in the image). No parameter carries a path or a secret: every
# run reads its settings from the worker's environment (RAGCYCLE_*, RAGCYCLE_CONFIG) or the
# ragcycle.toml in that directory: lifecycle.sources, lifecycle.golden_dataset, servers, keys.
name: ragcycle
prefect-version: 3.8.8

definitions:
  work_pool: &pool
    name: ragcycle
    work_queue_name: default
  one_at_a_time: &one_at_a_time
    limit: 1
    collision_strategy: CANCEL_NEW

deployments:
  - name: ingest
    entrypoint: flows.ingest:ingest
    description: Bring the live index in line with lifecycle.sources.
    parameters:
      request: {}
    concurrency_limit: *one_at_a_time
    work_pool: *pool
    tags: [ragcycle]

  - name: evaluate
    entrypoint: flows.evaluate:evaluate
    description: Evaluate the live index on lifecycle.golden_dataset; one MLflow run.
    parameters:
      request: {}
    work_pool: *pool
    tags: [ragcycle]

  - name: monitor
    entrypoint: flows.monitor:monitor
    description: Nightly checks of the live index; emits ragcycle.quality.dropped on a failure.
    parameters:
      request: {}
    schedules:
      - cron: "$cron"
    concurrency_limit: *one_at_a_time
    work_pool: *pool
    tags: [ragcycle]

  - name: reindex
    entrypoint: flows.reindex:reindex
    description: Build, gate and promote a new index version; a no-op when nothing changed.
    parameters:
      request: {}
    concurrency_limit: *one_at_a_time
    triggers:
      - type: event
        enabled: true
        expect: ["ragcycle.quality.dropped"]
        match:
          prefect.resource.id: $resource
        parameters:
          request:
            reason: "monitor: {{ event.payload.reason }}"
    work_pool: *pool
    tags: [ragcycle]
"""
)


def render_prefect_yaml(settings: Settings) -> str:
    """``prefect.yaml`` for ``prefect deploy --all``, with the schedule and trigger of
    ``settings``."""
    return _PREFECT_YAML.substitute(
        cron=settings.lifecycle.monitor_cron,
        resource=index_resource(settings.chroma.collection)["prefect.resource.id"],
    )
