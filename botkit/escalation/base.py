"""What every rule shares: the :data:`Rule` type and how rules word an escalation.

Rule configs derive from :class:`botkit.schema.StrictModel`, like every other config model.
"""

from __future__ import annotations

from collections.abc import Callable

from botkit.types import ConversationState, Escalation

Rule = Callable[[ConversationState], Escalation | None]
"""A rule: a pure function of the conversation state; an Escalation when it fires, else None."""


def _current_turn_label(state: ConversationState) -> str:
    """How details refer to the new customer message: its stored turn number."""
    customers = state.customer_turns
    return f"turn {customers[-1].seq}" if customers else "new message"


def _escalation(reason: str, name: str, detail: str) -> Escalation:
    return Escalation(reason=reason, rule=name, detail=detail)
