"""A run killed with SIGKILL mid-way, then re-run, must end exactly like a clean run."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from flows.ingest import IngestRequest, ingest
from tests.conftest import SAMPLES, live_index, make_settings, own_cache_env

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def cached_vectors(cache: Path) -> int:
    if not cache.exists():
        return 0
    try:
        with sqlite3.connect(cache, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:
        return 0


def config(tmp_path: Path, data: Path) -> Path:
    path = tmp_path / f"{data.name}.toml"
    path.write_text(f'data_dir = "{data}"\nprogress = false\n[ingest]\nbatch_documents = 1\n')
    return path


def start_ingest(corpus: Path, config_file: Path, prefect_home: Path) -> subprocess.Popen[bytes]:
    env = own_cache_env(PREFECT_HOME=str(prefect_home))
    command = [
        sys.executable,
        "-m",
        "ragcycle.cli",
        "ingest",
        str(corpus),
        "--json",
        "-c",
        str(config_file),
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_killed_ingest_then_rerun_equals_clean_run(tmp_path: Path, embedder: Any) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    killed_data = tmp_path / "killed"
    process = start_ingest(corpus, config(tmp_path, killed_data), tmp_path / "prefect")
    cache = killed_data / "cache" / "embeddings.sqlite"
    deadline = time.monotonic() + 240
    # Kill once embedding has produced vectors for some, not all, documents.
    while cached_vectors(cache) < 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, (
        "ingest finished before it could be killed: " + process.stdout.read().decode()[-2000:]
    )  # type: ignore[union-attr]
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL

    request = IngestRequest(paths=[str(corpus)], config_file=str(config(tmp_path, killed_data)))
    resumed = ingest(request)
    assert resumed["documents"]["failed"] == 3

    clean_data = tmp_path / "clean"
    ingest(IngestRequest(paths=[str(corpus)], config_file=str(config(tmp_path, clean_data))))

    killed_index = live_index(make_settings(killed_data))
    clean_index = live_index(make_settings(clean_data))
    killed_ids = killed_index.collection.get()["ids"]
    clean_ids = clean_index.collection.get()["ids"]
    assert len(killed_ids) == len(set(killed_ids))
    assert sorted(killed_ids) == sorted(clean_ids)
    assert killed_index.count() == clean_index.count() == resumed["chunks"]["total"]
