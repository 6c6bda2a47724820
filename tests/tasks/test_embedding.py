from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.embedding import EmbeddingCache, embed_with_cache, load_sentence_transformer
from tests.fakes import HashEmbedder


def test_real_model_gives_normalized_384d_vectors_that_rank_by_meaning(embedder: Any) -> None:
    vectors = embedder.embed(
        [
            "How do I reset my password?",
            "Steps to recover a forgotten account password",
            "The 2024 budget allocates funds to infrastructure",
        ]
    )
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert related > unrelated + 0.3


def test_model_is_loaded_once_per_process(embedder: Any) -> None:
    again = load_sentence_transformer(str(embedder.model_path), embedder.device)
    assert again is embedder.model


def test_batches_report_progress(embedder: Any) -> None:
    seen: list[int] = []
    embedder_batch = embedder.batch_size
    texts = [f"sentence number {i}" for i in range(embedder_batch + 3)]
    embedder.embed(texts, on_progress=seen.append)
    assert seen == [embedder_batch, 3]


def test_cache_avoids_re_embedding_known_text(tmp_path: Path, embedder: Any) -> None:
    class Counting:
        model_id = embedder.model_id

        def __init__(self) -> None:
            self.texts: list[str] = []

        def embed(self, texts: Any, *, on_progress: Any = None) -> np.ndarray:
            self.texts.extend(texts)
            return embedder.embed(texts, on_progress=on_progress)  # type: ignore[no-any-return]

    counting = Counting()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    texts = ["alpha text", "beta text", "alpha text"]
    hashes = ["a", "b", "a"]
    first, fresh = embed_with_cache(texts, hashes, counting, cache)
    assert fresh == 2 and counting.texts == ["alpha text", "beta text"]
    assert np.allclose(first[0], first[2])
    second, fresh_again = embed_with_cache(["beta text", "gamma"], ["b", "g"], counting, cache)
    assert fresh_again == 1 and counting.texts[-1] == "gamma"
    assert np.allclose(second[0], first[1], atol=1e-6)
    cache.close()
    reopened = EmbeddingCache(tmp_path / "cache.sqlite")
    assert set(reopened.get_many(embedder.model_id, ["a", "b", "g", "zzz"])) == {"a", "b", "g"}
    assert reopened.get_many("another-model", ["a"]) == {}


def test_progress_counts_every_row_once(tmp_path: Path) -> None:
    fake = HashEmbedder()
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    embed_with_cache(["x", "y"], ["x", "y"], fake, cache)
    progress: list[int] = []
    vectors, fresh = embed_with_cache(
        ["x", "z", "z", "y"], ["x", "z", "z", "y"], fake, cache, on_progress=progress.append
    )
    assert fresh == 1 and vectors.shape == (4, 16)
    assert sum(progress) == 4
