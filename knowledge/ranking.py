"""One query's candidates, fused: dense + lexical (+ router) per entry, best chunk each.

Shared by :meth:`KnowledgeBase.search` (chunks looked up in the store) and the calibration
(:mod:`knowledge.calibrate`, chunks looked up in memory, own chunk or entry held out), so the
features a calibration is fitted on are computed exactly as a live search computes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from knowledge.confidence import feature_vector
from knowledge.router import Router
from knowledge.types import Chunk

ROUTER_EXTRA = 3  # the router's top entries join the candidates even when retrieval missed them


class Lookup(Protocol):
    def chunks(self, ids: Iterable[int]) -> dict[int, Chunk]: ...

    def cosines(self, chunks: list[Chunk], qvec: np.ndarray) -> dict[int, float]: ...

    def article_chunks(self, article_id: str) -> list[Chunk]: ...


@dataclass(frozen=True)
class Candidate:
    article_id: str
    score: float  # dense + lexical_weight * lexical + router_weight * router
    dense: float
    lexical: float
    router: float
    chunk: Chunk


@dataclass(frozen=True)
class Ranking:
    ranked: list[Candidate]
    dense_top: str | None  # the entry of the best dense chunk
    lexical_top: str | None  # the entry of the best lexical chunk

    def features(self, query: str) -> np.ndarray:
        top = self.ranked[0]
        margin = top.score - self.ranked[1].score if len(self.ranked) > 1 else top.score
        agree = self.dense_top is not None and self.dense_top == self.lexical_top
        return feature_vector(top.score, top.dense, top.lexical, margin, agree, len(query.split()),
                              top.chunk.kind == "question", top.router)


def fuse(dense: dict[int, float], lexical: dict[int, float], lexical_weight: float, lookup: Lookup,
         qvec: np.ndarray, router: Router | None = None, router_p: np.ndarray | None = None,
         router_weight: float = 0.0, exclude_articles: frozenset[str] = frozenset()) -> Ranking:
    """Rank entries for one query from its dense and lexical chunk scores (chunk id -> score)."""
    chunks = {cid: c for cid, c in lookup.chunks(set(dense) | set(lexical)).items()
              if c.article_id not in exclude_articles}
    if router is not None and router_p is not None:  # the router's favourites compete even if retrieval missed them
        have = {c.article_id for c in chunks.values()}
        for col in np.argsort(-router_p)[:ROUTER_EXTRA]:
            aid = router.classes[int(col)]
            if aid not in have and aid not in exclude_articles:
                for c in lookup.article_chunks(aid):
                    chunks.setdefault(c.chunk_id, c)
    missing = [c for cid, c in chunks.items() if cid not in dense]
    if missing:  # lexical-only (or router-added) candidates: their cosine from the cached vectors
        dense = {**dense, **lookup.cosines(missing, qvec)}
    best: dict[str, Candidate] = {}
    for cid, chunk in chunks.items():
        d, lx = dense.get(cid, 0.0), lexical.get(cid, 0.0)
        score = d + lexical_weight * lx
        if chunk.article_id not in best or score > best[chunk.article_id].score:
            best[chunk.article_id] = Candidate(chunk.article_id, score, d, lx, 0.0, chunk)
    if router is not None and router_p is not None:
        for aid, cand in list(best.items()):
            col = router.column(aid)
            p = float(router_p[col]) if col is not None else 0.0
            best[aid] = Candidate(aid, cand.score + router_weight * p, cand.dense, cand.lexical, p, cand.chunk)
    ranked = sorted(best.values(), key=lambda cand: -cand.score)

    def top(scores: dict[int, float]) -> str | None:
        ids = [cid for cid in scores if cid in chunks]
        return chunks[max(ids, key=lambda i: scores[i])].article_id if ids else None

    return Ranking(ranked, top({cid: dense[cid] for cid in dense if cid in chunks}), top(lexical))
