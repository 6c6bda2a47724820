"""The whole loop on real servers: Prefect server + `ragcycle serve`, a Chroma server, MLflow.

Monitor runs as a deployment, notices that golden answers moved into a new document, emits
``ragcycle.quality.dropped``; the reindex deployment's trigger builds, gates and promotes a new
version; a burst of triggers leads to one rebuild. Everything is asserted over HTTP APIs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, own_cache_env
from tests.servers import stop

pytestmark = pytest.mark.slow

GOLDEN = REPO / "samples" / "golden.jsonl"


def run_deployment(api: str, name: str, parameters: dict[str, Any] | None = None) -> str:
    deployment = httpx.get(f"{api}/deployments/name/{name}", timeout=30).json()
    for _ in range(
        10
    ):  # the server answers 503 while its SQLite database is busy, as Prefect's client retries
        created = httpx.post(
            f"{api}/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": parameters or deployment["parameters"]},
            timeout=30,
        )
        if created.status_code != 503:
            break
        time.sleep(2)
    created.raise_for_status()
    return str(created.json()["id"])


def wait_final(api: str, flow_run_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()["state"]["type"]
        if state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}:
            return str(state)
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish in {timeout} s")


def flow_runs_of(api: str, deployment: str) -> list[dict[str, Any]]:
    deployment_id = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30).json()["id"]
    response = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}},
        timeout=30,
    )
    return list(response.json())


def wait_deployments(api: str, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            httpx.get(f"{api}/deployments/name/{n}", timeout=30).status_code == 200 for n in names
        ):
            return
        time.sleep(1)
    raise AssertionError("deployments were not registered")


def emit_quality_dropped(api: str, count: int) -> None:
    script = (
        "from prefect.events import emit_event\n"
        "from prefect.events.worker import EventsWorker\n"
        f"for i in range({count}):\n"
        "    emit_event(event='ragcycle.quality.dropped', resource={'prefect.resource.id': 'ragcycle.index.ragcycle'}, payload={'reason': f'burst {i}'})\n"
        "EventsWorker.drain_all()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        env=own_cache_env(PREFECT_API_URL=api),
        check=True,
        timeout=60,
    )


def decisions(tracking_uri: str) -> list[str]:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("ragcycle-lifecycle")
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=200
    )
    return [run.data.tags.get("decision", "") for run in runs]


def test_monitor_triggers_reindex_on_a_prefect_server(
    prefect_server: str, chroma_server: str, sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    api = prefect_server
    data = tmp_path / "data"
    held_back = tmp_path / "held"
    held_back.mkdir()
    shutil.move(str(sample_corpus / "pdfs" / "dmca_summary.pdf"), held_back / "dmca_summary.pdf")
    tracking_uri = f"sqlite:///{data / 'mlflow.db'}"
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{data}"\nprogress = false\n'
        f'[chroma]\nurl = "{chroma_server}"\n[prefect]\napi_url = "{api}"\n'
        "[evaluation]\nmlflow_genai = false\n"
        f'[lifecycle]\nsources = ["{sample_corpus}"]\ngolden_dataset = "{GOLDEN}"\n'
    )
    env = own_cache_env(
        PREFECT_API_URL=api,
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        PREFECT_HOME=str(tmp_path / "prefect-client"),
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "ragcycle.cli", "serve", "-c", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_deployments(
            api, ["reindex/reindex", "monitor/monitor", "evaluate/evaluate", "ingest/ingest"]
        )
        first = run_deployment(
            api, "reindex/reindex", {"request": {"reason": "initial", "config_file": str(config)}}
        )
        assert wait_final(api, first) == "COMPLETED", (tmp_path / "serve.log").read_text()[-3000:]
        quiet = run_deployment(api, "monitor/monitor")
        assert wait_final(api, quiet) == "COMPLETED"
        assert decisions(tracking_uri)[-1] == "ok"

        shutil.move(
            str(held_back / "dmca_summary.pdf"), sample_corpus / "pdfs" / "dmca_summary.pdf"
        )
        before = {run["id"] for run in flow_runs_of(api, "reindex/reindex")}
        noticed = run_deployment(api, "monitor/monitor")
        assert wait_final(api, noticed) == "COMPLETED"
        assert "reindex" in decisions(tracking_uri)
        deadline = time.monotonic() + 240
        triggered: list[dict[str, Any]] = []
        while not triggered and time.monotonic() < deadline:
            triggered = [
                run for run in flow_runs_of(api, "reindex/reindex") if run["id"] not in before
            ]
            time.sleep(1)
        assert triggered, "the quality-dropped event did not trigger the reindex deployment"
        assert wait_final(api, triggered[0]["id"]) == "COMPLETED"
        assert decisions(tracking_uri)[-1] == "promoted"
        live = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            "ragcycle-index-ragcycle", "champion"
        )
        assert (str(live.version), live.source) == ("2", "chroma://ragcycle__v2"), decisions(
            tracking_uri
        )
        collections = httpx.get(
            f"{chroma_server}/api/v2/tenants/default_tenant/databases/default_database/collections",
            timeout=30,
        ).json()
        assert "ragcycle__v2" in {c["name"] for c in collections}

        evaluation = run_deployment(api, "evaluate/evaluate")
        assert wait_final(api, evaluation) == "COMPLETED"
        client = MlflowClient(tracking_uri=tracking_uri)
        runs = client.search_runs(
            [client.get_experiment_by_name("ragcycle-eval-golden").experiment_id],
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        assert runs[0].data.tags["ragcycle.collection"] == "ragcycle__v2"
        assert runs[0].data.metrics["hit_rate_at_5"] == 1.0

        # A manual trigger through the deployment: the target is live, so it is a recorded no-op.
        manual = subprocess.run(
            [
                sys.executable,
                "-m",
                "ragcycle.cli",
                "reindex",
                "--deployment",
                "--json",
                "-c",
                str(config),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert manual.returncode == 0, manual.stdout + manual.stderr
        assert (
            wait_final(api, json.loads(manual.stdout.strip().splitlines()[-1])["flow_run_id"])
            == "COMPLETED"
        )
        assert decisions(tracking_uri)[-1] == "noop"

        # The corpus changes again and ten triggers arrive at once: exactly one rebuild.
        (sample_corpus / "markdown" / "release-notes.md").write_text(
            "# Release notes\n\nVersion 2 of the service adds streaming responses and retries.\n"
        )
        seen = {run["id"] for run in flow_runs_of(api, "reindex/reindex")}
        recorded = len(decisions(tracking_uri))
        emit_quality_dropped(api, 10)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            burst = [run for run in flow_runs_of(api, "reindex/reindex") if run["id"] not in seen]
            if (
                burst
                and all(wait_final(api, run["id"]) for run in burst)
                and len(decisions(tracking_uri)) > recorded
            ):
                break
            time.sleep(2)
        time.sleep(15)  # late runs of the burst are created over several seconds
        burst = [run for run in flow_runs_of(api, "reindex/reindex") if run["id"] not in seen]
        states = [wait_final(api, run["id"]) for run in burst]
        new_decisions = decisions(tracking_uri)[recorded:]
        assert new_decisions.count("promoted") == 1, (states, new_decisions)
        assert set(new_decisions) <= {"promoted", "noop"}, new_decisions
        champion = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            "ragcycle-index-ragcycle", "champion"
        )
        assert str(champion.version) == "3"

        status = subprocess.run(
            [sys.executable, "-m", "ragcycle.cli", "status", "--json", "-c", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        report = json.loads(status.stdout.strip().splitlines()[-1])
        assert report["live"]["version"] == 3 and report["last_decision"]["decision"] in {
            "promoted",
            "noop",
        }
    finally:
        stop(server)
        log.close()
