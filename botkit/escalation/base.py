"""What every rule shares: the :data:`Rule` type, the config base, and how rules word an escalation."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from botkit.types import ConversationState, Escalation


Rule = Callable[[ConversationState], Escalation | None]
"""A rule: a pure function of the conversation state; an Escalation when it fires, else None."""


class _Strict(BaseModel):
    # Same base as botkit.config._Strict, defined here rather than imported because
    # botkit.config imports EscalationConfig from this package (a cycle otherwise).
    model_config = ConfigDict(extra="forbid", frozen=True)


def _current_turn_label(state: ConversationState) -> str:
    """How details refer to the new customer message: its stored turn number."""
    customers = state.customer_turns
    return f"turn {customers[-1].seq}" if customers else "new message"


def _escalation(reason: str, name: str, detail: str) -> Escalation:
    return Escalation(reason=reason, rule=name, detail=detail)
