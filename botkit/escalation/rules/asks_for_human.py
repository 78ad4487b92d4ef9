"""Rule ``asks_for_human``: the customer asks for a human."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from botkit.escalation.base import Rule, _current_turn_label, _escalation
from botkit.escalation.phrases import (
    _BARE_FILLERS,
    _BARE_JOIN,
    _BARE_NOUNS,
    ASKS_FOR_HUMAN_PATTERNS,
    _check_phrases,
    _clean,
    _compile_phrase,
    _negated,
    _quote,
)
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation


class AsksForHumanConfig(StrictModel):
    """The customer asks for a human (many phrasings; negated requests do not count).

    ``extra_phrases`` adds operator phrases in the module's phrase syntax (literal words or
    ``re:`` regex, case-insensitive); they are subject to the same negation check, so
    "I don't need <phrase>" does not fire. Reason ``asked_for_human``.
    """

    type: Literal["asks_for_human"] = "asks_for_human"
    extra_phrases: list[str] = Field(default_factory=list)
    use_default_phrases: bool = True

    @field_validator("extra_phrases")
    @classmethod
    def _valid_phrases(cls, v: list[str]) -> list[str]:
        _check_phrases(v)
        return v


def _build_asks_for_human(cfg: AsksForHumanConfig, name: str) -> Rule:
    table: list[re.Pattern[str]] = []
    if cfg.use_default_phrases:
        table += [re.compile(p, re.IGNORECASE) for _, p in ASKS_FOR_HUMAN_PATTERNS]
    table += [_compile_phrase(p) for p in cfg.extra_phrases]
    use_bare = cfg.use_default_phrases

    def asks_for_human(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for pattern in table:
            for m in pattern.finditer(text):
                if m.group(0).strip() and not _negated(text, m.start()):
                    return _escalation("asked_for_human", name, f"{where}: matched {_quote(m.group(0))!r}")
        if use_bare:
            joined = _BARE_JOIN.sub(lambda m: "_".join(g for g in m.groups() if g), text.lower())
            words = re.findall(r"[\w']+", joined)
            if 0 < len(words) <= 8 and all(w in _BARE_NOUNS or w in _BARE_FILLERS for w in words) and any(
                w in _BARE_NOUNS for w in words
            ):
                return _escalation("asked_for_human", name, f"{where}: the message is only {_quote(text)!r}")
        return None

    return asks_for_human
