"""Index versions: blue/green collections behind a live pointer, each with the config it serves.

- :mod:`~tasks.versions.registry`: versions in MLflow's model registry, aliases, retention.
- :mod:`~tasks.versions.config`: the serving config a version records, and resolving what a
  reader should serve.
"""

from tasks.versions.config import (
    INDEX_GROUPS,
    Serving,
    config_summary,
    explicit_overrides,
    index_config,
    resolve_serving,
    serving_config,
    settings_for_version,
)
from tasks.versions.registry import (
    CHAMPION,
    PREVIOUS,
    IndexVersion,
    VersionRegistry,
    collection_of,
    collection_source,
    corpus_snapshot,
    pending_build,
    target_key,
)

__all__ = [
    "CHAMPION",
    "INDEX_GROUPS",
    "PREVIOUS",
    "IndexVersion",
    "Serving",
    "VersionRegistry",
    "collection_of",
    "collection_source",
    "config_summary",
    "corpus_snapshot",
    "explicit_overrides",
    "index_config",
    "pending_build",
    "resolve_serving",
    "serving_config",
    "settings_for_version",
    "target_key",
]
