"""The contract every :class:`~botkit.seams.Retriever` backend must pass.

A backend's tests subclass :class:`RetrieverContract`, name three queries for the
knowledge base they search, and provide a ``retriever`` fixture that yields a started
retriever (closing it afterwards)::

    from botkit.testing import RetrieverContract

    class TestMyRetriever(RetrieverContract):
        known_query = "how long does a refund take?"   # finds 2+ articles, the best above the threshold
        other_query = "can I change my delivery address?"  # its best article is another one
        unrelated_query = "zebra accordion quantum"     # nothing clears the threshold (None: not checked)

        @pytest.fixture
        async def retriever(self, tmp_path):
            r = MyRetriever(...)
            await r.start()
            yield r
            await r.close()

The tests are ``async``: run them with pytest-asyncio in ``asyncio_mode = "auto"``. They
check what the engine relies on: hits best first, one per article, at most ``k`` (a smaller
``k`` is the top of a bigger one), a threshold that separates an answer from a miss, the
query and knowledge-base version reported, the same answer for the same query, concurrent
searches kept apart, results that share no mutable state, and queries that cannot be searched
answered with a BotkitError (which the engine turns into a polite reply) or with no hits.
"""

from __future__ import annotations

import asyncio
import math
from typing import ClassVar

import pytest

from botkit.errors import BotkitError
from botkit.seams import Retriever
from botkit.types import Hit, SearchResult


def _ids(result: SearchResult) -> list[str]:
    return [h.article_id for h in result.hits]


class RetrieverContract:
    known_query: ClassVar[str]
    other_query: ClassVar[str]
    unrelated_query: ClassVar[str | None] = None

    async def test_it_is_a_retriever_and_answers_with_a_search_result(self, retriever: Retriever) -> None:
        assert isinstance(retriever, Retriever)
        result = await retriever.search(self.known_query)
        assert isinstance(result, SearchResult) and isinstance(result.hits, tuple)
        assert all(isinstance(h, Hit) for h in result.hits)
        assert result.query == self.known_query
        assert isinstance(result.kb_version, int) and isinstance(result.threshold, float)

    async def test_hits_are_best_first_one_per_article(self, retriever: Retriever) -> None:
        result = await retriever.search(self.known_query)
        assert len(result.hits) >= 2, "known_query must find at least two articles for this contract"
        scores = [h.score for h in result.hits]
        assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
        assert scores == sorted(scores, reverse=True), scores
        assert len(set(_ids(result))) == len(result.hits), _ids(result)
        assert all(h.passage and h.title for h in result.hits), "every hit carries a title and a passage"

    async def test_k_caps_the_hits_and_a_smaller_k_is_the_top_of_a_bigger_one(self, retriever: Retriever) -> None:
        full = await retriever.search(self.known_query)
        for k in (1, 2):
            capped = await retriever.search(self.known_query, k)
            assert len(capped.hits) == min(k, len(full.hits))
            assert _ids(capped) == _ids(full)[:k]
        assert len((await retriever.search(self.known_query, len(full.hits) + 50)).hits) >= len(full.hits)

    async def test_the_threshold_separates_an_answer_from_a_miss(self, retriever: Retriever) -> None:
        known = await retriever.search(self.known_query)
        assert known.answered and known.hits[0].score >= known.threshold
        if self.unrelated_query is None:
            pytest.skip("unrelated_query is not set for this backend")
        unrelated = await retriever.search(self.unrelated_query)
        assert not unrelated.answered, unrelated.best
        assert unrelated.threshold == known.threshold

    async def test_the_same_query_gets_the_same_answer(self, retriever: Retriever) -> None:
        first, again = await retriever.search(self.known_query), await retriever.search(self.known_query)
        assert _ids(first) == _ids(again) and first.kb_version == again.kb_version
        assert [h.score for h in first.hits] == pytest.approx([h.score for h in again.hits], abs=1e-5)

    async def test_concurrent_searches_each_get_their_own_result(self, retriever: Retriever) -> None:
        alone = {q: await retriever.search(q) for q in (self.known_query, self.other_query)}
        assert _ids(alone[self.known_query])[0] != _ids(alone[self.other_query])[0], \
            "other_query must find a different best article than known_query"
        queries = [self.known_query, self.other_query] * 4
        results = await asyncio.gather(*(retriever.search(q) for q in queries))
        for q, r in zip(queries, results):
            assert r.query == q and _ids(r) == _ids(alone[q])

    async def test_results_share_no_mutable_state(self, retriever: Retriever) -> None:
        first = await retriever.search(self.known_query)
        first.extra["tampered"] = 1.0
        again = await retriever.search(self.known_query)
        assert "tampered" not in again.extra

    @pytest.mark.parametrize("query", ["", "   ", "\x00\x01\x02", "\n\t"],
                             ids=["empty", "spaces", "control", "whitespace"])
    async def test_a_query_with_nothing_to_search_is_a_botkit_error_or_finds_nothing(self, retriever: Retriever,
                                                                                      query: str) -> None:
        try:
            result = await retriever.search(query)
        except BotkitError as exc:
            assert str(exc), "the error must say what was wrong with the query"
        else:
            assert result.hits == () and not result.answered

    async def test_a_huge_query_is_a_botkit_error_or_an_answer(self, retriever: Retriever) -> None:
        huge = (self.known_query + " ") * 5000
        try:
            result = await retriever.search(huge)
        except BotkitError as exc:
            assert str(exc)
        else:
            assert isinstance(result, SearchResult)
        assert _ids(await retriever.search(self.known_query))  # and the retriever still works


__all__ = ["RetrieverContract"]
