"""Screenshots of the MLflow and Prefect UIs on a ragcycle data dir, taken with headless Chromium.

    python scripts/screenshots.py --out docs/img                  # starts `ragcycle ui` itself
    python scripts/screenshots.py --config demo/ragcycle.toml     # another data dir
    python scripts/screenshots.py --mlflow URL --prefect URL      # UIs already running

Playwright drives Debian's Chromium (``/usr/bin/chromium``; no browser download). For each page
it waits until the page shows what a person should read there (the evaluation's run name, the
metric sections, the index's live version and its source run, the flow run's name), then saves
a PNG. It prints one JSON object: per page its URL, PNG and whether the text was shown; exit
status 1 if a page never showed it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# Chromium on a machine without network: without the background-networking flags it keeps
# trying (and failing) to reach Google's hosts.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# MLflow's UI opens its assistant panel on a first visit, over a third of the page; a person
# who closed it once sees the page without it, as these pictures should.
CLOSED_ASSISTANT = """
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
"""


@dataclass(frozen=True)
class Page:
    name: str
    url: str
    expect: str  # text the rendered page must show
    expand_rows: bool = False  # open parent runs: a reindex's candidate and champion evaluations


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary: the given one, or Debian's ``chromium`` on the PATH."""
    for candidate in (explicit, "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def shoot_all(binary: str, pages: list[Page], out: Path) -> dict[str, dict[str, Any]]:
    """Each page's PNG, once it shows ``page.expect`` (or after a minute, marked not shown)."""
    from playwright.sync_api import Error, sync_playwright

    shots: dict[str, dict[str, Any]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(CLOSED_ASSISTANT)
        for page in pages:
            tab = context.new_page()
            try:
                tab.goto(page.url)
                tab.get_by_text(page.expect).first.wait_for(timeout=60_000)
                expanders = tab.locator("[role=gridcell] button").all() if page.expand_rows else []
                for button in expanders:
                    button.click()
                if expanders:  # a reindex's evaluations are its child runs
                    tab.get_by_text("· candidate").first.wait_for(timeout=30_000)
                shown = True
            except Error:
                shown = False
            tab.wait_for_timeout(1500)  # charts and tables finish drawing
            png = out / f"{page.name}.png"
            tab.screenshot(path=str(png))
            tab.close()
            shots[page.name] = {
                "url": page.url,
                "png": str(png),
                "expect": page.expect,
                "shown": shown,
            }
        browser.close()
    return shots


def pages(mlflow: str, prefect: str) -> list[Page]:
    """The pages that tell the story: a golden set's evaluations side by side and as metric
    charts, the newest evaluation, the lifecycle's decisions, the index's live version in the
    registry, Prefect's runs and that evaluation's flow run."""
    api = httpx.Client(base_url=mlflow, timeout=30)

    def get(path: str, **params: Any) -> dict[str, Any]:
        return dict(api.get(f"/api/2.0/mlflow/{path}", params=params).raise_for_status().json())

    experiments = {
        e["name"]: e["experiment_id"]
        for e in api.post("/api/2.0/mlflow/experiments/search", json={"max_results": 1000})
        .raise_for_status()
        .json()["experiments"]
    }
    evaluation_ids = [id_ for name, id_ in experiments.items() if "-eval-" in name]
    if not evaluation_ids:
        raise SystemExit("no evaluation experiment in this MLflow store: run the demo first")
    [run] = (
        api.post(
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": evaluation_ids,
                "order_by": ["attributes.start_time DESC"],
                "max_results": 1,
            },
        )
        .raise_for_status()
        .json()["runs"]
    )
    info, tags = run["info"], {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    models = get("registered-models/search", max_results=100).get("registered_models", [])
    index = next(m for m in models if m["name"].startswith("ragcycle-index-"))
    aliases = {a["alias"]: a["version"] for a in index.get("aliases", [])}
    live = aliases.get("champion") or max(v["version"] for v in index["latest_versions"])
    version = get("model-versions/get", name=index["name"], version=live)["model_version"]
    source_run = get("runs/get", run_id=version["run_id"])["run"]["info"]
    evaluations = f"{mlflow}/#/experiments/{info['experiment_id']}"
    flow_run = tags.get("prefect.flow_run_name", "")
    return [
        Page("mlflow-evaluations", f"{evaluations}/runs", info["run_name"]),
        Page("mlflow-evaluation-charts", f"{evaluations}/runs?compareRunsMode=CHART", "retrieval"),
        Page("mlflow-evaluation-run", f"{evaluations}/runs/{info['run_id']}", "Registered prompts"),
        Page(
            "mlflow-lifecycle",
            f"{mlflow}/#/experiments/{source_run['experiment_id']}/runs",
            source_run["run_name"],
            expand_rows=True,
        ),
        Page(
            "mlflow-index-version",
            f"{mlflow}/#/models/{index['name']}/versions/{live}",
            source_run["run_name"],
        ),
        Page("prefect-runs", f"{prefect}/runs", flow_run),
        Page(
            "prefect-evaluation-flow-run",
            # Not the stored link: it names the port the UI had when the run was made.
            f"{prefect}/runs/flow-run/{tags['prefect.flow_run_id']}",
            flow_run,
        ),
    ]


@contextlib.contextmanager
def running_ui(config: str | None) -> Iterator[dict[str, str]]:
    """``ragcycle ui --json`` on the configured data dir; yields its URLs, stops it after."""
    command = [sys.executable, "-m", "ragcycle.cli", "ui", "--json"]
    if config:
        command += ["--config", config]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise SystemExit(f"`ragcycle ui` stopped (exit {process.wait()})")
        yield dict(json.loads(line))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="PNG folder")
    parser.add_argument("--config", help="ragcycle.toml of the data dir (default: as ragcycle)")
    parser.add_argument("--mlflow", help="URL of a running MLflow UI (with --prefect)")
    parser.add_argument("--prefect", help="URL of a running Prefect UI (with --mlflow)")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on the PATH)")
    arguments = parser.parse_args()
    binary = find_chromium(arguments.chromium)
    if binary is None:
        print("Chromium not found: install Debian's `chromium` or pass --chromium", file=sys.stderr)
        return 2
    arguments.out.mkdir(parents=True, exist_ok=True)
    given = {"mlflow": arguments.mlflow, "prefect": arguments.prefect}
    with contextlib.ExitStack() as stack:
        urls = given if all(given.values()) else stack.enter_context(running_ui(arguments.config))
        shots = shoot_all(binary, pages(urls["mlflow"], urls["prefect"]), arguments.out)
    print(json.dumps(shots, indent=2))
    return 0 if all(shot["shown"] for shot in shots.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
