"""A custom escalation rule: a customer whose order is worth 500 or more is handed to a human.

A rule is a pure function of the conversation state (``botkit.escalation.Rule``): it returns an
Escalation when it fires, None otherwise. Like the built-in rules (botkit/escalation/rules/),
its config model sits beside its builder. Two ways to plug it in, both shown:

* in code: ``Engine(rules=[("order_value", rule), *build_rules(config)])``;
* from bot.yaml, with the ``custom`` rule type naming this builder as ``module:function``::

      escalation:
        rules:
          - {type: custom, factory: "custom_rule:build_order_value", options: {min_total: 500}}

Knowledge and storage: botkit.testing's StaticRetriever and InMemoryConversationStore stand in
for the knowledge base and SQLite, so nothing is downloaded; the real ones come with
``botkit.app.compose.build_engine(project)``.   Run: python examples/custom_rule.py
"""
import asyncio
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from botkit.engine import Engine
from botkit.escalation import EscalationConfig, Rule, build_rules
from botkit.responders import ExtractiveResponder
from botkit.testing import InMemoryConversationStore, StaticRetriever, hit
from botkit.types import ConversationState, Escalation, IncomingMessage


class OrderValueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # a typo in bot.yaml is an error
    attribute: str = "order_total"  # set by the channel or CRM on the message
    min_total: float = Field(500, gt=0)


def build_order_value(options: Mapping[str, object], name: str) -> Rule:
    """Validate the options once; the returned rule only reads the state (no I/O, no clock)."""
    cfg = OrderValueConfig.model_validate(options)

    def order_value(state: ConversationState) -> Escalation | None:
        total = state.message.attributes.get(cfg.attribute)
        if not isinstance(total, (int, float)) or isinstance(total, bool) or total < cfg.min_total:
            return None
        return Escalation(reason="order_value_above_limit", rule=name,
                          detail=f"{cfg.attribute}={total} (limit {cfg.min_total:g})")

    return order_value


async def ask(engine: Engine, conversation: str, total: float) -> None:
    reply = await engine.handle(IncomingMessage(conversation, "Where is my refund?", attributes={"order_total": total}))
    reason = reply.escalation.reason if reply.escalation else "-"
    print(f"   order_total={total:<6} -> {reply.action} (escalation: {reason})")


async def main() -> None:
    retriever = StaticRetriever({"Where is my refund?": [hit("refunds", "Refunds reach your card within 5 days.")]})
    in_code = [("order_value", build_order_value({"min_total": 500}, "order_value")), *build_rules(EscalationConfig())]
    from_yaml = build_rules(EscalationConfig.model_validate({"rules": [  # what bot.yaml's rules section parses to
        {"type": "custom", "factory": "custom_rule:build_order_value", "options": {"min_total": 500}}]}))
    for label, rules in (("in code", in_code), ("from bot.yaml", from_yaml)):
        print(f"-- rules {label}: {[name for name, _ in rules]}")
        async with Engine(retriever=retriever, responder=ExtractiveResponder(),
                          store=InMemoryConversationStore(), rules=rules) as engine:
            await ask(engine, "small", 40)
            await ask(engine, "large", 1200)
            handoffs = await engine.store.handoffs()
            assert [(h.conversation_id, h.reason) for h in handoffs] == [("large", "order_value_above_limit")], handoffs
            small = await engine.history("small")
            assert small[-1].action == "answer" and small[-1].text == "Refunds reach your card within 5 days.", small
            print(f"   hand-off: {handoffs[0].reason} ({handoffs[0].detail}); the small order got an answer")
    print("OK: the order_value rule handed off only the large order")


if __name__ == "__main__":
    asyncio.run(main())
