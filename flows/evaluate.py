"""The ``evaluate`` flow: a golden dataset against the live index, logged as one MLflow run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from ragcycle.errors import ConfigError
from ragcycle.runtime import configure_environment
from ragcycle.settings import load_settings
from tasks.answering import Answered, Parts, TraceOptions, answer_many_task
from tasks.embedding import embedder_from_settings
from tasks.evaluation.calibration import (
    calibration_metrics,
    judge_calibration_task,
    judge_summary,
)
from tasks.evaluation.golden import load_golden_task
from tasks.evaluation.growth import dataset_version
from tasks.evaluation.judges import JUDGE_CRITERIA, judge_params, judge_rows_task, judge_source
from tasks.evaluation.paired import flaky_questions, per_question, ranked_relevance
from tasks.evaluation.scoring import (
    QUALITY_METRICS,
    score_rows_task,
    scoring_config,
    summarize_task,
)
from tasks.generation.backends import judge_from_settings
from tasks.generation.prompts import load_prompt_task
from tasks.indexing.store import open_index
from tasks.tracking.flow_runs import describe_flow_run, run_tags
from tasks.tracking.reports import publish_evaluation
from tasks.tracking.runs import (
    EvaluationRecord,
    ensure_experiment,
    log_evaluation_task,
    mlflow_client,
    run_url,
)
from tasks.tracking.wandb_mirror import evaluation_run, mirror_evaluation_task
from tasks.versions import config_summary, resolve_serving, serving_config

__all__ = ["EvaluateRequest", "evaluate"]

BATCH = 64


class EvaluateRequest(BaseModel):
    """Which dataset to evaluate, against which collection, how often."""

    dataset: str | None = Field(
        None, description="golden JSONL file (default: lifecycle.golden_dataset)"
    )
    k: int | None = Field(None, ge=1, description="chunks per question (default: retrieval.k)")
    repeats: int | None = Field(None, ge=1, description="answers per question (default: settings)")
    collection: str | None = Field(
        None, description="index or collection to evaluate (default: the live version)"
    )
    version: int | None = Field(None, ge=1, description="an exact index version of the index")
    parent_run_id: str | None = Field(None, description="MLflow run to nest this run under")
    role: str | None = Field(None, description="champion, candidate or monitor (run name)")
    config_file: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow run tags")
    experiment: str | None = Field(
        None, description="MLflow experiment (default: <prefix>-eval-<dataset name>)"
    )


@flow(name="evaluate")
def evaluate(request: EvaluateRequest) -> dict[str, Any]:
    """Answer every golden question, score retrieval, answers, guardrails, cost and latency."""
    logger = get_run_logger()
    settings = load_settings(request.config_file, **request.overrides)
    configure_environment(settings)
    mlflow_client(settings.mlflow_tracking_uri)
    serving = resolve_serving(
        settings, request.collection, version=request.version, overrides=request.overrides
    )
    settings = serving.settings
    k = request.k or settings.retrieval.k
    repeats = request.repeats or settings.evaluation.repeats
    dataset = request.dataset or settings.lifecycle.golden_dataset
    if dataset is None:
        raise ConfigError("nothing to evaluate: pass a dataset or set lifecycle.golden_dataset")
    dataset_path = str(Path(dataset).resolve())
    golden = load_golden_task(dataset_path)
    for error in golden.errors:
        logger.warning("dataset line %d skipped: %s", error["line"], error["error"])
    index = open_index(settings, serving.collection, create=False)
    version = serving.version.version if serving.version else None
    run_name = " · ".join(
        [
            "eval",
            f"v{version}" if version else index.name,
            request.role or "adhoc",
            f"{golden.name}@{golden.digest[:8]}",
        ]
    )
    describe_flow_run(
        run_name,
        run_tags(index=serving.index, collection=index.name, version=version, role=request.role),
    )
    embedder = embedder_from_settings(settings)
    prompt = load_prompt_task(settings.generation.prompt_name, settings.generation.prompt_version)
    parts = Parts.from_settings(settings, index, embedder, prompt)
    generator = parts.generator
    judge = judge_from_settings(settings)
    judging = settings.evaluation.judge
    calibration = judge_calibration_task(judge, judging, settings.data_dir)
    judged_by = judge_summary(judge, judging.formulation, calibration)
    unreliable = judged_by["unreliable"] if judged_by else []
    uncalibrated = judged_by["uncalibrated"] if judged_by else []
    if unreliable:
        logger.warning("unreliable judge metrics, kept out of decisions: %s", unreliable)
    config = scoring_config(
        settings.evaluation,
        generator.name,
        generator.model,
        k,
        pii=parts.guard.pii,
        keeping=parts.guard.keeping,
    )
    experiment = request.experiment or f"{settings.mlflow.experiment_prefix}-eval-{golden.name}"
    trace = None
    if settings.tracing.enabled:
        experiment_id = ensure_experiment(
            experiment, settings.mlflow_artifact_location, settings.mlflow_tracking_uri
        )
        trace_tags = {
            "ragcycle.origin": "evaluation",
            "ragcycle.index_version": str(version or ""),
            "ragcycle.dataset_digest": golden.digest,
        }
        trace = TraceOptions(experiment_id, trace_tags)

    items = [item for _ in range(repeats) for item in golden.items]
    repeat_of = [r for r in range(repeats) for _ in golden.items]
    seeds: list[int | None] = [settings.generation.seed + r for r in repeat_of]
    answered: list[Answered] = []
    for start in range(0, len(items), BATCH):
        batch = [item.question for item in items[start : start + BATCH]]
        answered += answer_many_task(
            parts, batch, k, seeds[start : start + BATCH], trace, label=f"{start // BATCH}"
        )
    retrievals = [one.retrieval for one in answered]
    rows = score_rows_task(
        items,
        repeat_of,
        retrievals,
        [one.answer for one in answered],
        embedder,
        config,
        [one.verdict for one in answered],
        [one.trace_id for one in answered],
    )
    evaluation = settings.evaluation
    if judge is not None:
        contexts = [[hit.text for hit in one.chunks] for one in answered]
        rows = judge_rows_task(rows, contexts, judge, judging.context_chars, judging.formulation)
    summary = summarize_task(
        rows, k, evaluation.bootstrap_samples, evaluation.confidence, evaluation.seed
    )
    summary.metrics.update(calibration_metrics(calibration))
    params = {
        "dataset": dataset_path,
        "dataset_digest": golden.digest,
        "dataset_version": dataset_version(Path(dataset_path), golden.digest) or "",
        "questions": len(golden.items),
        "collection": index.name,
        "index_version": version or "",
        "config": config_summary(serving_config(settings)),
        "embedding_model": settings.embedding.model_name,
        "chunking": settings.chunking.model_dump_json(),
        "chunking_hash": settings.chunking.config_hash(),
        "k": k,
        "repeats": repeats,
        "prompt_name": prompt.name,
        "prompt_version": prompt.version,
        "generator": generator.name,
        "generator_model": generator.model,
        "generator_sha256": generator.sha256 or "",
        "priced": config.priced,
        "judge": judge is not None,
        **judge_params(judge, judging.formulation),
        **({"judge_reliable": not unreliable} if judge is not None else {}),
    }
    report = {
        "experiment": experiment,
        "metrics": summary.metrics,
        "ci": {name: list(bounds) for name, bounds in summary.ci.items()},
        "questions": summary.questions,
        "failed_rows": golden.errors,
        "params": params,
        "judge": judged_by,
    }
    names = [t.format(k=k) for t in QUALITY_METRICS]
    judged = list(JUDGE_CRITERIA) if judge is not None else []
    scorers = names if evaluation.mlflow_genai else None
    record = EvaluationRecord(
        experiment=experiment,
        run_name=run_name,
        parent_run_id=request.parent_run_id,
        params=params,
        metrics=summary.metrics,
        ci=summary.ci,
        rows=rows,
        dataset_rows=[
            {
                "question": i.question,
                "expected_answer": i.expected_answer,
                "expected_sources": list(i.expected_sources),
            }
            for i in golden.items
        ],
        dataset_source=dataset_path,
        dataset_name=golden.name,
        report=report,
        tags={
            "ragcycle.kind": "evaluation",
            "ragcycle.collection": index.name,
            "ragcycle.dataset_digest": golden.digest,
            **({"ragcycle.index_version": str(version)} if version else {}),
            **({"ragcycle.role": request.role} if request.role else {}),
            **({"ragcycle.judge.unreliable": ",".join(unreliable)} if unreliable else {}),
            **request.tags,
        },
        judge_metrics=judged,
        judge_source=judge_source(judge, judging.formulation),
        prompt_uri=prompt.uri,
    )
    run_id = log_evaluation_task(
        record, settings.mlflow_tracking_uri, settings.mlflow_artifact_location, scorers
    )
    page = run_url(settings.mlflow_ui_url, settings.mlflow_tracking_uri, run_id)
    publish_evaluation(
        f"eval-{golden.name}",
        f"Evaluation of {golden.name} on {index.name}",
        summary.metrics,
        summary.ci,
        page,
    )
    if settings.wandb.enabled:
        mirror_evaluation_task(
            settings.wandb_mirror,
            evaluation_run(
                name=run_name,
                experiment=experiment,
                params=params,
                metrics=summary.metrics,
                ci=summary.ci,
                rows=rows,
                tags=record.tags,
                mlflow_run_id=run_id,
                mlflow_url=page,
            ),
        )
    logger.info(
        "Evaluation run %s: %d questions, %s",
        run_id,
        summary.questions,
        {name: round(value, 3) for name, value in summary.metrics.items() if not math.isnan(value)},
    )
    gated = [name.format(k=k) for name in settings.lifecycle.gate]
    # The gate compares versions that may serve different k: "hit_rate_at_k" is each one's hit
    # rate at the k it answers with, so a k challenger is paired with the champion's own k.
    at_own_k = {
        t.format(k="k"): t.format(k=k) for t in (*QUALITY_METRICS, *settings.lifecycle.gate)
    }
    # An unreliable judge's scores are logged (marked) but never handed to a decision.
    trusted = {n: v for n, v in summary.metrics.items() if n not in unreliable}
    scored = per_question(rows, [n for n in [*names, *judged, *gated] if n not in unreliable])
    return {
        "run_id": run_id,
        "experiment": experiment,
        "judge": judged_by,
        "unreliable_metrics": unreliable,
        "uncalibrated_metrics": uncalibrated,  # no absolute thresholds on these
        "metrics": {
            **trusted,
            **{alias: trusted[name] for alias, name in at_own_k.items() if name in trusted},
        },
        "ci": report["ci"],
        "questions": summary.questions,
        "failed_rows": golden.errors,
        "skipped_lines": [{"line": e["line"], "reason": e["error"]} for e in golden.errors],
        "version": version,
        "dataset_digest": golden.digest,
        # For the paired gate: per question (repeats averaged) and questions whose verdict flips.
        "per_question": {
            **scored,
            **{alias: scored[name] for alias, name in at_own_k.items() if name in scored},
        },
        "flaky": flaky_questions(rows, gated),
        # For retrieval compared at a common depth: the k answered with, and what was found.
        "k": k,
        "ranked": ranked_relevance(rows),
    }
