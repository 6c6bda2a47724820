"""An evaluation's rows in MLflow's GenAI evaluation views: a trace per question with its scores.

The scores are computed by ragcycle already (:mod:`tasks.evaluation`); ``mlflow.genai.evaluate``
is used to record them where MLflow's UI shows them, as assessments on each row's trace.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

from tasks.tracking.mlflow_threads import genai_evaluate_lock, quiet_stdout, settle_autologging

if TYPE_CHECKING:
    from tasks.tracking.evaluation_record import EvaluationRecord

__all__ = ["ROW_KEY", "record_in_genai_views"]

# Which evaluation row a bare GenAI-views row is (rows with the answer's trace are known by it).
ROW_KEY = "ragcycle_row"

logger = logging.getLogger(__name__)


def record_in_genai_views(record: EvaluationRecord, names: list[str], dataset: Any) -> None:
    """Record rows with MLflow's GenAI evaluation; scorers read the scores computed already.

    Code metrics become assessments of source CODE; judge verdicts become assessments of source
    LLM_JUDGE naming the judge model and prompt, so MLflow's evaluation views show both kinds
    side by side on each row's trace. The run's metrics are logged once, by
    :func:`log_evaluation` (scorers aggregate nothing: no ``x/mean`` twins), and its one dataset
    input stays the golden set (``dataset``), not a second anonymous ``dataset``.
    """
    import mlflow
    import pandas as pd
    from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback
    from mlflow.genai.datasets.evaluation_dataset import compute_records_sha256
    from mlflow.genai.scorers import scorer
    from mlflow.utils.mlflow_tags import MLFLOW_GENAI_EVALUATE_DATASET_IDENTITY

    everything = [*names, *record.judge_metrics]
    scores = {
        str(i): {name: row.get(name) for name in everything} for i, row in enumerate(record.rows)
    }
    traces = _traces_of(mlflow.MlflowClient(), record.rows)

    def value_of(key: str, name: str) -> float | None:
        value = scores.get(key, {}).get(name)
        return None if value is None or value != value else float(value)

    row_of_trace = {str(trace.info.trace_id): str(i) for i, trace in traces.items()}

    def key_of(outputs: dict[str, Any] | None, trace: Any) -> str:
        if isinstance(outputs, dict) and ROW_KEY in outputs:
            return str(outputs[ROW_KEY])
        return row_of_trace.get(str(trace.info.trace_id), "")

    def code_metric(name: str) -> Any:
        def read(outputs: dict[str, Any] | None, trace: Any) -> float | None:
            return value_of(key_of(outputs, trace), name)

        return scorer(name=name, aggregations=[])(read)

    def judge_metric(name: str) -> Any:
        source = AssessmentSource(
            source_type=AssessmentSourceType.LLM_JUDGE, source_id=record.judge_source
        )

        def read(outputs: dict[str, Any] | None, trace: Any) -> Feedback | None:
            value = value_of(key_of(outputs, trace), name)
            return None if value is None else Feedback(name=name, value=value, source=source)

        return scorer(name=name, aggregations=[])(read)

    # The answers' own traces (retrieve, generate and guardrail spans) when the evaluation
    # traced them; otherwise MLflow makes a bare trace per row. MLflow cannot mix the two in one
    # evaluation, so a row whose trace cannot be read back is left out of this view (its scores
    # stay in the run's table and metrics).
    traced = any(row.get("trace_id") for row in record.rows)
    data = [
        {
            **(
                {"trace": traces[i]}
                if traced
                else {
                    "inputs": {"question": row["question"]},
                    "outputs": {
                        "answer": row["answer"],
                        "sources": row["sources"],
                        ROW_KEY: i,
                    },
                }
            ),
            "expectations": {
                "expected_answer": row["expected_answer"] or "",
                "expected_sources": row["expected_sources"],
            },
        }
        for i, row in enumerate(record.rows)
        if not traced or i in traces
    ]
    if not data:
        return
    scorers = [code_metric(n) for n in names] + [judge_metric(n) for n in record.judge_metrics]
    # MLflow's own way to say which dataset a frame is (what EvaluationDataset.to_df attaches):
    # with it, evaluate() logs the golden set's input again (deduplicated) instead of its own.
    frame = pd.DataFrame(data)
    entity = dataset._to_mlflow_entity()
    frame.attrs[MLFLOW_GENAI_EVALUATE_DATASET_IDENTITY] = {
        "name": entity.name,
        "digest": entity.digest,
        "source_type": entity.source_type,
        "source": entity.source,
        "schema": entity.schema,
        "profile": entity.profile,
        "records_sha256": compute_records_sha256(frame),
    }
    # MLflow prints a "see the Traces tab" banner to stdout, where `--json` output goes and
    # where the demo narrates: kept for the debug log only.
    printed = io.StringIO()
    with genai_evaluate_lock():
        settle_autologging()
        with quiet_stdout(printed):
            mlflow.genai.evaluate(data=frame, scorers=scorers)
    logger.debug("mlflow.genai.evaluate printed: %s", printed.getvalue().strip())


def _traces_of(client: Any, rows: list[dict[str, Any]]) -> dict[int, Any]:
    """Each row's trace by row number, where it was written and can be read back; a trace that
    is missing (its write failed and was logged) costs that row its spans, not the run."""
    from mlflow.exceptions import MlflowException

    found = {}
    for i, row in enumerate(rows):
        if not row.get("trace_id"):
            continue
        try:
            found[i] = client.get_trace(row["trace_id"])
        except MlflowException as exc:
            logger.warning("trace %s of row %d not recorded: %s", row["trace_id"], i, exc)
    return found
