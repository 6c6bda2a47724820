"""One share group of a reindex: build its collection once (or reuse the live one), register a
version per contender, and evaluate each against the golden set, as child runs of the reindex.

Each group runs as a Prefect task whose ingest and evaluations are subflows, so the groups of a
reindex (and the champion's evaluation) run side by side on a thread pool and each shows as its
own branch in the Prefect UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from tasks.challengers import Contender
from tasks.tracking.runs import prefect_run_tags
from tasks.versions import VersionRegistry
from tasks.versions.records import built_tags, quality_summary, quality_tags, version_tags

__all__ = ["Built", "GroupRequest", "build_and_evaluate", "evaluate_champion"]


@dataclass
class GroupRequest:
    """What one group needs: its contenders (same corpus and index config) and the context."""

    contenders: list[Contender]
    registry: VersionRegistry
    reason: str
    dataset: str | None
    experiment: str
    parent_run_id: str | None
    config_file: str | None
    base_overrides: dict[str, Any]  # without serving-config groups (stores, data dir, ...)
    reuse_collection: str | None = None  # the live collection, when it holds the same chunks
    progress: bool = True


@dataclass
class Built:
    """A contender's version and its evaluation (None without a golden set)."""

    name: str
    version: int
    collection: str
    evaluation: dict[str, Any] | None
    built: bool  # False: it reused a collection
    chunks: int = 0


@task(name="challenge", task_run_name="candidate · {label}", cache_policy=NO_CACHE)
def build_and_evaluate(request: GroupRequest, label: str) -> list[Built]:
    """Build the group's collection, then evaluate each of its contenders on it."""
    collection = request.reuse_collection
    results: list[Built] = []
    for contender in request.contenders:
        # The contender's whole serving config, so nothing of the caller's settings leaks in.
        overrides = {**request.base_overrides, **contender.config, "progress": request.progress}
        version = request.registry.register(
            {
                **version_tags(contender.settings, contender.corpus, request.reason),
                "candidate": contender.name,
                **{k.replace("prefect.", "prefect_"): v for k, v in prefect_run_tags().items()},
            },
            collection=collection,
            run_id=request.parent_run_id,  # the reindex run: the version's source run
        )
        try:
            built = collection is None
            if built:
                report = ingest(
                    IngestRequest(
                        paths=contender.corpus.sources,
                        collection=version.collection,
                        prune=True,
                        config_file=request.config_file,
                        overrides=overrides,
                    )
                )
                collection = version.collection
                failed = [item["doc_id"] for item in report["failed"]]
                chunks = int(report["chunks"]["total"])
            else:
                failed, chunks = [], 0
            tags = built_tags(contender.corpus, chunks, failed, contender.settings)
            request.registry.set_status(version.version, "ready", **tags)
            evaluation = None
            if request.dataset is not None:
                evaluation = evaluate(
                    EvaluateRequest(
                        dataset=request.dataset,
                        collection=request.registry.index_name,
                        version=version.version,
                        config_file=request.config_file,
                        overrides=overrides,
                        role=f"candidate {contender.name}",
                        parent_run_id=request.parent_run_id,
                        experiment=request.experiment,
                    )
                )
                gated = [name.format(k="k") for name in contender.settings.lifecycle.gate]
                request.registry.set_tags(version.version, **quality_tags(evaluation, gated))
                request.registry.describe(
                    version.version,
                    quality_summary(version.collection, contender.name, evaluation, gated),
                )
        except BaseException as exc:
            request.registry.set_status(
                version.version, "failed", failure=f"{type(exc).__name__}: {exc}"[:500]
            )
            raise
        results.append(
            Built(contender.name, version.version, version.collection, evaluation, built, chunks)
        )
    return results


@task(name="evaluate-champion", task_run_name="champion · v{version}", cache_policy=NO_CACHE)
def evaluate_champion(
    registry: VersionRegistry,
    version: int,
    dataset: str,
    experiment: str,
    parent_run_id: str | None,
    config_file: str | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """The live version on the same questions, in the same run tree, for the paired gate."""
    return evaluate(
        EvaluateRequest(
            dataset=dataset,
            collection=registry.index_name,
            version=version,
            config_file=config_file,
            overrides=overrides,
            role="champion",
            parent_run_id=parent_run_id,
            experiment=experiment,
        )
    )
