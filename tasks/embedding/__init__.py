"""Embedding: text becomes normalized vectors with a local model, on PyTorch or ONNX Runtime.

- :mod:`~tasks.embedding.core`: the :class:`TextEmbedder` protocol, the sentence-transformers
  (PyTorch) embedder, length-ordered batching, the model's token budget, the embedding cache.
- :mod:`~tasks.embedding.onnx_backend`: the same model exported to ONNX (fp32 or int8 weights).
"""

from __future__ import annotations

from ragcycle.settings import EmbeddingSettings, Settings
from tasks.embedding.core import (
    EmbeddingCache,
    ProgressCallback,
    SentenceTransformerEmbedder,
    TextEmbedder,
    embed_in_length_order,
    embed_with_cache,
    embed_with_cache_task,
    load_sentence_transformer,
    model_lock,
    model_max_tokens,
    token_budget,
)
from tasks.embedding.onnx_backend import OnnxEmbedder

__all__ = [
    "EmbeddingCache",
    "OnnxEmbedder",
    "ProgressCallback",
    "SentenceTransformerEmbedder",
    "TextEmbedder",
    "cache_model_id",
    "embed_in_length_order",
    "embed_with_cache",
    "embed_with_cache_task",
    "embedder_from_settings",
    "encode_batch_size",
    "load_sentence_transformer",
    "model_lock",
    "model_max_tokens",
    "token_budget",
]


def cache_model_id(model_name: str, backend: str) -> str:
    """The id vectors are cached and recorded under: int8 and fp32 vectors differ slightly, so
    each backend but the default has its own cache entries."""
    return model_name if backend == "torch" else f"{model_name}+{backend}"


def encode_batch_size(config: EmbeddingSettings) -> int:
    """Texts per encode call: the configured number, or for ``auto`` what runs fastest where
    the model runs.

    A GPU wants large batches. A CPU does not: a batch of 32 chunks of 256 tokens has 12 MB of
    activations per layer and 100 MB of attention scores, far past the caches, so each matmul
    waits on memory. Measured on 2 cores (chunks per CPU-second, 600 PDF chunks): onnx-int8
    36 at 1 vs 24.5 at 32, torch 12.3 at 4 vs 10.5 at 32. One text per call also makes each
    int8 vector independent of its batch neighbours, whose values set the per-batch activation
    scale of dynamic quantization.
    """
    if config.batch_size != "auto":
        return config.batch_size
    if config.backend.startswith("onnx"):
        return 1
    return 4 if config.device == "cpu" else 32


def embedder_from_settings(settings: Settings) -> SentenceTransformerEmbedder | OnnxEmbedder:
    """The configured backend's embedder over the configured (or bundled) model folder."""
    config = settings.embedding
    path = settings.embedding_model_path()
    if config.backend in {"torch", "torch-bf16"}:
        return SentenceTransformerEmbedder(
            path,
            model_id=cache_model_id(config.model_name, config.backend),
            dtype="bfloat16" if config.backend == "torch-bf16" else "float32",
            device=config.device,
            batch_size=encode_batch_size(config),
            normalize=config.normalize,
            sort_by_length=config.sort_by_length,
        )
    return OnnxEmbedder(
        path,
        settings.cache_dir,
        model_id=cache_model_id(config.model_name, config.backend),
        int8=config.backend == "onnx-int8",
        batch_size=encode_batch_size(config),
        normalize=config.normalize,
        sort_by_length=config.sort_by_length,
        threads=config.threads,
        limit=model_max_tokens(path),
    )
