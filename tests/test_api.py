"""The HTTP service: routes, key, limits, overload, guardrails, and a pointer that moves while
requests stream, in-process; and a real uvicorn serving the same app."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ragcycle.api.app import create_app
from ragcycle.cli import app
from ragcycle.errors import ConfigError
from tasks.guardrails import REFUSAL
from tasks.versions import VersionRegistry
from tests.conftest import free_port, make_settings, own_cache_env
from tests.servers import running

pytestmark = pytest.mark.usefixtures("prefect_harness")

KEY = "test-key-123"


@pytest.fixture
def client(api_data: Path) -> Iterator[TestClient]:
    settings = make_settings(
        api_data,
        api={"api_key": KEY, "max_body_bytes": 4096, "max_queue": 0, "refresh_seconds": 0.1},
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def ask(client: TestClient, question: str, **extra: Any) -> httpx.Response:
    return client.post("/ask", json={"question": question, **extra}, headers={"X-API-Key": KEY})


def test_ask_answers_with_sources_verdict_and_ids(client: TestClient) -> None:
    # k=1: with the whole (tiny) corpus in reach, the planted chunk would be withheld and the
    # verdict a warning; that case has its own test below.
    response = ask(client, "When do background tasks run?", session_id="s1", k=1)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["sources"][0]["source"] == "tasks.md"
    assert answer["guardrails"]["status"] == "pass" and answer["index_version"] == 2
    assert answer["query_id"] >= 1 and answer["prompt"].startswith("prompts:/")
    assert answer["generator"]["backend"] == "extractive"
    assert set(answer["latency_ms"]) == {"retrieve", "generate", "guardrails", "total"}
    stages = answer["latency_ms"]["retrieve"] + answer["latency_ms"]["generate"]
    assert answer["latency_ms"]["guardrails"] > 0
    assert answer["latency_ms"]["total"] == pytest.approx(
        stages + answer["latency_ms"]["guardrails"], abs=0.02
    )

    liked = client.post(
        "/feedback",
        json={"query_id": answer["query_id"], "rating": "down", "comment": "too short"},
        headers={"X-API-Key": KEY},
    )
    assert liked.status_code == 200 and liked.json()["recorded"]
    log = client.app.state.service["asker"].current().log  # type: ignore[attr-defined]
    audit = log.get(answer["query_id"])
    assert audit["feedback"][0]["rating"] == "down" and audit["index_version"] == 2
    assert audit["guardrails"]["status"] == "pass" and audit["sources"][0]["source"] == "tasks.md"
    assert audit["trace_id"] == answer["trace_id"] == liked.json()["trace_id"]


def test_each_answer_is_a_trace_with_spans_tags_and_the_users_feedback(
    client: TestClient, api_data: Path
) -> None:
    from mlflow import MlflowClient

    answer = ask(client, "When do background tasks run?", session_id="user-7", k=1).json()
    client.post(
        "/feedback",
        json={"query_id": answer["query_id"], "rating": "down", "comment": "too vague"},
        headers={"X-API-Key": KEY},
    )
    shipper = client.app.state.service["shipper"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while shipper.stats().pending and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shipper.stats().pending == 0 and shipper.stats().dropped == 0

    trace = MlflowClient(make_settings(api_data).mlflow_tracking_uri).get_trace(answer["trace_id"])
    spans = {span.name: span for span in trace.data.spans}
    assert set(spans) == {"ask", "retrieve", "generate", "guardrails"}
    assert spans["retrieve"].span_type == "RETRIEVER"
    assert spans["retrieve"].outputs[0]["metadata"]["doc_uri"] == "tasks.md"
    assert spans["generate"].span_type == "CHAT_MODEL"
    assert spans["generate"].get_attribute("mlflow.chat.tokenUsage")["output_tokens"] > 0
    # The answer's cost where MLflow's cost views sum it: the same figure the API returned.
    cost = spans["generate"].get_attribute("mlflow.llm.cost")
    assert cost["total_cost"] == pytest.approx(answer["cost_usd"])
    assert cost["input_cost"] + cost["output_cost"] == pytest.approx(cost["total_cost"])
    assert spans["guardrails"].outputs["status"] == "pass"
    tags = trace.info.tags
    assert tags["ragcycle.index_version"] == "2" and tags["ragcycle.origin"] == "api"
    assert tags["ragcycle.query_id"] == str(answer["query_id"])
    assert tags["ragcycle.prompt"] == answer["prompt"]
    assert trace.info.trace_metadata["mlflow.trace.session"] == "user-7"
    rating = [a for a in trace.info.assessments if a.name == "user_rating"]
    assert rating and rating[0].value is False and rating[0].source.source_type == "HUMAN"
    # The verdict is an assessment too, so MLflow's Overview tab charts it over time.
    verdict = [a for a in trace.info.assessments if a.name == "guardrails"]
    assert [(a.value, a.source.source_type) for a in verdict] == [("pass", "CODE")]
    assert rating[0].rationale == "too vague"


def test_clear_client_errors(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}  # no key needed
    assert client.post("/ask", json={"question": "x"}).status_code == 401
    wrong = client.post("/ask", json={"question": "x"}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and "X-API-Key" in wrong.json()["detail"]
    assert ask(client, "").status_code == 422
    assert ask(client, "fine", k=0).status_code == 422
    unknown_mode = ask(client, "fine", retrieval="semantic")
    assert unknown_mode.status_code == 422 and "retrieval" in unknown_mode.text
    lexical = ask(client, "When do background tasks run?", retrieval="lexical", k=1)
    assert lexical.status_code == 200 and lexical.json()["sources"][0]["source"] == "tasks.md"
    too_big = ask(client, "q" * 5000)
    assert too_big.status_code == 413 and "api.max_body_bytes" in too_big.json()["detail"]
    unknown = client.post(
        "/feedback", json={"query_id": 999999, "rating": "up"}, headers={"X-API-Key": KEY}
    )
    assert unknown.status_code == 404 and "999999" in unknown.json()["detail"]
    bad_rating = client.post(
        "/feedback", json={"query_id": 1, "rating": "meh"}, headers={"X-API-Key": KEY}
    )
    assert bad_rating.status_code == 422
    status = client.get("/status", headers={"X-API-Key": KEY}).json()
    assert status["live_version"] == 2 and status["config"]["chunking"]["size"] == 400


def test_guardrails_redact_withhold_and_keep_injection_out(client: TestClient) -> None:
    redacted = ask(client, "Who do I contact to get the release keys?").json()
    assert (
        "jane.doe@example.com" not in redacted["answer"] and "[EMAIL_ADDRESS]" in redacted["answer"]
    )
    assert redacted["guardrails"]["status"] == "warning"
    assert redacted["guardrails"]["pii"] == ["EMAIL_ADDRESS"]

    withheld = ask(client, "Who is this tool for, according to the rant?").json()
    assert withheld["guardrails"]["status"] == "fail" and withheld["answer"] == REFUSAL

    injected = ask(client, "How often does the admin password rotate?").json()
    assert injected["guardrails"]["withheld_chunks"]
    assert "Ignore all previous" not in injected["answer"]
    assert any(r.startswith("prompt injection") for r in injected["guardrails"]["reasons"])


def test_a_locked_query_log_delays_the_log_not_the_answer(
    client: TestClient, api_data: Path
) -> None:
    """Someone holds the log's write lock (a long report, a backup): answers keep their pace and
    their query ids; the records land when the lock goes, and feedback on them works."""
    import sqlite3

    ask(client, "When do background tasks run?")  # warm
    writer = client.app.state.service["writer"]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while writer.stats()["pending"] and time.monotonic() < deadline:  # earlier answers written
        time.sleep(0.05)
    holder = sqlite3.connect(api_data / "query_log.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        answers = [ask(client, "When do background tasks run?", k=1) for _ in range(3)]
        elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert elapsed < 3, elapsed
        status = client.get("/status", headers={"X-API-Key": KEY}).json()
        assert status["query_log"]["pending"] == 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    query_id = answers[-1].json()["query_id"]
    noted = client.post(
        "/feedback", json={"query_id": query_id, "rating": "up"}, headers={"X-API-Key": KEY}
    )
    assert noted.status_code == 200, noted.text
    assert writer.stats()["pending"] == 0 and writer.stats()["dropped"] == 0
    log = client.app.state.service["asker"].current().log  # type: ignore[attr-defined]
    assert log.get(query_id)["feedback"][0]["rating"] == "up"


def test_a_full_queue_is_a_503_with_retry_after(client: TestClient) -> None:
    admission = client.app.state.service["admission"]  # type: ignore[attr-defined]
    client.portal.call(admission._slots.acquire)  # type: ignore[union-attr]
    try:
        refused = ask(client, "When do background tasks run?")
    finally:
        client.portal.call(admission._slots.release)  # type: ignore[union-attr]
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert ask(client, "When do background tasks run?").status_code == 200


def test_rollback_and_promotion_during_a_stream_of_requests(
    client: TestClient, api_data: Path
) -> None:
    registry = VersionRegistry(make_settings(api_data).mlflow_tracking_uri, "ragcycle")
    seen: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            response = ask(client, "When do background tasks run?")
            seen.append((response.status_code, response.json().get("index_version")))

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        time.sleep(1)
        registry.rollback()  # v1 live
        time.sleep(2)
        registry.promote(2)
        time.sleep(2)
    finally:
        stop.set()
        worker.join(30)
    assert seen and all(code == 200 for code, _ in seen), seen
    versions = [version for _, version in seen]
    assert 1 in versions and versions[-1] == 2


@pytest.mark.slow
def test_a_real_uvicorn_serves_the_app(api_data: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{api_data}"\n[api]\nport = {port}\n')
    command = [sys.executable, "-m", "ragcycle.cli", "api", "-c", str(config)]
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in own_cache_env().items() if k != "PREFECT_HOME"}
    (api_data / "api_key").unlink(missing_ok=True)
    log = tmp_path / "api.log"
    with running(command, f"{url}/health", log=log, timeout=120, env=env):
        # No key configured: the first start made one, mode 0600, and said where.
        made = api_data / "api_key"
        assert made.stat().st_mode & 0o777 == 0o600
        assert f"made an API key in {made}" in log.read_text()
        key = {"X-API-Key": made.read_text().strip()}
        question = {"question": "When do background tasks run?"}
        assert httpx.post(f"{url}/ask", json=question, timeout=60).status_code == 401
        answer = httpx.post(f"{url}/ask", json=question, headers=key, timeout=60)
        assert answer.status_code == 200, answer.text
        query_id = answer.json()["query_id"]
        rated = {"query_id": query_id, "rating": "up"}
        noted = httpx.post(f"{url}/feedback", json=rated, headers=key)
        assert noted.status_code == 200
        assert httpx.get(f"{url}/docs").status_code == 401
        assert httpx.get(f"{url}/openapi.json").status_code == 401
        assert httpx.get(f"{url}/docs", headers=key).status_code == 200
        schema = httpx.get(f"{url}/openapi.json", headers=key).json()
        assert schema["info"]["title"] == "ragcycle"
        # From this machine, /metrics needs no key: a local Prometheus scrapes it as it is.
        scraped = httpx.get(f"{url}/metrics")
        assert scraped.status_code == 200
        assert (
            'ragcycle_requests_total{method="POST",route="/ask",status="200"} 1.0' in scraped.text
        )


def test_without_a_key_the_first_start_makes_one_and_requires_it(api_data: Path) -> None:
    """Regression: with no key configured every route was open, with no warning."""
    (api_data / "api_key").unlink(missing_ok=True)
    settings = make_settings(api_data, api={"refresh_seconds": 0.1})
    with TestClient(create_app(settings)) as client:
        made = api_data / "api_key"
        assert made.stat().st_mode & 0o777 == 0o600
        key = made.read_text().strip()
        assert len(key) >= 32
        assert client.get("/health").status_code == 200
        for path in ("/status", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 401, path
        assert client.post("/ask", json={"question": "x"}).status_code == 401
        wrong = client.get("/status", headers={"X-API-Key": key + "x"})
        assert wrong.status_code == 401
        assert client.get("/status", headers={"X-API-Key": key}).status_code == 200
    # A second start keeps the same key.
    with TestClient(create_app(settings)) as client:
        assert client.get("/status", headers={"X-API-Key": key}).status_code == 200


def test_an_empty_key_is_a_configuration_error() -> None:
    """Regression: `api_key = ""` was accepted, and a request without the header matched it."""
    with pytest.raises(ConfigError, match=r"api\.api_key is empty"):
        make_settings(Path("/tmp"), api={"api_key": ""})


def test_auth_none_on_a_public_host_is_refused_without_insecure(tmp_path: Path) -> None:
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n[api]\nauth = "none"\n')
    refused = CliRunner().invoke(app, ["api", "--host", "0.0.0.0", "-c", str(config)])
    assert refused.exit_code == 1
    assert 'api.auth = "none" would open every route' in refused.output
    assert "--insecure" in refused.output


def test_a_chunked_body_over_the_limit_is_refused_on_the_bytes_read(client: TestClient) -> None:
    """Regression: the limit read only Content-Length, so a chunked 1 MiB or 20 MiB body was
    answered 200."""

    def chunks() -> Iterator[bytes]:
        yield b'{"question": "'
        for _ in range(16):
            yield b"q" * 65_536
        yield b'"}'

    refused = client.post(
        "/ask",
        content=chunks(),
        headers={"X-API-Key": KEY, "content-type": "application/json"},
    )
    assert refused.status_code == 413
    assert "api.max_body_bytes" in refused.json()["detail"]


def test_a_chunked_body_without_the_key_is_refused_before_it_is_read(
    client: TestClient,
) -> None:
    """Regression: without a key a 200 MiB chunked body was read whole before the 401."""
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"question": "'
        for _ in range(64):
            sent += 1
            yield b"q" * 65_536
        yield b'"}'

    refused = client.post("/ask", content=chunks(), headers={"content-type": "application/json"})
    assert refused.status_code == 401
    assert sent < 64  # the 401 came before the body was read whole


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"question": NaN}', "question"),
        (b'{"question": "fine", "k": Infinity}', "k"),
        (b'{"question": "\\ud800"}', "question"),
        (b'{"question": "\xed\xa0\x80"}', None),
    ],
    ids=["nan", "infinity", "escaped-surrogate", "raw-surrogate-bytes"],
)
def test_values_json_cannot_carry_back_are_a_422_not_a_500(
    client: TestClient, body: bytes, field: str | None
) -> None:
    """Regression: NaN, Infinity and lone surrogates crashed the 422 handler or the answer's
    writes with a 500."""
    response = client.post(
        "/ask", content=body, headers={"X-API-Key": KEY, "content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    if field is not None:
        assert any(field in problem["loc"] for problem in problems), problems


def test_an_invalid_filter_is_the_clients_400(client: TestClient) -> None:
    """Regression: `{"$foo": 1}` was answered 503 "Chroma query failed", with no Retry-After."""
    response = ask(client, "When do background tasks run?", where={"$foo": 1})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("invalid where filter:")


def scrape(
    client: TestClient, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_answers_tokens_and_guardrail_outcomes(client: TestClient) -> None:
    served = [
        ask(client, "When do background tasks run?", k=1).json(),  # pass
        ask(client, "Who do I contact to get the release keys?").json(),  # PII redacted
        ask(client, "Who is this tool for, according to the rant?").json(),  # toxic: withheld
    ]
    assert [a["guardrails"]["status"] for a in served] == ["pass", "warning", "fail"]
    assert client.get("/metrics").status_code == 401  # the test client is not on loopback
    assert client.get("/no-such-page", headers={"X-API-Key": KEY}).status_code == 404

    seen = scrape(client, Authorization=f"Bearer {KEY}")

    def value(name: str, **labels: str) -> float:
        return seen.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("ragcycle_requests_total", route="/ask", method="POST", status="200") == 3
    assert value("ragcycle_requests_total", route="/metrics", method="GET", status="401") == 1
    assert value("ragcycle_requests_total", route="other", method="GET", status="404") == 1
    assert value("ragcycle_request_seconds_count", route="/ask") == 3
    assert [value("ragcycle_answers_total", status=s) for s in ("pass", "warning", "fail")] == [
        1,
        1,
        1,
    ]
    assert value("ragcycle_guardrail_reasons_total", reason="pii_redacted") == 1
    assert value("ragcycle_guardrail_reasons_total", reason="toxicity") == 1
    assert value("ragcycle_guardrail_reasons_total", reason="other") == 0
    for stage in ("retrieve", "generate", "guardrails"):
        assert value("ragcycle_answer_stage_seconds_count", stage=stage) == 3
    assert value("ragcycle_tokens_total", kind="completion") == sum(
        a["tokens"]["completion"] for a in served
    )
    assert value("ragcycle_abstentions_total") == sum(a["abstained"] for a in served)
    assert value("ragcycle_live_index_version", index="ragcycle") == 2
    assert value("ragcycle_admission_refused_total") == 0
    assert ("ragcycle_query_log_pending", ()) in seen and (
        "ragcycle_trace_shipper_dropped_total",
        (),
    ) in seen


def test_metrics_need_no_key_from_this_machine_only(api_data: Path) -> None:
    settings = make_settings(api_data, api={"api_key": KEY})
    with TestClient(create_app(settings), client=("127.0.0.1", 50123)) as local:
        assert local.get("/metrics").status_code == 200
        assert local.get("/status").status_code == 401
    with TestClient(create_app(settings), client=("10.1.2.3", 50123)) as remote:
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert remote.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200
