"""Retriever training: pairs mined from agent replies point at the article that resolved the
question, a short fine-tune saves a model the KB's embedder loads (and that embeds differently
from the base), and too little data is refused with how much is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.models import default_model_path
from training.retriever import MIN_PAIRS, Pair, RetrieverTrainingError, mine_pairs, pairs_hash, train_retriever
from training.types import Message, Transcript

pytestmark = pytest.mark.slow


def conv(cid: str, *turns: tuple[str, str], **meta: Any) -> Transcript:
    return Transcript(cid, tuple(Message(role, text) for role, text in turns), meta=meta)  # type: ignore[arg-type]


TRANSCRIPTS = [
    conv("c1", ("customer", "hi"), ("customer", "It's been two weeks since I sent my return, where is my money?"),
         ("agent", "Returns take 5-10 business days to reach our warehouse, we inspect them within 3 business days "
                   "and then issue your refund; your bank may take a few more days to show it.")),
    conv("c2", ("customer", "My package never showed up and tracking hasn't moved in a week?"),
         ("bot", "Let me get a colleague."),
         ("agent", "Sorry your parcel hasn't arrived. If tracking hasn't updated for 7 days we open an "
                   "investigation with the carrier and send a replacement or refund."), ("customer", "thanks!")),
    conv("c3", ("customer", "the discount code WELCOME10 doesn't work at checkout?"),
         ("agent", "Enter the promo code in the Promo code box in your basket and select Apply; only one promo "
                   "code per order, and gift card codes go in the Gift card box.")),
    conv("c4", ("customer", "what's the weather like in Paris today?"),
         ("agent", "Sunny and twenty degrees, enjoy your trip to France!")),
]


def test_mined_pairs_point_at_the_article_that_resolved_the_question(demo_kb: Any) -> None:
    pairs = mine_pairs(TRANSCRIPTS, demo_kb, include_faq=False)
    by_query = {p.query: p.article_id for p in pairs}
    assert by_query == {
        "It's been two weeks since I sent my return, where is my money?": "refund-timing",
        "My package never showed up and tracking hasn't moved in a week?": "lost-parcel",
        "the discount code WELCOME10 doesn't work at checkout?": "promo-codes",
    }  # the off-topic reply matches nothing above the floor: no pair
    assert all(p.positive_text == demo_kb.store.get(p.article_id).body for p in pairs)
    everything = mine_pairs(TRANSCRIPTS, demo_kb)
    faq = [p for p in everything if p.article_id == "faq-paypal"]
    assert {p.query for p in faq} >= {"Can I pay with PayPal?", "Do you accept PayPal?"}
    assert len(everything) == len({(p.query.lower(), p.article_id) for p in everything})  # no duplicates


def test_too_few_pairs_are_refused_with_how_many_are_needed(tmp_path: Path) -> None:
    pairs = [Pair(f"question {i}?", f"answer {i % 3}", f"a{i % 3}") for i in range(10)]
    with pytest.raises(RetrieverTrainingError, match=rf"10; at least {MIN_PAIRS} are needed"):
        train_retriever(pairs, default_model_path(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


TOPICS = {
    "refund": ("When will my refund arrive?", "Refunds are issued within 3 business days of your return arriving."),
    "lost": ("My parcel hasn't arrived", "If tracking has not updated for 7 days we open a carrier investigation."),
    "promo": ("My promo code does not work", "Enter one promo code per order in the Promo code box at checkout."),
    "paypal": ("Can I pay with PayPal?", "Yes, PayPal is available at checkout in all our stores."),
    "ship": ("Do you ship to Australia?", "We ship only to the US, Canada and the EU member states."),
    "store": ("Do you have a shop I can visit?", "We are online only and have no physical store or showroom."),
}
PREFIXES = ["", "Hi, ", "Hello! ", "Quick question: ", "Please help: ", "Excuse me, ", "Hey, ", "Urgent: ",
            "Sorry to bother you, ", "Good morning, "]


def test_training_saves_a_model_the_kb_embedder_loads(tmp_path: Path, embedder: Any) -> None:
    pairs = [Pair(prefix + q, a, topic) for topic, (q, a) in TOPICS.items() for prefix in PREFIXES]
    assert len(pairs) == 60
    out = tmp_path / "retriever"
    metrics = train_retriever(pairs, default_model_path(), out, batch_size=6, lr=5e-5, progress=False)
    assert metrics["pairs"] == 60 and metrics["steps"] == 10 and metrics["pairs_sha256"] == pairs_hash(pairs)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["pairs_sha256"] == (out / "pairs.sha256").read_text().strip() == pairs_hash(pairs)
    tuned = SentenceTransformerEmbedder(out)
    texts = ["Where is my refund?", "Do you accept PayPal?"]
    after, before = tuned.embed(texts), embedder.embed(texts)
    assert after.shape == before.shape and np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-4)
    assert not np.allclose(after, before, atol=1e-3)
    assert tuned.name != embedder.name
    with pytest.raises(RetrieverTrainingError, match="not empty"):
        train_retriever(pairs, default_model_path(), out)
