"""Names and tags a person can read on Prefect flow runs.

A flow run's name is fixed when it is created, before the flow has resolved which collection,
version or role it works on; so each flow renames its own run once it knows, and tags it with
the same facts (``collection:…``, ``version:…``, ``role:…``) for the UI's filters.
"""

from __future__ import annotations

import logging

__all__ = ["describe_flow_run", "run_tags"]

logger = logging.getLogger(__name__)


def run_tags(**facts: object) -> list[str]:
    """``key:value`` tags of the facts that are set, in the order given."""
    return [f"{key}:{value}" for key, value in facts.items() if value not in (None, "")]


def describe_flow_run(name: str, tags: list[str]) -> None:
    """Rename the current flow run and add ``tags``; outside a flow run, nothing.

    A failure is logged, never raised: a label is not worth failing the work it labels."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    flow_run = context.flow_run
    merged = list(dict.fromkeys([*flow_run.tags, *tags]))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, name=name, tags=merged)
    except Exception as exc:  # labels are best effort (see docstring)
        logger.warning("could not label flow run %s: %s", flow_run.id, exc)
        return
    flow_run.name, flow_run.tags = name, merged
