from datetime import UTC, datetime

import pytest

from botkit.context import looks_like_followup, resolve_choice, resolve_followup
from botkit.types import Turn

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def turn(role: str, text: str, resolved: str = "") -> Turn:
    return Turn("c", 1, role, text, NOW, resolved_query=resolved)


@pytest.mark.parametrize("text", [
    "and how long does that take?", "what about Canada?", "how much is it?", "does that apply to candles too?",
    "and how long do I have to report it to you after it was due?", "also, can I do it online?",
])
def test_follow_ups(text):
    assert looks_like_followup(text, 8)


@pytest.mark.parametrize("text", [
    "How do I reset my password?", "Do you ship to Australia or New Zealand at the moment please?",
    "where is my order TP-100482", "",
])
def test_not_follow_ups(text):
    assert not looks_like_followup(text, 8)


def test_follow_up_uses_the_previous_resolved_question():
    history = [turn("customer", "how do returns work", "how do returns work"), turn("bot", "You have 30 days."),
               turn("customer", "and for candles?", "how do returns work and for candles?"), turn("bot", "...")]
    assert resolve_followup("what about furniture?", history, 8) == \
        "how do returns work and for candles? what about furniture?"
    assert resolve_followup("what about furniture?", [], 8) == "what about furniture?"
    assert resolve_followup("what about furniture?", history, 0) == "what about furniture?"  # switched off


OPTIONS = [{"id": "lost-parcel", "title": "My parcel is lost or hasn't arrived"},
           {"id": "track-your-order", "title": "Where is my order? Tracking and order status"},
           {"id": "missing-items", "title": "An item is missing from my order"}]


@pytest.mark.parametrize("text, expected", [
    ("2", "track-your-order"), ("the second one", "track-your-order"), ("first", "lost-parcel"),
    ("3.", "missing-items"), ("the last one", "missing-items"), ("tracking and order status", "track-your-order"),
    ("an item is missing", "missing-items"),
])
def test_choice(text, expected):
    assert resolve_choice(text, OPTIONS)["id"] == expected


@pytest.mark.parametrize("text", ["7", "I want a human", "my order", "something else entirely"])
def test_no_clear_choice(text):
    assert resolve_choice(text, OPTIONS) is None
