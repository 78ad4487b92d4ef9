"""Engine behaviours on botkit.testing's fakes only (no embedding model, no FAISS, no disk):
the whole module runs in well under a second. tests/test_engine.py keeps the same paths
against the real knowledge base and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from botkit.config import DialogueConfig
from botkit.engine import Engine
from botkit.errors import BotkitError
from botkit.testing import InMemoryConversationStore, ScriptedResponder, StaticRetriever, Streamed, hit
from botkit.types import Candidate, ConversationState, Escalation, InboxItem, IncomingMessage, Reply

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REFUND = hit("refunds", "Refunds reach your card within 5 working days.")
RESET = hit("password-reset", "Use 'Forgot password' on the sign-in page.")


def asks_for_human(state: ConversationState) -> Escalation | None:
    if "human" in state.message.text.lower():
        return Escalation("asked_for_human", "0:asks_for_human", f"turn {len(state.turns)}: said 'human'", "summary")
    return None


def make_engine(store: InMemoryConversationStore, responder: ScriptedResponder, **config: object) -> Engine:
    retriever = StaticRetriever({"how do refunds work": [REFUND], "reset my password": [RESET]},
                                errors={"search is broken": BotkitError("the index is missing")})
    return Engine(retriever=retriever, responder=responder, store=store, rules=[("0:asks_for_human", asks_for_human)],
                  config=DialogueConfig(**config), clock=lambda: T0)  # type: ignore[arg-type]


@pytest.fixture
async def store() -> AsyncIterator[InMemoryConversationStore]:
    yield InMemoryConversationStore()


def msg(text: str, conv: str = "c1") -> IncomingMessage:
    return IncomingMessage(conv, text, "web", "u1")


async def test_a_message_is_answered_once_and_a_redelivery_gets_the_stored_reply(store: InMemoryConversationStore):
    responder = ScriptedResponder(["Within 5 working days."])
    async with make_engine(store, responder) as engine:
        first = await engine.handle(msg("how do refunds work"), message_id="m1")
        again = await engine.handle(msg("how do refunds work"), message_id="m1")
        assert [t.role for t in await store.turns("c1")] == ["customer", "bot"]
    assert first.text == again.text == "Within 5 working days." and first.sources[0].id == "refunds"
    assert not first.repeat and again.repeat and again.turn_seq == first.turn_seq == 2
    assert len(responder.requests) == 1  # the redelivery was not answered again


async def test_a_message_accepted_before_a_crash_is_answered_by_the_next_engine(store: InMemoryConversationStore):
    async with make_engine(store, ScriptedResponder()) as crashed:
        item = await crashed.accept(msg("reset my password"), "m1")  # accepted, then the process died
    delivered: list[tuple[InboxItem, Reply]] = []

    async def deliver(item: InboxItem, reply: Reply) -> None:
        delivered.append((item, reply))

    async with make_engine(store, ScriptedResponder(["Use 'Forgot password'."])) as restarted:
        assert await restarted.answer_pending("c1", deliver) == 1
        assert await restarted.answer_pending("c1", deliver) == 0  # answered once
        assert (await store.inbox_item("c1", "m1")).state == "answered"
    assert delivered[0][0].message_id == item.message_id and delivered[0][1].text == "Use 'Forgot password'."


async def test_a_handed_off_conversation_keeps_the_bot_silent(store: InMemoryConversationStore):
    responder = ScriptedResponder(["(what the bot would have said)"])
    async with make_engine(store, responder) as engine:
        escalated = await engine.handle(msg("a human please"))
        silent = await engine.handle(msg("hello? anyone there"))
        assert [(t.role, t.text) for t in await store.turns("c1")][-1] == ("customer", "hello? anyone there")
        assert [h.reason for h in await store.handoffs("waiting")] == ["asked_for_human"]
    assert escalated.action == "escalate" and escalated.text == DialogueConfig().handoff_message
    assert silent.action == "handoff" and silent.text == "" and silent.turn_seq is None
    assert len(responder.requests) == 1  # no reply was even drafted for the second message


async def test_the_responder_sees_a_window_of_history_and_rules_see_exact_counts(store: InMemoryConversationStore):
    seen: list[ConversationState] = []

    def count(state: ConversationState) -> Escalation | None:
        seen.append(state)
        return None

    responder = ScriptedResponder(lambda request: f"reply to {request.query}")
    async with make_engine(store, responder, history_turns=1) as engine:
        engine.rules = [("0:count", count)]
        for i in range(5):
            await engine.handle(msg(f"reset my password, attempt {i}"))
    last = responder.requests[-1]
    assert [t.text for t in last.history] == ["reset my password, attempt 3", "reply to reset my password, attempt 3"]
    assert seen[-1].earlier_customer_turns == 0 and len(seen[-1].turns) == 9  # 4 exchanges + the new turn


async def test_a_failing_responder_or_search_still_answers_the_customer(store: InMemoryConversationStore):
    async with make_engine(store, ScriptedResponder([RuntimeError("model crashed")])) as engine:
        crashed = await engine.handle(msg("how do refunds work"))
        broken = await engine.handle(msg("search is broken"))
    assert crashed.fallback == "error" and crashed.text.startswith("Refunds reach your card")  # the extractive reply
    assert broken.fallback == "retrieval_failed" and broken.action == "answer"


async def test_a_streamed_reply_yields_deltas_then_the_stored_reply(store: InMemoryConversationStore):
    fallback = Candidate("answer", "Refunds reach your card within 5 working days.", 0.9, fallback="ungrounded")
    responder = ScriptedResponder(["Refunds take five days.", Streamed(("Made ", "up."), fallback)])
    async with make_engine(store, responder) as engine:
        parts = [p async for p in engine.handle_stream(msg("how do refunds work"))]
        replaced = [p async for p in engine.handle_stream(msg("how do refunds work", "c2"))]
        assert (await store.turn("c2", 2)).text == fallback.text
    assert parts[:-1] == ["Refunds ", "take ", "five ", "days."] and parts[-1].text == "Refunds take five days."
    assert replaced[:-1] == ["Made ", "up."] and replaced[-1].text == fallback.text  # the channel replaces the deltas
