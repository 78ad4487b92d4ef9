"""Rule ``turn_limit``: the conversation has too many customer turns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from botkit.escalation.base import Rule, _escalation
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation


class TurnLimitConfig(StrictModel):
    """The conversation has more than ``max_customer_turns`` customer turns. Reason ``turn_limit``."""

    type: Literal["turn_limit"] = "turn_limit"
    max_customer_turns: int = Field(20, ge=1, le=100_000)


def _build_turn_limit(cfg: TurnLimitConfig, name: str) -> Rule:
    def turn_limit(state: ConversationState) -> Escalation | None:
        count = state.customer_turn_count  # the whole conversation, not just the engine's window
        if count <= cfg.max_customer_turns:
            return None
        return _escalation("turn_limit", name, f"{count} customer turns (limit {cfg.max_customer_turns})")

    return turn_limit
