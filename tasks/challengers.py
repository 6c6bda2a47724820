"""Which contenders a reindex builds and gates against the live version, and what they share.

Three kinds, in this order (the order breaks ties in the final choice):

- ``configured``: the settings as the operator has them now (plus a request's ``config``). A
  change to ``ragcycle.toml`` is a proposal: it reaches users only through this gate.
- ``live``: the live version's own config on today's corpus, a refresh when documents changed.
  Without it a reindex after a promoted challenger would revert to the settings file.
- each ``lifecycle.candidates`` entry: the live config with the entry's overrides.

A contender whose target (corpus snapshot + serving config) is what is live is dropped, and so
is one that repeats another's target. Contenders with the same corpus and index config (they
differ only in how the index is queried or answered) share one collection, and one that holds
what the live collection holds reuses it, so nothing is embedded twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ragcycle.settings import Settings
from tasks.versions import IndexVersion, index_config, serving_config, target_key
from tasks.versions.records import CorpusState

__all__ = ["Contender", "plan_contenders", "share_key"]

Kind = Literal["configured", "live", "challenger"]


@dataclass
class Contender:
    """One config to build (or reuse) and evaluate."""

    name: str
    kind: Kind
    settings: Settings
    corpus: CorpusState
    overrides: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return serving_config(self.settings)

    @property
    def target(self) -> str:
        return target_key(self.corpus.snapshot, self.config)

    @property
    def requires_improvement(self) -> bool:
        """Only challengers must beat the live version (see tasks.promotion)."""
        return self.kind == "challenger"


def share_key(snapshot: str, config: dict[str, Any]) -> str:
    """Equal for builds that would hold the same chunks: same corpus, same index config."""
    payload = json.dumps({"corpus": snapshot, "index": index_config(config)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def plan_contenders(
    configured: Settings,
    live: IndexVersion | None,
    live_settings: Settings | None,
    corpus_of: Callable[[Settings], CorpusState],
    *,
    configured_overrides: dict[str, Any],
    only: Sequence[str] | None = None,
    force: bool = False,
) -> tuple[list[Contender], list[str]]:
    """The contenders worth building, and one line for each one left out and why.

    ``corpus_of`` hashes the sources under a contender's file types (cached by the caller);
    ``force`` keeps a contender even when it is what is live (a rebuild of the same).
    Challengers need a live version to challenge; the first version is the configured one.
    """
    contenders = [
        Contender(
            "configured", "configured", configured, corpus_of(configured), configured_overrides
        )
    ]
    if live is not None and live_settings is not None:
        contenders.append(Contender("live", "live", live_settings, corpus_of(live_settings), {}))
        for candidate in configured.lifecycle.candidates:
            if only is not None and candidate.name not in only:
                continue
            derived = live_settings.with_overrides(candidate.overrides)
            contenders.append(
                Contender(
                    candidate.name, "challenger", derived, corpus_of(derived), candidate.overrides
                )
            )
    kept: list[Contender] = []
    skipped: list[str] = []
    seen: dict[str, str] = {}
    for contender in contenders:
        target = contender.target
        if live is not None and target == live.target and not force:
            skipped.append(f"{contender.name}: is what version {live.version} serves")
        elif target in seen:
            skipped.append(f"{contender.name}: same target as {seen[target]}")
        else:
            seen[target] = contender.name
            kept.append(contender)
    return kept, skipped
