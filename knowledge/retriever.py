"""The knowledge base as the dialogue engine's async :class:`botkit.engine.Retriever`."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from botkit.types import SearchResult
from knowledge.base import KnowledgeBase
from knowledge.batching import BatchingEmbedder


class KnowledgeRetriever:
    """Runs the (CPU-bound) embedding and search in worker threads, off the event loop.

    With ``batch=True`` the queries of concurrent conversations are embedded together
    (:class:`BatchingEmbedder`); the pool is sized so that many can wait to be batched.
    """

    def __init__(self, kb: KnowledgeBase, k: int | None = None, *, batch: bool = True, threads: int = 32):
        self.kb = kb
        self.k = k
        if batch and not isinstance(kb.embedder, BatchingEmbedder):
            kb.embedder = BatchingEmbedder(kb.embedder)
        self._pool = ThreadPoolExecutor(max_workers=threads if batch else 4, thread_name_prefix="retriever")

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.kb.start)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.kb.close)
        self._pool.shutdown(wait=False)

    async def search(self, query: str, k: int | None = None) -> SearchResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.kb.search, query, k or self.k)
