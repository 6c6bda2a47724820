"""The embedded MLflow store survives a kill inside its creation: killed while ragcycle builds
it, or left half-migrated by a bare MLflow, the next command finds a whole store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragcycle.errors import RegistryError
from tasks.tracking.store_setup import prepare_tracking_store, store_state

# MLflow's own creation of a store in place, as every ragcycle before this one ran it.
_BARE_MLFLOW = """
import sys
from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine
_initialize_tables(create_sqlalchemy_engine("sqlite:///" + sys.argv[1]))
"""


def _index_list(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragcycle.cli", "index", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "RAGCYCLE_DATA_DIR": str(data)},
    )


def test_a_kill_while_the_store_is_built_leaves_none_and_the_next_command_builds_it(
    tmp_path: Path,
) -> None:
    """Regression: `kill -9` of the first command in a fresh data dir while MLflow created its
    tables made the data dir unusable for good (`_alembic_tmp_experiments already exists`)."""
    data = tmp_path / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "ragcycle.cli", "index", "list", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAGCYCLE_DATA_DIR": str(data)},
    )
    deadline = time.monotonic() + 120
    while not list(data.glob("mlflow.db.building-*")) and time.monotonic() < deadline:
        assert process.poll() is None, "the command ended before the store was built"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert list(data.glob("mlflow.db.building-*")), "killed outside the build"
    assert store_state(data / "mlflow.db") == "absent"

    done = _index_list(data)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []
    assert store_state(data / "mlflow.db") == "complete"
    assert not list(data.glob("mlflow.db.building-*"))


def test_a_store_half_made_by_bare_mlflow_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = data / "mlflow.db"
    for delay in (0.3, 0.6, 1.0, 1.5, 2.5):  # kill inside the migrations, wherever they are
        database.unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-c", _BARE_MLFLOW, str(database)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not _stamped(database) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay * 0.1)
        process.kill()
        process.wait(timeout=30)
        if store_state(database) == "half-made":
            break
    else:
        pytest.fail("no kill landed inside MLflow's migrations")

    done = _index_list(data)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == []
    assert store_state(database) == "complete"
    assert len(list(data.glob("mlflow.db.half-made-*"))) == 1


def test_a_damaged_store_that_holds_runs_is_never_replaced(tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table alembic_version (version_num text)")
        connection.execute("insert into alembic_version values ('0a8213491aaa')")
        connection.execute("create table runs (run_uuid text)")
        connection.execute("insert into runs values ('abc')")
        connection.execute("create table _alembic_tmp_experiments (id integer)")
    assert store_state(database) == "damaged"
    with pytest.raises(RegistryError, match="mlflow db upgrade"):
        prepare_tracking_store.__wrapped__(f"sqlite:///{database}")
    assert store_state(database) == "damaged"


def _stamped(database: Path) -> bool:
    """Whether MLflow's migrations have begun (alembic's version table exists)."""
    if not database.exists():
        return False
    try:
        with sqlite3.connect(database, timeout=0.1) as connection:
            names = {row[0] for row in connection.execute("select name from sqlite_master")}
    except sqlite3.Error:
        return False
    return "alembic_version" in names
