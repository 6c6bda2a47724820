"""The service under faults, with real servers: MLflow going away never fails or stalls an
answer (traces wait in the shipper and go out when it is back), and a Chroma that is gone is a
503 with a message, not a hang."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flows.ingest import IngestRequest, ingest
from ragcycle.api.app import create_app
from tests.conftest import free_port, make_settings
from tests.servers import executable, running, stop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

DOCUMENTS = {
    "tasks.md": "# Background tasks\n\nBackground tasks run after the response is sent.\n",
    "cors.md": "# CORS\n\nAllow origins with CORSMiddleware and a list of origins.\n",
}


@contextmanager
def mlflow_on(port: int, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real MLflow server on ``port`` whose store lives in ``folder`` (so it can come back)."""
    url = f"http://127.0.0.1:{port}"
    command = [executable("mlflow"), "server", "--backend-store-uri"]
    command += [f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination"]
    command += [str(folder / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    log = folder / f"mlflow-{time.monotonic_ns()}.log"
    with running(command, f"{url}/health", log=log, timeout=180) as process:
        yield process


@contextmanager
def chroma_on(port: int, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    url = f"http://127.0.0.1:{port}"
    command = [executable("chroma"), "run", "--path", str(folder / "chroma"), "--host"]
    command += ["127.0.0.1", "--port", str(port)]
    with running(command, f"{url}/api/v2/heartbeat", log=folder / "chroma.log", timeout=60) as p:
        yield p


def wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_mlflow_and_chroma_outages(tmp_path: Path, embedder: Any) -> None:
    from mlflow import MlflowClient

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in DOCUMENTS.items():
        (corpus / name).write_text(text)
    mlflow_port, chroma_port = free_port(), free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    chroma_url = f"http://127.0.0.1:{chroma_port}"
    with chroma_on(chroma_port, tmp_path) as chroma, mlflow_on(mlflow_port, tmp_path) as served:
        overrides = {
            "data_dir": str(tmp_path / "data"),
            "progress": False,
            "chroma": {"url": chroma_url},
            "mlflow": {"tracking_uri": mlflow_url},
        }
        ingest(IngestRequest(paths=[str(corpus)], overrides=overrides))
        settings = make_settings(
            tmp_path / "data",
            chroma={"url": chroma_url},
            mlflow={"tracking_uri": mlflow_url},
            tracing={"retry_seconds": 0.5},
            api={"auth": "none"},  # outages, not the key, are what this test is about
        )
        with TestClient(create_app(settings)) as client:
            shipper = client.app.state.service["shipper"]  # type: ignore[attr-defined]
            first = client.post("/ask", json={"question": "When do background tasks run?"})
            assert first.status_code == 200
            assert wait_for(lambda: shipper.stats().shipped == 1, 30)

            # MLflow goes away: answers keep coming, as fast, and their traces wait.
            stop(served)
            answered = []
            for _ in range(4):
                started = time.monotonic()
                response = client.post("/ask", json={"question": "How do I allow origins?"})
                assert response.status_code == 200, response.text
                answered.append((response.json()["trace_id"], time.monotonic() - started))
            assert max(seconds for _, seconds in answered) < 2.0, answered
            assert wait_for(lambda: not shipper.stats().reachable, 10)
            status = client.get("/status").json()
            assert status["mlflow"].startswith("unreachable at http://127.0.0.1:")
            assert status["tracing"]["pending"] == 4 and status["tracing"]["dropped"] == 0
            trace_ids = [first.json()["trace_id"], *(trace for trace, _ in answered)]

            # Back on the same port and store: the buffered traces go out by themselves.
            with mlflow_on(mlflow_port, tmp_path):
                assert wait_for(lambda: shipper.stats().pending == 0, 60)
                assert shipper.stats().shipped == 5 and shipper.stats().reachable
                mlflow = MlflowClient(mlflow_url)
                for trace_id in trace_ids:
                    assert mlflow.get_trace(trace_id).info.tags["ragcycle.origin"] == "api"

                # Chroma goes away: a 503 that says so, quickly.
                stop(chroma)
                started = time.monotonic()
                gone = client.post("/ask", json={"question": "When do background tasks run?"})
                assert gone.status_code == 503, gone.text
                assert gone.json()["detail"].startswith("Chroma query on 'ragcycle__v1' failed")
                assert time.monotonic() - started < 15
