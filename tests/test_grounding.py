"""Grounding checks on real sentences from the demo knowledge base."""

from __future__ import annotations

import pytest
from lm_fixtures import kb_section

from botkit.generation.grounding import content_words, grounding_score, is_grounded, unsupported_numbers

RETURNS = [kb_section("return-policy"), kb_section("return-policy", "What can be returned")]
REFUNDS = [kb_section("refund-timing", "3. Your bank processes the refund")]
# As the responder passes them: the section heading (where the codes are), then the text.
PAYMENTS = [f"{h}\n{kb_section('payment-errors', h)}"
            for h in ("PAY-409: Duplicate charge hold", "PAY-402: Card declined")]
MIN = 0.6


def test_the_demo_sentences_are_what_the_tests_assume() -> None:
    assert "within 30 days of delivery" in RETURNS[0]
    assert "$79, CA$99 or €89" in RETURNS[1]
    assert "5–10 business days" in REFUNDS[0]


@pytest.mark.parametrize("reply, passages", [
    ("You can return items within 30 days of delivery for a refund or a free exchange, as long as "
     "they're unused and in their original packaging.", RETURNS),
    ("Sure, happy to help! Returned furniture has a pickup fee of $79, which is deducted from the refund.", RETURNS),
    ("Card refunds usually appear within 5–10 business days, depending on your bank. "
     "PayPal refunds are often faster, typically 3–5 business days.", REFUNDS),
    ("A PAY-409 error means your bank holds a pending authorisation from the first attempt [1]. "
     "The extra hold is released automatically within 3–5 business days; please don't place the order again.",
     PAYMENTS),
])
def test_faithful_paraphrases_pass(reply: str, passages: list[str]) -> None:
    ok, reason = is_grounded(reply, passages, MIN)
    assert ok, reason
    assert grounding_score(reply, passages) >= 0.8


@pytest.mark.parametrize("reply, passages, invented", [
    ("Returned furniture has a pickup fee of $99, deducted from the refund.", RETURNS, "$99"),  # CA$99 is not $99
    ("You can return it within 60 days of delivery for a refund.", RETURNS, "60"),
    ("Card refunds usually appear within 14 business days, depending on your bank.", REFUNDS, "14"),
    ("This is error PAY-410: the hold is released automatically.", PAYMENTS, "PAY-410"),
    ("Your return TP-100482 is released automatically by your bank.", PAYMENTS, "TP-100482"),
    ("The extra hold costs €7.95 and is released automatically.", PAYMENTS, "€7.95"),
])
def test_invented_numbers_fail_even_when_the_words_match(reply: str, passages: list[str], invented: str) -> None:
    assert unsupported_numbers(reply, passages) == [invented]
    ok, reason = is_grounded(reply, passages, MIN)
    assert not ok
    assert invented in reason


def test_supported_numbers_in_other_forms() -> None:
    # a bare number is backed by an amount; codes and ranges by their own text; list markers and
    # passage citations are not claims
    reply = "1. The fee is 79 dollars.\n2. See PAY-409 [2] and allow 5–10 days (1,000 times over)."
    assert unsupported_numbers(reply, RETURNS + PAYMENTS + REFUNDS + ["up to 1000 items"]) == []


def test_off_topic_reply_fails() -> None:
    reply = "Your bank declined the card payment; double-check the security code or pay with Apple Pay instead."
    ok, reason = is_grounded(reply, RETURNS, MIN)
    assert not ok and reason.startswith("grounding")
    assert grounding_score(reply, RETURNS) < 0.4
    assert grounding_score(reply, PAYMENTS) > 0.8  # the same reply is grounded where it belongs


@pytest.mark.parametrize("reply, reason", [
    ("", "empty reply"),
    ("   \n", "empty reply"),
    ("Sure, happy to help!", "no content words"),
    ("refund refund refund refund refund refund refund refund refund refund", "repetitive reply"),
])
def test_empty_and_degenerate_replies_fail(reply: str, reason: str) -> None:
    assert is_grounded(reply, RETURNS, MIN) == (False, reason)


def test_light_stemming_joins_inflections() -> None:
    assert content_words("Refunds refunded refunding") == ["refund"] * 3
    assert content_words("charges charge shipping shipped") == ["charg", "charg", "ship", "ship"]
    assert content_words("It isn't the customer's problem") == ["customer", "problem"]


def test_min_score_is_the_threshold() -> None:
    reply = "You can return it within 30 days of delivery; our warehouse team will gladly collect it by drone."
    score = grounding_score(reply, RETURNS)
    assert 0.3 < score < 0.8
    assert is_grounded(reply, RETURNS, score)[0]
    assert not is_grounded(reply, RETURNS, score + 0.01)[0]
