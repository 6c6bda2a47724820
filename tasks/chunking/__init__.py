"""Chunking: documents become passages the embedding model reads whole.

- :mod:`~tasks.chunking.core`: cutting text into overlapping chunks (recursive or fixed).
- :mod:`~tasks.chunking.context`: heading paths, markup-free embedded text, token budgets.
"""

from tasks.chunking.context import TokenBudget, clean_markdown, embedded_text, heading_paths
from tasks.chunking.core import (
    PAGE_SEPARATOR,
    Chunk,
    chunk_document,
    chunk_documents,
    chunk_documents_task,
    chunk_id,
    chunk_within_limit,
    flatten_chunks,
    split_spans,
    text_hash,
)

__all__ = [
    "PAGE_SEPARATOR",
    "Chunk",
    "TokenBudget",
    "chunk_document",
    "chunk_documents",
    "chunk_documents_task",
    "chunk_id",
    "chunk_within_limit",
    "clean_markdown",
    "embedded_text",
    "flatten_chunks",
    "heading_paths",
    "split_spans",
    "text_hash",
]
