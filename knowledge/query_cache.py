"""A cache of search results for questions already asked at the same KB version.

Support traffic repeats itself ("where is my order?", "how do I reset my password"), and a
search costs one embedding forward pass plus FAISS, BM25, the router and the passage pick.
:class:`QueryCache` keeps the last results (LRU, ``knowledge.retrieval.query_cache_size``
entries; 0 switches it off) under a key made of

* the query *as searched*, normalised (:func:`normalise_query`: Unicode NFKC, casefolded,
  whitespace collapsed, trailing sentence punctuation dropped), so "Where is my order?" and
  "where is my order" share one entry. A follow-up searched with the previous question's key
  terms (botkit/context.py) is a different query, so a different entry;
* ``k`` and every setting that changes a result (weights, thresholds, the project's language);
* the KB version the index holds and the one the router and calibration were fitted on; a KB
  edit makes a new version, so the old entries are never found again (they age out of the LRU).

Each entry also keeps the objects the result came from (the embedder, the BM25 index, the
router, the calibration); a hit must find the very same ones in use, so a BM25 rebuilt or a
model refitted in the background at the same KB version is a miss, not a stale answer.

The first phrasing searched is the one whose result is kept: a variant that differs only in
case or trailing punctuation gets that result (scores within the noise of the variant's own
search for the cased or punctuated reading). Callers get a copy with their own query text.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace

from botkit.types import SearchResult

_SPACE = re.compile(r"\s+")
# sentence-ending punctuation only: "C#", "C++" or "PAY-402" keep their last character
_TRAILING = "?!.,;:…。？！，；：、·‽"


def normalise_query(query: str) -> str:
    """The cache's reading of a query: NFKC, casefolded, runs of whitespace as one space, and
    trailing sentence punctuation and spaces dropped ("  Where is my ORDER ?? " -> "where is my order")."""
    text = _SPACE.sub(" ", unicodedata.normalize("NFKC", query).casefold()).strip()
    stripped = text.rstrip(_TRAILING + " ")
    return stripped or text  # "???" stays itself: never the same key as the empty string


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    capacity: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class QueryCache:
    """A thread-safe LRU of search results. ``capacity`` 0: nothing is kept (every lookup misses
    and is not counted, so the counters say the cache is off rather than useless)."""

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"query cache size must be 0 (off) or more, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[SearchResult, tuple[object, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def get(self, key: Hashable, state: tuple[object, ...], query: str) -> SearchResult | None:
        """The cached result for ``key`` if it was computed from the same ``state`` objects (compared
        by identity), as a copy carrying ``query``; None (a miss) otherwise."""
        if not self.capacity:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and len(entry[1]) == len(state) and all(a is b for a, b in zip(entry[1], state)):
                self._entries.move_to_end(key)
                self.hits += 1
                result = entry[0]
            else:
                if entry is not None:  # same versions, but BM25 or a model was swapped since: stale
                    del self._entries[key]
                self.misses += 1
                return None
        return replace(result, query=query, extra=dict(result.extra))

    def put(self, key: Hashable, state: tuple[object, ...], result: SearchResult) -> None:
        if not self.capacity:
            return
        kept = replace(result, extra=dict(result.extra))  # the caller may change its own copy's extra
        with self._lock:
            self._entries[key] = (kept, state)
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self.hits, self.misses, len(self._entries), self.capacity)
