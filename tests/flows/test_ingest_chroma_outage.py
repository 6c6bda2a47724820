"""A Chroma server that dies mid-ingest: the ingest fails within the bound with one line, and
the re-run after a restart ends exactly like a clean run."""

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

from flows.ingest import IngestRequest, ingest
from tests.conftest import SAMPLES, free_port, live_index, make_settings, own_cache_env
from tests.servers import executable, running, stop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


def chunks_in(url: str, collection: str) -> int:
    try:
        found = httpx.get(f"{url}{COLLECTIONS}/{collection}", timeout=2)
        if found.status_code != 200:
            return 0
        count = httpx.get(f"{url}{COLLECTIONS}/{found.json()['id']}/count", timeout=2)
        return int(count.json())
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def test_chroma_killed_mid_ingest_then_restarted(tmp_path: Path, embedder: Any) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "chroma-data"
    chroma = [executable("chroma"), "run", "--path", str(store), "--host", "127.0.0.1"]
    chroma += ["--port", str(port)]
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nprogress = false\n'
        f'[chroma]\nurl = "{url}"\n[ingest]\nbatch_documents = 1\n'
    )
    command = [sys.executable, "-m", "ragcycle.cli", "ingest", str(corpus), "--json"]
    command += ["-c", str(config)]

    # stderr to a file: a pipe nobody reads while the test waits fills up and stalls the command.
    errors = tmp_path / "ingest.err"
    with (
        running(chroma, f"{url}/api/v2/heartbeat", log=tmp_path / "chroma-1.log") as server,
        errors.open("w") as error_file,
    ):
        ingesting = subprocess.Popen(
            command,
            env={k: v for k, v in own_cache_env().items() if k != "PREFECT_HOME"},
            stdout=subprocess.PIPE,
            stderr=error_file,
            text=True,
        )
        deadline = time.monotonic() + 240
        while chunks_in(url, "ragcycle__v1") == 0 and time.monotonic() < deadline:
            assert ingesting.poll() is None, errors.read_text()[-2000:]
            time.sleep(0.1)
        stop(server)  # the server dies with part of the corpus written
        died = time.monotonic()
        out, _ = ingesting.communicate(timeout=180)
    err = errors.read_text()
    assert ingesting.returncode == 1, err[-2000:]
    assert time.monotonic() - died < 60
    failure = json.loads(out)
    assert failure["kind"] in {"index", "connection"} and failure["hint"], failure
    assert "Traceback" not in err

    with running(chroma, f"{url}/api/v2/heartbeat", log=tmp_path / "chroma-2.log"):
        resumed = ingest(IngestRequest(paths=[str(corpus)], config_file=str(config)))
        remote = live_index(make_settings(tmp_path / "data", chroma={"url": url}))
        resumed_ids = sorted(remote.collection.get()["ids"])
    assert resumed["collection"] == "ragcycle__v1"

    clean_data = tmp_path / "clean"
    ingest(IngestRequest(paths=[str(corpus)], overrides={"data_dir": str(clean_data)}))
    clean_ids = sorted(live_index(make_settings(clean_data)).collection.get()["ids"])
    assert resumed_ids == clean_ids and len(resumed_ids) == len(set(resumed_ids))
