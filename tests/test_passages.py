"""The right passage: within the article search picked, the section that answers the query.

Unit tests build synthetic chunks where one feature alone must overturn a slightly better
cosine, and check that turning that feature off (weight 0) loses the case, so each test fails
if its feature is removed. The demo tests run the real MiniLM on the demo help centre.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from botkit.responders.extractive import ExtractiveResponder
from botkit.text import clean_markdown, trim_passage
from botkit.types import Hit
from knowledge.passages import (
    DEFAULT_WEIGHTS,
    Candidate,
    PassageWeights,
    assemble,
    best_passage,
    exact_tokens,
    refine_passage,
    rerank,
    row_keys,
)

TITLE = "Help"


def chunk(ord_: int, section: str, text: str, dense: float) -> Candidate:
    return Candidate(ord_, f"{TITLE} > {section}" if section else TITLE, text, dense)


def winner(query: str, chunks: list[Candidate], weights: PassageWeights = DEFAULT_WEIGHTS) -> int:
    return rerank(query, chunks, weights)[0].candidate.ord


def without(feature: str) -> PassageWeights:
    return replace(DEFAULT_WEIGHTS, **{feature: 0.0})


# -- each feature decides a case on its own ---------------------------------------------------
CASES = {
    "heading": ("how do i reset my password", [
        chunk(0, "Gift wrap", "Pick this at checkout. It takes a minute and costs nothing.", 0.62),
        chunk(1, "Password reset", "Pick this at checkout. It takes a minute and costs nothing.", 0.60),
    ]),
    "key": ("how much is shipping to canada", [
        chunk(0, "Express shipping", "Express shipping to Canada costs more and is always charged.", 0.62),
        chunk(1, "Standard shipping", "| Store | Price |\n|---|---|\n| Canada | shipping costs more |\n"
                                      "| Mexico | is always charged |", 0.60),
    ]),
    "exact": ("what does error PAY-409 mean", [
        chunk(0, "Errors", "Error PAY-402 means the bank declined the card.", 0.62),
        chunk(1, "Errors", "Error PAY-409 means the bank declined the card.", 0.60),
    ]),
    "entity": ("is the jasper washable", [
        chunk(0, "Care", "A jasper stone on the lid is washable by hand.", 0.62),
        chunk(1, "Care", "The cover of the Jasper sofa is washable by hand.", 0.60),
    ]),
    "overlap": ("can i wash linen sheets hot", [
        chunk(0, "Care", "Sheets arrive folded in a cotton bag.", 0.62),
        chunk(1, "Care", "Wash linen sheets at 40 degrees; hot water shrinks them.", 0.60),
    ]),
}


@pytest.mark.parametrize("feature", sorted(CASES))
def test_each_feature_overturns_a_slightly_better_cosine(feature: str) -> None:
    query, chunks = CASES[feature]
    assert max(chunks, key=lambda c: c.dense).ord == 0  # the cosine alone picks the wrong chunk
    assert winner(query, chunks) == 1
    assert winner(query, chunks, without(feature)) == 0, f"the case does not depend on {feature}"


def test_a_price_in_the_query_picks_the_section_with_that_price() -> None:
    chunks = [chunk(0, "Express", "Express costs CA$12.95 more than standard.", 0.62),
              chunk(1, "Express", "Express costs CA$29.95 in Canada.", 0.60)]
    assert winner("why was i charged CA$29.95", chunks) == 1
    assert winner("why was i charged CA$29.95", chunks, without("exact")) == 0


def test_a_number_in_the_query_matches_only_with_its_unit() -> None:
    chunks = [chunk(0, "Payment", "Refunds appear within 5 business days.", 0.62),
              chunk(1, "Shipping", "Orders ship within 10 business days.", 0.60)]
    assert winner("it has been 10 business days", chunks) == 1
    assert winner("it has been 10 business days", chunks, without("exact")) == 0
    assert [s.features["exact"] for s in rerank("i ordered 10 min ago", chunks)] == [0.0, 0.0]


def test_title_words_do_not_count_as_heading_matches() -> None:
    """Every chunk shares the title, so a query word in the title alone cannot pick a section."""
    chunks = [Candidate(0, "Shipping costs > Express", "a", 0.62), Candidate(1, "Shipping costs > Standard", "a", 0.60)]
    ranked = rerank("shipping costs", chunks)
    assert [s.features["heading"] for s in ranked] == [0.0, 0.0]
    assert ranked[0].candidate.ord == 0


def test_a_term_every_section_mentions_weighs_little() -> None:
    """Within-article idf: "shipping" is in every chunk, "canada" in one; a chunk matching the
    rarer term covers more of the query."""
    chunks = [chunk(0, "A", "shipping shipping", 0.5), chunk(1, "B", "shipping to canada", 0.5),
              chunk(2, "C", "shipping", 0.5)]
    ranked = {s.candidate.ord: s.features["overlap"] for s in rerank("shipping canada", chunks)}
    assert ranked[1] == pytest.approx(1.0)
    assert 0 < ranked[0] < 0.5


def test_token_extractors() -> None:
    assert exact_tokens("Order TP-123456 cost CA$1,212.95, error pay-409, 30 days") == {
        "tp-123456", "1212.95", "pay-409", "30 day"}
    assert exact_tokens("€24.95, 9.95 EUR or $49") == {"24.95", "9.95", "49"}
    # a whole number carries its unit: "10 min ago" is not the 10 of "5-10 business days"
    assert not exact_tokens("placed it 10 min ago") & exact_tokens("within 5-10 business days")
    assert row_keys("| Store | Price |\n|---|---|\n| United States | $6.95 |\n- **Evergreen**: free\n- Gold tier: 5%") \
        == {"unit", "state", "evergreen", "gold", "tier"}


# -- the passage shown ------------------------------------------------------------------------
ARTICLE = [
    chunk(0, "", "Costs depend on your store.", 0.40),
    chunk(1, "Standard shipping", "Standard is CA$12.95 in Canada. " * 6, 0.50),
    chunk(2, "Express shipping", "Express is CA$29.95.", 0.70),
    chunk(3, "Large items", "Furniture has a freight fee of CA$69 per order, however many pieces you buy." * 2, 0.60),
]


def test_a_short_section_does_not_run_on_into_the_next_section() -> None:
    best = rerank("express cost", ARTICLE)
    assert best[0].candidate.ord == 2
    chosen, text = assemble(best[0], best)
    assert [c.ord for c in chosen] == [2]
    assert text == "Express is CA$29.95."


def test_a_short_intro_runs_on_into_the_sections_below_it() -> None:
    ranked = rerank("costs depend on your store", [replace(c, dense=0.9 if c.ord == 0 else 0.1) for c in ARTICLE])
    chosen, text = assemble(ranked[0], ranked)
    assert [c.ord for c in chosen] == [0, 1]
    assert text.startswith("Costs depend on your store.\n\nStandard shipping\nStandard is CA$12.95")


def test_a_section_split_by_size_keeps_a_neighbour_that_scores_nearly_as_well() -> None:
    long = "word " * 60
    chunks = [chunk(0, "Steps", long + "first", 0.70), chunk(1, "Steps", long + "second", 0.68),
              chunk(2, "Steps", long + "third", 0.30), chunk(3, "Other", "unrelated", 0.69)]
    ranked = rerank("how do the steps go", chunks)
    chosen, _ = assemble(ranked[0], ranked)
    assert [c.ord for c in chosen] == [0, 1]  # not the weak third part, never the other section


def test_a_short_lead_in_never_stands_for_the_article() -> None:
    chunks = [chunk(0, "", "Here's how cancelling works at each stage.", 0.80),
              chunk(1, "Within the first hour", "Cancel it yourself under Account > Orders. " * 5, 0.60),
              chunk(2, "Once it has shipped", "Return it instead. " * 12, 0.70)]
    best, text = best_passage("cancel after it shipped", chunks)
    assert best.ord == 2 and text.startswith("Return it instead.")
    assert "at each stage" not in text
    only_intro = [chunk(0, "", "Gift cards never expire.", 0.5)]
    assert best_passage("do gift cards expire", only_intro) == (only_intro[0], "Gift cards never expire.")


def test_a_capitalised_acronym_matches_a_spelt_out_heading() -> None:
    chunks = [chunk(0, "Canada", "Orders ship from our Reno warehouse; duties are paid at checkout.", 0.62),
              chunk(1, "United States", "Orders ship from Reno and no duties apply.", 0.60)]
    assert winner("do i pay duties in the US", chunks) == 1
    assert winner("do i pay duties in the US", chunks, without("heading")) == 0
    assert winner("can you tell us about duties", chunks) == 0  # the pronoun is not the country


def test_best_passage_of_nothing_is_none() -> None:
    assert best_passage("anything", []) is None


def test_an_faq_answer_is_left_as_it_is() -> None:
    hit = Hit("faq-x", "Do you ship to Canada?", "faq", 0.9, 0.9, 0.0, 7, "", "Yes, for CA$12.95.")
    assert refine_passage("shipping to canada", None, hit, None, "model") is hit  # type: ignore[arg-type]


# -- the demo help centre, real MiniLM --------------------------------------------------------
@pytest.mark.slow
def test_shipping_to_canada_gets_the_canada_standard_rate(demo_kb) -> None:
    result = demo_kb.search("how much is shipping to canada")
    hit = result.best
    assert hit is not None and hit.article_id == "shipping-costs"
    assert hit.heading.endswith("> Standard shipping")
    assert "| Canada | CA$12.95 |" in hit.passage
    assert "CA$29.95" not in hit.passage and "freight" not in hit.passage  # not express, not large-item
    assert [c for c in demo_kb.store.article_chunks("shipping-costs") if c.chunk_id == hit.chunk_id][0].heading \
        == hit.heading


@pytest.mark.slow
def test_the_section_that_names_what_was_asked_still_wins(demo_kb) -> None:
    express = demo_kb.search("what does express shipping cost in the EU").best
    assert express.heading.endswith("> Express shipping") and "€24.95" in express.passage
    large = demo_kb.search("is there a fee for furniture delivery").best
    assert large.heading.endswith("> Large-item delivery fee") and "$49" in large.passage
    forgot = demo_kb.search("I forgot my password, how do I get back into my account?").best
    assert forgot.heading.endswith("> Resetting your password") and "Forgot password?" in forgot.passage


@pytest.mark.slow
def test_the_extractive_reply_is_one_section_not_the_article(demo_kb) -> None:
    hit = demo_kb.search("how much is shipping to canada").best
    reply = ExtractiveResponder().answer_with(hit)
    body = demo_kb.store.get("shipping-costs").body
    section = [c for c in demo_kb.store.article_chunks("shipping-costs") if c.chunk_id == hit.chunk_id][0]
    assert reply.text == clean_markdown(trim_passage(section.text))
    assert "CA$12.95" in reply.text
    for other in ("Express costs", "large-item delivery fee", "Are there any other charges", "depend on your store"):
        assert other not in reply.text and other in body
    assert len(reply.text) < len(body) / 2
