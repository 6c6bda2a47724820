"""The embedded MLflow store (SQLite under the data dir), created so that a kill cannot leave it
half-made.

MLflow creates a new SQLite store on first use by running its alembic migrations in place, one
committed step after another; a ``kill -9`` in the middle leaves a file every later command
fails to open (``table _alembic_tmp_experiments already exists``, ``duplicate column name``).
Here a new store is built in a file beside it and moved into place with one atomic rename, so
the store either does not exist yet or is complete. A half-made store that earlier versions of
ragcycle (or a bare MLflow) left behind, and that holds nothing yet, is moved aside and built
anew; one that holds runs or versions is never touched, and the error says what to do.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from ragcycle.errors import RegistryError

__all__ = ["prepare_tracking_store", "sqlite_path", "store_state"]

# Tables whose rows are a user's work: a half-made store with any of these filled is kept.
_WORK_TABLES = ("runs", "registered_models", "trace_info", "logged_models")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other store."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == "/:memory:":
        return None
    return Path(parsed.path)


def store_state(path: Path) -> str:
    """``absent``, ``complete`` (at MLflow's schema head, no migration debris), ``half-made``
    (nothing in it yet), or ``damaged`` (debris, but it holds work)."""
    if not path.exists():
        return "absent"
    from mlflow.store.db.utils import _get_latest_schema_revision

    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master")}
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("select version_num from alembic_version").fetchone()
            revision = row[0] if row else None
        debris = any(name.startswith("_alembic_tmp_") for name in tables)
        head = _get_latest_schema_revision()  # type: ignore[no-untyped-call]
        if revision == head and not debris:
            return "complete"
        work = sum(
            connection.execute(f"select count(*) from {table}").fetchone()[0]
            for table in _WORK_TABLES
            if table in tables
        )
    return "damaged" if work else "half-made"


@functools.cache
def prepare_tracking_store(tracking_uri: str) -> None:
    """Make sure a local SQLite store is complete before MLflow opens it (once per process);
    other stores (a tracking server, PostgreSQL) migrate themselves."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=300):
        state = store_state(path)
        if state == "complete":
            return
        if state == "damaged":
            raise RegistryError(
                f"the MLflow store {path} was left half-migrated and holds runs: back it up,"
                f" then run `mlflow db upgrade sqlite:///{path}`"
            )
        if state == "half-made":
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            path.rename(path.with_name(f"{path.name}.half-made-{stamp}"))
        for leftover in path.parent.glob(f"{path.name}.building-*"):
            leftover.unlink(missing_ok=True)  # a build killed earlier (we hold the lock)
        _build_aside(path)


def _build_aside(path: Path) -> None:
    """Create MLflow's schema in a file beside ``path``, then rename it into place."""
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    building = path.with_name(f"{path.name}.building-{os.getpid()}")
    building.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine(f"sqlite:///{building}")  # type: ignore[no-untyped-call]
    try:
        _initialize_tables(engine)  # type: ignore[no-untyped-call]
    finally:
        engine.dispose()
    os.replace(building, path)
