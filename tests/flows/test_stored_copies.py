"""What ragcycle keeps of a PII-bearing answer: traces, the query log, the evaluation's tables
and GenAI views, and the W&B mirror hold what was served, never the raw personal data."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from flows.ask import Asker
from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from tests.conftest import make_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")

# One value of every default entity type, as invoices and contracts print them.
VALUES = {
    "EMAIL_ADDRESS": "jane.doe+billing@mail.example.co.uk",
    "PHONE_NUMBER": "+1 (415) 555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "US_SSN": "123-45-6789",
}
BILLING = f"""# Billing contacts

Invoice questions are answered by e-mail at {VALUES["EMAIL_ADDRESS"]} within two working days.

The billing hotline number is {VALUES["PHONE_NUMBER"]} on weekdays from nine to five.

Refunds are paid to the IBAN {VALUES["IBAN_CODE"]} or the card {VALUES["CREDIT_CARD"]} on file.

The social security number of the account holder is {VALUES["US_SSN"]} on the signed form.
"""
OTHER = "# Opening hours\n\nThe office opens at eight and closes at six, Monday to Friday.\n"
QUESTIONS = [
    "At which e-mail address are invoice questions answered?",
    "What is the billing hotline number on weekdays?",
    "To which IBAN or card are refunds paid?",
    "What is the social security number of the account holder?",
    # A question that carries personal data of its own.
    f"I am {VALUES['EMAIL_ADDRESS']}: how fast are invoice questions answered?",
]


def _raw_values_in(text: str) -> list[str]:
    return [value for value in VALUES.values() if value in text]


def _dump(database: Path) -> str:
    """Every row of a SQLite file as SQL text (strings whole, whatever pages they span)."""
    with sqlite3.connect(database) as db:
        return "\n".join(db.iterdump())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, embedder: Any, prefect_harness: None) -> Any:
    """A billing document ingested, every question asked and evaluated, mirrored to W&B."""
    root = tmp_path_factory.mktemp("stored")
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "billing.md").write_text(BILLING)
    (corpus / "hours.md").write_text(OTHER)
    data = root / "data"
    ingest(IngestRequest(paths=[str(corpus)], overrides={"data_dir": str(data), "progress": False}))
    settings = make_settings(data)
    asker = Asker(settings)
    asked = [asker.ask(question) for question in QUESTIONS]
    golden = root / "golden.jsonl"
    golden.write_text(
        "".join(
            json.dumps({"question": q, "expected_sources": ["billing.md"]}) + "\n"
            for q in QUESTIONS
        )
    )
    wandb = {"enabled": True, "mode": "offline", "project": "stored", "dir": str(root / "w")}
    evaluation = evaluate(
        EvaluateRequest(
            dataset=str(golden),
            overrides={"data_dir": str(data), "progress": False, "wandb": wandb},
        )
    )
    return settings, asked, evaluation, root / "w"


def test_the_answers_carried_every_default_entity_type(served: Any) -> None:
    """The premise of the tests below: each type was in a generated answer and redacted."""
    _, asked, _, _ = served
    redacted = {kind for result in asked for kind in result.guardrails["pii"]}
    assert redacted == set(VALUES)
    assert all(not _raw_values_in(result.answer) for result in asked)


def test_traces_and_evaluation_records_keep_no_raw_value(served: Any) -> None:
    settings, asked, evaluation, _ = served
    mlflow_db = _dump(settings.data_dir / "mlflow.db")
    assert _raw_values_in(mlflow_db) == []
    # The traces are there, with the served (redacted) answers and questions.
    for result in asked:
        assert result.trace_id and result.trace_id in mlflow_db
    assert "[IBAN_CODE]" in mlflow_db and "I am [EMAIL_ADDRESS]" in mlflow_db
    artifacts = settings.data_dir / "mlartifacts"
    files = [path for path in artifacts.rglob("*") if path.is_file()]
    table = next(path for path in files if path.name == "eval_questions.json")
    assert "[CREDIT_CARD]" in table.read_text()
    for path in files:
        assert _raw_values_in(path.read_bytes().decode("utf-8", "replace")) == [], path
    assert evaluation["questions"] == len(QUESTIONS)


def test_the_query_log_keeps_no_raw_value(served: Any) -> None:
    settings, _, _, _ = served
    log = _dump(settings.data_dir / "query_log.sqlite")
    assert _raw_values_in(log) == []
    assert "[US_SSN]" in log and "I am [EMAIL_ADDRESS]" in log


def test_the_wandb_mirror_keeps_no_raw_value(served: Any) -> None:
    from tests.wandb_offline import offline_runs

    _, _, _, mirror = served
    [run] = offline_runs(mirror)
    table = json.dumps(run.tables["questions"])
    assert "[PHONE_NUMBER]" in table
    assert _raw_values_in(table + json.dumps(run.config) + json.dumps(run.summary)) == []


def test_keep_raw_keeps_the_generated_answer_and_the_question(served: Any) -> None:
    """The privacy decision the other way: the trace then holds the raw text."""
    import mlflow

    settings, _, _, _ = served
    keeping = settings.model_copy(
        update={"tracing": settings.tracing.model_copy(update={"keep_raw": True})}
    )
    result = Asker(keeping).ask(QUESTIONS[2])
    assert VALUES["IBAN_CODE"] not in result.answer  # the user is still served the redaction
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    trace = mlflow.get_trace(result.trace_id).to_json()
    assert VALUES["IBAN_CODE"] in trace
    questions = settings.model_copy(
        update={"tracing": settings.tracing.model_copy(update={"keep_raw_questions": True})}
    )
    asked = Asker(questions).ask(QUESTIONS[4])
    trace = mlflow.get_trace(asked.trace_id).to_json()
    assert QUESTIONS[4] in trace
