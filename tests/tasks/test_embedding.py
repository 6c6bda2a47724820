from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

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


# --- length-ordered batches and the ONNX backend -----------------------------------------


def test_batches_are_length_sorted_and_rows_come_back_in_order() -> None:
    from tasks.embedding import embed_in_length_order

    seen: list[list[str]] = []

    def encode(batch: list[str]) -> np.ndarray:
        seen.append(batch)
        return np.asarray([[float(len(text))] for text in batch], dtype=np.float32)

    texts = ["aaa", "a", "aaaaa", "aa", "aaaa"]
    rows = embed_in_length_order(texts, encode, 2, True)
    assert seen == [["aaaaa", "aaaa"], ["aaa", "aa"], ["a"]]
    assert rows[:, 0].tolist() == [3.0, 1.0, 5.0, 2.0, 4.0]
    seen.clear()
    embed_in_length_order(texts, encode, 2, False)
    assert seen == [["aaa", "a"], ["aaaaa", "aa"], ["aaaa"]]


SAMPLE_TEXTS = [
    "How do I declare a path parameter?",
    "Retrieval-augmented generation grounds a model in documents it retrieves first.",
    "x",
    "The Digital Millennium Copyright Act was signed into law on October 28, 1998. " * 6,
    "Chunks longer than the model reads are cut at headings, paragraphs and sentences.",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def onnx_embedder(cache: Path, int8: bool, batch_size: int = 32) -> Any:
    from ragcycle.settings import load_settings
    from tasks.embedding import OnnxEmbedder, model_max_tokens

    path = load_settings(config_file=None).embedding_model_path()
    return OnnxEmbedder(
        path, cache, model_id="m", int8=int8, limit=model_max_tokens(path), batch_size=batch_size
    )


def test_onnx_vectors_match_the_pytorch_ones(embedder: Any, onnx_cache: Path) -> None:
    reference = embedder.embed(SAMPLE_TEXTS)
    fp32 = onnx_embedder(onnx_cache, int8=False).embed(SAMPLE_TEXTS)
    assert fp32.shape == reference.shape == (5, 384)
    assert np.allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-5)
    assert (fp32 * reference).sum(axis=1).min() >= 0.999
    int8 = onnx_embedder(onnx_cache, int8=True, batch_size=1).embed(SAMPLE_TEXTS)  # auto size
    agreement = (int8 * reference).sum(axis=1)
    assert agreement.min() >= 0.98 and agreement.mean() >= 0.99  # nDCG: bench/embed.py


@pytest.mark.parametrize(
    ("embedding", "expected"),
    [
        ({"backend": "onnx-int8"}, 1),
        ({"backend": "onnx"}, 1),
        ({"backend": "torch"}, 4),
        ({"backend": "torch", "device": "cuda"}, 32),
        ({"backend": "onnx-int8", "batch_size": 16}, 16),
    ],
)
def test_auto_batch_size_is_small_on_cpu_and_large_on_gpu(
    embedding: dict[str, Any], expected: int
) -> None:
    from ragcycle.settings import load_settings
    from tasks.embedding import encode_batch_size

    assert encode_batch_size(load_settings(config_file=None, embedding=embedding).embedding) == (
        expected
    )


def test_an_int8_vector_does_not_depend_on_its_batch_at_the_auto_size(onnx_cache: Path) -> None:
    """Dynamic quantization scales activations per call: at one text a call, a chunk embeds
    the same alone or among others, so a re-ingest reproduces its vectors exactly."""
    from ragcycle.settings import load_settings
    from tasks.embedding import encode_batch_size

    size = encode_batch_size(
        load_settings(config_file=None, embedding={"backend": "onnx-int8"}).embedding
    )
    embedder = onnx_embedder(onnx_cache, int8=True, batch_size=size)
    together = embedder.embed(SAMPLE_TEXTS)
    for row, text in enumerate(SAMPLE_TEXTS):
        assert np.array_equal(embedder.embed([text])[0], together[row])


def test_the_export_is_made_once_and_keyed_by_the_model_files(
    onnx_cache: Path, tmp_path: Path
) -> None:
    import shutil

    from ragcycle.settings import load_settings
    from tasks.embedding.onnx_backend import export_onnx, model_digest

    path = load_settings(config_file=None).embedding_model_path()
    first = export_onnx(path, onnx_cache, int8=False)
    stamp = first.stat().st_mtime_ns
    assert export_onnx(path, onnx_cache, int8=False) == first
    assert first.stat().st_mtime_ns == stamp  # cached, not exported again
    assert not list(first.parent.glob(".model-*"))  # no staging files left behind
    copy = tmp_path / "model"
    shutil.copytree(path, copy)
    assert model_digest(copy) == model_digest(path)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert model_digest(copy) != model_digest(path)


def test_bfloat16_vectors_match_the_float32_ones(embedder: Any) -> None:
    from ragcycle.settings import load_settings
    from tasks.embedding import embedder_from_settings

    settings = load_settings(config_file=None, embedding={"backend": "torch-bf16"})
    bf16 = embedder_from_settings(settings)
    assert bf16.model_id == "all-MiniLM-L6-v2+torch-bf16"  # its own cache entries
    vectors = bf16.embed(SAMPLE_TEXTS)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * embedder.embed(SAMPLE_TEXTS)).sum(axis=1).min() >= 0.99
