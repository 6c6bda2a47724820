"""The dashboards of production, after real traffic to a real ``ragcycle api``: a real Prometheus
(Debian's package) scrapes it with the configuration and alert rules that docker/ ships and
stores the traffic that was sent; the Grafana dashboard and the alerts query only series the
API exports; MLflow's Overview tab, in headless Chromium, charts the same traffic's traces."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragcycle.api.metrics import ApiMetrics
from scripts.traffic import send_traffic
from tests.conftest import REPO, free_port, own_cache_env
from tests.servers import running

pytestmark = pytest.mark.usefixtures("prefect_harness")

DOCKER = REPO / "docker"
KEY = "prometheus-test-key"
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "Prometheus is not installed (Debian: apt-get install prometheus; .ci/run does)"


def exported_names() -> set[str]:
    """The sample names /metrics exports once every series has a value."""
    state = {
        "queue": {"running": 0, "waiting": 0, "refused": 0},
        "tracing": {"pending": 0, "dropped": 0, "failures": 0},
        "query_log": {"pending": 0, "dropped": 0, "failures": 0},
        "index": "ragcycle",
        "live_version": 1,
    }
    metrics = ApiMetrics(lambda: state)
    metrics.requests.labels("/ask", "POST", "200").inc()
    metrics.request_seconds.labels("/ask").observe(0.1)
    metrics.observe_answer(
        {
            "latency_ms": {"retrieve": 1.0, "generate": 2.0, "guardrails": 3.0},
            "tokens": {"prompt": 10, "completion": 5},
            "cost_usd": 0.001,
            "guardrails": {"status": "warning", "reasons": ["potential hallucination: x"]},
            "abstained": True,
        }
    )
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def queried_names(expressions: list[str]) -> set[str]:
    return {name for expr in expressions for name in re.findall(r"\bragcycle_\w+", expr)}


def test_the_dashboard_and_the_alerts_query_only_exported_series() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "ragcycle.json").read_text())
    panel_queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DOCKER / "prometheus" / "alerts.yml").read_text())
    alert_queries = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exported = exported_names()
    assert queried_names(panel_queries) - exported == set()
    assert queried_names(alert_queries) - exported == set()
    # Every figure /metrics gives is on the dashboard (histograms through their buckets).
    shown = queried_names(panel_queries)
    unshown = {
        name
        for name in exported
        if name not in shown and not name.endswith(("_count", "_sum", "_created"))
    }
    assert unshown == set()


@pytest.mark.skipif(PROMETHEUS is None or shutil.which("promtool") is None, reason=NO_PROMETHEUS)
def test_promtool_accepts_the_shipped_configuration_and_rules() -> None:
    promtool = str(shutil.which("promtool"))
    for command in (
        [promtool, "check", "config", "--syntax-only", str(DOCKER / "prometheus/prometheus.yml")],
        [promtool, "check", "rules", str(DOCKER / "prometheus/alerts.yml")],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def local_config(folder: Path, api_port: int) -> Path:
    """docker/'s Prometheus configuration pointed at an API on this machine, scraping every
    second, with the shipped rules."""
    config: dict[str, Any] = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DOCKER / "prometheus" / "alerts.yml")]
    (folder / "api_key").write_text(KEY)
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(folder / "api_key")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(url: str, expression: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expression}, timeout=10).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def value_of(url: str, expression: str) -> float | None:
    result = query(url, expression)
    return float(result[0]["value"][1]) if result else None


@dataclass(frozen=True)
class Served:
    """A running ``ragcycle api`` over the shared API data dir, after real traffic."""

    url: str
    port: int
    tally: dict[str, Any]
    live_version: int
    traces_before: int


def serving_traces(data: Path, assessed: str | None = None) -> int:
    """Traces in the serving experiment, or only those with an ``assessed`` assessment."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{data / 'mlflow.db'}")
    serving = client.get_experiment_by_name("ragcycle-serving")
    if serving is None:
        return 0
    found = client.search_traces(locations=[serving.experiment_id], max_results=1000)
    if assessed is None:
        return len(found)
    return sum(any(a.name == assessed for a in t.info.assessments) for t in found)


@pytest.fixture(scope="module")
def served(api_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The API started on the shared data dir, sent six questions by ``scripts/traffic.py``
    (with feedback on some answers) and one request without the key."""
    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    config = folder / "ragcycle.toml"
    config.write_text(f'data_dir = "{api_data}"\n[api]\nport = {port}\n')
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in own_cache_env().items() if k != "PREFECT_HOME"}
    env["RAGCYCLE_API__API_KEY"] = KEY
    command = [sys.executable, "-m", "ragcycle.cli", "api", "-c", str(config)]
    before = serving_traces(api_data)
    with running(command, f"{url}/health", log=folder / "api.log", env=env):
        questions = [("When do background tasks run?", True), ("Who signs release tags?", True)]
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=60) as client:
            tally = send_traffic(client, questions, 6, feedback_share=0.5, seed=3)
            live = client.get("/status").json()["live_version"]
        assert httpx.post(f"{url}/ask", json={"question": "no key"}, timeout=60).status_code == 401
        yield Served(url, port, tally, live, before)


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_a_real_prometheus_stores_the_traffic_the_api_served(
    served: Served, tmp_path: Path
) -> None:
    tally = served.tally
    assert tally["statuses"] == {"200": 6}, tally
    assert sum(tally["verdicts"].values()) == 6
    rated = sum(tally["feedback"].values())
    assert 0 < rated < 6 and set(tally["feedback"]) <= {"up", "down"}, tally
    prometheus = f"http://127.0.0.1:{free_port()}"
    command = [
        str(PROMETHEUS),
        f"--config.file={local_config(tmp_path, served.port)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={prometheus.removeprefix('http://')}",
    ]
    with running(command, f"{prometheus}/-/ready", log=tmp_path / "prometheus.log", timeout=60):
        # Counters are totals since the API started: the first scrape holds all the traffic.
        asked = 'ragcycle_requests_total{route="/ask",status="200"}'
        deadline = time.monotonic() + 60
        while value_of(prometheus, asked) != 6 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert value_of(prometheus, asked) == 6
        refused = 'ragcycle_requests_total{route="/ask",status="401"}'
        assert value_of(prometheus, refused) == 1
        assert value_of(prometheus, "sum(ragcycle_answers_total)") == 6
        feedback = 'sum(ragcycle_requests_total{route="/feedback",status="200"})'
        assert value_of(prometheus, feedback) == rated
        assert value_of(prometheus, 'ragcycle_request_seconds_count{route="/ask"}') == 7
        assert value_of(prometheus, "ragcycle_live_index_version") == served.live_version
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
        loaded = {rule["name"] for g in rules["data"]["groups"] for rule in g["rules"]}
        assert loaded == {"RagcycleGuardrailFailRate", "RagcycleAnswerLatencyP95"}


CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Chromium is not installed (Debian: apt-get install chromium; .ci/run does)"


def overview_texts(
    mlflow: str, experiment_id: str, shots: Path, ready: dict[str, re.Pattern[str]]
) -> dict[str, str]:
    """The text each Overview view (``ready``'s keys: usage, quality) shows once it matches
    ``ready`` (its charts load one by one) or after two minutes, and a screenshot of each."""
    from playwright.sync_api import sync_playwright

    from scripts.screenshots import CHROMIUM_FLAGS, CLOSED_ASSISTANT

    texts: dict[str, str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        context.add_init_script(CLOSED_ASSISTANT)
        for view, drawn in ready.items():
            tab = context.new_page()
            tab.goto(f"{mlflow}/#/experiments/{experiment_id}/overview/{view}")
            deadline = time.monotonic() + 120
            while not drawn.search(text := tab.inner_text("body")) and time.monotonic() < deadline:
                tab.wait_for_timeout(500)
            texts[view] = text
            tab.screenshot(path=str(shots / f"overview-{view}.png"), full_page=True)
        browser.close()
    return texts


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_mlflow_overview_tab_charts_the_served_traffic(
    served: Served, api_data: Path, tmp_path: Path
) -> None:
    """The serving experiment's Overview tab, in a browser, counts every served answer's trace,
    sums their tokens and charts the guardrails' verdict as a quality assessment."""
    from mlflow import MlflowClient

    deadline = time.monotonic() + 60  # the API writes traces in the background
    while serving_traces(api_data) < served.traces_before + 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    traces = serving_traces(api_data)
    assert traces >= served.traces_before + 6
    # Answered questions carry the verdict; a failed answer (test_api_faults) is a trace without.
    assessed_traces = serving_traces(api_data, assessed="guardrails")
    store = f"sqlite:///{api_data / 'mlflow.db'}"
    experiment = MlflowClient(store).get_experiment_by_name("ragcycle-serving")
    assert experiment is not None
    port = free_port()
    mlflow = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    counted = re.compile(
        rf"Traces\n{traces}\n[\s\S]*Token Usage\n(\S+) \((\S+) input, (\S+) output\)"
    )
    assessed = re.compile(rf"guardrails\n{assessed_traces}\n")
    # The verdicts' chart draws after the summary table: the page is ready once it shows both.
    charted = "".join(rf'(?=[\s\S]*"{re.escape(s)}")' for s in served.tally["verdicts"])
    quality_drawn = re.compile(rf"\A(?=[\s\S]*{assessed.pattern}){charted}")
    with running(command, f"{mlflow}/health", log=tmp_path / "mlflow.log", cwd=tmp_path):
        ready = {"usage": counted, "quality": quality_drawn}
        texts = overview_texts(mlflow, experiment.experiment_id, tmp_path, ready)

    usage, quality = texts["usage"], texts["quality"]
    tokens = counted.search(usage)
    assert tokens is not None and tokens.group(1) != "0", usage[:1500]
    assert assessed.search(quality), quality[:1500]
    for status in served.tally["verdicts"]:
        assert f'"{status}"' in quality, quality[:1500]
