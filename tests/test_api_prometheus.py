"""A real Prometheus (Debian's package) scrapes a real ``ragcycle api`` with the configuration and
alert rules that docker/ ships, and the series it stores are the traffic that was sent; the
Grafana dashboard and the alerts query only series the API exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ragcycle.api.metrics import ApiMetrics
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


@pytest.mark.slow
@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_a_real_prometheus_stores_the_traffic_the_api_served(
    api_data: Path, tmp_path: Path
) -> None:
    api_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{api_data}"\n[api]\nport = {api_port}\n')
    api = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in own_cache_env().items() if k != "PREFECT_HOME"}
    env["RAGCYCLE_API__API_KEY"] = KEY
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    command = [
        str(PROMETHEUS),
        f"--config.file={local_config(tmp_path, api_port)}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]
    api_command = [sys.executable, "-m", "ragcycle.cli", "api", "-c", str(config)]
    with (
        running(api_command, f"{api}/health", log=tmp_path / "api.log", env=env),
        running(command, f"{prometheus}/-/ready", log=tmp_path / "prometheus.log", timeout=60),
    ):
        questions = ["When do background tasks run?", "Who signs release tags?"] * 3
        for question in questions:
            sent = httpx.post(
                f"{api}/ask", json={"question": question}, headers={"X-API-Key": KEY}, timeout=60
            )
            assert sent.status_code == 200, sent.text
        assert httpx.post(f"{api}/ask", json={"question": "no key"}, timeout=60).status_code == 401
        live = httpx.get(f"{api}/status", headers={"X-API-Key": KEY}, timeout=60).json()

        asked = 'ragcycle_requests_total{route="/ask",status="200"}'
        deadline = time.monotonic() + 60
        while value_of(prometheus, asked) != len(questions) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert value_of(prometheus, asked) == len(questions)
        refused = 'ragcycle_requests_total{route="/ask",status="401"}'
        assert value_of(prometheus, refused) == 1
        assert value_of(prometheus, "sum(ragcycle_answers_total)") == len(questions)
        assert value_of(prometheus, 'ragcycle_request_seconds_count{route="/ask"}') == 7
        assert value_of(prometheus, "ragcycle_live_index_version") == live["live_version"]
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
        assert [t["health"] for t in targets["data"]["activeTargets"]] == ["up"]
        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
        loaded = {rule["name"] for g in rules["data"]["groups"] for rule in g["rules"]}
        assert loaded == {"RagcycleGuardrailFailRate", "RagcycleAnswerLatencyP95"}
