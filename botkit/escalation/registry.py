"""Every rule type in one place: the config union, the default list, the builders, :func:`build_rules`.

Adding a rule type: a module in ``botkit/escalation/rules/`` with its config model and builder,
then one line each in :data:`RuleConfig` and ``_BUILDERS`` here (and the package ``__all__``).
A rule type outside botkit needs none of that: the ``custom`` type names its builder
(:mod:`~botkit.escalation.rules.custom`, docs/extending.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Annotated, Union

from pydantic import BaseModel, Field

from botkit.escalation.base import Rule
from botkit.escalation.rules.asks_for_human import AsksForHumanConfig, _build_asks_for_human
from botkit.escalation.rules.business_hours import BusinessHoursConfig, _build_business_hours
from botkit.escalation.rules.custom import CustomRuleConfig, _build_custom
from botkit.escalation.rules.customer_attribute import CustomerAttributeConfig, _build_customer_attribute
from botkit.escalation.rules.frustration import FrustrationConfig, _build_frustration
from botkit.escalation.rules.low_confidence import LowConfidenceConfig, _build_low_confidence
from botkit.escalation.rules.repeated_question import RepeatedQuestionConfig, _build_repeated_question
from botkit.escalation.rules.sensitive_topic import SensitiveTopicConfig, _build_sensitive_topic
from botkit.escalation.rules.turn_limit import TurnLimitConfig, _build_turn_limit
from botkit.escalation.summary import summarize
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation

log = logging.getLogger(__name__)

RuleConfig = Annotated[
    Union[
        AsksForHumanConfig,
        FrustrationConfig,
        LowConfidenceConfig,
        RepeatedQuestionConfig,
        SensitiveTopicConfig,
        TurnLimitConfig,
        BusinessHoursConfig,
        CustomerAttributeConfig,
        CustomRuleConfig,
    ],
    Field(discriminator="type"),
]
"""One configured rule; the ``type`` key selects the model."""


def _default_rules() -> list[RuleConfig]:
    return [
        AsksForHumanConfig(),
        FrustrationConfig(),
        SensitiveTopicConfig(),
        LowConfidenceConfig(turns=2),
        RepeatedQuestionConfig(),
        TurnLimitConfig(),
    ]


class EscalationConfig(StrictModel):
    """The ``escalation`` section of bot.yaml: rules in evaluation order (first match wins).

    The default list is asks_for_human, frustration, sensitive_topic (legal,
    account_security), low_confidence (2 turns), repeated_question, turn_limit (20).
    An empty list disables escalation by rules.
    """

    rules: list[RuleConfig] = Field(default_factory=_default_rules)


_BUILDERS: dict[type[BaseModel], Callable[..., Rule]] = {
    AsksForHumanConfig: _build_asks_for_human,
    FrustrationConfig: _build_frustration,
    LowConfidenceConfig: _build_low_confidence,
    RepeatedQuestionConfig: _build_repeated_question,
    SensitiveTopicConfig: _build_sensitive_topic,
    TurnLimitConfig: _build_turn_limit,
    BusinessHoursConfig: _build_business_hours,
    CustomerAttributeConfig: _build_customer_attribute,
    CustomRuleConfig: _build_custom,
}


def build_rules(config: EscalationConfig) -> list[tuple[str, Rule]]:
    """Compile the configured rules, in order, as ``("<position>:<type>", rule)`` pairs.

    Positions count from 1, so the default list yields ``"1:asks_for_human"``,
    ``"2:frustration"``, ... . Rules snapshot their configuration here; nothing later
    (least of all message text) changes what they check.
    """
    built: list[tuple[str, Rule]] = []
    for position, rule_cfg in enumerate(config.rules, start=1):
        name = f"{position}:{rule_cfg.type}"
        # A deep copy, so that later mutation of the config's lists cannot reach a built rule.
        built.append((name, _BUILDERS[type(rule_cfg)](rule_cfg.model_copy(deep=True), name)))
    return built


def evaluate(rules: Sequence[tuple[str, Rule]], state: ConversationState,
             summarize: Callable[[ConversationState], str] | None = summarize) -> Escalation | None:
    """Run ``rules`` in order; the first escalation, or None. The one rule loop: the engine
    calls it for every customer message (with its own ``summarize``, None for none).

    A rule that raises is logged and skipped, and the others still run: one broken (custom)
    rule must not cost the customer a reply, nor stop a later rule from escalating. The
    escalation keeps a summary its rule wrote; otherwise ``summarize(state)`` fills it (left
    empty when ``summarize`` is None). Custom rules may be mixed in; one that leaves ``rule``
    empty gets its list name.
    """
    for name, rule in rules:
        try:
            found = rule(state)
        except Exception:  # noqa: BLE001 - a broken rule is logged and skipped, the others still run
            log.exception("escalation rule %s failed for conversation %s", name, state.conversation.id)
            continue
        if found is not None:
            summary = found.summary or (summarize(state) if summarize else "")
            return replace(found, rule=found.rule or name, summary=summary)
    return None
