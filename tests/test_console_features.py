"""The fuller agent console (issue 12): no clarify buttons after a hand-off, the queue place and
expected wait, the customer panel, canned replies, labels, reassigning, search and "save this
answer to the KB"; each with the bad input it must refuse (a clear 4xx, nothing stored)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from botkit.app.keys import ENGINE, KB
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules
from botkit.store import SQLiteConversationStore
from botkit.testing import InMemoryConversationStore, ScriptedResponder, StaticRetriever
from botkit.testing.fakes import hit
from botkit.types import Candidate, Handoff, IncomingMessage, Source
from botkit.waiting import expected_wait, places, queue_text
from connectors.webchat import protocol as proto
from tests.test_auth import client, staff  # noqa: F401
from tests.test_console import escalate, path

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
OPTIONS = (Source("damaged-item", "My item arrived damaged", 0.61), Source("furniture-warranty", "Furniture warranty",
                                                                         0.6))


def clarify() -> Candidate:
    return Candidate("clarify", "Did you mean one of these?", 0.4, grounded=False, options=OPTIONS)


# -- (8) a hand-off never carries the bot's clarify buttons ------------------------------------

async def test_a_handoff_reply_has_no_clarify_options_on_any_channel() -> None:
    retriever = StaticRetriever({"my chair broke": [hit("damaged-item", "Damaged on arrival", 0.61)],
                                 "this is useless": [hit("damaged-item", "Damaged on arrival", 0.61)]})
    engine = Engine(retriever=retriever, responder=ScriptedResponder(lambda request: clarify()),
                    store=InMemoryConversationStore(), rules=build_rules(EscalationConfig()))
    async with engine:
        asked = await engine.handle(IncomingMessage("c", "my chair broke", channel="webchat"))
        assert asked.action == "clarify" and [o.title for o in asked.options] == [o.title for o in OPTIONS]
        handed = await engine.handle(IncomingMessage("c", "this is useless", channel="webchat"))
        assert handed.action == "escalate" and handed.escalation.reason == "frustration"
        assert handed.options == ()  # what every channel renders buttons from
        stored = (await engine.history("c"))[-1]
        assert "options" not in stored.meta  # a resumed or repeated reply cannot bring them back either
        assert stored.meta["candidate"] == "Did you mean one of these?"  # the agent still sees the bot's draft
        frame = proto.reply(handed, "m2", proto.url_template(None))
        assert "options" not in frame and frame["action"] == "escalate"


# -- (7) the place in the queue and an honest expected wait -----------------------------------

def handoff(n: int, created: datetime, assigned: datetime | None = None) -> Handoff:
    return Handoff(n, f"c{n}", "asked_for_human", "1:asks_for_human", "", "", "webchat", f"u{n}", created,
                   "assigned" if assigned else "waiting", "alice" if assigned else None, None, assigned)


def test_expected_wait_is_the_median_of_recent_pickups_or_unknown() -> None:
    now = T0 + timedelta(hours=1)
    two = [handoff(1, T0, T0 + timedelta(minutes=2)), handoff(2, T0, T0 + timedelta(minutes=4))]
    assert expected_wait(two, now) is None  # too few to say anything honest
    three = [*two, handoff(3, T0, T0 + timedelta(minutes=30))]
    assert expected_wait(three, now) == 240.0  # the median: one slow pick-up does not dominate
    old = [handoff(i, T0 - timedelta(days=30), T0 - timedelta(days=30) + timedelta(minutes=1)) for i in range(5)]
    assert expected_wait(old, now) is None  # last month does not speak for today
    waiting = [handoff(12, T0 + timedelta(minutes=5)), handoff(11, T0)]
    first, second = places(waiting, three, now)
    assert (first.handoff.id, first.position, second.handoff.id, second.position) == (11, 1, 12, 2)
    assert second.text == "You're number 2 in the queue. Recently, customers waited about 4 minutes for an agent."
    assert queue_text(1, None) == "You're next in line for an agent. We can't estimate the wait yet."


async def test_an_old_store_gains_the_pickup_column_and_keeps_its_handoffs(tmp_path: Path) -> None:
    db_path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(db_path)
    old.executescript("""
        CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation_id TEXT NOT NULL,
            reason TEXT NOT NULL, rule TEXT NOT NULL, detail TEXT NOT NULL, summary TEXT NOT NULL,
            channel TEXT NOT NULL, customer_id TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
            agent TEXT, closed_at TEXT);
        INSERT INTO handoffs (conversation_id, reason, rule, detail, summary, channel, customer_id, created_at, status)
            VALUES ('c', 'frustration', '2:frustration', '', '', 'webchat', 'u', '2026-11-01T10:00:00+00:00',
                    'waiting');""")
    old.commit()
    old.close()
    store = SQLiteConversationStore(db_path)
    async with _started(store):
        (kept,) = await store.handoffs("waiting")
        assert kept.conversation_id == "c" and kept.assigned_at is None
        await store.get_or_create("c", "webchat", "u", {}, T0)
        taken = await store.assign("c", "alice", T0)
        assert taken.assigned_at == T0 and [h.id for h in await store.recent_pickups(5)] == [kept.id]


class _started:
    def __init__(self, store: SQLiteConversationStore):
        self.store = store

    async def __aenter__(self) -> SQLiteConversationStore:
        await self.store.start()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()


# -- (1) who the customer is -------------------------------------------------------------------

def test_the_prechat_profile_frame_is_checked() -> None:
    profile = proto.parse('{"type": "profile", "id": "p", "name": "  Ada   Lovelace ", "email": "ada@example.com"}',
                          2000)
    assert profile == proto.Profile("Ada Lovelace", "ada@example.com", "p")
    for frame, problem in (('{"type": "profile", "name": "", "email": ""}', "give a name or an e-mail"),
                           ('{"type": "profile", "name": "Ada", "email": "not-an-address"}', "does not look right"),
                           ('{"type": "profile", "name": "' + "x" * 101 + '"}', "longer than 100"),
                           ('{"type": "profile", "name": 5}', "must be strings")):
        with pytest.raises(proto.ProtocolError, match=problem):
            proto.parse(frame, 2000)


async def test_the_customer_panel_shows_what_the_channel_gave(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice = await staff("alice")
    await escalate(engine, "p1")
    await engine.store.get_or_create("p1", "webchat", "customer-p1",
                                     {"customer_name": "Ada Lovelace", "customer_email": "ada@example.com"}, T0)
    status, conv = await alice.call("GET", path("p1"))
    assert status == 200
    assert conv["profile"] == {"name": "Ada Lovelace", "email": "ada@example.com", "username": None,
                               "language": None, "channel": "webchat", "user_id": "customer-p1"}
    assert conv["labels"] == []
    queue = (await alice.call("GET", "/api/console/queue"))[1]
    assert [(h["conversation"], h["customer_name"]) for h in queue["waiting"]] == [("p1", "Ada Lovelace")]


# -- (3) canned replies ------------------------------------------------------------------------

async def test_canned_replies_crud_placeholders_and_bad_input(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice = await staff("alice")
    status, made = await alice.call("POST", "/api/console/canned",
                                    {"shortcut": "hello", "text": "Hi {customer_name}, I'm {agent_name}."})
    assert status == 201 and made["canned"]["shortcut"] == "hello" and made["canned"]["author"] == "alice"
    rid = made["canned"]["id"]
    status, bad = await alice.call("POST", "/api/console/canned", {"shortcut": "oops", "text": "Hi {custmer_name}"})
    assert status == 400 and "unknown placeholder {custmer_name}" in bad["error"] and "{customer_name}" in bad["error"]
    assert (await alice.call("POST", "/api/console/canned", {"shortcut": "HELLO", "text": "x"}))[0] == 409
    for body in ({"shortcut": "", "text": "x"}, {"shortcut": "a b", "text": "x"}, {"shortcut": "ok", "text": " "},
                 {"shortcut": "ok", "text": "x" * 4001}, {"text": "x"}):
        assert (await alice.call("POST", "/api/console/canned", body))[0] == 400, body
    assert [r["shortcut"] for r in (await alice.call("GET", "/api/console/canned"))[1]["canned"]] == ["hello"]

    await escalate(engine, "k1")
    status, filled = await alice.call("POST", path("k1", f"canned/{rid}"))
    assert status == 200 and filled == {"text": "Hi there, I'm alice.", "missing": ["customer_name"]}
    await engine.store.get_or_create("k1", "webchat", "customer-k1", {"customer_name": "Grace"}, T0)
    assert (await alice.call("POST", path("k1", f"canned/{rid}")))[1] == {"text": "Hi Grace, I'm alice.",
                                                                          "missing": []}
    assert (await alice.call("POST", path("k1", "canned/999")))[0] == 404
    assert (await alice.call("POST", path("k1", "canned/abc")))[0] == 404

    status, edited = await alice.call("PUT", f"/api/console/canned/{rid}", {"shortcut": "hi", "text": "Hello!"})
    assert status == 200 and edited["canned"]["text"] == "Hello!"
    assert (await alice.call("PUT", "/api/console/canned/999", {"shortcut": "x", "text": "y"}))[0] == 404
    assert (await alice.call("DELETE", f"/api/console/canned/{rid}"))[0] == 200
    assert (await alice.call("DELETE", f"/api/console/canned/{rid}"))[0] == 404
    assert (await alice.call("GET", "/api/console/canned"))[1]["canned"] == []


# -- (5) labels and (2) search -----------------------------------------------------------------

async def test_labels_and_search(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice, bob = await staff("alice"), await staff("bob")
    await escalate(engine, "s1")
    await escalate(engine, "s2")
    await engine.handle(IncomingMessage("s3", "do you ship 100% of orders abroad?", channel="webchat",
                                        customer_id="customer-s3"))  # with the bot: not for agents to read

    status, labelled = await alice.call("POST", path("s1", "labels"), {"add": ["refund", "VIP customer"]})
    assert status == 200 and labelled["labels"] == ["refund", "VIP customer"]
    status, labelled = await alice.call("POST", path("s1", "labels"), {"add": ["vip customer"], "remove": ["refund"]})
    assert labelled["labels"] == ["VIP customer"]  # case-insensitive: no duplicate
    for body in ({"add": "refund"}, {"add": [""]}, {"add": ["<b>"]}, {"add": ["x" * 41]}, {"add": [3]}):
        assert (await alice.call("POST", path("s1", "labels"), body))[0] == 400, body
    too_many = {"add": [f"l{i}" for i in range(20)]}
    assert (await alice.call("POST", path("s1", "labels"), too_many))[0] == 400
    assert (await alice.call("GET", path("s1")))[1]["labels"] == ["VIP customer"]
    assert (await alice.call("POST", path("nope", "labels"), {"add": ["x"]}))[0] == 404

    status, found = await alice.call("GET", "/api/console/search?q=TP-100482")
    assert status == 200 and {r["id"] for r in found["results"]} == {"s1", "s2"} and found["more"] is False
    assert all("TP-100482" in r["snippet"] for r in found["results"])
    found = (await alice.call("GET", "/api/console/search?label=vip+customer"))[1]
    assert [r["id"] for r in found["results"]] == ["s1"] and found["results"][0]["labels"] == ["VIP customer"]
    found = (await alice.call("GET", "/api/console/search?q=100%25"))[1]  # "100%": taken literally
    assert found["results"] == [] and found["hidden"] == 1  # s3 matches, but it is not alice's to read
    admin = await staff("root", "admin")
    assert [r["id"] for r in (await admin.call("GET", "/api/console/search?q=100%25"))[1]["results"]] == ["s3"]
    assert (await admin.call("GET", "/api/console/search?q=1%250"))[1]["results"] == []  # % is no wildcard

    status, refused = await alice.call("GET", "/api/console/search?q=" + "x" * 5000)
    assert status == 400 and "the limit is 200" in refused["error"]
    for bad in ("page=0", "page=-1", "page=abc", "page=100000", "label=" + "x" * 41):
        assert (await alice.call("GET", "/api/console/search?" + bad))[0] == 400, bad
    assert (await bob.call("GET", "/api/console/search?q=&page=2"))[1]["results"] == []


# -- (4) reassign ------------------------------------------------------------------------------

async def test_reassign_to_a_colleague_and_bad_targets(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice, bob = await staff("alice"), await staff("bob")
    await staff("olivia", "operator")
    await escalate(engine, "r1")
    assert (await alice.call("POST", path("r1", "reassign"), {"agent": "bob"}))[0] == 409  # not taken yet
    assert (await alice.call("POST", path("r1", "take")))[0] == 200
    status, agents = await alice.call("GET", "/api/console/agents")
    assert status == 200 and {a["name"] for a in agents["agents"]} == {"alice", "bob"}  # not the operator

    status, refused = await alice.call("POST", path("r1", "reassign"), {"agent": "nobody"})
    assert status == 404 and "no staff account 'nobody'" in refused["error"]
    status, refused = await alice.call("POST", path("r1", "reassign"), {"agent": "olivia"})
    assert status == 400 and "olivia cannot take conversations (role operator)" in refused["error"]
    assert (await alice.call("POST", path("r1", "reassign"), {"agent": "alice"}))[0] == 400
    assert (await alice.call("POST", path("r1", "reassign"), {}))[0] == 400
    assert (await bob.call("POST", path("r1", "reassign"), {"agent": "bob"}))[0] == 403  # not bob's to give

    status, moved = await alice.call("POST", path("r1", "reassign"), {"agent": "bob"})
    assert status == 200 and moved["handoff"]["agent"] == "bob" and moved["handoff"]["status"] == "assigned"
    assert [h["conversation"] for h in (await bob.call("GET", "/api/console/queue"))[1]["mine"]] == ["r1"]
    assert (await alice.call("POST", path("r1", "messages"), {"text": "still here?"}))[0] == 403
    assert (await bob.call("POST", path("r1", "messages"), {"text": "Bob here, I'll take it from now."}))[0] == 200


# -- (6) save this answer to the KB ------------------------------------------------------------

async def test_an_agent_reply_becomes_a_redacted_kb_proposal(client: Any, staff: Any) -> None:
    from training.gaps import ProposalStore

    engine = client.app[ENGINE]
    alice = await staff("alice")
    await escalate(engine, "kb1")
    await alice.call("POST", path("kb1", "take"))
    await engine.handle(IncomingMessage("kb1", "can I get my sofa engraved? mail me at ada@example.com",
                                        channel="webchat", customer_id="customer-kb1"))
    status, sent = await alice.call("POST", path("kb1", "messages"),
                                    {"text": "Yes: engraving costs 15 EUR and adds two days to delivery."})
    seq = sent["turn"]["seq"]
    status, made = await alice.call("POST", path("kb1", f"turns/{seq}/propose"))
    assert status == 201, made
    proposal = made["proposal"]
    assert proposal["questions"] == ["can I get my sofa engraved? mail me at [EMAIL]"]  # redacted
    assert proposal["answer"] == "Yes: engraving costs 15 EUR and adds two days to delivery."
    assert proposal["status"] == "proposed" and proposal["sources"] == ["kb1"]
    with ProposalStore(client.app[KB].store.path) as store:  # what the KB editor reviews
        assert proposal["id"] in [p.id for p in store.list("proposed")]
    status, again = await alice.call("POST", path("kb1", f"turns/{seq}/propose"))
    assert status == 409 and "proposed already" in again["error"]
    assert (await alice.call("POST", path("kb1", "turns/1/propose")))[0] == 400  # a customer turn
    assert (await alice.call("POST", path("kb1", "turns/999/propose")))[0] == 400
    assert (await alice.call("POST", path("kb1", "turns/x/propose")))[0] == 404


class Recorder:
    """Stands in for the web chat channel: keeps what the server sends it."""

    name = "webchat"

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, conversation: Any, message: Any) -> None:
        self.sent.append(message)


async def test_waiting_customers_are_told_their_place_and_the_recent_wait(client: Any, staff: Any) -> None:
    import asyncio

    from botkit.app.keys import CONNECTORS

    engine = client.app[ENGINE]
    now = [T0]
    engine.clock = lambda: now[0]
    recorder = Recorder()
    client.app[CONNECTORS]["webchat"] = recorder
    for i, minutes in enumerate((2, 4, 9)):  # three pick-ups: 2, 4 and 9 minutes after the hand-off
        now[0] = T0 + timedelta(hours=i)
        await escalate(engine, f"w{i}")
        now[0] += timedelta(minutes=minutes)
        await engine.take(f"w{i}", "alice")
    now[0] = T0 + timedelta(hours=5)
    await escalate(engine, "w-late")
    now[0] += timedelta(seconds=30)
    await escalate(engine, "w-later")

    def notices(conv: str) -> list[Any]:
        return [m for m in recorder.sent if m.event == "queue" and m.conversation_id == conv]

    async with asyncio.timeout(10):
        while not notices("w-later"):
            await asyncio.sleep(0.05)
    last = notices("w-later")[-1]
    assert last.data == {"position": 2, "expected_wait_s": 240.0, "initial": True}
    assert last.text == "You're number 2 in the queue. Recently, customers waited about 4 minutes for an agent."
    assert notices("w-late")[-1].data["position"] == 1
    # The first one is taken: the second moves up, and is told so.
    await engine.take("w-late", "alice")
    async with asyncio.timeout(10):
        while notices("w-later")[-1].data["position"] != 1:
            await asyncio.sleep(0.05)
    assert notices("w-later")[-1].data["initial"] is False
