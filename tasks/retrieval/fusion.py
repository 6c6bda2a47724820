"""Reciprocal rank fusion: one ranking out of several, by rank alone.

BM25 scores and cosine similarities live on scales that cannot be added; RRF (Cormack et al.,
2009) uses each list's ranks only, so it needs no calibration per corpus. Written here because it
is six lines, and the libraries that ship it (ranx, rank-fusion packages) would bring a
dependency tree for them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["reciprocal_rank_fusion"]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], weights: Sequence[float], k: int = 60
) -> list[tuple[str, float]]:
    """Keys of all ``rankings`` (best first), scored ``sum(weight / (k + rank))``, best first.

    Ties keep the order in which keys first appear, earlier rankings first, so fusing one ranking
    with an empty one returns it unchanged.
    """
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    order = {key: position for position, key in enumerate(scores)}
    return sorted(scores.items(), key=lambda item: (-item[1], order[item[0]]))
