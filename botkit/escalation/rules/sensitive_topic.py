"""Rule ``sensitive_topic``: a topic a human must handle (legal, account security), or a large refund."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from botkit.escalation.base import Rule, _current_turn_label, _escalation
from botkit.escalation.phrases import (
    _REFUND_WORDS,
    DEFAULT_TOPICS,
    _check_phrases,
    _clean,
    _compile_phrase,
    _quote,
    find_amounts,
)
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation


class SensitiveTopicConfig(StrictModel):
    """The new message touches a topic a human must handle, or asks for a large refund.

    ``topics`` maps a topic name to phrases (module phrase syntax: whole words,
    case-insensitive, or ``re:`` regex); topics are checked in the order given. Setting
    ``topics`` replaces the defaults (:data:`DEFAULT_TOPICS`: ``legal`` and
    ``account_security``); repeat them to keep them. Matches are not negation-checked on
    purpose: "I'm not going to sue you (yet)" still belongs with a human.

    ``refund_above`` (null = off): a message with a refund word (refund, money back,
    reimburse, chargeback) and, within ``refund_window_chars`` of it, an amount with a
    currency ("$250", "250 dollars", "€1,200.50", "USD 300") strictly above the limit.
    Amounts are compared as written, without currency conversion.
    Reasons ``sensitive_topic:<name>`` and ``refund_above_limit``.
    """

    type: Literal["sensitive_topic"] = "sensitive_topic"
    topics: dict[str, list[str]] = Field(
        default_factory=lambda: {name: list(phrases) for name, phrases in DEFAULT_TOPICS.items()}
    )
    refund_above: float | None = Field(None, ge=0)
    refund_window_chars: int = Field(120, ge=1, le=100_000)

    @field_validator("topics")
    @classmethod
    def _valid_topics(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, phrases in v.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
                raise ValueError(f"bad topic name {name!r} (use lower-case letters, digits, '_' or '-')")
            if not phrases:
                raise ValueError(f"topic {name!r} has no phrases")
            _check_phrases(phrases)
        return v


def _build_sensitive_topic(cfg: SensitiveTopicConfig, name: str) -> Rule:
    topics = [(topic, [_compile_phrase(p) for p in phrases]) for topic, phrases in cfg.topics.items()]
    limit, window = cfg.refund_above, cfg.refund_window_chars

    def sensitive_topic(state: ConversationState) -> Escalation | None:
        text = _clean(state.message.text)
        where = _current_turn_label(state)
        for topic, patterns in topics:
            for pattern in patterns:
                m = pattern.search(text)
                if m and m.group(0).strip():
                    return _escalation(
                        f"sensitive_topic:{topic}", name, f"{where}: matched {_quote(m.group(0))!r} (topic {topic})"
                    )
        if limit is None:
            return None
        refunds = list(_REFUND_WORDS.finditer(text))
        if not refunds:
            return None
        for value, start, end, shown in find_amounts(text):
            if value <= limit:
                continue
            for r in refunds:
                gap = max(r.start() - end, start - r.end(), 0)
                if gap <= window:
                    return _escalation(
                        "refund_above_limit", name,
                        f"{where}: refund request ({r.group(0)!r}) mentions {shown!r} = {value:g} "
                        f"above the limit {limit:g}",
                    )
        return None

    return sensitive_topic
