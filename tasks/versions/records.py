"""What a version records about itself: its corpus, sources and serving config, as tags.

Both ways into the index write these: a reindex build, and a plain ingest (the first ingest of
an index registers version 1; later ones update the live version in place and refresh its
corpus snapshot, so corpus drift keeps measuring against what the live version holds).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ragcycle.errors import BusyError
from ragcycle.settings import Settings
from tasks.loading import discover_sources, hash_sources
from tasks.monitoring import unindexed_tag
from tasks.versions.config import serving_config
from tasks.versions.registry import (
    IndexVersion,
    VersionRegistry,
    corpus_snapshot,
    target_key,
    utc_timestamp,
)

__all__ = [
    "CorpusState",
    "begin_first_version",
    "built_tags",
    "corpus_state",
    "model_file_tags",
    "quality_summary",
    "quality_tags",
    "version_tags",
]

FIRST_INGEST = "first ingest"

# MLflow keeps at most 5,000 characters of a model version tag.
_TAG_LIMIT = 5000


class CorpusState:
    """The files under a set of sources, and the snapshot hash of them."""

    def __init__(self, sources: Sequence[str], hashes: Mapping[str, str]) -> None:
        self.sources = list(sources)
        self.hashes = dict(hashes)
        self.snapshot = corpus_snapshot(self.hashes)


def corpus_state(sources: Sequence[str | Path], extensions: Sequence[str]) -> CorpusState:
    """Hash every file under ``sources`` (absolute paths, so any process reads them alike)."""
    absolute = sorted({str(Path(p).expanduser().absolute()) for p in sources})
    files = discover_sources([Path(p) for p in absolute], extensions)
    return CorpusState(absolute, hash_sources(files))


def version_tags(settings: Settings, corpus: CorpusState, reason: str) -> dict[str, str]:
    """Tags of a new version: target, corpus, sources and the serving config it is built for."""
    config = serving_config(settings)
    return {
        "target": target_key(corpus.snapshot, config),
        "corpus_snapshot": corpus.snapshot,
        "sources": json.dumps(corpus.sources)[:_TAG_LIMIT],
        "config": json.dumps(config, sort_keys=True),
        "embedding_model": settings.embedding.model_name,
        "chunking": settings.chunking.model_dump_json(),
        "chunking_hash": settings.chunking.config_hash(),
        "chroma": settings.chroma.url or "embedded",
        "reason": reason[:500],
        **model_file_tags(settings),
    }


def model_file_tags(settings: Settings) -> dict[str, str]:
    """The sha256 of a model given by ``generation.model_path``: the path alone does not say
    what was gated (a catalogue model's name pins its hash already)."""
    generation = settings.generation
    if generation.backend != "local" or generation.model_path is None:
        return {}
    from tasks.models import model_file

    found = model_file(generation.local_model, settings.models_path, generation.model_path)
    return {MODEL_SHA256: found.sha256}


MODEL_SHA256 = "model_sha256"


def built_tags(
    corpus: CorpusState, chunks: int, failed_doc_ids: Sequence[str], settings: Settings
) -> dict[str, str]:
    """Tags that say what a finished build (or an ingest into the live version) holds."""
    return {
        "chunks": str(chunks),
        "built_at": utc_timestamp(),
        "corpus_snapshot": corpus.snapshot,
        "sources": json.dumps(corpus.sources)[:_TAG_LIMIT],
        "target": target_key(corpus.snapshot, serving_config(settings)),
        "unindexed": unindexed_tag(list(failed_doc_ids), corpus.hashes),
    }


def begin_first_version(
    registry: VersionRegistry,
    settings: Settings,
    corpus: CorpusState,
    source_run: Callable[[], str] | None = None,
) -> IndexVersion:
    """Version 1 of an index (state ``building``), or the unfinished first version a killed
    ingest left behind, which the re-run completes in place (its writes are idempotent).
    ``source_run`` opens the MLflow run a new version is recorded under (not called when an
    unfinished version is resumed: it has its run)."""
    for version in registry.versions():
        if version.status != "building" or version.tags.get("reason") != FIRST_INGEST:
            continue
        if registry.building_alive(version, settings.lifecycle.build_timeout_minutes * 60):
            raise BusyError(
                f"another first ingest of {registry.index_name!r} is running"
                f" (pid {version.tags.get('pid')} on {version.tags.get('host')})"
            )
        return version
    run_id = source_run() if source_run else None
    return registry.register(version_tags(settings, corpus, FIRST_INGEST), run_id=run_id)


def quality_tags(evaluation: Mapping[str, object], metrics: Sequence[str]) -> dict[str, str]:
    """The evaluation a version was judged by, as tags on the version: its MLflow run and the
    gate's metrics (``quality.<metric>``), so the registry page shows how good each version is."""
    values = evaluation.get("metrics")
    found = values if isinstance(values, Mapping) else {}
    tags = {"eval_run_id": str(evaluation.get("run_id", ""))}
    for name in metrics:
        value = found.get(name)
        if isinstance(value, float | int) and value == value:
            tags[f"quality.{name}"] = f"{value:.4f}"
    return tags


def quality_summary(
    collection: str, candidate: str, evaluation: Mapping[str, object], metrics: Sequence[str]
) -> str:
    """The version's description in the registry: what it is and how good it was judged, the
    first thing its page shows (the tags below it are alphabetical and long)."""
    figures = quality_tags(evaluation, metrics)
    judged = ", ".join(
        f"{name.removeprefix('quality.')} {float(value):.3f}"
        for name, value in figures.items()
        if name.startswith("quality.")
    )
    return (
        f"Chroma collection `{collection}`, built as candidate `{candidate}`."
        f" Gate metrics: {judged or 'none measured'} (evaluation run `{figures['eval_run_id']}`)."
    )
