"""The ONNX Runtime embedding backend: the same model, exported locally, run without torch.

sentence-transformers' own ``backend="onnx"`` needs optimum-onnx, which does not install beside
transformers 5 (STACK.md), so the bundled model is exported here with ``torch.onnx.export``
once, cached under ``<data_dir>/cache/onnx/<model digest>/``, optionally quantized to int8
weights (``onnxruntime.quantization.quantize_dynamic``), and run with onnxruntime: the model's
own fast tokenizer (truncating at the model's limit), then the pooling and normalization its
``modules.json`` declares. An edited model folder has another digest, so a stale export is never
used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragcycle.errors import ConfigError
from tasks.embedding.core import ProgressCallback, embed_in_length_order

__all__ = ["OnnxEmbedder", "export_onnx", "model_digest"]

logger = logging.getLogger(__name__)

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")
_EXPORT_FORMAT = "eager-opset17-int8pc"  # part of the cache key: a new recipe, a new export


def model_digest(model_path: Path) -> str:
    """A hash of the model folder's weights, config and vocabulary (what the export depends on)."""
    digest = hashlib.sha256(_EXPORT_FORMAT.encode())
    for file in sorted(model_path.rglob("*")):
        if file.is_file() and file.suffix in _WEIGHT_SUFFIXES and "onnx" not in file.parts:
            digest.update(str(file.relative_to(model_path)).encode())
            with file.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _pooling(model_path: Path) -> tuple[str, bool]:
    """The pooling mode (mean or cls) and whether vectors are normalized, from modules.json."""
    modules_file = model_path / "modules.json"
    if not modules_file.exists():
        return "mean", True
    modules = json.loads(modules_file.read_text())
    mode, normalized = "mean", False
    for module in modules:
        kind = str(module.get("type", ""))
        if kind.endswith("Pooling"):
            config = json.loads((model_path / module["path"] / "config.json").read_text())
            if config.get("pooling_mode_cls_token"):
                mode = "cls"
            elif not config.get("pooling_mode_mean_tokens", True):
                raise ConfigError(
                    f"embedding.backend onnx supports mean or CLS pooling; {model_path} uses"
                    f" {config}: use embedding.backend = 'torch'"
                )
        normalized |= kind.endswith("Normalize")
    return mode, normalized


def _export_fp32(model_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    # Eager attention exports as plain MatMul/Softmax, which onnxruntime runs well; the SDPA
    # kernel torch uses by default exported to a graph ~1.8x slower once quantized (measured:
    # 0.50 s vs 0.31 s for 32 chunks of 170 tokens on 2 cores, torch itself 0.56 s).
    model = AutoModel.from_pretrained(
        str(model_path), local_files_only=True, attn_implementation="eager"
    ).eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            # transformers 5 rejects positional arguments: keywords only (STACK.md)
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    # A padded batch, so the traced graph takes the masked path real batches take.
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 8:] = 0
    types = torch.zeros((2, 16), dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in (*_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and trace notes
        torch.onnx.export(
            LastHiddenState(model),
            (ids, mask, types),
            str(target),
            input_names=list(_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantize(source: Path, target: Path) -> None:
    """int8 weights, one scale per output channel: per-tensor scales measured a mean cosine of
    0.950 to the fp32 vectors (worst 0.83) on the sample corpus, per-channel 0.992 (worst 0.975)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process goes to the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def export_onnx(model_path: Path, cache_dir: Path, *, int8: bool) -> Path:
    """The ONNX file of ``model_path`` (int8 weights when asked), exported on first use.

    Files are written under a temporary name and renamed into place, so two processes exporting
    at once both end with a complete file and a killed export leaves nothing half-written.
    """
    folder = cache_dir / "onnx" / model_digest(model_path)
    fp32 = folder / "model.onnx"
    target = folder / ("model.int8.onnx" if int8 else "model.onnx")
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.exists():
        logger.info("Exporting %s to ONNX (once; cached in %s)", model_path.name, folder)
        staging = folder / f".model-{uuid.uuid4().hex[:8]}.onnx"
        _export_fp32(model_path, staging)
        os.replace(staging, fp32)
    if int8:
        logger.info("Quantizing %s to int8 weights", fp32)
        staging = folder / f".model-int8-{uuid.uuid4().hex[:8]}.onnx"
        _quantize(fp32, staging)
        os.replace(staging, target)
    return target


@functools.lru_cache(maxsize=4)
def _session(onnx_file: str, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's notices are not the user's concern
    # Idle ORT threads spin by default, burning the cores that ingestion's parse processes
    # need between runs; parked instead, they cost a few microseconds per run.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(
        onnx_file, sess_options=options, providers=["CPUExecutionProvider"]
    )


@functools.lru_cache(maxsize=4)
def _run_lock(onnx_file: str) -> threading.Lock:
    """One model run at a time per process: a run already uses every core, and partitions on
    other threads meanwhile load, chunk and scan (the run releases the GIL), which is how
    parsing overlaps embedding."""
    return threading.Lock()


@functools.lru_cache(maxsize=4)
def _tokenizer(model_path: str, limit: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=limit)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    return tokenizer


class OnnxEmbedder:
    """A :class:`~tasks.embedding.core.TextEmbedder` running the exported model on onnxruntime."""

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        *,
        model_id: str,
        int8: bool = False,
        batch_size: int = 32,
        normalize: bool = True,
        sort_by_length: bool = True,
        threads: int = 0,
        limit: int = 256,
    ) -> None:
        self.model_path = model_path
        self.cache_dir = cache_dir
        self.model_id = model_id
        self.int8 = int8
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        self.threads = threads
        self.limit = limit
        self.pooling, declared = _pooling(model_path)
        self.normalize = normalize or declared
        self._lock = threading.Lock()
        self._session: Any = None
        self._onnx_file: Path | None = None

    def _ready(self) -> Any:
        with self._lock:
            if self._session is None:
                self._onnx_file = export_onnx(self.model_path, self.cache_dir, int8=self.int8)
                self._session = _session(str(self._onnx_file), self.threads)
            return self._session

    def embed(
        self, texts: Sequence[str], *, on_progress: ProgressCallback | None = None
    ) -> np.ndarray:
        session = self._ready()
        return embed_in_length_order(
            texts,
            lambda batch: self._encode(session, batch),
            self.batch_size,
            self.sort_by_length,
            on_progress,
        )

    def _encode(self, session: Any, batch: list[str]) -> np.ndarray:
        encodings = _tokenizer(str(self.model_path), self.limit).encode_batch(batch)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        with _run_lock(str(self._onnx_file)):
            hidden = session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            )[0]
        if self.pooling == "cls":
            vectors = hidden[:, 0, :]
        else:
            weights = mask[:, :, None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        if self.normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(vectors, dtype=np.float32)
