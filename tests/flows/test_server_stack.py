"""The compose topology without Docker, on 127.0.0.1: PostgreSQL (where Debian's package is
installed, else SQLite), ``prefect server start`` on it, a process work pool with deployments
from the repository's ``prefect.yaml`` (``prefect deploy --all``) and ``prefect worker start``,
``mlflow server`` with basic-auth, a SQL store and served artifacts (started by the same
``docker/mlflow/start.sh`` as in compose), and ``chroma run``.

Ingest -> evaluate -> reindex -> monitor -> event-triggered reindex run as deployments on the
worker; results are read over the servers' own HTTP APIs. Last, an evaluation against an
OpenAI-compatible endpoint with a fake key, and a search for that key (and the MLflow password)
everywhere a run leaves something: flow-run parameters, logs, artifacts, events, MLflow params,
tags and artifacts, the worker's output and the data dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, SAMPLES, free_port
from tests.fakes import ChatServer, completion
from tests.servers import (
    Postgres,
    create_flow_run,
    emit_events,
    executable,
    flow_runs_of,
    postgres_bin,
    running,
    running_postgres,
    tail,
    wait_deployments,
    wait_final,
)

pytestmark = pytest.mark.slow

GOLDEN = REPO / "samples" / "golden.jsonl"
HELD_BACK = "pdfs/dmca_summary.pdf"
INDEX_MODEL = "ragcycle-index-ragcycle"
CHROMA_COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


class MlflowApi:
    """MLflow's REST API with basic-auth, as the UI and any client use it."""

    def __init__(self, url: str, auth: tuple[str, str]) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, auth=auth, timeout=30)

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        found = self.http.get(
            "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": experiment}
        )
        if found.status_code == 404:
            return []
        found.raise_for_status()
        response = self.http.post(
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [found.json()["experiment"]["experiment_id"]],
                "order_by": ["attributes.start_time ASC"],
                "max_results": 1000,
            },
        )
        response.raise_for_status()
        return list(response.json().get("runs", []))

    def all_runs(self) -> list[dict[str, Any]]:
        experiments = self.http.post(
            "/api/2.0/mlflow/experiments/search", json={"max_results": 1000}
        ).json()["experiments"]
        return [run for e in experiments for run in self.runs(e["name"])]

    def decisions(self) -> list[str]:
        # The lifecycle experiment also holds a reindex's evaluations, nested under it.
        runs = self.runs("ragcycle-lifecycle")
        return [tags(run)["decision"] for run in runs if "decision" in tags(run)]

    def live_collection(self, alias: str = "champion") -> str:
        version = self.alias(alias)
        return {t["key"]: t["value"] for t in version.get("tags", [])}["collection"]

    def alias(self, alias: str) -> dict[str, Any]:
        response = self.http.get(
            "/api/2.0/mlflow/registered-models/alias", params={"name": INDEX_MODEL, "alias": alias}
        )
        response.raise_for_status()
        return dict(response.json()["model_version"])

    def artifact_paths(self, run_id: str, path: str = "") -> list[str]:
        listed = self.http.get(
            "/api/2.0/mlflow/artifacts/list", params={"run_id": run_id, "path": path}
        ).json()
        paths: list[str] = []
        for item in listed.get("files", []):
            if item["is_dir"]:
                paths += self.artifact_paths(run_id, item["path"])
            else:
                paths.append(item["path"])
        return paths

    def artifact(self, run_id: str, path: str) -> bytes:
        response = self.http.get("/get-artifact", params={"run_uuid": run_id, "path": path})
        response.raise_for_status()
        return response.content


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def metrics(run: dict[str, Any]) -> dict[str, float]:
    return {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}


@dataclass
class Stack:
    prefect: str
    mlflow: MlflowApi
    chroma: str
    corpus: Path
    held_back: Path
    data: Path
    config: Path
    env: dict[str, str]
    worker_log: Path
    backend: str
    secrets: dict[str, str]

    def cli(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "ragcycle.cli", *args, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    def run(self, deployment: str, parameters: dict[str, Any] | None = None) -> str:
        flow_run = create_flow_run(self.prefect, deployment, parameters)
        state = wait_final(self.prefect, flow_run)
        assert state == "COMPLETED", f"{deployment}: {state}\n{tail(self.worker_log, 60)}"
        return flow_run

    def chroma_counts(self) -> dict[str, int]:
        listed = httpx.get(f"{self.chroma}{CHROMA_COLLECTIONS}", timeout=30).json()
        return {
            c["name"]: int(
                httpx.get(f"{self.chroma}{CHROMA_COLLECTIONS}/{c['id']}/count", timeout=30).json()
            )
            for c in listed
        }


def sql_backends(folder: Path, postgres: Postgres | None) -> dict[str, str]:
    """Database URLs of Prefect, MLflow and MLflow's user store: PostgreSQL, else SQLite."""
    if postgres is not None:
        return {
            "prefect": postgres.url("prefect", "postgresql+asyncpg"),
            "mlflow": postgres.url("mlflow"),
            "auth": postgres.url("mlflow_auth"),
        }
    return {
        "prefect": f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
        "mlflow": f"sqlite:///{folder / 'mlflow.db'}",
        "auth": f"sqlite:///{folder / 'mlflow-auth.db'}",
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("stack")
    with ExitStack() as started:
        postgres = None
        if postgres_bin() is not None:  # CI installs Debian's postgresql; else SQLite
            postgres = started.enter_context(
                running_postgres(
                    free_port(), ["prefect", "mlflow", "mlflow_auth"], folder / "postgres.log"
                )
            )
        backend = "postgresql" if postgres else "sqlite"
        yield from _servers_and_worker(folder, sql_backends(folder, postgres), backend)


def _servers_and_worker(folder: Path, databases: dict[str, str], backend: str) -> Iterator[Stack]:
    bin_dir = str(Path(sys.executable).parent)
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "MLFLOW_", "RAGCYCLE_CONFIG"))
    }
    base["PATH"] = f"{bin_dir}{os.pathsep}{base.get('PATH', '')}"
    secret = {
        "api_key": f"sk-ragcycle-fake-{secrets.token_hex(12)}",
        "mlflow_password": secrets.token_hex(12),
    }
    prefect_port, mlflow_port, chroma_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    chroma_url = f"http://127.0.0.1:{chroma_port}"
    prefect_env = {
        **base,
        "PREFECT_HOME": str(folder / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": databases["prefect"],
    }
    mlflow_env = {
        **base,
        "MLFLOW_BACKEND_STORE_URI": databases["mlflow"],
        "MLFLOW_AUTH_DATABASE_URI": databases["auth"],
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret["mlflow_password"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(mlflow_port),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_ARTIFACTS_DESTINATION": str(folder / "mlartifacts"),
        # As in compose: the worker there calls the server by its service name.
        "MLFLOW_ALLOWED_HOSTS": "mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1,127.0.0.1:*",
    }
    corpus, held_back, data = folder / "corpus", folder / "held-back", folder / "data"
    shutil.copytree(SAMPLES, corpus)
    held_back.mkdir()
    shutil.move(str(corpus / HELD_BACK), held_back / Path(HELD_BACK).name)
    config = folder / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{data}"\nprogress = false\n'
        f'[chroma]\nurl = "{chroma_url}"\n'
        f'[mlflow]\ntracking_uri = "{mlflow_url}"\nusername = "admin"\n'
        f'[prefect]\napi_url = "{api}"\n'
        "[evaluation]\nmlflow_genai = false\n"
        f'[lifecycle]\nsources = ["{corpus}"]\ngolden_dataset = "{GOLDEN}"\n'
    )
    # What a worker host has: the config file, and secrets in its environment only.
    run_env = {
        **base,
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(folder / "worker-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "RAGCYCLE_CONFIG": str(config),
        "RAGCYCLE_MLFLOW__PASSWORD": secret["mlflow_password"],
        "RAGCYCLE_GENERATION__API_KEY": secret["api_key"],
    }
    prefect = executable("prefect")
    with (
        running(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            f"{api}/health",
            log=folder / "prefect.log",
            env=prefect_env,
            timeout=180,
        ),
        running(
            ["sh", str(REPO / "docker" / "mlflow" / "start.sh")],
            f"{mlflow_url}/health",
            log=folder / "mlflow.log",
            env=mlflow_env,
            timeout=180,
        ),
        running(
            [
                executable("chroma"),
                "run",
                "--path",
                str(folder / "chroma"),
                "--host",
                "127.0.0.1",
                "--port",
                str(chroma_port),
            ],
            f"{chroma_url}/api/v2/heartbeat",
            log=folder / "chroma.log",
            timeout=60,
        ),
    ):
        for command in (
            [prefect, "work-pool", "create", "ragcycle", "--type", "process"],
            [prefect, "--no-prompt", "deploy", "--all"],
        ):
            done = subprocess.run(
                command, cwd=REPO, env=run_env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stdout + done.stderr
        wait_deployments(api, ["ingest/ingest", "evaluate/evaluate", "monitor/monitor"])
        worker_log = folder / "worker.log"
        with running(
            [prefect, "worker", "start", "--pool", "ragcycle", "--type", "process"],
            lambda: _worker_online(api),
            log=worker_log,
            env=run_env,
            cwd=REPO,
            timeout=120,
        ):
            yield Stack(
                prefect=api,
                mlflow=MlflowApi(mlflow_url, ("admin", secret["mlflow_password"])),
                chroma=chroma_url,
                corpus=corpus,
                held_back=held_back,
                data=data,
                config=config,
                env=run_env,
                worker_log=worker_log,
                backend=backend,
                secrets=secret,
            )


def _worker_online(api: str) -> bool:
    try:
        found = httpx.post(f"{api}/work_pools/ragcycle/workers/filter", json={}, timeout=5)
    except httpx.HTTPError:
        return False
    return found.status_code == 200 and bool(found.json())


def test_servers_are_secured_as_in_compose(stack: Stack) -> None:
    url = stack.mlflow.url
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    as_admin = stack.mlflow.http.get(
        "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "mlflow:5000"}
    )
    assert as_admin.status_code == 200, "compose's MLFLOW_ALLOWED_HOSTS lets the worker in"
    foreign = stack.mlflow.http.get(
        "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": "evil.example"}
    )
    assert foreign.status_code in {400, 403}, "other Host headers are refused (DNS rebinding)"
    deployments = httpx.post(f"{stack.prefect}/deployments/filter", json={}, timeout=30).json()
    assert {d["name"] for d in deployments} == {"ingest", "evaluate", "monitor", "reindex"}
    for deployment in deployments:
        assert deployment["work_pool_name"] == "ragcycle"
        assert deployment["entrypoint"].startswith("flows.")
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
        ]


# Six flow runs in sequence, each a new worker process that imports torch and loads the embedder
# (~65 s an ingest or evaluation, 3-4 min a reindex on the 2-core CI machine).
@pytest.mark.timeout(1200)
def test_lifecycle_through_deployments_on_a_worker(stack: Stack) -> None:
    mlflow = stack.mlflow
    print(f"SQL backend of Prefect and MLflow: {stack.backend}")

    # The first ingest of the index registers version 1, live at once.
    stack.run("ingest/ingest")
    artifacts = httpx.post(f"{stack.prefect}/artifacts/filter", json={}, timeout=30).json()
    report = next(a["data"] for a in artifacts if a["key"] == "ingest-ragcycle-v1")
    total = int(re.search(r"\| total \| (\d+) \|", report).group(1))  # type: ignore[union-attr]
    assert stack.chroma_counts()["ragcycle__v1"] == total > 50
    assert mlflow.live_collection() == "ragcycle__v1"

    # Evaluate: one MLflow run on the server, its artifacts stored by the server.
    stack.run("evaluate/evaluate")
    [evaluation] = mlflow.runs("ragcycle-eval-golden")
    assert tags(evaluation)["ragcycle.collection"] == "ragcycle__v1"
    assert 0 < metrics(evaluation)["retrieval/hit_rate_at_5"] < 1, (
        "a golden answer's file is held back"
    )
    run_id = evaluation["info"]["run_id"]
    assert evaluation["info"]["artifact_uri"].startswith("mlflow-artifacts:")
    table = json.loads(mlflow.artifact(run_id, "eval_questions.json"))
    assert len(table["data"]) == sum(1 for line in GOLDEN.read_text().splitlines() if line.strip())

    # A reindex by hand through the deployment: nothing changed, so a recorded no-op.
    submitted = stack.cli("reindex", "--deployment", "--reason", "by hand")
    assert wait_final(stack.prefect, submitted["flow_run_id"]) == "COMPLETED"
    # The first decision is the first ingest's: its version's source run, promoted.
    assert mlflow.decisions() == ["promoted", "noop"]
    assert mlflow.live_collection() == "ragcycle__v1"

    stack.run("monitor/monitor")
    assert mlflow.decisions()[-1] == "ok"

    # The held-back document arrives and another changes: the monitor's event triggers the
    # reindex deployment, and nine more events arriving at once make no second rebuild.
    shutil.move(str(stack.held_back / Path(HELD_BACK).name), stack.corpus / HELD_BACK)
    (stack.corpus / "markdown" / "release-notes.md").write_text(
        "# Release notes\n\nVersion 2 of the service adds streaming responses and retries.\n"
    )
    before = {run["id"] for run in flow_runs_of(stack.prefect, "reindex/reindex")}
    stack.run("monitor/monitor")
    recorded = len(mlflow.decisions())
    assert mlflow.decisions()[-1] == "reindex"
    emit_events(stack.prefect, "ragcycle.quality.dropped", "ragcycle.index.ragcycle", 9, stack.env)
    _new_runs(stack, before, timeout=120)  # the first run of the burst exists
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and "promoted" not in mlflow.decisions()[recorded:]:
        time.sleep(2)
    time.sleep(10)  # late runs of the burst are created over several seconds
    burst = [r for r in flow_runs_of(stack.prefect, "reindex/reindex") if r["id"] not in before]
    states = [wait_final(stack.prefect, run["id"]) for run in burst]
    new_decisions = mlflow.decisions()[recorded:]
    assert new_decisions.count("promoted") == 1, (states, new_decisions)
    assert set(new_decisions) <= {"promoted", "noop"}, new_decisions
    assert set(states) <= {"COMPLETED", "CANCELLED"}, states
    assert all(r["parameters"]["request"]["reason"].startswith("monitor: ") for r in burst)
    assert mlflow.live_collection() == "ragcycle__v2"
    assert mlflow.live_collection("previous") == "ragcycle__v1"
    counts = stack.chroma_counts()
    assert counts["ragcycle__v2"] > counts["ragcycle__v1"]

    candidate = [
        run
        for run in mlflow.runs("ragcycle-lifecycle")
        if tags(run).get("ragcycle.role", "").startswith("candidate")
    ][-1]
    assert "mlflow.parentRunId" in tags(candidate)
    assert tags(candidate)["ragcycle.collection"] == "ragcycle__v2"
    assert metrics(candidate)["retrieval/hit_rate_at_5"] == 1.0

    # Roll back by hand: the previous version is live again, and status says so.
    restored = stack.cli("index", "rollback")
    assert restored["version"] == 1 and "champion" in restored["aliases"]
    assert mlflow.live_collection() == "ragcycle__v1"
    assert stack.cli("status")["live"]["collection"] == "ragcycle__v1"


def test_secrets_stay_out_of_parameters_logs_and_runs(stack: Stack) -> None:
    """An LLM key and the MLflow password are used, and appear nowhere a run leaves a trace."""

    def answer(request: dict[str, Any]) -> tuple[int, Any, float]:
        return 200, completion("The sources answer this [1]."), 0.0

    _settle(stack)  # a run the previous test left behind would hold the index's writer lock
    stack.run("ingest/ingest")  # an index to evaluate, whichever test ran before

    with ChatServer(responder=answer) as chat:
        overrides = {"generation": {"backend": "openai", "base_url": chat.url, "model": "fake"}}
        flow_run = stack.run("evaluate/evaluate", {"request": {"overrides": overrides}})
    key = stack.secrets["api_key"]
    assert chat.requests, "the evaluation called the endpoint"
    assert {h.get("Authorization") for h in chat.headers} == {f"Bearer {key}"}
    evaluation = stack.mlflow.runs("ragcycle-eval-golden")[-1]
    assert tags(evaluation)["prefect.flow_run_id"] == flow_run
    assert dict((p["key"], p["value"]) for p in evaluation["data"]["params"])[
        "generator"
    ].startswith("openai")

    traces = {
        "prefect flow runs": _prefect_pages(stack.prefect, "flow_runs"),
        "prefect logs": _prefect_pages(stack.prefect, "logs"),
        "prefect artifacts": _prefect_pages(stack.prefect, "artifacts"),
        "prefect deployments": _prefect_pages(stack.prefect, "deployments"),
        "prefect events": _prefect_events(stack.prefect),
        "mlflow runs": json.dumps(stack.mlflow.all_runs()),
        "mlflow registry": stack.mlflow.http.post(
            "/api/2.0/mlflow/registered-models/search", json={"max_results": 1000}
        ).text,
        "mlflow artifacts": _mlflow_artifacts(stack.mlflow),
        "worker output": stack.worker_log.read_text(errors="replace"),
        "data dir": _folder_text(stack.data),
    }
    assert "Evaluation run" in traces["prefect logs"], "logs were read"
    assert "eval_questions.json" in traces["mlflow artifacts"], "run artifacts were read"
    for name, secret in stack.secrets.items():
        leaks = [where for where, text in traces.items() if secret in text]
        assert not leaks, f"{name} found in {leaks}"


def _new_runs(stack: Stack, before: set[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in flow_runs_of(stack.prefect, "reindex/reindex") if r["id"] not in before]
        if runs:
            return runs
        time.sleep(1)
    raise AssertionError(f"no reindex run was triggered in {timeout} s\n{tail(stack.worker_log)}")


def _settle(stack: Stack, timeout: float = 600) -> None:
    """Wait until no flow run of the stack is pending or running (the monitor's nightly
    schedule keeps future runs SCHEDULED, so that state does not count)."""
    busy = {"PENDING", "RUNNING", "CANCELLING"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = httpx.post(
            f"{stack.prefect}/flow_runs/filter",
            json={"flow_runs": {"state": {"type": {"any_": sorted(busy)}}}},
            timeout=30,
        ).json()
        if not runs:
            return
        time.sleep(2)
    raise AssertionError(f"flow runs still busy after {timeout} s\n{tail(stack.worker_log)}")


def _prefect_pages(api: str, kind: str) -> str:
    pages, offset = [], 0
    while True:
        page = httpx.post(
            f"{api}/{kind}/filter", json={"limit": 200, "offset": offset}, timeout=30
        ).json()
        pages.append(json.dumps(page))
        if len(page) < 200:
            return "\n".join(pages)
        offset += 200


def _prefect_events(api: str) -> str:
    since = "2000-01-01T00:00:00Z"
    response = httpx.post(
        f"{api}/events/filter",
        json={"filter": {"occurred": {"since": since}}, "limit": 50},
        timeout=30,
    ).json()
    pages = [json.dumps(response["events"])]
    while response.get("next_page"):
        response = httpx.get(response["next_page"], timeout=30).json()
        pages.append(json.dumps(response["events"]))
    assert len(pages[0]) > 2, "events were read"
    return "\n".join(pages)


def _mlflow_artifacts(mlflow: MlflowApi) -> str:
    texts = []
    for run in mlflow.all_runs():
        run_id = run["info"]["run_id"]
        for path in mlflow.artifact_paths(run_id):
            texts.append(path + "\n" + mlflow.artifact(run_id, path).decode(errors="replace"))
    return "\n".join(texts)


def _folder_text(folder: Path) -> str:
    return "\n".join(
        path.read_bytes().decode(errors="replace") for path in folder.rglob("*") if path.is_file()
    )
