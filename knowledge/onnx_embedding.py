"""The ``onnx-fp32`` / ``onnx-int8`` embedding backends: the local model exported to ONNX, run by onnxruntime.

:meth:`OnnxEmbedder.start` exports the sentence-transformers directory once (torch.onnx, legacy
TorchScript exporter, so ``onnxscript`` is not needed), optionally quantises it with dynamic int8,
and caches the files under ``~/.cache/botkit/onnx/`` keyed by the model's weights, so later starts
only load them. Pooling (attention-masked mean) and L2 normalisation happen in numpy, which keeps
the exported graph a plain BERT encoder.

The int8 weight encoding is chosen from the CPU (:func:`int8_weights_for_cpu`). onnxruntime's
u8 x s8 kernels multiply with ``vpmaddubsw`` where there is no VNNI (AVX2-only CPUs such as AMD
EPYC Zen 3): it adds pairs of products into int16 and saturates, so most outputs of a quantised
MatMul come out wrong (measured on an AMD EPYC: 99.9% of a random 64x384x384 MatMulInteger).
There the weights are stored as u8 instead, whose kernel widens to 16 bits first and is exact.
``reduce_range`` (7-bit s8 weights) also avoids the overflow, but halving the weight resolution
lost more than the saturation did on this model (mean cosine 0.983 against 0.985 for s8 and
0.987 for u8, all 20 test texts in one batch). VNNI adds into int32, so s8 stays the choice there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from botkit.cpu import describe, has_vnni
from botkit.errors import EmbeddingError
from knowledge.models import model_label

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "botkit" / "onnx"
# Bump when the export or quantisation recipe changes, so stale cached files are not reused.
_RECIPE = "v1-opset17-eager-pc"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# int8 weight encodings: quantize_dynamic settings; the name is part of the int8 file's cache name.
INT8_WEIGHTS: dict[str, dict[str, Any]] = {
    "s8": {"weight_type": "QInt8", "reduce_range": False},       # VNNI: exact, and the fastest kernel
    "u8": {"weight_type": "QUInt8", "reduce_range": False},      # no VNNI: exact (s8 would saturate)
    "s8-7bit": {"weight_type": "QInt8", "reduce_range": True},   # no overflow, half the resolution: kept to compare
}
_INSTALL_HINT = "`pip install onnxruntime onnx` (or `pip install botkit[onnx]`)"


def _drop_ort_quant_logs(record: logging.LogRecord) -> bool:
    # quantize_dynamic logs advice ("consider pre-processing") straight to the root logger.
    return "onnxruntime" not in record.pathname


def _export_fp32(model_path: Path, dest: Path) -> None:
    """Trace the encoder with inputs ``input_ids`` and ``attention_mask`` only, output last_hidden_state."""
    import torch
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()
    # Eager attention traces to plain MatMul/Softmax ops with the mask applied explicitly.
    model = AutoModel.from_pretrained(str(model_path), local_files_only=True, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # token_type_ids is a constant 0 for single sentences; as a graph input it exported wrongly.
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    # A padded example, so the traced graph keeps the attention-mask path rather than a no-padding shortcut.
    ids = torch.full((2, 8), 1000, dtype=torch.long)
    mask = torch.ones((2, 8), dtype=torch.long)
    mask[1, 5:] = 0
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and TracerWarnings: expected, and checked by the tests
        torch.onnx.export(Encoder(model), (ids, mask), str(dest), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, do_constant_folding=True,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
                          dynamo=False)


def int8_weights_for_cpu() -> str:
    """``s8`` where the CPU has VNNI (int8 dot products into int32), else ``u8`` (see the module docstring)."""
    return "s8" if has_vnni() else "u8"


def _quantize(weights: str, src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    setting = INT8_WEIGHTS[weights]
    root = logging.getLogger()
    root.addFilter(_drop_ort_quant_logs)
    try:
        # Per-channel weights: per-tensor scales lose too much here (cosine to fp32 fell to ~0.76 on short texts).
        quantize_dynamic(str(src), str(dest), weight_type=getattr(QuantType, setting["weight_type"]),
                         reduce_range=setting["reduce_range"], per_channel=True, op_types_to_quantize=["MatMul"])
    finally:
        root.removeFilter(_drop_ort_quant_logs)


def _build_atomically(dest: Path, build: Callable[..., None], *args: Any) -> None:
    """Write to a unique temp name, then rename: a crash never leaves a half-written model at ``dest``."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        build(*args, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxEmbedder:
    """The local sentence-transformers model exported to ONNX (fp32, or dynamic int8 when ``quantized``).

    ``int8_weights`` is a key of :data:`INT8_WEIGHTS`, or ``auto`` (the default) for
    :func:`int8_weights_for_cpu`. The embedder's name does not carry it: every encoding
    approximates the same model to a cosine of ~0.99, as do batches of different composition.
    """

    def __init__(self, model_path: Path, quantized: bool = False, batch_size: int = 64, threads: int = 0,
                 cache_dir: Path | None = None, int8_weights: str = "auto"):
        if int8_weights != "auto" and int8_weights not in INT8_WEIGHTS:
            raise EmbeddingError(f"unknown int8 weight encoding {int8_weights!r} "
                                 f"(allowed: auto, {', '.join(INT8_WEIGHTS)})")
        self.model_path = Path(model_path)
        self.quantized = quantized
        self.int8_weights = int8_weights_for_cpu() if int8_weights == "auto" else int8_weights
        self.batch_size = max(1, batch_size)
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.onnx_path: Path | None = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._max_length = 256
        self._dim = 0
        self._lock = threading.Lock()  # guards start() and the tokenizer (its padding state is mutable)
        self._label = ""

    @property
    def name(self) -> str:
        if not self._label:  # asked several times per search: the model's label is worked out once
            self._label = model_label(self.model_path)
        return f"{self._label}:{'onnx-int8' if self.quantized else 'onnx-fp32'}"

    @property
    def dim(self) -> int:
        if not self._dim:  # config.json is enough: no need to export just to learn the width
            self._dim = int(self._read_json("config.json", required=True)["hidden_size"])
        return self._dim

    def _read_json(self, name: str, required: bool = False) -> dict[str, Any]:
        path = self.model_path / name
        try:
            if not required and not path.exists():
                return {}
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise EmbeddingError(f"cannot read {path}: {exc}; point knowledge.embedding.model at a "
                                 "sentence-transformers directory") from exc

    def _cache_key(self) -> str:
        weights = next((self.model_path / n for n in _WEIGHT_FILES if (self.model_path / n).exists()), None)
        if weights is None:
            raise EmbeddingError(f"no weights file ({' or '.join(_WEIGHT_FILES)}) in {self.model_path}")
        st = weights.stat()
        # size+mtime is cheap and changes whenever the weights are replaced; hashing 90 MB on each start is not.
        raw = f"{_RECIPE}|{weights.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _ensure_files(self) -> Path:
        label = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_label(self.model_path))
        stem = f"{label}-{self._cache_key()}"
        fp32 = self.cache_dir / f"{stem}-fp32.onnx"
        # The weight encoding is in the name: a cache shared by machines of both CPU kinds keeps one file each.
        int8 = self.cache_dir / f"{stem}-int8-{self.int8_weights}.onnx"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if not fp32.exists() and not (self.quantized and int8.exists()):
            _build_atomically(fp32, _export_fp32, self.model_path)
        if self.quantized and not int8.exists():
            log.info("quantising %s to int8 with %s weights for this CPU (%s)", self.model_path.name,
                     self.int8_weights, describe())
            _build_atomically(int8, _quantize, self.int8_weights, fp32)
        return int8 if self.quantized else fp32

    def start(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise EmbeddingError(f"the {self.name.split(':')[1]} embedding backend needs onnxruntime: "
                                     f"{_INSTALL_HINT}, or set knowledge.embedding.backend to torch-fp32") from exc
            cfg = self._read_json("sentence_bert_config.json")
            max_pos = int(self._read_json("config.json", required=True).get("max_position_embeddings", 512))
            self._max_length = min(int(cfg.get("max_seq_length") or 256), max_pos)
            dim = self.dim
            try:
                from transformers import AutoTokenizer

                path = self._ensure_files()
                tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True, use_fast=True)
                opts = ort.SessionOptions()
                opts.log_severity_level = 3  # errors only: the optimiser's notices are not actionable
                if self.threads > 0:
                    opts.intra_op_num_threads = self.threads
                session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except EmbeddingError:
                raise
            except ImportError as exc:
                raise EmbeddingError(f"exporting the embedding model to ONNX needs {exc.name or exc}: "
                                     f"{_INSTALL_HINT}") from exc
            except Exception as exc:  # noqa: BLE001 - wrap whatever export, quantisation or loading raised
                raise EmbeddingError(
                    f"cannot prepare the ONNX embedding model for {self.model_path} in {self.cache_dir}: {exc}; "
                    "check the directory is writable, delete its files to force a fresh export, "
                    "or set knowledge.embedding.backend to torch-fp32") from exc
            self._tokenizer, self._dim, self.onnx_path = tokenizer, dim, path
            self._session = session  # last: its presence means "started"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.start()
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        # Sorting by length groups similar lengths, so each batch pads little; rows go back by index.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            with self._lock:
                enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=self._max_length, return_tensors="np")
            mask = enc["attention_mask"].astype(np.int64)
            try:
                hidden = self._session.run(["last_hidden_state"], {
                    "input_ids": enc["input_ids"].astype(np.int64), "attention_mask": mask})[0]
            except Exception as exc:  # noqa: BLE001
                raise EmbeddingError(f"the ONNX embedding model failed: {exc}; delete {self.onnx_path} "
                                     "to force a fresh export") from exc
            weights = mask[:, :, None].astype(np.float32)  # mean over real tokens only, as the Pooling module
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            out[idx] = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return out
