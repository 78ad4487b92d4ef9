"""Micro-batching of query embeddings across concurrent conversations.

One forward pass over 16 short queries costs little more than over one, so when many
conversations ask at once, embedding their queries together raises throughput. No timer is
involved: the first caller becomes the leader and embeds whatever is queued; queries that
arrive while it works form the next batch. A lone query therefore pays no extra wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from botkit.seams import Embedder


class _Batcher:
    """Single-text calls of one embedding function, embedded together (see the module docstring)."""

    def __init__(self, fn: Callable[[Sequence[str]], np.ndarray], max_batch: int):
        self.fn = fn
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Future[np.ndarray]]] = []
        self._leader_active = False
        self.batches = 0
        self.queries = 0

    def one(self, text: str) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        with self._cond:
            self._pending.append((text, future))
        # Leadership is per batch: a leader embeds one batch (oldest queries first) and steps
        # down, so no caller keeps serving others while its own answer is ready.
        while not future.done():
            with self._cond:
                if future.done():
                    break
                if self._leader_active:
                    self._cond.wait()
                    continue
                self._leader_active = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._leader_active = False
                    self._cond.notify_all()
        return future.result()[None, :]

    def _run(self, batch: list[tuple[str, Future[np.ndarray]]]) -> None:
        try:
            vectors = self.fn([text for text, _ in batch])
        except BaseException as exc:  # every waiter gets the error, nobody hangs
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.batches += 1
        self.queries += len(batch)
        for (_, fut), vec in zip(batch, vectors):
            fut.set_result(vec)


class BatchingEmbedder:
    """Batches single-text ``embed`` calls, and single-text ``embed_queries`` calls apart from
    them when the inner embedder embeds queries its own way (e5's ``query:`` prefix): a query
    and a passage never share a forward pass, and each still gets batched with its own kind."""

    def __init__(self, inner: Embedder, max_batch: int = 64):
        self.inner = inner
        self.max_batch = max_batch
        self._embed = _Batcher(inner.embed, max_batch)
        own = getattr(inner, "embed_queries", None)
        self._query_fn: Callable[[Sequence[str]], np.ndarray] = own if own is not None else inner.embed
        self._queries = _Batcher(own, max_batch) if own is not None else self._embed

    @property
    def batches(self) -> int:
        """How many forward passes served single texts (for benchmarks)."""
        return self._embed.batches + (self._queries.batches if self._queries is not self._embed else 0)

    @property
    def queries(self) -> int:
        """How many single texts were embedded in those passes."""
        return self._embed.queries + (self._queries.queries if self._queries is not self._embed else 0)

    @property
    def name(self) -> str:
        return self.inner.name  # same vectors: the embedding cache and index stay valid

    @property
    def dim(self) -> int:
        return self.inner.dim

    def start(self) -> None:
        self.inner.start()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Queries as the inner embedder embeds them (its ``embed_queries``, or ``embed``), batched
        across callers when each asks for one."""
        if len(texts) != 1:
            return self._query_fn(texts)
        return self._queries.one(texts[0])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) != 1:  # bulk work (indexing) goes straight through
            return self.inner.embed(texts)
        return self._embed.one(texts[0])
