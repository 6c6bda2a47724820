"""Optional reranking of the fused top chunks with a cross-encoder loaded by local path.

A cross-encoder reads question and passage together, which a bi-encoder's vectors cannot, and
usually reorders the top few better; it costs one forward pass per pair, so only the fused top
``rerank_top_n`` are rescored. No registry package bundles cross-encoder weights (STACK.md), so
one is used only when ``retrieval.reranker_path`` names a folder.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ragcycle.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder

__all__ = ["Reranker", "load_reranker"]


class Reranker:
    """Scores (question, passage) pairs with a sentence-transformers ``CrossEncoder``."""

    def __init__(self, model: CrossEncoder, path: Path) -> None:
        self.model = model
        self.path = path
        self._lock = threading.Lock()  # the tokenizer keeps state per call, as the embedder's

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        with self._lock:
            predicted = self.model.predict(
                [(question, passage) for passage in passages], show_progress_bar=False
            )
        return [float(score) for score in predicted]

    def order(self, question: str, passages: Sequence[str]) -> list[int]:
        """Positions of ``passages`` best first; ties keep the incoming order."""
        scored = self.scores(question, passages)
        return sorted(range(len(passages)), key=lambda i: (-scored[i], i))


@functools.lru_cache(maxsize=2)
def load_reranker(path: str, device: str = "cpu") -> Reranker:
    """Load a cross-encoder folder once per process."""
    folder = Path(path)
    if not (folder / "config.json").exists():
        raise ConfigError(
            f"retrieval.reranker_path {folder} is not a model folder (no config.json)"
        )
    from sentence_transformers import CrossEncoder

    return Reranker(CrossEncoder(str(folder), device=device, local_files_only=True), folder)
