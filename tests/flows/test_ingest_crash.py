"""A run killed with SIGKILL mid-way, then re-run, must end exactly like a clean run."""

from __future__ import annotations

import os
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
from tasks.indexing.lexical import LexicalIndex, lexical_root
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
    # A session of its own: the kill takes the process's temporary Prefect server with it, as a
    # host going down would, instead of leaving it running for the rest of the test session.
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def count_rows(database: Path, table: str) -> int:
    """Rows of ``table`` in another process's SQLite file (0 while it does not exist yet)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0


# Moments to kill a first ingest at: its version just registered (nothing embedded yet), mid
# embedding (some documents' vectors cached), and mid write (some chunks already in Chroma).
KILL_POINTS = {
    "registered": lambda data: count_rows(data / "mlflow.db", "model_versions") >= 1,
    "embedding": lambda data: cached_vectors(data / "cache" / "embeddings.sqlite") >= 10,
    "writing": lambda data: count_rows(data / "chroma" / "chroma.sqlite3", "embeddings") >= 1,
}


@pytest.fixture(scope="module")
def clean_ids(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The chunk ids of an uninterrupted run over the sample corpus."""
    root = tmp_path_factory.mktemp("clean")
    clean_data = root / "clean"
    ingest(IngestRequest(paths=[str(SAMPLES)], config_file=str(config(root, clean_data))))
    return sorted(live_index(make_settings(clean_data)).collection.get()["ids"])


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_ingest_then_rerun_equals_clean_run(
    tmp_path: Path, embedder: Any, clean_ids: list[str], point: str
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLES, corpus)
    killed_data = tmp_path / "killed"
    process = start_ingest(corpus, config(tmp_path, killed_data), tmp_path / "prefect")
    deadline = time.monotonic() + 240
    reached = KILL_POINTS[point]
    while not reached(killed_data) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, (
        f"ingest finished before {point}: " + process.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
    )
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    assert process.returncode == -signal.SIGKILL

    request = IngestRequest(paths=[str(corpus)], config_file=str(config(tmp_path, killed_data)))
    resumed = ingest(request)
    assert resumed["documents"]["failed"] == 3
    assert resumed["collection"] == "ragcycle__v1"  # the killed first version, completed

    killed_index = live_index(make_settings(killed_data))
    killed_ids = killed_index.collection.get()["ids"]
    assert len(killed_ids) == len(set(killed_ids))
    assert sorted(killed_ids) == clean_ids
    assert killed_index.count() == resumed["chunks"]["total"]
    # the lexical index, synced by the re-run, holds exactly what Chroma holds
    lexical = LexicalIndex(lexical_root(make_settings(killed_data), killed_index.name), "english")
    snapshot = lexical.snapshot()
    assert snapshot is not None and sorted(snapshot.ids) == clean_ids
    assert resumed["lexical"]["total"] == len(clean_ids)
