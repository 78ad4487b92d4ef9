"""Retrieval on the demo knowledge base with the real all-MiniLM-L6-v2 embedder."""

import json
from pathlib import Path

import numpy as np
import pytest

from botkit.errors import QueryError
from knowledge.evaluate import evaluate_retrieval, load_queries
from knowledge.types import ArticleDraft
from tests.conftest import open_kb

pytestmark = pytest.mark.slow


def test_demo_questions_find_their_articles(demo_kb, demo_dir: Path):
    queries = load_queries(demo_dir / "eval" / "queries.jsonl", {a.id for a in demo_kb.store.list()})
    result = evaluate_retrieval(demo_kb, queries, k=5)
    # Measured 0.85 accuracy@1 and 1.0 recall@5 on these 55 answerable queries; a broken
    # embedder, index or score fusion drops far below these floors.
    assert result["accuracy_at_1"] >= 0.75
    assert result["recall_at_k"] >= 0.95
    assert result["no_answer_recall"] >= 0.6
    assert result["n"] == len(queries)


def test_hit_carries_score_passage_and_kb_version(demo_kb):
    result = demo_kb.search("how long does a refund take to reach my card", k=3)
    best = result.best
    assert best.article_id == "refund-timing"
    assert result.answered and best.score >= result.threshold
    assert best.dense_score > 0.4 and best.passage and best.heading.startswith(best.title)
    assert result.kb_version == demo_kb.store.kb_version() == 1
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)


def test_off_topic_question_is_not_answered(demo_kb):
    result = demo_kb.search("what is the boiling point of tungsten in kelvin")
    assert not result.answered
    assert result.best.score < result.threshold


def test_faq_match_returns_the_answer(demo_kb):
    best = demo_kb.search("can i pay using paypal").best
    assert best.article_id == "faq-paypal" and best.kind == "faq"
    assert best.passage == demo_kb.store.get("faq-paypal").body


def test_edit_is_visible_at_once_and_only_changed_chunks_are_embedded(demo_kb):
    article = demo_kb.store.get("gift-cards")
    chunks_before = len(demo_kb.store.article_chunks("gift-cards"))
    embedded_before = demo_kb.embedded_total
    new_body = article.body + "\n\n## Zorblax\nGift cards can also be redeemed at the Zorblax lunar kiosk."
    summary = demo_kb.upsert([ArticleDraft(article.id, article.title, new_body, article.tags)], author="ed")
    assert summary.updated == ("gift-cards",)
    assert demo_kb.embedded_total - embedded_before == 1  # one new section, nothing else re-embedded
    assert len(demo_kb.store.article_chunks("gift-cards")) == chunks_before + 1
    result = demo_kb.search("where is the Zorblax lunar kiosk")
    assert result.best.article_id == "gift-cards" and "Zorblax" in result.best.passage
    assert result.kb_version == 2


def test_delete_and_rollback_change_what_search_finds(demo_kb):
    assert demo_kb.search("is my soy candle vegan").best.article_id == "faq-candles-vegan"
    demo_kb.delete("faq-candles-vegan")
    assert "faq-candles-vegan" not in [h.article_id for h in demo_kb.search("is my soy candle vegan", k=10).hits]
    embedded = demo_kb.embedded_total
    demo_kb.rollback("faq-candles-vegan", 1)
    assert demo_kb.embedded_total == embedded  # restored text comes from the embedding cache
    assert demo_kb.search("is my soy candle vegan").best.article_id == "faq-candles-vegan"


def test_other_instance_sees_edit_on_its_next_search(demo_kb, demo_dir: Path, embedder):
    other = open_kb(demo_dir, embedder)
    other.start()
    try:
        assert other.search("quasar teleport delivery").best.article_id != "teleport"
        demo_kb.upsert([ArticleDraft("teleport", "Quasar teleport delivery",
                                     "We teleport parcels to Quasar City in one second.")])
        result = other.search("quasar teleport delivery")
        assert result.best.article_id == "teleport" and result.kb_version == demo_kb.store.kb_version()
    finally:
        other.close()


def test_lexical_matching_finds_codes_and_order_numbers(demo_dir: Path, embedder):
    kb = open_kb(demo_dir, embedder)
    kb.start()
    extra = [ArticleDraft(f"err-{code}", f"Error {code}", f"Error {code} appears when {reason}.")
             for code, reason in [("E1043", "the printer is offline"), ("E1044", "the scanner is offline"),
                                  ("E2043", "the printer is out of paper"), ("E1034", "the printer jams")]]
    kb.upsert(extra)
    dense = open_kb(demo_dir, embedder, retrieval__hybrid=False)
    dense.start()
    try:
        hybrid_hit = kb.search("I keep getting E1044").best
        assert hybrid_hit.article_id == "err-E1044" and hybrid_hit.lexical_score > 0
        dense_ranks = [h.article_id for h in dense.search("I keep getting E1044", k=5).hits]
        assert dense.search("I keep getting E1044").best.lexical_score == 0
        # dense alone cannot tell near-identical codes apart reliably; record, not require, its miss
        assert "err-E1044" in dense_ranks
    finally:
        kb.close()
        dense.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_every_index_type_agrees_on_the_demo(demo_dir: Path, embedder, kind: str):
    kb = open_kb(demo_dir, embedder, index__type=kind)
    kb.start()  # rebuilt as `kind` from the copied store and its embedding cache
    try:
        assert kb.index.kind == kind
        for query, expected in [("how do I reset my password", "password-reset"),
                                ("my kettle arrived damaged and the box was crushed", "damaged-in-transit"),
                                ("do you ship to australia", "faq-ship-outside-regions")]:
            assert kb.search(query).best.article_id == expected
        kb.delete("password-reset")
        assert kb.search("how do I reset my password").best.article_id != "password-reset"
    finally:
        kb.close()


def test_empty_huge_and_control_character_queries(demo_kb):
    with pytest.raises(QueryError, match="empty query"):
        demo_kb.search("   \x00\x01 ")
    with pytest.raises(QueryError, match="limit is 4000.*max_query_chars"):
        demo_kb.search("refund " * 15_000)  # ~100 KB
    assert demo_kb.search("refund\x00 timing\x07").best.article_id == "refund-timing"
    with pytest.raises(QueryError):
        demo_kb.search(b"bytes")  # type: ignore[arg-type]


def test_restart_loads_persisted_index_without_embedding(demo_kb, demo_dir: Path, embedder):
    demo_kb.close()
    kb = open_kb(demo_dir, embedder)
    report = kb.start()
    try:
        assert report.status == "loaded" and report.embedded == 0
        assert kb.search("how do I reset my password").best.article_id == "password-reset"
    finally:
        kb.close()


def test_corrupt_index_file_is_rebuilt_from_store_and_cache(demo_kb, demo_dir: Path, embedder):
    demo_kb.close()
    path = demo_kb.index_path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    kb = open_kb(demo_dir, embedder)
    report = kb.start()
    try:
        assert report.status == "rebuilt" and "checksum" in report.reason
        assert report.embedded == 0  # every vector came from the embedding cache
        assert np.array_equal(kb.index.ids(), kb.store.live_chunk_ids())
        assert kb.search("how do I reset my password").best.article_id == "password-reset"
    finally:
        kb.close()


def test_index_behind_the_store_is_repaired_on_start(demo_kb, demo_dir: Path, embedder):
    stale_index = demo_kb.index_path.read_bytes()
    demo_kb.upsert([ArticleDraft("password-reset", "Password help", "Call the moon base to reset it.")])
    demo_kb.close()
    demo_kb.index_path.write_bytes(stale_index)  # as if the process died before persisting
    kb = open_kb(demo_dir, embedder)
    report = kb.start()
    try:
        assert report.status == "repaired" and report.added >= 1 and report.removed >= 1
        assert np.array_equal(kb.index.ids(), kb.store.live_chunk_ids())
        best = kb.search("how do I reset my password").best
        assert best.article_id == "password-reset" and "moon base" in best.passage
    finally:
        kb.close()


def test_changing_the_embedder_or_index_type_rebuilds(demo_kb, demo_dir: Path, embedder):
    demo_kb.close()
    kb = open_kb(demo_dir, embedder, index__type="hnsw")
    report = kb.start()
    kb.close()
    assert report.status == "rebuilt" and "index type flat" in report.reason


def test_eval_queries_file_problems_are_reported_by_line(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "ok", "expected": "a"}\nnot json\n{"query": "x", "expected": 3}\n'
                    '{"query": "y", "expected": "zzz"}\n{"expected": "a"}\n')
    from botkit.errors import ImportFailed

    with pytest.raises(ImportFailed) as err:
        load_queries(path, {"a"})
    lines = sorted(p.line for p in err.value.problems)
    assert lines == [2, 3, 4, 5]
    assert "not in the knowledge base" in json.dumps([str(p) for p in err.value.problems])
