"""Rule ``low_confidence``: the bot could not ground several replies in a row."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from botkit.escalation.base import Rule, _escalation
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation, Turn


class LowConfidenceConfig(StrictModel):
    """The bot could not ground ``turns`` replies in a row, the proposed reply included.

    Groundedness of past bot turns is read from ``turn.meta["grounded"]`` (a bool the engine
    stores); a bot turn without that key counts as grounded, which ends the streak (unknown is
    not evidence of failure), unless it is a ``no_answer`` decline, which is never grounded.
    A proposed decline counts too. With fewer earlier bot turns than needed it does not fire.
    Reason ``low_confidence``.
    """

    type: Literal["low_confidence"] = "low_confidence"
    turns: int = Field(2, ge=1, le=100)


def _ungrounded(turn: Turn) -> bool:
    """A bot turn the bot could not ground: a decline, or stored with ``grounded: False``."""
    return turn.action == "no_answer" or turn.meta.get("grounded") is False


def _build_low_confidence(cfg: LowConfidenceConfig, name: str) -> Rule:
    def low_confidence(state: ConversationState) -> Escalation | None:
        if state.candidate.grounded and state.candidate.action != "no_answer":
            return None
        earlier = cfg.turns - 1
        past: tuple[Turn, ...] = state.bot_turns[-earlier:] if earlier else ()
        if len(past) < earlier or not all(_ungrounded(t) for t in past):
            return None
        score = f"best score {state.candidate.confidence:.2f}"
        if not past:
            return _escalation("low_confidence", name, f"the proposed reply is not grounded ({score})")
        seqs = ", ".join(str(t.seq) for t in past)
        return _escalation(
            "low_confidence", name,
            f"{cfg.turns} ungrounded replies in a row (bot turns {seqs} and the proposed reply; {score})",
        )

    return low_confidence
