"""Every command's ``--json`` output is one strict JSON document on stdout, and a failure is one
JSON object ``{"error", "kind", "hint"}`` with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
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
    assert run("ask", "How do I enable CORS?")["sources"]
    evaluated = run("eval", str(GOLDEN))  # MLflow's banner must not reach stdout
    assert evaluated["questions"] == 17 and "mrr" in evaluated["metrics"]
    assert [v["version"] for v in run("index", "list")] == [1]
    assert run("status")["live"]["version"] == 1
    assert run("reindex")["decision"] == "noop"
    assert run("monitor", "--no-act")["live_version"] == 1
    assert run("index", "promote", "1")["version"] == 1
    beir = run("benchmark", "beir", str(tiny_beir(tmp_path / "beir")), "--k", "2")
    assert beir["metrics"]["ndcg_at_2"] == 1.0

    refused = run("index", "rollback", code=1)
    assert refused["kind"] == "config" and "no previous version" in refused["error"]
    assert refused["hint"]


def test_an_unreachable_mlflow_is_one_line_and_one_json_object(tmp_path: Path) -> None:
    """Through the console script: exit 1 within the bound, one JSON object on stdout, no
    traceback on stderr; ``--verbose`` shows it."""
    command = [sys.executable, "-m", "ragcycle.cli"]
    env = {
        "RAGCYCLE_DATA_DIR": str(tmp_path / "data"),
        "RAGCYCLE_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
    }
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_")}
    quiet = subprocess.run(
        [*command, "ask", "anything?", "--json"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert quiet.returncode == 1, quiet.stderr
    failure = strict(quiet.stdout)
    assert failure["kind"] == "registry" and "connection refused" in failure["error"]
    assert "Traceback" not in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {failure['error']}"
    ]
    loud = subprocess.run(
        [*command, "--verbose", "ask", "anything?"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loud.returncode == 1 and "Traceback" in loud.stderr
