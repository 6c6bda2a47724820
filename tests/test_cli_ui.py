"""``ragcycle ui`` serves both UIs on a data dir made by real commands, and the links between
them resolve: checked through the MLflow and Prefect servers' own REST APIs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELS_DIR, REPO, free_port

pytestmark = pytest.mark.slow


def command_env(data: Path, mlflow_port: int, prefect_port: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {
        **base,
        "RAGCYCLE_DATA_DIR": str(data),
        "RAGCYCLE_MODELS_DIR": str(MODELS_DIR),
        "RAGCYCLE_PROGRESS": "false",
        "RAGCYCLE_GENERATION__BACKEND": "extractive",
        "RAGCYCLE_EVALUATION__JUDGE__BACKEND": "none",
        "RAGCYCLE_UI__MLFLOW_PORT": str(mlflow_port),
        "RAGCYCLE_UI__PREFECT_PORT": str(prefect_port),
    }


def ragcycle(*arguments: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "ragcycle.cli", *arguments, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Served:
    """``ragcycle ui`` serving a data dir made by real commands, as the demo leaves one."""

    mlflow: str
    prefect: str
    evaluated: dict[str, object]
    status: dict[str, object]
    printed: list[str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Each command the demo prints at its end is run as printed, on an index named like the
    demo's: ``ask``, ``index list``, then ``ui``, whose two servers the tests then read; after
    them, SIGINT must stop both servers and free their ports."""
    from ragcycle.cli.lifecycle import demo_next_steps

    tmp_path = tmp_path_factory.mktemp("ui")
    mlflow_port, prefect_port = free_port(), free_port()
    env = command_env(tmp_path / "data", mlflow_port, prefect_port)
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "".join((REPO / "samples" / "golden.jsonl").read_text().splitlines(keepends=True)[:3])
    )
    markdown = REPO / "samples" / "corpus" / "markdown"  # read only: ingest writes elsewhere
    ragcycle("ingest", str(markdown), "--collection", "demo", env=env)
    evaluated = ragcycle("eval", str(golden), "--collection", "demo", env=env)
    status = ragcycle("status", env=env)

    ask, versions, ui_command = demo_next_steps("How do I enable CORS?", None)
    for command, expected in ((ask, "fastapi-cors.md"), (versions, "demo__v1")):
        done = subprocess.run(
            shlex.split(command), env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert expected in done.stdout, (command, done.stdout)

    ui = subprocess.Popen(
        shlex.split(ui_command),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # As a shell without job control starts a background command: SIGINT ignored. Ctrl-C
        # must stop the UI all the same (it did not: CI started from such a shell hung here).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert ui.stdout is not None
        printed = []
        for line in ui.stdout:
            printed.append(line)
            if "Ctrl-C stops both" in line:
                break
        yield Served(
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{prefect_port}",
            evaluated,
            status,
            printed,
        )
    finally:
        ui.send_signal(signal.SIGINT)
        code = ui.wait(60)
    assert code == 0
    assert not port_taken(mlflow_port) and not port_taken(prefect_port)


def test_the_demos_next_steps_work_as_printed_and_the_links_between_the_uis_resolve(
    served: Served,
) -> None:
    """Both servers show the same runs and link to each other (MLflow run -> Prefect flow run,
    Prefect artifact -> MLflow run), checked through their own REST APIs."""
    mlflow_url, prefect_url = served.mlflow, served.prefect
    evaluated, status, printed = served.evaluated, served.status, served.printed
    assert any(f"mlflow UI  {mlflow_url}" in line for line in printed), printed
    assert any(f"prefect UI  {prefect_url}" in line for line in printed), printed
    # MLflow -> Prefect: the evaluation run's flow-run link opens a flow run that exists.
    run = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": evaluated["run_id"]}
    ).json()["run"]
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    flow_run_id = tags["prefect.flow_run_id"]
    assert tags["prefect.flow_run_url"] == f"{prefect_url}/runs/flow-run/{flow_run_id}"
    flow_run = httpx.get(f"{prefect_url}/api/flow_runs/{flow_run_id}").json()
    assert flow_run["name"] == tags["prefect.flow_run_name"]
    # Both UIs name the run by what it did: eval · version · role · golden set@digest.
    assert run["info"]["run_name"].startswith("eval · v1 · adhoc · golden@")
    assert flow_run["name"] == run["info"]["run_name"]
    assert {"index:demo", "collection:demo__v1", "version:1"} <= set(flow_run["tags"])
    # The UI's page, as a browser asks for it (the server answers HTML navigations only).
    page = httpx.get(tags["prefect.flow_run_url"], headers={"Accept": "text/html"})
    assert page.status_code == 200 and "<html" in page.text

    # The run names the prompt version it answered with (MLflow's prompt-to-run link), and
    # that version is the one the registry marks as served.
    assert json.loads(tags["mlflow.linkedPrompts"]) == [{"name": "ragcycle-answer", "version": "1"}]
    served = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/registered-models/alias",
        params={"name": "ragcycle-answer", "alias": "production"},
    ).json()
    assert served["model_version"]["version"] == "1"

    # Prefect -> MLflow: the evaluation artifact links to the run's page in the MLflow UI.
    run_page = f"{mlflow_url}/#/experiments/{run['info']['experiment_id']}/runs/"
    run_page += evaluated["run_id"]
    artifacts = httpx.post(
        f"{prefect_url}/api/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
    ).json()
    assert any(run_page in (artifact["data"] or "") for artifact in artifacts)

    # The registry's version page: its source run is the ingest that built and promoted
    # it, and the MLmodel the page fetches resolves (it answered 500 for chroma:///).
    version = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/get",
        params={"name": "ragcycle-index-demo", "version": "1"},
    ).json()["model_version"]
    source_run = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": version["run_id"]}
    ).json()["run"]
    assert source_run["info"]["run_name"] == "ingest · demo v1 promoted"
    model_file = httpx.get(
        f"{mlflow_url}/model-versions/get-artifact",
        params={"path": "MLmodel", "name": "ragcycle-index-demo", "version": "1"},
    )
    assert model_file.status_code == 200 and "collection: demo__v1" in model_file.text

    # `ragcycle status` printed both links of the last evaluation.
    last = status["last_evaluation"]
    assert isinstance(last, dict)
    assert last["mlflow_url"] == run_page
    assert last["prefect_url"] == tags["prefect.flow_run_url"]


def test_a_browser_shows_the_story_in_both_uis(served: Served, tmp_path: Path) -> None:
    """``scripts/screenshots.py`` in headless Chromium: each page it shoots renders what a
    person should read there (run name, index model, flow run name) after the UIs' own
    JavaScript ran, and is saved as a PNG."""
    if shutil.which("chromium") is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "screenshots.py"),
            "--mlflow",
            served.mlflow,
            "--prefect",
            served.prefect,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    shots = json.loads(done.stdout)
    assert done.returncode == 0, shots
    assert set(shots) == {
        "mlflow-evaluations",
        "mlflow-evaluation-charts",
        "mlflow-evaluation-run",
        "mlflow-lifecycle",
        "mlflow-index-version",
        "prefect-runs",
        "prefect-evaluation-flow-run",
    }
    for shot in shots.values():
        assert shot["shown"], shot
        assert Path(shot["png"]).read_bytes()[:4] == b"\x89PNG"
