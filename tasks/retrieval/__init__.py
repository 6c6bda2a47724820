"""Retrieval: dense, lexical (BM25) or hybrid ranking of chunks, and documents ranked by them.

- :mod:`~tasks.retrieval.core`: :func:`retrieve_many`, :class:`SearchPlan`, document ranking.
- :mod:`~tasks.retrieval.fusion`: reciprocal rank fusion.
- :mod:`~tasks.retrieval.rerank`: the optional cross-encoder.
"""

from tasks.retrieval.core import (
    DENSE,
    RankedDocument,
    Retrieval,
    SearchPlan,
    rank_documents,
    retrieve,
    retrieve_many,
    retrieve_many_task,
    search_plan,
)

__all__ = [
    "DENSE",
    "RankedDocument",
    "Retrieval",
    "SearchPlan",
    "rank_documents",
    "retrieve",
    "retrieve_many",
    "retrieve_many_task",
    "search_plan",
]
