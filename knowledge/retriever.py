"""The knowledge base as the dialogue engine's async :class:`botkit.engine.Retriever`."""

from __future__ import annotations

import asyncio

from botkit.types import SearchResult
from knowledge.base import KnowledgeBase


class KnowledgeRetriever:
    """Runs the (CPU-bound) embedding and search in a worker thread, off the event loop."""

    def __init__(self, kb: KnowledgeBase, k: int | None = None):
        self.kb = kb
        self.k = k

    async def start(self) -> None:
        await asyncio.to_thread(self.kb.start)

    async def close(self) -> None:
        await asyncio.to_thread(self.kb.close)

    async def search(self, query: str, k: int | None = None) -> SearchResult:
        return await asyncio.to_thread(self.kb.search, query, k or self.k)
