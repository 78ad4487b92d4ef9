"""The knowledge seams: what the dialogue engine needs from search, and search from a model.

Two protocols live here, in botkit's core, so that anything can implement them without
importing the knowledge package (FAISS, torch) or the other way round:

- :class:`Retriever`: the engine's view of a knowledge base. ``knowledge.retriever.
  KnowledgeRetriever`` is the real one; :class:`botkit.testing.StaticRetriever` a fake.
- :class:`Embedder`: texts to unit vectors. ``knowledge.embedding.SentenceTransformerEmbedder``,
  ``knowledge.onnx_embedding.OnnxEmbedder`` and ``knowledge.batching.BatchingEmbedder`` are the
  real ones; :class:`botkit.testing.HashEmbedder` a dependency-free fake.

A backend proves it keeps the promises below by passing :class:`botkit.testing.RetrieverContract`
or :class:`botkit.testing.EmbedderContract` in its own tests.

Nothing heavy is imported here: numpy only for type checking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from botkit.types import SearchResult

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class Retriever(Protocol):
    """The knowledge base as the engine sees it: async, started once, searched per message.

    ``search`` promises:

    - the hits are sorted by ``score``, best first, one per article (``article_id``), at most
      ``k`` of them (``k=None``: the retriever's own default); a smaller ``k`` gives the top of a bigger one;
    - ``result.threshold`` is the score a hit must reach to count as an answer
      (``result.answered``); hits below it are still returned, for clarifying questions;
    - ``result.query`` is the query searched (after cleaning) and ``result.kb_version`` the
      version of the knowledge base that answered;
    - a query that cannot be searched (empty, only spaces, too long) raises a
      :class:`~botkit.errors.BotkitError` (``QueryError``) or finds nothing; a failing
      knowledge base raises a BotkitError too, never something else: the engine catches
      BotkitError and tells the customer it cannot look things up right now.
    """

    async def start(self) -> None:
        """Open the knowledge base and load its models (a bad path fails here, not on a customer)."""
        ...

    async def close(self) -> None:
        """Release what ``start`` opened."""
        ...

    async def search(self, query: str, k: int | None = None) -> SearchResult:
        """The best ``k`` articles for ``query`` (see the class docstring)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors (so inner product = cosine).

    ``embed`` promises a ``(len(texts), dim)`` float32 array whose rows have unit length,
    the same vector for the same text whatever else is in the batch (to ~1e-5 for float
    kernels; quantised backends to a cosine of ~0.95), and ``(0, dim)`` for no texts.
    Failures raise :class:`~botkit.errors.EmbeddingError`.

    Optionally, a model trained with separate query and passage prefixes (e5) also has
    ``embed_queries(texts)``, with the same promises, for the customer's side; ``embed`` is then
    the passage side (what is indexed and cached). ``KnowledgeBase.search`` uses it where present.
    """

    @property
    def name(self) -> str:
        """Identifies model and backend; cached vectors are keyed by it, so it is stable
        across restarts and changes whenever the vectors would."""
        ...

    @property
    def dim(self) -> int:
        """The vectors' width (may load the model, or read its configuration)."""
        ...

    def start(self) -> None:
        """Load the model (idempotent)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit length."""
        ...


__all__ = ["Embedder", "Retriever"]
