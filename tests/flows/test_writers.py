"""One writer per data dir, and commands that start at once on a new data dir.

Regression: a second ingest on the same data dir started its own temporary Prefect server while
the first was creating the database ("no such table: flow_run_notification_policy",
"Application startup failed"), printed a traceback, and still exited 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.locking import writer_lock
from tests.conftest import own_cache_env

pytestmark = pytest.mark.slow


def start(config: Path, *arguments: str, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in own_cache_env(**env).items() if k != "PREFECT_HOME"}
    return subprocess.Popen(
        [sys.executable, "-m", "ragcycle.cli", "ingest", "--json", "-c", str(config), *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_config(tmp_path: Path, corpus: Path) -> Path:
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nprogress = false\n[lifecycle]\nsources = ["{corpus}"]\n'
    )
    return config


def test_a_second_writer_fails_at_once_or_waits_when_told(
    sample_corpus: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path, sample_corpus / "markdown")
    data = tmp_path / "data"
    with writer_lock(data, "reindex", 0):
        refused = start(config)
        out, err = refused.communicate(timeout=180)
    assert refused.returncode == 1, err[-2000:]
    failure = json.loads(out)
    assert failure["kind"] == "busy"
    assert failure["error"].startswith(f"another reindex is running (pid {os.getpid()}, since ")
    assert "Traceback" not in err

    holding = threading.Event()

    def hold_for_a_while() -> None:
        with writer_lock(data, "reindex", 0):
            holding.set()
            time.sleep(8)

    holder = threading.Thread(target=hold_for_a_while)
    holder.start()
    holding.wait(10)
    patient = start(config, RAGCYCLE_WRITER_WAIT_SECONDS="120")
    out, err = patient.communicate(timeout=300)
    holder.join()
    assert patient.returncode == 0, err[-2000:]
    assert json.loads(out)["documents"]["new"] == 3


def test_two_ingests_started_at_once_on_a_new_data_dir(sample_corpus: Path, tmp_path: Path) -> None:
    """Both end cleanly: each succeeds, or the later one says another ingest is running."""
    config = write_config(tmp_path, sample_corpus / "markdown")
    racers = [start(config), start(config)]
    outcomes = [racer.communicate(timeout=300) for racer in racers]
    for racer, (out, err) in zip(racers, outcomes, strict=True):
        assert "Traceback" not in err and "no such table" not in err, err[-3000:]
        result = json.loads(out)
        if racer.returncode == 0:
            assert result["collection"] == "ragcycle__v1"
        else:
            assert racer.returncode == 1 and result["kind"] == "busy", result
    assert 0 in [racer.returncode for racer in racers]
