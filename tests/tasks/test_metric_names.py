"""MLflow metric names: grouped for people, still readable under the old flat names."""

from __future__ import annotations

import math

import pytest

from tasks.tracking.metric_names import ci_names, logged_metrics, logged_name, read_metric


@pytest.mark.parametrize(
    ("flat", "grouped"),
    [
        ("hit_rate_at_5", "retrieval/hit_rate_at_5"),
        ("ndcg_at_10", "retrieval/ndcg_at_10"),
        ("page_recall_at_3", "retrieval/page_recall_at_3"),
        ("mrr", "retrieval/mrr"),
        ("mrr_at_10", "retrieval/mrr_at_10"),
        ("page_hit_rate", "retrieval/page_hit_rate"),
        ("faithfulness", "answer/faithfulness"),
        ("answer_f1", "answer/f1"),
        ("abstained_when_unanswerable", "answer/abstained_when_unanswerable"),
        ("judge_faithfulness", "judge/faithfulness"),
        ("judge_faithfulness_parse_failures", "judge/faithfulness_parse_failures"),
        ("pii_in_answer", "guardrails/pii_in_answer"),
        ("guardrail_fail", "guardrails/fail"),
        ("cost_usd_per_question", "cost/usd_per_question"),
        ("prompt_tokens_total", "cost/prompt_tokens_total"),
        ("latency_total_p95_ms", "latency/total_p95_ms"),
        ("something_new", "something_new"),
    ],
)
def test_each_metric_has_a_group_a_person_can_filter_on(flat: str, grouped: str) -> None:
    assert logged_name(flat) == grouped


def test_no_two_metrics_share_a_logged_name() -> None:
    from tasks.evaluation.judges import JUDGE_CRITERIA
    from tasks.evaluation.scoring import QUALITY_METRICS, RATE_METRICS

    flat = [t.format(k=5) for t in (*QUALITY_METRICS, *RATE_METRICS)] + list(JUDGE_CRITERIA)
    assert len({logged_name(name) for name in flat}) == len(flat)
    assert all("/" in logged_name(name) for name in flat)


def test_bounds_live_apart_and_nan_is_left_out() -> None:
    logged = logged_metrics(
        {"mrr": 0.5, "answer_f1": math.nan},
        {"mrr": (0.4, 0.6), "answer_f1": (math.nan, math.nan)},
    )
    assert logged == {
        "retrieval/mrr": 0.5,
        "ci/retrieval/mrr/low": 0.4,
        "ci/retrieval/mrr/high": 0.6,
    }
    assert ci_names("answer_f1") == ("ci/answer/f1/low", "ci/answer/f1/high")


def test_runs_logged_before_the_scheme_still_read() -> None:
    assert read_metric({"mrr": 0.7}, "mrr") == 0.7
    assert read_metric({"retrieval/mrr": 0.8, "mrr": 0.7}, "mrr") == 0.8
    assert math.isnan(read_metric({"retrieval/hit_rate_at_5": 1.0}, "mrr"))
