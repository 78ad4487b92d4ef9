"""Rule ``repeated_question``: the customer asks essentially the same thing again."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from botkit.escalation.base import Rule, _current_turn_label, _escalation
from botkit.escalation.phrases import _clean, _quote
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation, Turn


class RepeatedQuestionConfig(StrictModel):
    """The customer asks essentially the same thing again.

    Texts are lower-cased and stripped of punctuation; two messages are "the same" when the
    Jaccard similarity of their word sets is at least ``similarity``. Fires when the new
    message is the ``times``-th such message (``times: 2`` = asked a second time). Messages
    with fewer than ``min_tokens`` words ("yes", "ok thanks") are never counted, since short
    replies repeat naturally. Reason ``repeated_question``.
    """

    type: Literal["repeated_question"] = "repeated_question"
    similarity: float = Field(0.8, gt=0.0, le=1.0)
    times: int = Field(2, ge=2, le=100)
    min_tokens: int = Field(3, ge=1, le=100)


def _tokens(text: str) -> frozenset[str]:
    """Word set for similarity: lower case, apostrophes dropped, other punctuation splits."""
    return frozenset(re.findall(r"\w+", _clean(text).lower().replace("'", "")))


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def _build_repeated_question(cfg: RepeatedQuestionConfig, name: str) -> Rule:
    def repeated_question(state: ConversationState) -> Escalation | None:
        new = _tokens(state.message.text)
        if len(new) < cfg.min_tokens:
            return None
        # By contract the new message is the last customer turn; compare with those before it.
        earlier = state.customer_turns[:-1]
        similar: list[tuple[Turn, float]] = []
        for turn in earlier:
            old = _tokens(turn.text)
            if len(old) < cfg.min_tokens:
                continue
            sim = _jaccard(new, old)
            # Tolerance so that a ratio equal to the threshold (4/5 vs 0.8) is not lost to rounding.
            if sim >= cfg.similarity - 1e-9:
                similar.append((turn, sim))
        if len(similar) + 1 < cfg.times:
            return None
        where = _current_turn_label(state)
        which = ", ".join(str(t.seq) for t, _ in similar)
        lowest = min(s for _, s in similar)
        plural = "s" if len(similar) > 1 else ""
        return _escalation(
            "repeated_question", name,
            f"{where} repeats turn{plural} {which} (similarity {lowest:.2f} >= {cfg.similarity:.2f}; "
            f"asked {len(similar) + 1} times): {_quote(state.message.text, 60)!r}",
        )

    return repeated_question
