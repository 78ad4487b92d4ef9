"""Rule ``frustration``: thumbs-down, insults, profanity or shouting."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from botkit.escalation.base import Rule, _current_turn_label, _escalation
from botkit.escalation.phrases import FRUSTRATION_PATTERNS, _check_phrases, _clean, _compile_phrase, _quote
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation


class FrustrationConfig(StrictModel):
    """The customer is frustrated: repeated thumbs-down, insults, profanity or shouting.

    Fires on the new message when it matches a frustration phrase (defaults plus ``phrases``),
    has a run of ``exclamation_run`` or more "!" (mixed with "?" allowed), or is shouted: at
    least three words and ``shouting_min_letters`` letters, 80 % of them upper case. Fires on
    the history when ``min_negative_feedback`` bot turns got a thumbs-down. Any threshold set
    to null disables that check. Reason ``frustration``.
    """

    type: Literal["frustration"] = "frustration"
    min_negative_feedback: int | None = Field(2, ge=1, le=1000)
    phrases: list[str] = Field(default_factory=list)
    use_default_phrases: bool = True
    exclamation_run: int | None = Field(3, ge=2, le=100)
    shouting_min_letters: int | None = Field(12, ge=4, le=10_000)

    @field_validator("phrases")
    @classmethod
    def _valid_phrases(cls, v: list[str]) -> list[str]:
        _check_phrases(v)
        return v


def _shouting(text: str, min_letters: int) -> tuple[int, int] | None:
    """(upper-case letters, letters) when the text is shouted, else None."""
    words = re.findall(r"(?<!\w)[^\W\d_]{2,}(?!\w)", text)
    letters = [c for w in words for c in w if c.isupper() or c.islower()]
    upper = sum(1 for c in letters if c.isupper())
    if len(words) >= 3 and len(letters) >= min_letters and upper >= 0.8 * len(letters):
        return upper, len(letters)
    return None


def _build_frustration(cfg: FrustrationConfig, name: str) -> Rule:
    table: list[re.Pattern[str]] = []
    if cfg.use_default_phrases:
        table += [re.compile(p, re.IGNORECASE) for _, p in FRUSTRATION_PATTERNS]
    table += [_compile_phrase(p) for p in cfg.phrases]

    def frustration(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for pattern in table:
            m = pattern.search(text)
            if m and m.group(0).strip():
                return _escalation("frustration", name, f"{where}: matched {_quote(m.group(0))!r}")
        if cfg.exclamation_run is not None:
            for run in re.finditer(r"[!?¡]{2,}", text):
                bangs = run.group(0).count("!")
                if bangs >= cfg.exclamation_run:
                    return _escalation(
                        "frustration", name,
                        f"{where}: {bangs} exclamation marks in a row (limit {cfg.exclamation_run})",
                    )
        if cfg.shouting_min_letters is not None:
            shout = _shouting(text, cfg.shouting_min_letters)
            if shout:
                return _escalation(
                    "frustration", name,
                    f"{where}: shouting ({shout[0]} of {shout[1]} letters upper case): {_quote(text, 60)!r}",
                )
        if cfg.min_negative_feedback is not None:
            disliked = [t.seq for t in state.bot_turns if t.feedback < 0]
            if len(disliked) >= cfg.min_negative_feedback:
                return _escalation(
                    "frustration", name,
                    f"negative feedback on {len(disliked)} bot turns (turns {', '.join(map(str, disliked))}; "
                    f"limit {cfg.min_negative_feedback})",
                )
        return None

    return frustration
