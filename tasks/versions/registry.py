"""Index versions: blue/green Chroma collections with a live pointer kept in MLflow's registry.

Chroma has no collection aliases and cannot rename onto an existing name, so the live pointer is
a record, not a rename: each index version is a model version of the registered model
``ragcycle-index-<name>`` whose source is ``chroma:///<collection>``, and the ``champion`` alias
marks the live one (``previous`` the one before, for rollback). Moving an alias is a single
write, so readers see the old or the new version, never a mix; MLflow shows every version with
its tags (collection, embedding model, chunking, corpus snapshot, the run that built it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from ragcycle.errors import ConflictError, RegistryError, VersionError
from tasks.locking import pid_alive

__all__ = [
    "CHAMPION",
    "PREVIOUS",
    "IndexVersion",
    "VersionRegistry",
    "collection_of",
    "collection_source",
    "corpus_snapshot",
    "epoch_seconds",
    "pending_build",
    "target_key",
    "utc_timestamp",
]

logger = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
HOLDS_COLLECTION = frozenset({"ready", "previous", "retired"})
# Versions whose collection must stay: being built, gated, served or kept for rollback.
USES_COLLECTION = frozenset({"building", "ready", "live", "previous", "retired"})


@dataclass(frozen=True)
class IndexVersion:
    """One built (or building) index version."""

    version: int
    collection: str
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    run_id: str = ""  # the MLflow run that built it (its source run), "" for older versions

    @property
    def target(self) -> str:
        return self.tags.get("target", "")

    @property
    def live(self) -> bool:
        return CHAMPION in self.aliases

    @property
    def config(self) -> dict[str, Any]:
        """The serving config recorded when the version was built ({} for older versions)."""
        recorded = self.tags.get("config", "")
        return dict(json.loads(recorded)) if recorded else {}

    @property
    def sources(self) -> list[str]:
        recorded = self.tags.get("sources", "")
        return list(json.loads(recorded)) if recorded else []

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "collection": self.collection,
            "status": self.status,
            "aliases": list(self.aliases),
            **{k: v for k, v in self.tags.items() if k != "status"},
        }


def corpus_snapshot(documents: Mapping[str, str]) -> str:
    """Hash of (document id, content hash) pairs: equal iff the corpus is the same."""
    payload = json.dumps(sorted(documents.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def target_key(snapshot: str, config: Mapping[str, Any]) -> str:
    """What a build produces: a corpus snapshot under an index configuration."""
    payload = json.dumps({"corpus": snapshot, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class VersionRegistry:
    """Index versions of one logical index, recorded in the MLflow model registry."""

    def __init__(self, tracking_uri: str, index_name: str) -> None:
        from mlflow import MlflowClient

        self.index_name = index_name
        self.model_name = f"ragcycle-index-{index_name}"
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException:
            try:
                self.client.create_registered_model(
                    self.model_name,
                    tags={"ragcycle.kind": "index"},
                    description=f"Versions of the ragcycle index {self.index_name!r}: each"
                    " version's source is the Chroma collection holding it; alias 'champion'"
                    " is live.",
                )
            except MlflowException as exc:
                if "already exists" not in str(exc).lower():
                    raise RegistryError(
                        f"the MLflow store cannot record index versions: {exc}"
                    ) from None

    def versions(self) -> list[IndexVersion]:
        from mlflow.exceptions import MlflowException

        try:
            aliases = dict(self.client.get_registered_model(self.model_name).aliases or {})
            found = self.client.search_model_versions(f"name = '{self.model_name}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []  # no version was ever registered
            raise self._unreadable(exc) from None
        by_version: dict[int, list[str]] = {}
        for alias, number in aliases.items():
            by_version.setdefault(int(number), []).append(alias)
        return sorted(
            (self._convert(v, by_version.get(int(v.version), [])) for v in found),
            key=lambda v: v.version,
        )

    def _convert(self, model_version: Any, aliases: Iterable[str] | None = None) -> IndexVersion:
        # search_model_versions leaves aliases out; the registered model has them.
        tags = dict(model_version.tags or {})
        return IndexVersion(
            version=int(model_version.version),
            collection=tags.get("collection") or self._implied_collection(model_version),
            status=tags.get("status", "unknown"),
            tags=tags,
            aliases=tuple(sorted(aliases if aliases is not None else model_version.aliases or ())),
            run_id=str(model_version.run_id or ""),
        )

    def _implied_collection(self, model_version: Any) -> str:
        """The collection of a version without a ``collection`` tag: an older version's source
        names it; a newer one's source names only the index (its number was not known yet), and
        a builder killed before tagging it leaves the name :meth:`register` gives it."""
        source = str(model_version.source)
        # A source under a run's artifacts names no collection: register() names it <index>__vN.
        named = collection_of(source) if source.startswith("chroma:") else self.index_name
        if named == self.index_name:
            return f"{self.index_name}__v{int(model_version.version)}"
        return named

    def get(self, version: int) -> IndexVersion:
        for candidate in self.versions():
            if candidate.version == version:
                return candidate
        raise VersionError(f"index {self.index_name!r} has no version {version}")

    def by_alias(self, alias: str) -> IndexVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_model_version_by_alias(self.model_name, alias)
        except MlflowException as exc:
            # An absent model or alias is an answer ("none"); anything else is an outage that
            # must not read as "no live version" (serving would silently fall back).
            if exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
                return None
            raise self._unreadable(exc) from None
        return self._convert(found)

    def _unreadable(self, exc: Exception) -> RegistryError:
        return RegistryError(
            f"cannot read the index versions of {self.index_name!r} from MLflow"
            f" at {self.client.tracking_uri}: {_why(exc)}"
        )

    def live(self) -> IndexVersion | None:
        return self.by_alias(CHAMPION)

    def register(
        self,
        tags: Mapping[str, str],
        *,
        collection: str | None = None,
        run_id: str | None = None,
    ) -> IndexVersion:
        """Record a new version in state ``building``; it is not live until promoted.

        The number comes from the registry, which allocates it atomically (two builders started
        at once get two numbers), and a new collection is named after it: ``<index>__v<N>``.
        ``collection`` instead shares an existing one (a candidate that differs only in how the
        index is queried).
        """
        self._ensure_model()
        # The number is not known before the registry assigns it, so the source cannot name
        # the collection; the ``collection`` tag, set next, does.
        home = self._home(run_id) if run_id else None
        model_version = self.client.create_model_version(
            self.model_name,
            source=home or collection_source(self.index_name),
            run_id=run_id,
            tags={
                **tags,
                "status": "building",
                "host": socket.gethostname(),
                "pid": str(os.getpid()),
                "started_at": utc_timestamp(),
            },
        )
        number = int(model_version.version)
        chosen = collection or f"{self.index_name}__v{number}"
        self.client.set_model_version_tag(self.model_name, str(number), "collection", chosen)
        self.describe(number, f"Chroma collection `{chosen}`, being built.")
        if home and run_id:
            self._describe_home(run_id, home, chosen, tags)
        return self.get(number)

    def _home(self, run_id: str) -> str:
        """A folder under the source run's artifacts, as the version's source.

        MLflow's UI reads a version's ``MLmodel`` through the server, which can only resolve
        artifact locations; a ``chroma:///`` source made the version page fail with a 500.
        The folder is named before the version number exists, so it is unique, not numbered.
        """
        artifacts = str(self.client.get_run(run_id).info.artifact_uri).rstrip("/")
        return f"{artifacts}/index-{uuid.uuid4().hex[:8]}"

    def _describe_home(
        self, run_id: str, home: str, collection: str, tags: Mapping[str, str]
    ) -> None:
        """An ``MLmodel`` in the version's folder: what the UI's version page shows (a flavor
        naming the collection and the query/answer schema of the index)."""
        from mlflow.models import Model, ModelSignature
        from mlflow.types import ColSpec, Schema

        folder = home.rsplit("/", 1)[-1]
        model = Model(
            artifact_path=folder,
            run_id=run_id,
            signature=ModelSignature(
                inputs=Schema([ColSpec("string", "question")]),
                outputs=Schema([ColSpec("string", "answer"), ColSpec("string", "sources")]),
            ),
            metadata={"collection": collection, "index": self.index_name},
        )
        model.add_flavor(
            "ragcycle_index",
            collection=collection,
            **{key: tags[key] for key in ("embedding_model", "target", "reason") if key in tags},
        )
        self.client.log_text(run_id, model.to_yaml(), f"{folder}/MLmodel")

    def collection_in_use(self, collection: str, *, besides: int) -> bool:
        """Whether a version other than ``besides`` still needs ``collection``."""
        return any(
            v.collection == collection and v.version != besides and v.status in USES_COLLECTION
            for v in self.versions()
        )

    def set_tags(self, version: int, **tags: str) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, value)

    def describe(self, version: int, text: str) -> None:
        """The version's description: the first thing its page in the MLflow UI shows."""
        self.client.update_model_version(self.model_name, str(version), description=text)

    def set_status(self, version: int, status: str, **tags: str) -> None:
        self.set_tags(version, status=status, **tags)

    def promote_over(self, version: int, expected_live: int | None) -> IndexVersion:
        """:meth:`promote` as a compare-and-swap: only if the live version is still
        ``expected_live`` (None: still none), the one the decision was made against; otherwise
        :class:`~ragcycle.errors.ConflictError` and nothing changes. Callers hold
        :func:`tasks.locking.registry_lock`, which ``index promote`` and ``index rollback``
        take too, so that the check and the swap are one step."""
        current = self.live()
        now = current.version if current is not None else None
        if now != expected_live:
            raise ConflictError(
                f"index {self.index_name!r}: version {version} was gated against"
                f" {_named(expected_live)}, but {_named(now)} is live now (promoted or rolled"
                " back meanwhile); nothing promoted"
            )
        return self.promote(version)

    def promote(self, version: int) -> IndexVersion:
        """Make ``version`` live; the live one becomes ``previous``. One alias write each."""
        chosen = self.get(version)
        if chosen.status not in {"ready", "live", "previous", "retired"}:
            raise VersionError(f"version {version} is {chosen.status}, not a ready index")
        current = self.live()
        if current is not None and current.version == version:
            return chosen
        earlier = self.by_alias(PREVIOUS)
        if current is not None:
            self.client.set_registered_model_alias(self.model_name, PREVIOUS, str(current.version))
        self.client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        self.set_status(version, "live", promoted_at=utc_timestamp())
        # The status says what the aliases say: the one rollback returns to is "previous".
        if current is not None:
            self.set_status(current.version, "previous", retired_at=utc_timestamp())
        if earlier is not None and earlier.version not in {version, getattr(current, "version", 0)}:
            self.set_status(earlier.version, "retired")
        return self.get(version)

    def rollback(self) -> IndexVersion:
        """Swap ``champion`` and ``previous``."""
        previous = self.by_alias(PREVIOUS)
        if previous is None:
            raise VersionError(f"index {self.index_name!r} has no previous version to roll back to")
        return self.promote(previous.version)

    def building_alive(self, version: IndexVersion, timeout_seconds: float) -> bool:
        """Whether a ``building`` version is still being built by a live process.

        On this host the builder's pid tells; elsewhere a build is presumed alive until the
        timeout, after which it counts as abandoned.
        """
        started = epoch_seconds(version.tags.get("started_at", ""))
        if time.time() - started > timeout_seconds:
            return False
        if version.tags.get("host") == socket.gethostname():
            return pid_alive(int(version.tags.get("pid", "0") or 0))
        return True

    def expired(self, keep: int) -> list[IndexVersion]:
        """Versions beyond the retention count whose collections still exist, oldest first;
        never the live or the previous one, which count among the ``keep``.

        Only ``ready`` and ``retired`` versions hold a collection: a rejected candidate's was
        dropped when it was rejected, a deleted one's when it expired, and a building or failed
        one is not a finished version.
        """
        protected = {CHAMPION, PREVIOUS}
        versions = self.versions()
        finished = [
            v for v in versions if v.status in HOLDS_COLLECTION and not protected & set(v.aliases)
        ]
        room = max(0, keep - sum(1 for v in versions if protected & set(v.aliases)))
        return finished[: max(0, len(finished) - room)]

    def delete(self, versions: Iterable[IndexVersion], drop_collection: Any) -> list[int]:
        """Drop the collections of ``versions`` and mark them deleted; a store that refuses
        keeps the version as it was (the next promotion tries again)."""
        deleted = []
        for version in versions:
            if self.collection_in_use(version.collection, besides=version.version):
                self.set_status(version.version, "deleted", shared_collection="kept")
                deleted.append(version.version)
                continue
            try:
                drop_collection(version.collection)
            except Exception as exc:  # chromadb raises its own errors, not IndexStoreError
                logger.warning(
                    "cannot drop %s of version %d: %s", version.collection, version.version, exc
                )
                continue
            self.set_status(version.version, "deleted")
            deleted.append(version.version)
        return deleted


def _named(version: int | None) -> str:
    return "no live version" if version is None else f"version {version}"


def utc_timestamp() -> str:
    """Now as ISO 8601 in UTC, to the second: what a person reads in the registry's tags."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def epoch_seconds(stamp: str) -> float:
    """Seconds since the epoch of a tag written by :func:`utc_timestamp`, or by registries from
    before it (plain epoch seconds); 0 for none."""
    if not stamp:
        return 0.0
    try:
        return float(stamp)
    except ValueError:
        return datetime.fromisoformat(stamp).timestamp()


def collection_source(collection: str) -> str:
    """A model version's source for a collection.

    The collection is the URI's path: an MLflow tracking server refuses sources whose path does
    not resolve to itself, which ``chroma://<name>`` (the name as host, empty path) fails.
    """
    return f"chroma:///{collection}"


def collection_of(source: str) -> str:
    """The collection named by a source; also reads ``chroma://<name>`` of older registries."""
    parsed = urlparse(source)
    return parsed.path.strip("/") or parsed.netloc


def _why(exc: Exception) -> str:
    """The cause of a registry failure in a few words; MLflow's message quotes whole URLs."""
    text = str(exc)
    for needle, reason in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
        ("401", "not authorised (check mlflow.username and mlflow.password)"),
        ("403", "permission denied"),
    ):
        if needle in text:
            return reason
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def pending_build(
    registry: VersionRegistry, target: str, timeout_seconds: float
) -> tuple[str, IndexVersion] | None:
    """Why building ``target`` now would be redundant: already live, or already being built."""
    live = registry.live()
    if live is not None and live.target == target:
        return "already live", live
    for version in registry.versions():
        if version.status == "building" and version.target == target:
            if registry.building_alive(version, timeout_seconds):
                return "already being built", version
            registry.set_status(version.version, "failed", failure="abandoned build")
    return None
