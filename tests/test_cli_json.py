"""Every command's ``--json`` output is one strict JSON document on stdout, and a failure is one
JSON object ``{"error", "kind", "hint"}`` with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ragcycle.cli import app
from tests.conftest import MODELS_DIR, REPO, free_port

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = REPO / "samples" / "golden.jsonl"


def strict(text: str) -> Any:
    """Parse like a strict consumer (jq): NaN and Infinity are errors, and so is any other
    line on stdout (a banner, a progress bar)."""

    def reject(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=reject)


def tiny_beir(folder: Path) -> Path:
    folder.mkdir()
    docs = {"d1": "Cats purr when they are content.", "d2": "Rust has a borrow checker."}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    )
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "Why do cats purr?"}) + "\n"
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_every_json_command_prints_strict_json(sample_corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{data}"\nmodels_dir = "{MODELS_DIR}"\nprogress = false\n'
        f"[evaluation]\nmlflow_genai = true\n"
        f'[lifecycle]\nsources = ["{sample_corpus / "markdown"}"]\ngolden_dataset = "{GOLDEN}"\n'
    )
    runner = CliRunner()

    def run(*arguments: str, code: int = 0) -> Any:
        result = runner.invoke(app, [*arguments, "--json", "-c", str(config)])
        assert result.exit_code == code, (arguments, result.output)
        return strict(result.stdout)

    assert run("config", "show")["data_dir"] == str(data)
    assert any(m["name"] == "smollm2-135m" for m in run("models", "list")["models"])
    assert run("ingest")["collection"] == "ragcycle__v1"
    asked = run("ask", "How do I enable CORS?")
    assert asked["sources"] and asked["query_id"] >= 1
    lexical = run("ask", "How do I enable CORS?", "--retrieval", "lexical")
    assert lexical["sources"][0]["source"] == "fastapi-cors.md"
    hybrid_eval = run("eval", str(GOLDEN), "--retrieval", "hybrid")
    assert hybrid_eval["questions"] == 17
    assert asked["trace_id"].startswith("tr-") and asked["cost_usd"] >= 0
    audited = run("audit", str(asked["query_id"]))
    assert audited["question"] == "How do I enable CORS?" and audited["index_version"] == 1
    assert run("audit", "999999", code=1)["kind"] == "error"
    evaluated = run("eval", str(GOLDEN))  # MLflow's banner must not reach stdout
    assert evaluated["questions"] == 17 and "mrr" in evaluated["metrics"]
    assert evaluated["judge"] is None  # judging is off in this session
    rows = tmp_path / "answers.jsonl"
    rows.write_text('{"question": "Q?", "answer": "A."}\n{"question": "R?", "answer": "B."}\n')
    judged = run("judge", str(rows))
    assert judged["judge"] is None
    assert [row["scores"]["judge_correctness"] for row in judged["rows"]] == [None, None]
    assert [v["version"] for v in run("index", "list")] == [1]
    assert run("status")["live"]["version"] == 1
    assert run("reindex")["decision"] == "noop"
    assert run("monitor", "--no-act")["live_version"] == 1
    assert run("index", "promote", "1")["version"] == 1
    beir = run("benchmark", "beir", str(tiny_beir(tmp_path / "beir")), "--k", "2")
    assert beir["metrics"]["ndcg_at_2"] == 1.0

    refused = run("index", "rollback", code=1)
    assert refused["kind"] == "version" and "no previous version" in refused["error"]
    assert refused["hint"]


def cli(*arguments: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """The console script in a fresh process (its own ephemeral Prefect), timed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    begun = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "ragcycle.cli", *arguments],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, time.monotonic() - begun


@pytest.mark.parametrize(
    ("server", "kind", "words"),
    [
        ("RAGCYCLE_MLFLOW__TRACKING_URI", "registry", "connection refused"),
        ("RAGCYCLE_CHROMA__URL", "index", "cannot open Chroma"),
    ],
)
def test_an_unreachable_server_is_one_line_and_one_json_object(
    tmp_path: Path, server: str, kind: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the console script, with ragcycle's default timeouts and retry budget (no
    MLFLOW_* variables of the test's own): exit 1 within 60 s, one JSON object on stdout,
    no traceback on stderr; ``--verbose`` shows it."""
    env = {
        "RAGCYCLE_DATA_DIR": str(tmp_path / "data"),
        server: f"http://127.0.0.1:{free_port()}",
    }
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)  # the child takes them from ragcycle's settings
    quiet, seconds = cli("eval", str(GOLDEN), "--json", env=env)
    assert quiet.returncode == 1, quiet.stderr
    failure = strict(quiet.stdout)
    assert failure["kind"] == kind and words in failure["error"], failure
    assert "Traceback" not in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {failure['error']}"
    ]
    # MLflow's own budget (120 s a request, retried with backoff) would take minutes; 60 s
    # leaves room for Prefect's temporary server building its database in the fresh data dir
    # (20-25 s of the 31-36 s measured on 2 busy cores).
    assert seconds < 60, f"the outage took {seconds:.0f} s to report"
    loud, _ = cli("--verbose", "ask", "anything?", env=env)
    assert loud.returncode == 1 and "Traceback" in loud.stderr
