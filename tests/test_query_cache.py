"""The normalised-query cache (knowledge/query_cache.py) on the demo KB with the real MiniLM embedder:
a repeat skips embedding and search, a KB edit or another k or setting misses, the LRU is bounded,
0 switches it off, threads share it safely, and a follow-up's contextual reading gets its own entry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from botkit.types import IncomingMessage, SearchResult
from knowledge.query_cache import QueryCache, normalise_query
from knowledge.types import ArticleDraft
from tests.conftest import open_kb

pytestmark = pytest.mark.slow

REFUND = "How long does a refund take to reach my card?"
PAYPAL = "can i pay using paypal"


class CountingEmbedder:
    """The session's embedder, counting the texts it is asked to embed as queries or chunks."""

    def __init__(self, inner):
        self.inner = inner
        self.texts: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def embed(self, texts):
        self.texts.extend(texts)
        return self.inner.embed(texts)

    def embed_queries(self, texts):
        self.texts.extend(texts)
        return getattr(self.inner, "embed_queries", self.inner.embed)(texts)


@pytest.fixture
def counted(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, CountingEmbedder(embedder))
    kb.start()
    kb.embedder.texts.clear()
    yield kb
    kb.close()


def _same(a: SearchResult, b: SearchResult) -> bool:
    return ([(h.article_id, h.score, h.passage) for h in a.hits] == [(h.article_id, h.score, h.passage) for h in b.hits]
            and a.confidence == b.confidence and a.kb_version == b.kb_version)


def test_normalise_query():
    assert normalise_query("  Where is my ORDER ?? ") == "where is my order"
    assert normalise_query("where\tis  my\norder.") == "where is my order"
    assert normalise_query("Ｗｈｅｒｅ is my order？") == "where is my order"  # full-width: NFKC
    assert normalise_query("STRASSE") == normalise_query("straße")  # casefold, not lower
    assert normalise_query("learn C#") != normalise_query("learn C")  # only sentence punctuation goes
    assert normalise_query("PAY-402") == "pay-402"
    assert normalise_query("???") == "???"


def test_a_repeat_is_served_without_embedding(counted):
    first = counted.search(REFUND)
    embedded = len(counted.embedder.texts)
    assert embedded >= 1 and REFUND in counted.embedder.texts
    again = counted.search(REFUND)
    assert len(counted.embedder.texts) == embedded, "a repeat must not embed the query again"
    assert _same(first, again) and again.best.article_id == "refund-timing"
    stats = counted.query_cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (1, 1, 1)


@pytest.mark.parametrize("variant", ["how long does a refund take to reach my card",
                                     "  HOW LONG does a   refund take to reach my card?!  ",
                                     "How long does a refund take to reach my card？"])
def test_case_space_and_punctuation_variants_hit(counted, variant):
    first = counted.search(REFUND)
    embedded = len(counted.embedder.texts)
    hit = counted.search(variant)
    assert len(counted.embedder.texts) == embedded
    assert _same(first, hit)
    assert hit.query == variant.strip()  # the caller's own words, not the first phrasing's
    assert counted.query_cache.stats().hits == 1


def test_results_are_copies(counted):
    first = counted.search(REFUND)
    first.extra["tampered"] = 1.0
    assert "tampered" not in counted.search(REFUND).extra
    assert "tampered" not in counted.search(REFUND).extra


def test_a_kb_edit_misses_and_answers_from_the_new_version(counted):
    query = "where is the Zorblax lunar kiosk"
    before = counted.search(query)
    assert not any("Zorblax" in h.passage for h in before.hits)
    article = counted.store.get("gift-cards")
    body = article.body + "\n\n## Zorblax\nGift cards can also be redeemed at the Zorblax lunar kiosk."
    counted.upsert([ArticleDraft(article.id, article.title, body, article.tags)], author="ed")
    counted.embedder.texts.clear()
    after = counted.search(query)
    assert query in counted.embedder.texts, "the new KB version must search again"
    assert after.kb_version == before.kb_version + 1
    assert after.best.article_id == "gift-cards" and "Zorblax" in after.best.passage
    assert counted.query_cache.stats().hits == 0


def test_another_k_or_setting_misses(counted):
    five = counted.search(REFUND)
    two = counted.search(REFUND, k=2)
    assert len(five.hits) == 5 and len(two.hits) == 2
    cfg = counted.config  # a stricter bar changes what counts as answered
    counted.config = cfg.model_copy(update={"retrieval": cfg.retrieval.model_copy(update={"min_confidence": 0.99})})
    strict = counted.search(REFUND)
    assert strict.min_confidence == 0.99 and five.min_confidence != 0.99
    assert counted.query_cache.stats().hits == 0


def test_a_rebuilt_bm25_at_the_same_version_misses(counted):
    counted.search(REFUND)
    counted._build_lexical()  # a background rebuild swaps a new BM25 in at the same KB version
    counted.embedder.texts.clear()
    counted.search(REFUND)
    assert REFUND in counted.embedder.texts
    assert counted.query_cache.stats().hits == 0


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, CountingEmbedder(embedder), retrieval__query_cache_size=2)
    kb.start()
    try:
        a, b, c = REFUND, PAYPAL, "do you ship to canada"
        for q in (a, b, a, c):  # a is used again, so b is the least recently used when c comes
            kb.search(q)
        assert kb.query_cache.stats().size == 2
        kb.embedder.texts.clear()
        kb.search(a)
        assert kb.embedder.texts == []  # kept
        kb.search(b)
        assert b in kb.embedder.texts  # evicted
        stats = kb.query_cache.stats()
        assert (stats.hits, stats.misses, stats.size) == (2, 4, 2)
    finally:
        kb.close()


def test_size_zero_never_caches(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, CountingEmbedder(embedder), retrieval__query_cache_size=0)
    kb.start()
    try:
        kb.embedder.texts.clear()
        for _ in range(3):
            kb.search(REFUND)
        assert kb.embedder.texts.count(REFUND) == 3
        stats = kb.query_cache.stats()
        assert (stats.hits, stats.misses, stats.size) == (0, 0, 0)
    finally:
        kb.close()


def test_a_negative_size_is_refused():
    with pytest.raises(ValueError, match="0 \\(off\\) or more"):
        QueryCache(-1)


def test_concurrent_searches_share_the_cache_safely(counted):
    queries = [REFUND, PAYPAL, "do you ship to canada", "my parcel never arrived"]
    expected = {q: counted.search(q) for q in queries}  # fills the cache
    counted.query_cache.clear()
    before = counted.query_cache.stats()
    asked = [q.upper() if i % 3 == 0 else q for i, q in enumerate(queries * 10)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(counted.search, asked))
    for q, r in zip(asked, results):
        reference = next(v for k, v in expected.items() if normalise_query(k) == normalise_query(q))
        assert r.query == q and [h.article_id for h in r.hits] == [h.article_id for h in reference.hits]
        assert np.allclose([h.score for h in r.hits], [h.score for h in reference.hits], atol=1e-4)
    stats = counted.query_cache.stats()
    hits, misses = stats.hits - before.hits, stats.misses - before.misses
    assert hits + misses == len(asked) and stats.size == len(queries)
    assert hits >= len(asked) - 8 * len(queries)  # at most one miss per query per thread racing


async def test_a_follow_up_reading_is_not_served_the_lone_reading(demo_dir: Path, embedder, tmp_path: Path):
    """'and how long does that take?' alone and after 'How much is shipping to the EU?' are searched as
    different queries (the contextual reading carries 'shipping EU'), so each gets its own entry and
    the replies match those of a KB without the cache."""
    from botkit.engine import Engine
    from botkit.responders.extractive import ExtractiveResponder
    from botkit.store import SQLiteConversationStore
    from knowledge.retriever import KnowledgeRetriever

    async def replies(size: int) -> list[tuple[str | None, list[str]]]:
        kb = open_kb(demo_dir, embedder, retrieval__query_cache_size=size)
        engine = Engine(retriever=KnowledgeRetriever(kb), responder=ExtractiveResponder(),
                        store=SQLiteConversationStore(tmp_path / f"conv-{size}.sqlite3"), rules=[])
        out = []
        async with engine:
            for conv, text in [("alone", "and how long does that take?"), ("ctx", "How much is shipping to the EU?"),
                               ("ctx", "and how long does that take?"), ("alone2", "and how long does that take?"),
                               ("ctx2", "How much is shipping to the EU?"), ("ctx2", "and how long does that take?")]:
                reply = await engine.handle(IncomingMessage(conv, text))
                out.append((reply.resolved_query, [s.id for s in reply.sources]))
            hits = kb.query_cache.stats().hits
        return out + [("hits", [str(hits)])]

    cached, plain = await replies(1024), await replies(0)
    assert cached[:-1] == plain[:-1]
    assert cached[2][0] != cached[0][0], "the follow-up must have been read in context"
    assert cached[2][1][:1] == ["shipping-times"]
    assert int(cached[-1][1][0]) >= 3  # the repeats of both readings were served from the cache


async def test_the_counters_are_in_metrics(demo_kb, demo_dir: Path, tmp_path: Path, aiohttp_client):
    from botkit.app.server import build_app
    from botkit.engine import Engine
    from botkit.project import Project
    from botkit.responders.extractive import ExtractiveResponder
    from botkit.store import SQLiteConversationStore
    from knowledge.retriever import KnowledgeRetriever

    project = Project.load(demo_dir)
    engine = Engine(retriever=KnowledgeRetriever(demo_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conv.sqlite3"), rules=[], config=project.config.dialogue)
    client = await aiohttp_client(build_app(project, engine))
    for conv in ("a", "b", "c"):
        await engine.handle(IncomingMessage(conv, PAYPAL))
    metrics = await (await client.get("/metrics")).text()
    assert "botkit_query_cache_hits_total 2.0" in metrics
    assert "botkit_query_cache_misses_total 1.0" in metrics
    assert "botkit_query_cache_entries 1.0" in metrics
    await client.close()
