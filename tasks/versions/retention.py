"""What a reindex cleans up when it ends, promoted or not: unfinished versions whose builder is
gone, the collections of versions that will never serve, and finished ones past retention.

Every step is idempotent and reads the registry afresh, so a run killed halfway leaves work the
next one finishes. A ``building`` or ``ready`` version is left alone while its builder lives
(another reindex may be about to gate it); a collection that another version still uses is kept.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tasks.versions.registry import IndexVersion, VersionRegistry

__all__ = ["Cleanup", "clean_up", "fail_unfinished"]

logger = logging.getLogger(__name__)

UNFINISHED = frozenset({"building", "ready"})
NEVER_SERVES = frozenset({"failed", "rejected"})
DROPPED = "collection_dropped"


@dataclass
class Cleanup:
    """What one clean-up did, by version number."""

    abandoned: list[int] = field(default_factory=list)  # unfinished, builder gone: now failed
    emptied: list[int] = field(default_factory=list)  # failed or rejected: collection dropped
    deleted: list[int] = field(default_factory=list)  # past retention: collection dropped


def fail_unfinished(registry: VersionRegistry, why: str, *, pid: int | None = None) -> list[int]:
    """Mark this process's (``pid``, default: this one) unfinished versions failed: what a
    stopped or timed-out reindex leaves, so that the next reindex proceeds."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname()
    failed = []
    for version in registry.versions():
        ours = version.tags.get("pid") == str(pid) and version.tags.get("host") == host
        if ours and version.status in UNFINISHED:
            registry.set_status(version.version, "failed", failure=why[:500])
            failed.append(version.version)
    return failed


def clean_up(
    registry: VersionRegistry,
    *,
    keep: int,
    build_timeout_seconds: float,
    existing: Callable[[], Iterable[str]],
    drop: Callable[[str], None],
) -> Cleanup:
    """Fail abandoned versions, drop the collections of versions that never serve, and delete
    finished versions beyond ``keep`` (never the live or previous one). ``existing`` lists the
    store's collections; ``drop`` removes one (and its lexical index)."""
    done = Cleanup()
    for version in registry.versions():
        if version.status in UNFINISHED and not registry.building_alive(
            version, build_timeout_seconds
        ):
            registry.set_status(version.version, "failed", failure="abandoned: builder gone")
            done.abandoned.append(version.version)
    present = set(existing())
    for version in registry.versions():
        if version.status not in NEVER_SERVES or version.tags.get(DROPPED) == "true":
            continue
        if version.collection in present and not registry.collection_in_use(
            version.collection, besides=version.version
        ):
            if not _dropped(drop, version):
                continue
            present.discard(version.collection)
        registry.set_tags(version.version, **{DROPPED: "true"})
        done.emptied.append(version.version)
    done.deleted = registry.delete(registry.expired(keep), drop)
    return done


def _dropped(drop: Callable[[str], None], version: IndexVersion) -> bool:
    try:
        drop(version.collection)
    except Exception as exc:  # chromadb raises its own errors: the next clean-up tries again
        logger.warning("cannot drop %s of version %d: %s", version.collection, version.version, exc)
        return False
    return True
