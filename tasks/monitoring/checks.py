"""Is the live index still good? Thresholds, drop against a baseline, and drift.

- Quality: the live version's fresh evaluation against absolute thresholds, and against the
  median of its recent evaluations in MLflow (a median shrugs off one odd run).
- Corpus drift: files added, changed or removed since the live version was built, from the
  index's own records (each chunk carries its document's content hash).
- Query drift: the share of recently logged questions whose best retrieval score is under the
  answer threshold: users asking about things the index does not cover.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.indexing.store import DocumentState
from tasks.tracking.metric_names import read_metric

__all__ = [
    "CheckResult",
    "baseline_metrics",
    "corpus_drift",
    "query_drift",
    "run_checks",
    "run_checks_task",
    "unindexed_of",
    "unindexed_tag",
]


@dataclass
class CheckResult:
    """The monitor's verdict with every figure behind it."""

    reasons: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return "reindex" if self.reasons else "ok"


def corpus_drift(
    current: Mapping[str, str],
    states: Mapping[str, DocumentState],
    *,
    built_snapshot: str | None = None,
    unindexed: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Documents added, changed and removed between the files and what the index holds.

    ``unindexed`` maps the files the live version could not index (corrupt, image-only) to
    their hash when it was built ("" where not recorded): they are not "added" while they stay
    the same, and count as changed when their bytes change, since a fixed file is worth another
    build. Every count is measured; a snapshot that differs for a reason none of them shows
    (an unindexed file with no recorded hash) reports no drift rather than a guess.
    """
    from tasks.versions import corpus_snapshot

    if built_snapshot is not None and corpus_snapshot(current) == built_snapshot:
        return {"added": 0, "changed": 0, "removed": 0}
    skipped = dict(unindexed or {})
    indexed = {doc_id: set(state.chunks_by_hash) for doc_id, state in states.items()}
    added = sum(1 for doc_id in current if doc_id not in indexed and doc_id not in skipped)
    changed = sum(
        1 for doc_id, digest in current.items() if doc_id in indexed and indexed[doc_id] != {digest}
    )
    changed += sum(
        1
        for doc_id, built in skipped.items()
        if built and doc_id in current and doc_id not in indexed and current[doc_id] != built
    )
    removed = sum(1 for doc_id in indexed if doc_id not in current)
    return {"added": added, "changed": changed, "removed": removed}


def unindexed_of(tag: str) -> dict[str, str]:
    """The ``unindexed`` tag of an index version: a JSON map of file -> hash, or the plain list
    of file names older versions recorded (hashes unknown)."""
    parsed = json.loads(tag or "{}")
    if isinstance(parsed, list):
        return {str(doc_id): "" for doc_id in parsed}
    return {str(doc_id): str(digest) for doc_id, digest in parsed.items()}


def unindexed_tag(failed: Sequence[str], hashes: Mapping[str, str], limit: int = 4900) -> str:
    """The files a build could not index with their hashes, as JSON within MLflow's tag limit;
    files past the limit are left out (their changes then go unnoticed, never misread)."""
    kept: dict[str, str] = {}
    for doc_id in sorted(failed):
        candidate = {**kept, doc_id: hashes.get(doc_id, "")}
        if len(json.dumps(candidate)) > limit:
            break
        kept = candidate
    return json.dumps(kept)


def query_drift(records: Sequence[Mapping[str, Any]], min_score: float) -> dict[str, float]:
    """Share of logged queries whose best retrieval score is under ``min_score``."""
    scores = [float(r["best_score"]) for r in records if r.get("best_score") is not None]
    if not scores:
        return {"queries": 0, "low_score_share": math.nan}
    low = sum(1 for score in scores if score < min_score)
    return {"queries": len(scores), "low_score_share": low / len(scores)}


def baseline_metrics(
    tracking_uri: str,
    experiments: Sequence[str],
    metrics: Sequence[str],
    runs: int,
    *,
    exclude_run: str | None,
    version: int | None,
    digest: str,
) -> dict[str, float]:
    """Median of each metric over the last ``runs`` comparable evaluations.

    Comparable: finished, on the same golden set (digest), of the live version itself, or
    champion runs of the versions before it. Evaluations of other indexes, of rejected
    candidates and of failed runs say nothing about how the live version used to do.
    """
    from mlflow import MlflowClient

    if version is None:
        return {}
    client = MlflowClient(tracking_uri=tracking_uri)
    found = [client.get_experiment_by_name(name) for name in experiments]
    ids = [experiment.experiment_id for experiment in found if experiment is not None]
    if not ids:
        return {}
    common = (
        "tags.`ragcycle.kind` = 'evaluation' and attributes.status = 'FINISHED'"
        f" and tags.`ragcycle.dataset_digest` = '{digest}'"
    )
    own = client.search_runs(
        ids,
        filter_string=f"{common} and tags.`ragcycle.index_version` = '{version}'",
        order_by=["attributes.start_time DESC"],
        max_results=runs + 1,
    )
    earlier = client.search_runs(
        ids,
        filter_string=f"{common} and tags.`ragcycle.role` = 'champion'",
        order_by=["attributes.start_time DESC"],
        max_results=runs * 4,
    )
    predecessors = [
        run
        for run in earlier
        if int(run.data.tags.get("ragcycle.index_version", "0") or 0) < version
    ]
    history = sorted(
        (run for run in [*own, *predecessors] if run.info.run_id != exclude_run),
        key=lambda run: run.info.start_time,
        reverse=True,
    )[:runs]
    baseline: dict[str, float] = {}
    for name in metrics:
        read = (read_metric(run.data.metrics, name) for run in history)
        values = [value for value in read if not math.isnan(value)]
        if values:
            baseline[name] = float(statistics.median(values))
    return baseline


def run_checks(
    metrics: Mapping[str, float],
    *,
    thresholds: Mapping[str, float],
    tolerances: Mapping[str, float],
    baseline: Mapping[str, float],
    corpus: Mapping[str, int],
    queries: Mapping[str, float],
    query_max_share: float,
    unreliable: Collection[str] = (),
    uncalibrated: Collection[str] = (),
) -> CheckResult:
    """Every check of the monitor; any failed one asks for a reindex. A metric in
    ``unreliable`` (its judge failed calibration) is listed as not used, never checked; one in
    ``uncalibrated`` is checked against its baseline only, not against a threshold."""
    result = CheckResult(drift={"corpus": dict(corpus), "queries": dict(queries)})
    for name in sorted(set(thresholds) | set(tolerances)):
        value = float(metrics.get(name, math.nan))
        if name in unreliable:
            result.table.append(
                {
                    "metric": name,
                    "value": value,
                    "live": math.nan,
                    "candidate": value,
                    "verdict": "not used: judge failed calibration",
                }
            )
            continue
        base = baseline.get(name, math.nan)
        verdict = "ok"
        if name in thresholds and name not in uncalibrated and not value >= thresholds[name]:
            verdict = "below threshold"
            result.reasons.append(f"{name} {value:.4f} is below the threshold {thresholds[name]}")
        if name in tolerances and not math.isnan(base) and base - value > tolerances[name]:
            verdict = "dropped"
            result.reasons.append(
                f"{name} dropped from a baseline of {base:.4f} to {value:.4f}"
                f" (tolerance {tolerances[name]})"
            )
        result.table.append(
            {"metric": name, "value": value, "live": base, "candidate": value, "verdict": verdict}
        )
    changed = {kind: count for kind, count in corpus.items() if count}
    if changed:
        result.reasons.append(
            "corpus changed since the live version was built: "
            + ", ".join(f"{count} {kind}" for kind, count in changed.items())
        )
    share = queries.get("low_score_share", math.nan)
    if not math.isnan(share) and share > query_max_share:
        result.reasons.append(
            f"query drift: {share:.0%} of the last {int(queries['queries'])} questions found"
            f" nothing close (max {query_max_share:.0%})"
        )
    return result


@task(name="run-checks", cache_policy=NO_CACHE)
def run_checks_task(
    metrics: dict[str, float],
    thresholds: dict[str, float],
    tolerances: dict[str, float],
    baseline: dict[str, float],
    corpus: dict[str, int],
    queries: dict[str, float],
    query_max_share: float,
    unreliable: list[str] | None = None,
    uncalibrated: list[str] | None = None,
) -> CheckResult:
    """Prefect edge of :func:`run_checks`."""
    return run_checks(
        metrics,
        thresholds=thresholds,
        tolerances=tolerances,
        baseline=baseline,
        corpus=corpus,
        queries=queries,
        query_max_share=query_max_share,
        unreliable=unreliable or (),
        uncalibrated=uncalibrated or (),
    )
