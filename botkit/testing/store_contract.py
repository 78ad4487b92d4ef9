"""The contract every :class:`~botkit.store.ConversationStore` backend must pass.

A backend's tests subclass :class:`ConversationStoreContract` and provide a ``store``
fixture that yields a started, empty store (closing it afterwards)::

    from botkit.testing import ConversationStoreContract

    class TestMyStore(ConversationStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            s = MyStore(...)
            await s.start()
            yield s
            await s.close()

The tests are ``async``: run them with pytest-asyncio in ``asyncio_mode = "auto"``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from botkit.store import ConflictError, StoreError
from botkit.types import Escalation, Handoff, InboxItem, IncomingMessage, Source, Turn

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def turn(conv: str, seq: int, role: str = "customer", text: str = "hi", **kw) -> Turn:
    return Turn(conv, seq, role, text, T0 + timedelta(seconds=seq), **kw)  # type: ignore[arg-type]


class ConversationStoreContract:
    async def test_turns_round_trip_with_everything_needed_to_explain_them(self, store):
        await store.get_or_create("c", "web", "u1", {"vip": True}, T0)
        esc = Escalation("asked_for_human", "1:asks_for_human", "turn 1: matched 'agent'", "1 customer turn.")
        await store.record([turn("c", 1, text="agent please"),
                            turn("c", 2, "bot", "Passing you on", action="escalate", confidence=0.3,
                                 sources=(Source("a", "A", 0.5),), kb_version=7, resolved_query="agent please",
                                 escalation=esc, author="extractive", meta={"grounded": False})])
        a, b = await store.turns("c")
        assert (a.role, a.text, a.at) == ("customer", "agent please", T0 + timedelta(seconds=1))
        assert b.escalation == esc and b.sources == (Source("a", "A", 0.5),) and b.kb_version == 7
        assert b.meta == {"grounded": False} and b.confidence == 0.3
        assert [t.seq for t in await store.turns("c", limit=1)] == [2]
        conv = await store.get("c")
        assert conv.attributes == {"vip": True} and conv.channel == "web" and conv.status == "bot"

    async def test_an_exchange_is_stored_whole_or_not_at_all(self, store):
        await store.get_or_create("c", "web", "u1", {}, T0)
        await store.record([turn("c", 1)])
        # The protocol names no error for a turn that exists (SQLite raises IntegrityError, the fake
        # StoreError): the contract is that the exchange fails and nothing of it is stored.
        with pytest.raises(Exception):  # noqa: B017
            await store.record([turn("c", 2), turn("c", 1, "bot")])  # seq 1 exists: the whole exchange fails
        assert [t.seq for t in await store.turns("c")] == [1]

    async def test_handoff_lifecycle_and_single_owner(self, store):
        await store.get_or_create("c", "telegram", "42", {}, T0)
        h = Handoff(0, "c", "frustration", "2:frustration", "detail", "summary", "telegram", "42", T0)
        stored = await store.record([turn("c", 1)], status="handed_off", handoff=h)
        assert stored.id > 0 and stored.status == "waiting"
        assert (await store.get("c")).status == "handed_off"
        results = await asyncio.gather(*(store.assign("c", f"a{i}", T0) for i in range(4)), return_exceptions=True)
        assert sum(not isinstance(r, Exception) for r in results) == 1
        owner = (await store.handoff_for("c")).agent
        with pytest.raises(ConflictError, match=f"belongs to agent {owner}"):
            await store.release("c", "intruder", "returned", T0)
        done = await store.release("c", owner, "returned", T0)
        assert done.status == "returned" and (await store.get("c")).status == "bot"
        assert await store.handoff_for("c") is None
        with pytest.raises(ConflictError, match="not handed off"):
            await store.release("c", owner, "closed", T0)

    async def test_feedback_and_satisfaction_validation(self, store):
        await store.get_or_create("c", "web", "u", {}, T0)
        await store.record([turn("c", 1), turn("c", 2, "bot")])
        await store.set_feedback("c", 2, 1)
        assert (await store.turns("c"))[1].feedback == 1
        with pytest.raises(StoreError):
            await store.set_feedback("c", 1, 1)
        with pytest.raises(ValueError):
            await store.set_feedback("c", 2, 5)
        with pytest.raises(ValueError):
            await store.set_satisfaction("c", 0)
        with pytest.raises(StoreError):
            await store.set_satisfaction("missing", 3)

    async def test_accepted_messages_are_stored_once_and_answered_once(self, store):
        def item(conv: str, mid: str, text: str = "hi") -> InboxItem:
            return InboxItem(IncomingMessage(conv, text, "web", "u", {"k": 1}, T0), mid, {"client_id": mid})

        first = await store.accept(item("c", "m1", "where is my order"))
        again = await store.accept(item("c", "m1", "a retransmission"))
        other = await store.accept(item("c", "m2"))
        elsewhere = await store.accept(item("d", "m1"))  # ids are per conversation
        assert first.new and not again.new and other.new and elsewhere.new
        assert again.message.text == "where is my order" and again.meta == {"client_id": "m1"}
        assert again.message.attributes == {"k": 1} and again.message.at == T0 and not again.answered
        assert [i.message_id for i in await store.pending()] == ["m1", "m2", "m1"]  # arrival order
        assert [i.message_id for i in await store.pending(conversation_id="c")] == ["m1", "m2"]
        assert await store.pending(channel="telegram") == []

        await store.get_or_create("c", "web", "u", {}, T0)
        await store.record([turn("c", 1), turn("c", 2, "bot")], answers=first)
        answered = await store.inbox_item("c", "m1")
        assert answered.state == "answered" and answered.reply_seq == 2
        with pytest.raises(ConflictError):  # answering twice stores nothing
            await store.record([turn("c", 3), turn("c", 4, "bot")], answers=first)
        assert [t.seq for t in await store.turns("c")] == [1, 2]
        assert [i.message_id for i in await store.pending(conversation_id="c")] == ["m2"]
        assert [i.message_id for i in await store.pending(conversation_id="c", states=("answered",))] == ["m1"]
        await store.mark_delivered("c", "m1")
        assert (await store.inbox_item("c", "m1")).state == "delivered"
        with pytest.raises(StoreError):
            await store.mark_delivered("c", "m2")  # not answered yet
        assert await store.inbox_item("c", "nope") is None

    async def test_old_answered_inbox_entries_are_pruned_pending_ones_never(self, store):
        def item(mid: str, at: datetime) -> InboxItem:
            return InboxItem(IncomingMessage("c", f"q {mid}", "web", "u", {}, at), mid, {})

        await store.get_or_create("c", "web", "u", {}, T0)
        old = await store.accept(item("old", T0))
        await store.accept(item("old-pending", T0 + timedelta(seconds=1)))
        recent = await store.accept(item("recent", T0 + timedelta(days=40)))
        await store.record([turn("c", 1), turn("c", 2, "bot")], answers=old)
        await store.record([turn("c", 3), turn("c", 4, "bot")], answers=recent)
        assert await store.prune_inbox(T0 + timedelta(days=10)) == 1
        assert await store.inbox_item("c", "old") is None  # forgotten; its turns stay
        assert [t.seq for t in await store.turns("c")] == [1, 2, 3, 4]
        assert (await store.inbox_item("c", "old-pending")).state == "pending"  # still to be answered
        assert (await store.inbox_item("c", "recent")).state == "answered"
        assert await store.prune_inbox(T0 + timedelta(days=10)) == 0

    async def test_a_window_of_recent_turns_with_counts_of_the_rest(self, store):
        await store.get_or_create("c", "web", "u", {}, T0)
        await store.record([turn("c", i, "customer" if i % 2 else "bot", f"t{i}") for i in range(1, 11)])
        window = await store.window("c", 4)
        assert [t.seq for t in window.turns] == [7, 8, 9, 10] and window.next_seq == 11
        assert window.earlier_customer_turns == 3 and window.first_customer.text == "t1"
        whole = await store.window("c", 50)
        assert len(whole.turns) == 10 and whole.earlier_customer_turns == 0 and whole.first_customer is None
        empty = await store.window("new", 4)
        assert empty.turns == () and empty.next_seq == 1
        assert [t.seq for t in await store.turns("c", limit=3, before=8)] == [5, 6, 7]
        assert (await store.turn("c", 4)).text == "t4" and await store.turn("c", 99) is None

    async def test_stats_count_conversations_turns_and_waiting_handoffs(self, store):
        assert await store.stats() == {"conversations": 0, "turns": 0, "handoffs_waiting": 0}
        await store.get_or_create("a", "web", "u", {}, T0)
        await store.get_or_create("b", "web", "u", {}, T0)
        h = Handoff(0, "a", "frustration", "2:frustration", "detail", "summary", "web", "u", T0)
        await store.record([turn("a", 1), turn("a", 2, "bot")], status="handed_off", handoff=h)
        await store.record([turn("b", 1)])
        assert await store.stats() == {"conversations": 2, "turns": 3, "handoffs_waiting": 1}
        await store.assign("a", "ann", T0)  # assigned: no longer waiting
        assert (await store.stats())["handoffs_waiting"] == 0

    async def test_stored_conversations_come_oldest_first_with_their_turns_and_handoffs(self, store):
        assert [r async for r in store.stored_conversations()] == []
        await store.get_or_create("b", "web", "u2", {}, T0 + timedelta(minutes=1))
        await store.get_or_create("a", "telegram", "u1", {"plan": "pro"}, T0)
        await store.get_or_create("c", "web", "u3", {}, T0 + timedelta(minutes=1))  # b's time: then by id
        h = Handoff(0, "a", "asked_for_human", "1:asks_for_human", "detail", "summary", "telegram", "u1", T0)
        await store.record([turn("a", 1, text="a person please"), turn("a", 2, "bot", "Passing you on")],
                           status="handed_off", handoff=h)
        await store.assign("a", "ann", T0)
        await store.record([turn("a", 3, "agent", "Ann here, sorted.", author="ann")])
        await store.release("a", "ann", "closed", T0)
        await store.record([turn("b", 2, "bot", "second"), turn("b", 1, text="first")])  # stored out of order
        await store.set_feedback("b", 2, -1)
        await store.set_satisfaction("b", 4)
        got = [r async for r in store.stored_conversations()]
        assert [r.conversation.id for r in got] == ["a", "b", "c"]
        a, b, c = got
        assert [(t.seq, t.role, t.text) for t in a.turns] == [(1, "customer", "a person please"),
                                                              (2, "bot", "Passing you on"),
                                                              (3, "agent", "Ann here, sorted.")]
        assert a.turns[2].author == "ann" and a.turns[0].at == T0 + timedelta(seconds=1)
        assert [(x.status, x.agent, x.reason) for x in a.handoffs] == [("closed", "ann", "asked_for_human")]
        assert a.conversation.status == "closed" and a.conversation.attributes == {"plan": "pro"}
        assert a.conversation.channel == "telegram" and a.conversation.started_at == T0
        assert [t.text for t in b.turns] == ["first", "second"] and b.turns[1].feedback == -1
        assert b.conversation.satisfaction == 4 and b.handoffs == ()
        assert c.turns == () and c.handoffs == () and c.conversation.status == "bot"

    async def test_reassign_and_pickup_times(self, store):
        await store.get_or_create("c", "web", "u", {}, T0)
        h = Handoff(0, "c", "asked_for_human", "1:asks_for_human", "", "", "web", "u", T0)
        await store.record([turn("c", 1)], status="handed_off", handoff=h)
        assert await store.recent_pickups(5) == []
        taken = await store.assign("c", "alice", T0 + timedelta(minutes=3))
        assert taken.assigned_at == T0 + timedelta(minutes=3)
        with pytest.raises(ConflictError, match="not assigned to bob"):
            await store.reassign("c", "bob", "carol", T0)
        moved = await store.reassign("c", "alice", "bob", T0 + timedelta(minutes=4))
        assert moved.agent == "bob" and moved.status == "assigned" and (await store.get("c")).assigned_agent == "bob"
        (picked,) = await store.recent_pickups(5)
        assert picked.conversation_id == "c" and picked.assigned_at - picked.created_at == timedelta(minutes=3)
        with pytest.raises(ConflictError):
            await store.release("c", "alice", "closed", T0)  # alice gave it away
        assert (await store.release("c", "bob", "closed", T0)).status == "closed"

    async def test_labels_and_search(self, store):
        await store.get_or_create("a", "web", "u1", {"customer_name": "Ada Lovelace"}, T0)
        await store.get_or_create("b", "web", "u2", {}, T0 + timedelta(seconds=5))
        await store.record([turn("a", 1, text="my parcel 100% vanished"), turn("a", 2, "bot", "Sorry")])
        await store.record([turn("b", 1, text="refund_please for order 7")])
        assert await store.set_labels("a", add=["vip", "shipping"]) == ["shipping", "vip"]
        assert await store.set_labels("a", add=["VIP"], remove=["shipping"]) == ["vip"]  # case-insensitive
        with pytest.raises(StoreError):
            await store.set_labels("missing", add=["x"])
        assert [c.id for c in await store.search("")] == ["b", "a"]  # newest first
        assert [c.id for c in await store.search("PARCEL")] == ["a"]
        assert [c.id for c in await store.search("lovelace")] == ["a"]  # the customer's name
        await store.get_or_create("b", "web", "u2", {"customer_name": "José Müller"}, T0)
        assert [c.id for c in await store.search("José Mü")] == ["b"]  # not only ASCII
        assert [c.id for c in await store.search("100%")] == ["a"]
        assert await store.search("1%0") == []  # % is a character, not a wildcard
        assert await store.search("l_v") == []  # _ too: as a wildcard it would match "Lov"elace
        assert [c.id for c in await store.search("_please")] == ["b"]
        assert [c.id for c in await store.search("", label="vip")] == ["a"]
        assert await store.search("refund", label="vip") == []
        assert [c.id for c in await store.search("", limit=1, offset=1)] == ["a"]

    async def test_canned_replies_crud(self, store):
        one = await store.save_canned_reply("thanks", "Thanks, {customer_name}!", "alice", T0)
        assert (one.shortcut, one.text, one.author) == ("thanks", "Thanks, {customer_name}!", "alice")
        with pytest.raises(ConflictError, match="exists already"):
            await store.save_canned_reply("THANKS", "x", "bob", T0)
        two = await store.save_canned_reply("bye", "Bye", "bob", T0)
        edited = await store.save_canned_reply("thanks", "Thank you!", "bob", T0, one.id)
        assert edited.id == one.id and edited.text == "Thank you!"
        assert [r.shortcut for r in await store.canned_replies()] == ["bye", "thanks"]
        with pytest.raises(StoreError):
            await store.save_canned_reply("new", "x", "bob", T0, 9999)
        await store.delete_canned_reply(two.id)
        with pytest.raises(StoreError):
            await store.delete_canned_reply(two.id)
        assert [r.id for r in await store.canned_replies()] == [one.id]
