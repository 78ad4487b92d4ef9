"""Rule ``customer_attribute``: a customer attribute matches (e.g. VIP customers go straight to a human)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

from botkit.escalation.base import Rule, _escalation
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation

JsonScalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]


class CustomerAttributeConfig(StrictModel):
    """Fires when a customer attribute matches, e.g. VIP customers go straight to a human.

    Looks up ``key`` in ``state.message.attributes`` and ``state.conversation.attributes``
    (either may match) and compares with ``equals`` or ``in`` (give exactly one). Comparison
    is exact and JSON-typed: ``true`` does not equal ``1``, ``"Pro"`` does not equal ``"pro"``;
    a missing key never matches. With ``only_first_message`` (default) it fires only on the
    conversation's first customer message, i.e. at the start and never in the middle (once
    escalated, the engine stops evaluating rules anyway). Reason ``customer_attribute:<key>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["customer_attribute"] = "customer_attribute"
    key: str = Field(min_length=1, max_length=200)
    equals: JsonScalar = None
    in_: list[JsonScalar] | None = Field(None, alias="in", min_length=1)
    only_first_message: bool = True

    @model_validator(mode="after")
    def _one_comparison(self) -> CustomerAttributeConfig:
        has_equals, has_in = "equals" in self.model_fields_set, self.in_ is not None
        if has_equals == has_in:
            given = f"equals={self.equals!r} and in={self.in_!r}" if has_equals else "neither"
            raise ValueError(f"give exactly one of 'equals' or 'in' for key {self.key!r} (got {given})")
        return self


def _same_scalar(a: object, b: object) -> bool:
    """JSON-typed equality: booleans only equal booleans, numbers compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return a is None and b is None


def _build_customer_attribute(cfg: CustomerAttributeConfig, name: str) -> Rule:
    wanted: list[object] = list(cfg.in_) if cfg.in_ is not None else [cfg.equals]
    expected = f"in {cfg.in_!r}" if cfg.in_ is not None else f"equals {cfg.equals!r}"

    def customer_attribute(state: ConversationState) -> Escalation | None:
        if cfg.only_first_message and state.customer_turn_count > 1:
            return None
        sources = (("message", state.message.attributes), ("conversation", state.conversation.attributes))
        for origin, attributes in sources:
            if cfg.key in attributes:
                value = attributes[cfg.key]
                if any(_same_scalar(value, w) for w in wanted):
                    return _escalation(
                        f"customer_attribute:{cfg.key}", name,
                        f"{origin} attribute {cfg.key}={value!r} ({expected})",
                    )
        return None

    return customer_attribute
