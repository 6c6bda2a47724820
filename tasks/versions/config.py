"""What an index version serves with: the config it was built and evaluated under.

A version records its whole serving config (embedding model, chunking, file types, retrieval,
prompt and generator) as a JSON tag, and every reader (``ask``, ``eval``, the monitor, the API)
answers with the live version's config rather than whatever ``ragcycle.toml`` says today. A
promoted challenger is then served as it was gated, a rollback restores the previous config
with the previous collection, and the settings file becomes the *proposal* that the next
reindex gates, not a silent change of what users get.

Precedence, lowest first: the settings file and ``RAGCYCLE_*`` env, the version's recorded
config, then overrides passed explicitly with the request (``--k``, a flow's ``overrides``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ragcycle.errors import ModelError
from ragcycle.settings import CANDIDATE_GROUPS, Settings
from tasks.versions.registry import IndexVersion, VersionRegistry

__all__ = [
    "INDEX_GROUPS",
    "Serving",
    "config_summary",
    "explicit_overrides",
    "index_config",
    "resolve_serving",
    "serving_config",
    "settings_for_version",
]

# Fields of each group that shape what a user gets; None: the whole group. Left out are knobs
# of speed (batch sizes, threads), of connections (URLs, keys, timeouts) and of the embedding
# cache, which change nothing a question's answer depends on.
_SERVING_FIELDS: Mapping[str, tuple[str, ...] | None] = {
    "embedding": ("model_name", "model_path", "backend"),
    "chunking": None,
    "ingest": ("extensions",),
    "retrieval": None,
    "generation": (
        "backend",
        "prompt_name",
        "prompt_version",
        "min_score",
        "local_model",
        "model_path",
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "max_sentences",
        "sentence_scoring",
    ),
}
# The groups that decide what a collection holds; the rest only decide how it is read.
INDEX_GROUPS = ("embedding", "chunking", "ingest")
_VERSIONED_COLLECTION = re.compile(r"^(?P<index>.+)__v(?P<number>\d+)$")


def serving_config(settings: Settings) -> dict[str, Any]:
    """The serving config of ``settings`` as plain JSON data."""
    dumped = settings.model_dump(mode="json")
    return {
        group: {k: v for k, v in dumped[group].items() if fields is None or k in fields}
        for group, fields in _SERVING_FIELDS.items()
    }


def index_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a serving config that changes what the collection holds."""
    return {group: config[group] for group in INDEX_GROUPS if group in config}


def config_summary(config: Mapping[str, Any]) -> str:
    """One line a person reads: chunking, k, prompt and generator."""
    chunking = config.get("chunking", {})
    generation = config.get("generation", {})
    model = (
        generation.get("local_model")
        if generation.get("backend") == "local"
        else generation.get("model")
        if generation.get("backend") == "openai"
        else "extractive"
    )
    retrieval = config.get("retrieval", {})
    prompt = f"{generation.get('prompt_name')}@{generation.get('prompt_version') or 'production'}"
    return (
        f"{chunking.get('strategy')}/{chunking.get('size')}, k={retrieval.get('k')},"
        f" prompt {prompt}, {generation.get('backend')}:{model}"
    )


def explicit_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The serving-config part of a request's overrides: what it asks for explicitly."""
    return {k: v for k, v in overrides.items() if k in CANDIDATE_GROUPS}


def settings_for_version(settings: Settings, version: IndexVersion) -> Settings:
    """``settings`` with the version's recorded serving config laid over them.

    Versions from before the config was recorded carry only their chunking; that much is used.
    """
    recorded = version.config
    if not recorded and version.tags.get("chunking"):
        recorded = {"chunking": json.loads(version.tags["chunking"])}
    return settings.with_overrides(recorded) if recorded else settings


@dataclass(frozen=True)
class Serving:
    """What to read and how: a collection, the settings to read it with, and its version."""

    collection: str
    settings: Settings
    version: IndexVersion | None
    index: str  # the logical index whose registry holds ``version`` (or the plain name)


def resolve_serving(
    settings: Settings,
    collection: str | None = None,
    *,
    version: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Serving:
    """The live version of the configured index (or of the index named ``collection``), a
    given ``version``, or a plain collection that no registry knows.

    ``collection`` may name a logical index (``demo`` -> its live version), a version's own
    collection (``demo__v2`` -> version 2, with its config) or any other collection.
    """
    explicit = explicit_overrides(overrides or {})
    name = collection or settings.chroma.collection
    index, found = _find_version(settings, name, version)
    if found is None:
        chosen = settings.with_overrides(explicit) if explicit else settings
        return Serving(name, chosen, None, name)
    served = settings_for_version(settings, found)
    _check_model_file(served, found)
    return Serving(
        found.collection, served.with_overrides(explicit) if explicit else served, found, index
    )


def _check_model_file(settings: Settings, version: IndexVersion) -> None:
    """The model file a version was gated with is the one it is served with."""
    gated = version.tags.get("model_sha256")
    generation = settings.generation
    if not gated or generation.backend != "local" or generation.model_path is None:
        return
    from tasks.models import model_file

    now = model_file(generation.local_model, settings.models_path, generation.model_path).sha256
    if now != gated:
        raise ModelError(
            f"generation.model_path {generation.model_path} is not the file version"
            f" {version.version} was gated with (sha256 {now[:12]}..., gated {gated[:12]}...):"
            " restore that file, or `ragcycle reindex` to gate this one"
        )


def _find_version(
    settings: Settings, name: str, number: int | None
) -> tuple[str, IndexVersion | None]:
    uri = settings.mlflow_tracking_uri
    if number is not None:
        return name, VersionRegistry(uri, name).get(number)
    live = VersionRegistry(uri, name).live()
    if live is not None:
        return name, live
    match = _VERSIONED_COLLECTION.match(name)
    if match is None:
        return name, None
    registry = VersionRegistry(uri, match["index"])
    found = next((v for v in registry.versions() if v.version == int(match["number"])), None)
    return match["index"], found
