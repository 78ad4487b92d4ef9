"""Micro-batching of query embeddings across concurrent conversations.

One forward pass over 16 short queries costs little more than over one, so when many
conversations ask at once, embedding their queries together raises throughput. No timer is
involved: the first caller becomes the leader and embeds whatever is queued; queries that
arrive while it works form the next batch. A lone query therefore pays no extra wait.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from botkit.seams import Embedder


class BatchingEmbedder:
    def __init__(self, inner: Embedder, max_batch: int = 64):
        self.inner = inner
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[tuple[str, Future[np.ndarray]]] = []
        self._leader_active = False
        self.batches = 0  # how many forward passes served single queries (for benchmarks)
        self.queries = 0

    @property
    def name(self) -> str:
        return self.inner.name  # same vectors: the embedding cache and index stay valid

    @property
    def dim(self) -> int:
        return self.inner.dim

    def start(self) -> None:
        self.inner.start()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """The inner embedder's ``embed_queries`` (unbatched), or batched ``embed`` where it has none."""
        inner = getattr(self.inner, "embed_queries", None)
        return inner(texts) if inner is not None else self.embed(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) != 1:  # bulk work (indexing) goes straight through
            return self.inner.embed(texts)
        future: Future[np.ndarray] = Future()
        with self._cond:
            self._pending.append((texts[0], future))
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
            vectors = self.inner.embed([text for text, _ in batch])
        except BaseException as exc:  # every waiter gets the error, nobody hangs
            for _, fut in batch:
                fut.set_exception(exc)
            return
        self.batches += 1
        self.queries += len(batch)
        for (_, fut), vec in zip(batch, vectors):
            fut.set_result(vec)
