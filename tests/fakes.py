"""Deterministic stand-ins, used only around the stage under test, never as the stage itself."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np


class HashEmbedder:
    """Maps each text to a fixed pseudo-random unit vector; counts what it was asked to embed."""

    def __init__(self, dimension: int = 16, model_id: str = "all-MiniLM-L6-v2") -> None:
        self.dimension = dimension
        self.model_id = model_id
        self.calls: list[int] = []

    def embed(
        self, texts: Sequence[str], *, on_progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        self.calls.append(len(texts))
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=self.dimension)
            rows.append(vector / np.linalg.norm(vector))
        if on_progress is not None:
            on_progress(len(texts))
        return np.asarray(rows, dtype=np.float32)

    @property
    def embedded(self) -> int:
        return sum(self.calls)
