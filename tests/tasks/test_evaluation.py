from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ragcycle.errors import DatasetError
from tasks.evaluation.golden import load_golden, matches_source
from tasks.evaluation.metrics import (
    contains_key,
    hit_rate_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    supported_share,
    token_f1,
)
from tasks.evaluation.scoring import summarize
from tasks.evaluation.stats import bootstrap_ci


def test_ndcg_of_a_hand_worked_ranking() -> None:
    # Ranking: relevant, not, relevant; 2 relevant documents in all.
    # DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5; IDCG = 1 + 1/log2(3) = 1.6309298
    assert ndcg_at_k([1, 0, 1], [1, 1], 3) == pytest.approx(1.5 / 1.6309298, abs=1e-6)
    # Graded gains as in BEIR qrels: gains 2 at rank 2, ideal puts it first.
    # DCG = 2/log2(3) = 1.2618595; IDCG = 2/log2(2) = 2
    assert ndcg_at_k([0, 2], [2], 2) == pytest.approx(0.6309298, abs=1e-6)
    assert ndcg_at_k([0, 0, 0], [1], 3) == 0.0
    assert math.isnan(ndcg_at_k([0, 0], [], 2))


def test_mrr_hit_recall_precision_by_hand() -> None:
    relevance = [False, False, True, False, True]
    assert mrr(relevance) == pytest.approx(1 / 3)
    assert mrr(relevance, k=2) == 0.0
    assert hit_rate_at_k(relevance, 2) == 0.0 and hit_rate_at_k(relevance, 3) == 1.0
    assert recall_at_k(relevance, 3, 5) == pytest.approx(2 / 3)
    assert precision_at_k(relevance, 5) == pytest.approx(0.4)
    assert math.isnan(recall_at_k(relevance, 0, 5))


def test_token_f1_follows_squad() -> None:
    # prediction tokens: [cat, sat] ; reference: [cat, sat, on, mat] ("the" dropped)
    assert token_f1("The cat sat.", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1("Paris [1]", "paris") == 1.0
    assert token_f1("", "") == 1.0
    assert token_f1("London", "Paris") == 0.0


def test_supported_share_counts_sentences_found_in_context() -> None:
    context = ["The DMCA was signed by President Clinton on October 28, 1998."]
    answer = "The DMCA was signed by President Clinton [1]. It created a new moon base on Mars."
    assert supported_share(answer, context) == pytest.approx(0.5)
    assert math.isnan(supported_share("", context))


def test_sources_match_by_path_or_file_name() -> None:
    assert matches_source("pdfs/report.pdf", "report.pdf")
    assert matches_source("pdfs/report.pdf", "pdfs/report.pdf")
    assert not matches_source("pdfs/myreport.pdf", "report.pdf")


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [0.0, 1.0] * 50
    low, high = bootstrap_ci(values, samples=2000, seed=1)
    assert low < 0.5 < high and high - low < 0.3
    assert bootstrap_ci(values, samples=2000, seed=1) == (low, high)
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))


def test_golden_loader_reports_bad_lines_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    lines = [
        json.dumps({"question": "Q1?", "expected_answer": "A", "expected_sources": ["a.md"]}),
        "{not json",
        json.dumps({"expected_answer": "no question"}),
        "",
        json.dumps({"question": "Q2?", "expected_answer": None, "expected_sources": []}),
        json.dumps({"question": "Q3?", "pages": {"a.pdf": ["one"]}}),
    ]
    path.write_text("\n".join(lines) + "\n")
    golden = load_golden(path)
    assert [item.question for item in golden.items] == ["Q1?", "Q2?"]
    assert [item.answerable for item in golden.items] == [True, False]
    assert [error["line"] for error in golden.errors] == [2, 3, 6]
    assert "question" in golden.errors[1]["error"]
    with pytest.raises(DatasetError):
        load_golden(tmp_path / "missing.jsonl")


def test_answer_keys_load_as_alternatives_and_bad_ones_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    rows: list[dict[str, Any]] = [
        {"question": "Q1?", "expected_answer": "At 7:30.", "answer_key": "7:30"},
        {"question": "Q2?", "expected_answer": "OCP.", "answer_key": ["OCP", "Omni Consumer"]},
        {"question": "Q3?", "expected_answer": "A."},
        {"question": "Q4?", "expected_answer": "A.", "answer_key": 35},
        {"question": "Q5?", "expected_answer": "A.", "answer_key": ["ok", " "]},
        {"question": "Q6?", "expected_answer": None, "answer_key": "x"},
        {"question": "Q7?", "expected_answer": "A.", "answer_key": []},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    golden = load_golden(path)
    assert [item.answer_key for item in golden.items] == [
        ("7:30",),
        ("OCP", "Omni Consumer"),
        (),
    ]
    assert [error["line"] for error in golden.errors] == [4, 5, 6, 7]
    assert all("answer_key" in error["error"] for error in golden.errors)


@pytest.mark.parametrize(
    ("answer", "keys", "expected"),
    [
        ("The meeting starts at 7:30 a.m.", ("7:30",), 1.0),
        ("It is capped at $35 a month.", ("35",), 1.0),
        ("It costs 135 dollars.", ("35",), 0.0),  # not inside a longer number
        ("Wiki means quickly edited.", ("quick",), 0.0),  # not inside a longer word
        ("Omni   Consumer\nProducts runs it.", ("OCP", "omni consumer products"), 1.0),
        ("The ﬁrst wiki was WikiWikiWeb.", ("first wiki",), 1.0),  # ligature, NFKC
        ("I don't know.", ("Jakarta",), 0.0),
    ],
)
def test_an_answer_contains_its_key_as_whole_words(answer: str, keys: Any, expected: float) -> None:
    assert contains_key(answer, keys) == expected


def test_the_key_metric_scores_the_served_answer() -> None:
    text = "Invoices are answered by billing at jane.doe@example.com within two days."
    _, served = _scored(text, answer_key=("two days",))
    assert served["answer_contains_key"] == 1.0
    _, withheld = _scored(text, pii_action="block", answer_key=("two days",))
    assert withheld["answer_contains_key"] == 0.0  # the key was generated, but not served
    _, missing = _scored("Billing answers them.", answer_key=("two days",))
    assert missing["answer_contains_key"] == 0.0
    _, keyless = _scored(text)
    assert math.isnan(keyless["answer_contains_key"])


def test_summary_averages_repeats_per_question_first() -> None:
    def row(line: int, repeat: int, hit: float) -> dict[str, object]:
        base: dict[str, object] = {
            name: math.nan
            for name in (
                "recall_at_1",
                "precision_at_1",
                "mrr",
                "ndcg_at_1",
                "page_hit_rate",
                "answer_f1",
                "answer_similarity",
                "faithfulness",
                "answer_relevance",
                "no_answer_correct",
                "abstained_when_unanswerable",
                "answered_when_answerable",
                "pii_in_answer",
                "toxic_answer",
                "pii_in_context",
                "injection_in_context",
            )
        }
        base.update(
            line=line,
            repeat=repeat,
            hit_rate_at_1=hit,
            latency_retrieve_ms=1.0,
            latency_generate_ms=2.0,
            latency_total_ms=3.0 + line,
            prompt_tokens=10,
            completion_tokens=5,
            cost_usd=0.5,
            flagged=False,
        )
        return base

    rows = [row(1, 0, 1.0), row(1, 1, 0.0), row(1, 2, 0.0), row(2, 0, 1.0)]
    summary = summarize(rows, 1, samples=200)
    # question 1 averages to 1/3, question 2 to 1: mean 2/3, where a mean over rows gives 1/2
    assert summary.metrics["hit_rate_at_1"] == pytest.approx(2 / 3)
    assert summary.questions == 2 and summary.rows == 4
    assert summary.metrics["cost_usd_total"] == pytest.approx(2.0)
    assert summary.metrics["prompt_tokens_total"] == 40
    assert math.isnan(summary.metrics["answer_f1"])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 5}', 1.0),
        ('Sure! ```json\n{"score": 3}\n```', 0.5),
        ("Score: 2 out of 5", 0.25),
        ('{"score": "4"}', 0.75),
        ('{"score": 9}', math.nan),
        ("I cannot grade this.", math.nan),
        ("", math.nan),
    ],
)
def test_judge_replies_are_parsed_robustly(reply: str, expected: float) -> None:
    from tasks.evaluation.judges import parse_judge_score

    score = parse_judge_score(reply)
    assert (math.isnan(score) and math.isnan(expected)) or score == pytest.approx(expected)


def test_judge_rows_survive_failures_and_garbage() -> None:
    from ragcycle.errors import GenerationError
    from tasks.evaluation.judges import judge_rows

    class Judge:
        name, model, sha256, structured_output = "openai", "fake", None, False

        def __init__(self) -> None:
            # faithfulness, correctness, relevance for each row, in that order
            self.replies = iter(
                ['{"score": 4}', "no idea", "boom", '{"score": 1}', '{"score": 5}', "3"]
            )

        def complete(
            self, messages: list[dict[str, str]], **options: Any
        ) -> tuple[str, dict[str, int]]:
            assert options["json_schema"] is None, "an API judge is not sent a schema"
            reply = next(self.replies)
            if reply == "boom":
                raise GenerationError("HTTP 500")
            return reply, {}

    rows: list[dict[str, Any]] = [
        {"question": "q1", "answer": "a1", "expected_answer": "a1"},
        {"question": "q2", "answer": "a2", "expected_answer": "a2"},
    ]
    judge_rows(rows, [["ctx"], ["ctx"]], Judge(), formulation="score")
    assert rows[0]["judge_faithfulness"] == 0.75
    assert math.isnan(rows[0]["judge_correctness"]) and math.isnan(rows[0]["judge_relevance"])
    assert rows[0]["judge_failed"] == ["judge_correctness", "judge_relevance"]
    assert (rows[1]["judge_faithfulness"], rows[1]["judge_correctness"]) == (0.0, 1.0)
    assert rows[1]["judge_relevance"] == 0.5 and rows[1]["judge_failed"] == []


def test_judge_reliability_by_hand() -> None:
    from tasks.evaluation.judges import judge_reliability

    rows = [
        # question 1, two repeats: the judge says supported (0.75), then not (0.25): a flip
        {"line": 1, "judge_faithfulness": 0.75, "faithfulness": 1.0},
        {"line": 1, "judge_faithfulness": 0.25, "faithfulness": 1.0},
        # question 2: agreeing verdicts, no flip
        {"line": 2, "judge_faithfulness": 0.0, "faithfulness": 0.0},
        {"line": 2, "judge_faithfulness": 0.25, "faithfulness": math.nan},
    ]
    figures = judge_reliability(rows)
    # agreement over rows with both figures: yes, no, yes -> 2/3
    assert figures["judge_lexical_agreement"] == pytest.approx(2 / 3)
    assert figures["judge_flip_share"] == 0.5
    assert math.isnan(judge_reliability(rows[:1])["judge_flip_share"])


def test_local_models_are_priced_by_cpu_time_and_apis_by_tokens() -> None:
    from ragcycle.settings import EvaluationSettings, Price
    from tasks.evaluation.scoring import scoring_config

    evaluation = EvaluationSettings(
        cpu_hour_usd=0.36, prices={"gpt-x": Price(prompt=2.0, completion=8.0)}
    )
    local = scoring_config(evaluation, "local", "smollm2-135m", 5)
    assert (local.price_cpu_hour, local.price_prompt_per_mtok, local.priced) == (0.36, 0.0, True)
    api = scoring_config(evaluation, "openai", "gpt-x", 5)
    assert (api.price_cpu_hour, api.price_prompt_per_mtok, api.priced) == (0.0, 2.0, True)
    assert scoring_config(evaluation, "openai", "unknown", 5).priced is False
    own = EvaluationSettings(prices={"smollm2-135m": Price(cpu_hour=1.0)})
    assert scoring_config(own, "local", "smollm2-135m", 5).price_cpu_hour == 1.0


def test_page_metrics_count_every_served_chunk_not_only_each_documents_best() -> None:
    from tasks.evaluation.metrics import page_hit_and_recall

    expected = {"guide.pdf": [3, 7]}
    # the document's best chunk is on page 1; a later chunk spans pages 6-7
    served = [("docs/guide.pdf", 1, 1), ("other.pdf", 3, 3), ("docs/guide.pdf", 6, 7)]
    assert page_hit_and_recall(served, expected) == (1.0, 0.5)
    assert page_hit_and_recall(served[:2], expected) == (0.0, 0.0)  # page 3 of another file
    assert page_hit_and_recall([("guide.pdf", 2, 8)], expected) == (1.0, 1.0)
    hit, recall = page_hit_and_recall(served, {})
    assert math.isnan(hit) and math.isnan(recall)


def test_quality_plot_has_one_point_per_index_version_on_the_run_it_belongs_to(
    tmp_path: Path,
) -> None:
    """x is the index version, not run order: the champion re-evaluated after a newer
    candidate counts once (its newest run); the PNG lands on the given run, and no run of its
    own is made for it."""
    import mlflow

    from tasks.tracking.plots import plot_quality_by_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("quality", artifact_location=(tmp_path / "a").as_uri())
    ids = []
    for version, role, score in (
        ("1", "", 0.5),
        ("2", "candidate configured", 0.8),
        ("1", "champion", 0.55),
    ):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.set_tags({"ragcycle.kind": "evaluation", "ragcycle.index_version": version})
            if role:
                mlflow.set_tag("ragcycle.role", role)
            # Version 2 logged under the grouped name, the others as runs before the scheme.
            mlflow.log_metric("retrieval/mrr" if version == "2" else "mrr", score)
            ids.append(run.info.run_id)

    from tasks.tracking.metric_names import read_metric
    from tasks.tracking.plots import quality_by_version

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([experiment], order_by=["attributes.start_time DESC"])
    found = quality_by_version(runs)
    assert [(q.version, read_metric(q.metrics, "mrr"), q.candidate) for q in found] == [
        (1, 0.55, False),
        (2, 0.8, True),
    ]
    path = plot_quality_by_version(
        uri, "quality", ["mrr"], tmp_path / "q.png", promoted=[2], log_to_run=ids[-1]
    )
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert [a.path for a in client.list_artifacts(ids[-1])] == ["q.png"]
    assert len(client.search_runs([experiment])) == 3


def _scored(
    answer_text: str,
    *,
    pii_action: str = "redact",
    entities: tuple[str, ...] = (),
    answer_key: tuple[str, ...] = (),
) -> Any:
    """One question scored as an evaluation scores it: the guardrails' verdict, then the row."""
    import numpy as np

    from tasks.evaluation.golden import GoldenItem
    from tasks.evaluation.scoring import ScoringConfig, score_row
    from tasks.generation.answers import Answer
    from tasks.guardrails import guard_answer, pii_detector
    from tasks.guardrails.keeping import Keeping
    from tasks.indexing.store import Hit
    from tasks.retrieval.core import Retrieval

    context = "Invoices are answered by billing at jane.doe@example.com within two days."
    hit = Hit("c1", context, 0.9, {"doc_id": "billing.md", "source": "billing.md", "pii": ""})
    retrieval = Retrieval("Who answers invoices?", np.ones(3) / 3**0.5, [hit], {"retrieve": 1.0})
    answer = Answer("Who answers invoices?", answer_text, [], False, 0, 0, 1.0, "x", "p")
    detector = pii_detector(entities) if entities else pii_detector()
    verdict = guard_answer(answer_text, [context], pii_action=pii_action, pii=detector)
    item = GoldenItem(1, "Who answers invoices?", context, ("billing.md",), {}, answer_key)
    config = ScoringConfig(k=5, pii=detector, keeping=Keeping(detector))
    vector = np.ones(3) / 3**0.5
    return verdict, score_row(
        item, 0, retrieval, answer, config,
        answer_vector=vector, expected_vector=vector, verdict=verdict,
    )  # fmt: skip


def test_answer_metrics_describe_the_served_answer() -> None:
    """A withheld answer earns nothing (it earned full credit before), a redacted one is stored
    and scored as served, and the PII metric uses the production detector's entity types."""
    text = "Invoices are answered by billing at jane.doe@example.com within two days."
    verdict, redacted = _scored(text)
    assert verdict.status == "warning"
    assert redacted["answer"] == verdict.answer and "jane.doe" not in redacted["answer"]
    assert redacted["pii_in_answer"] == 1.0
    assert redacted["faithfulness"] == 1.0  # the placeholder is no unsupported content
    assert redacted["answered_when_answerable"] == 1.0
    assert "generated_answer" not in redacted

    verdict, blocked = _scored(text, pii_action="block")
    assert verdict.status == "fail" and blocked["answer"] == verdict.answer
    assert (blocked["answer_f1"], blocked["faithfulness"], blocked["answer_similarity"]) == (
        0,
        0,
        0,
    )
    assert blocked["answered_when_answerable"] == 0.0

    # Production counts phone numbers only: the e-mail address is no finding there.
    _, phones_only = _scored(text, entities=("PHONE_NUMBER",))
    assert phones_only["pii_in_answer"] == 0.0 and phones_only["answer"] == text


def test_an_answers_cost_splits_into_input_and_output_as_mlflow_sums_it() -> None:
    """Tokens at their prices; a local model's CPU time is output (one timing for both phases)."""
    from types import SimpleNamespace

    from tasks.evaluation.scoring import ScoringConfig, answer_cost, answer_cost_parts

    api = ScoringConfig(k=5, price_prompt_per_mtok=2.0, price_completion_per_mtok=8.0)
    answer = SimpleNamespace(prompt_tokens=1_000, completion_tokens=250, cpu_seconds=0.0)
    assert answer_cost_parts(answer, api) == pytest.approx((0.002, 0.002))
    local = ScoringConfig(k=5, price_cpu_hour=0.036)
    answer = SimpleNamespace(prompt_tokens=1_000, completion_tokens=250, cpu_seconds=10.0)
    assert answer_cost_parts(answer, local) == pytest.approx((0.0, 0.0001))
    assert answer_cost(answer, local) == pytest.approx(0.0001)
