"""The agent console on the real server: a conversation escalated through the engine reaches
the queue and the websocket, two agents race for it, the owner replies, notes stay
internal, and returning it hands the customer back to the bot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from botkit.app.console import HUB
from botkit.app.keys import AUTH, ENGINE
from botkit.app.server import outgoing_for
from botkit.engine import Engine, Event
from botkit.types import IncomingMessage, Reply

# The server and signed-in browsers are shared with the auth tests (same fixtures).
from tests.test_auth import Staff, client, staff  # noqa: F401

pytestmark = pytest.mark.slow
STATIC = Path(__file__).resolve().parent.parent / "botkit" / "app" / "static"


async def say(engine: Engine, conv: str, text: str) -> Reply:
    return await engine.handle(IncomingMessage(conv, text, channel="webchat", customer_id=f"customer-{conv}"))


async def escalate(engine: Engine, conv: str) -> Reply:
    await say(engine, conv, "where is my order TP-100482?")
    reply = await say(engine, conv, "this isn't helping, can I talk to a real person please")
    assert reply.action == "escalate" and reply.escalation.reason == "asked_for_human"
    return reply


def origin(person: Staff) -> str:
    return person.url("/").rstrip("/")


async def live(person: Staff) -> aiohttp.ClientWebSocketResponse:
    ws = await person.http.ws_connect(person.url("/api/console/ws"), headers={"Origin": origin(person)})
    assert (await next_message(ws, "hello"))["agent"]
    return ws


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str, match: Any = lambda m: True,
                       timeout: float = 15.0) -> dict[str, Any]:
    """The next pushed message of a type (and matching a predicate); others are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind and match(message):
                return message


def path(conv: str, action: str = "") -> str:
    return f"/api/console/conversations/{conv}" + (f"/{action}" if action else "")


async def test_escalation_reaches_the_queue_and_the_websocket(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice = await staff("alice")
    ws = await live(alice)
    snapshot = await next_message(ws, "queue")
    assert snapshot["event"] == "snapshot" and snapshot["waiting"] == [] and snapshot["mine"] == []

    await escalate(engine, "c1")
    pushed = await next_message(ws, "queue", lambda m: m["event"] == "handoff")
    (item,) = pushed["waiting"]
    assert item["conversation"] == "c1" and item["reason"] == "asked_for_human" and item["status"] == "waiting"
    assert item["channel"] == "webchat" and item["customer"] == "customer-c1"
    assert "2 customer turns" in item["summary"] and "real person" in item["summary"]

    status, queue = await alice.call("GET", "/api/console/queue")
    assert status == 200 and [h["conversation"] for h in queue["waiting"]] == ["c1"] and queue["mine"] == []
    assert 0 <= queue["waiting"][0]["waiting_seconds"] < 120
    # A waiting conversation can be read before taking it: the whole history, the bot's draft.
    status, conv = await alice.call("GET", path("c1"))
    assert status == 200 and conv["handoff"]["status"] == "waiting" and conv["mine"] is False
    assert [t["kind"] for t in conv["turns"]] == ["customer", "bot", "customer", "bot"]
    assert conv["turns"][1]["sources"][0]["id"] == "track-your-order"
    assert conv["turns"][3]["escalation"]["reason"] == "asked_for_human" and conv["turns"][3]["candidate"]
    await ws.close()


async def test_two_agents_never_get_the_same_conversation(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice, bob = await staff("alice"), await staff("bob")
    bob_ws = await live(bob)
    for conv in ("r1", "r2", "r3"):
        await escalate(engine, conv)
        (a_status, a_body), (b_status, b_body) = await asyncio.gather(
            alice.call("POST", path(conv, "take")), bob.call("POST", path(conv, "take")))
        assert sorted([a_status, b_status]) == [200, 409], (a_body, b_body)
        winner, loser = (alice, bob) if a_status == 200 else (bob, alice)
        winner_name, loser_name = ("alice", "bob") if winner is alice else ("bob", "alice")
        refused = b_body if a_status == 200 else a_body
        assert refused["error"] == f"{winner_name} has already taken this conversation"
        assert (await engine.store.handoff_for(conv)).agent == winner_name
        assigned = await next_message(bob_ws, "queue",
                                      lambda m, conv=conv: m["event"] == "assigned" and m["conversation"] == conv)
        assert assigned["handoff"]["agent"] == winner_name
        assert (conv in [h["conversation"] for h in assigned["mine"]]) == (winner_name == "bob")
        # The loser can do nothing with it, and is told who has it.
        for action, body in (("messages", {"text": "hello"}), ("notes", {"text": "x"}), ("return", None),
                             ("close", None)):
            status, answer = await loser.call("POST", path(conv, action), body)
            assert status == 403 and f"assigned to agent {winner_name}" in answer["error"]
        assert (await loser.call("GET", path(conv)))[0] == 403
        assert (await loser.call("POST", path(conv, "take")))[0] == 409
        assert (await winner.call("POST", path(conv, "take")))[0] == 200  # a double click is harmless
        turns = await engine.history(conv)
        assert not any(t.role == "agent" for t in turns) and loser_name not in {t.author for t in turns}
    await bob_ws.close()


async def test_owner_replies_notes_stay_internal_and_return_to_bot(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    events: list[Event] = []

    async def record(event: Event) -> None:
        events.append(event)

    engine.subscribe(record)
    alice = await staff("alice")
    await escalate(engine, "c3")
    ws = await live(alice)
    status, taken = await alice.call("POST", path("c3", "take"))
    assert status == 200 and taken["handoff"]["agent"] == "alice"
    joined = next(e for e in events if e.kind == "assigned")
    assert "alice from our team has joined" in outgoing_for(joined).text  # what the customer is told

    # A reply to the customer: stored as an agent turn, emitted, pushed to the console.
    status, sent = await alice.call("POST", path("c3", "messages"), {"text": "Hi, I'm Alice. Let me check TP-100482."})
    assert status == 200 and sent["turn"]["kind"] == "agent" and sent["turn"]["author"] == "alice"
    last = (await engine.history("c3"))[-1]
    assert (last.role, last.author, last.text) == ("agent", "alice", "Hi, I'm Alice. Let me check TP-100482.")
    agent_event = next(e for e in events if e.kind == "agent")
    assert outgoing_for(agent_event).text == last.text and outgoing_for(agent_event).kind == "agent"
    pushed = await next_message(ws, "turn", lambda m: m["turn"]["kind"] == "agent")
    assert pushed["conversation"] == "c3" and pushed["turn"]["text"] == last.text

    # An internal note: stored, shown to agents, never delivered to the customer.
    status, noted = await alice.call("POST", path("c3", "notes"), {"text": "VIP customer; courier claim opened."})
    assert status == 200 and noted["turn"]["kind"] == "note"
    note = (await engine.history("c3"))[-1]
    assert (note.role, note.action, note.author) == ("system", "note", "alice")
    note_event = next(e for e in events if e.kind == "note")
    assert outgoing_for(note_event) is None
    assert (await next_message(ws, "turn", lambda m: m["turn"]["kind"] == "note"))["turn"]["text"] == note.text

    # The customer writes while a human has the conversation: the bot stays silent, the agent sees it live.
    quiet = await say(engine, "c3", "thanks, I'll wait")
    assert quiet.action == "handoff" and quiet.text == ""
    seen = await next_message(ws, "turn", lambda m: m["turn"]["kind"] == "customer")
    assert seen["turn"]["text"] == "thanks, I'll wait"

    status, answer = await alice.call("POST", path("c3", "messages"), {"text": "   "})
    assert status == 400 and "empty" in answer["error"]

    # Back to the bot: the customer is told, and the bot answers the next question again.
    status, returned = await alice.call("POST", path("c3", "return"))
    assert status == 200 and returned["handoff"]["status"] == "returned"
    moved = await next_message(ws, "queue", lambda m: m["event"] == "returned")
    assert moved["mine"] == [] and moved["waiting"] == []
    assert (await engine.store.get("c3")).status == "bot"
    reply = await say(engine, "c3", "how long does a refund take to reach my card?")
    assert reply.action == "answer" and reply.sources[0].id == "refund-timing"
    status, answer = await alice.call("POST", path("c3", "messages"), {"text": "one more thing"})
    assert status == 409 and "not handed off" in answer["error"]
    # The agent can still read the conversation they handled.
    status, conv = await alice.call("GET", path("c3"))
    assert status == 200 and conv["turns"][-1]["sources"][0]["id"] == "refund-timing"
    await ws.close()


async def test_close_and_conflicts(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice = await staff("alice")
    status, answer = await alice.call("POST", path("nope", "take"))
    assert status == 404 and "no conversation" in answer["error"]
    await say(engine, "calm", "how long does a refund take to reach my card?")
    status, answer = await alice.call("POST", path("calm", "take"))
    assert status == 409 and "not waiting for an agent" in answer["error"]
    await escalate(engine, "c4")
    status, answer = await alice.call("POST", path("c4", "messages"), {"text": "hi"})
    assert status == 409 and "take it first" in answer["error"]
    assert (await alice.call("POST", path("c4", "take")))[0] == 200
    status, closed = await alice.call("POST", path("c4", "close"))
    assert status == 200 and closed["handoff"]["status"] == "closed"
    assert (await engine.store.get("c4")).status == "closed"
    assert (await alice.call("POST", path("c4", "messages"), {"text": "hi"}))[0] == 409
    assert (await alice.call("GET", "/api/console/queue"))[1]["mine"] == []


async def test_websocket_needs_a_session_and_this_origin(client: Any, staff: Any) -> None:
    engine = client.app[ENGINE]
    alice, bob = await staff("alice"), await staff("bob")
    for headers in ({"Origin": "http://evil.example"}, {}):  # cross-site, or no Origin with a cookie
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await alice.http.ws_connect(alice.url("/api/console/ws"), headers=headers)
        assert refused.value.status == 403
    async with aiohttp.ClientSession() as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await anonymous.ws_connect(alice.url("/api/console/ws"), headers={"Origin": origin(alice)})
        assert refused.value.status == 401
        token = client.app[AUTH].create_token("alice", "wallboard")  # scripts: bearer token, no Origin
        ws = await anonymous.ws_connect(alice.url("/api/console/ws"), headers={"Authorization": f"Bearer {token}"})
        assert (await next_message(ws, "hello"))["agent"] == "alice"
        await ws.close()
    # Watching someone else's conversation is refused; its turns are not pushed.
    await escalate(engine, "c5")
    assert (await bob.call("POST", path("c5", "take")))[0] == 200
    ws = await live(alice)
    await ws.send_json({"type": "watch", "conversation": "c5"})
    error = await next_message(ws, "error")
    assert error["status"] == 403 and "with agent bob" in error["error"]
    await bob.call("POST", path("c5", "messages"), {"text": "private to this conversation"})
    await say(engine, "c6", "hello there")  # an unrelated event, to know the hub got past c5's turn
    await asyncio.sleep(0.2)
    await ws.send_json({"type": "ping"})
    skipped = []
    async with asyncio.timeout(10):
        while (message := await ws.receive_json())["type"] != "pong":
            skipped.append(message)
    assert not any(m["type"] == "turn" for m in skipped)
    await ws.close()


async def test_page_and_script_render_text_only(client: Any, staff: Any) -> None:
    alice = await staff("alice")
    async with alice.http.get(alice.url("/console")) as r:
        assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
        page = await r.text()
    assert '<script src="/static/console/console.js"' in page and "<script>" not in page  # no inline script
    async with alice.http.get(alice.url("/static/console/console.js")) as r:
        assert r.status == 200 and "WebSocket" in await r.text()
    async with alice.http.get(alice.url("/static/console/..%2Fconsole.py")) as r:
        assert r.status == 404
    script = (STATIC / "console.js").read_text(encoding="utf-8") + (STATIC / "staff.js").read_text(encoding="utf-8")
    assert "textContent" in script and "setInterval(tick" in script  # a display timer, no polling fetch loop
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert not re.search(r"setInterval\([^)]*(api|fetch)", script)


# -- an open socket is re-checked: revoked, disabled, signed out, role removed -------------------

async def until_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every message pushed until the server closes the socket (which must happen in time)."""
    received = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return received
            received.append(msg.json())


def customer_data(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "turn" or m.get("waiting") or m.get("mine") or m.get("handoff")]


async def token_socket(client: Any, session: aiohttp.ClientSession,
                       name: str) -> tuple[aiohttp.ClientWebSocketResponse, int]:
    auth = client.app[AUTH]
    token = auth.create_token(name, "wallboard")
    (row,) = [t for t in auth.list_tokens(name) if t["label"] == "wallboard"]
    ws = await session.ws_connect(str(client.make_url("/api/console/ws")), headers={"Authorization": f"Bearer {token}"})
    assert (await next_message(ws, "hello"))["agent"] == name
    assert (await next_message(ws, "queue"))["event"] == "snapshot"
    return ws, row["id"]


async def test_a_revoked_token_socket_gets_no_handoff_and_is_closed(client: Any, staff: Any) -> None:
    engine, auth = client.app[ENGINE], client.app[AUTH]
    assert client.app[HUB].recheck_s == 5.0  # server.console_recheck_s, the default
    client.app[HUB].recheck_s = 60.0  # a push is checked at once; the interval must not matter here
    await staff("alice")
    async with aiohttp.ClientSession() as script:
        ws, token_id = await token_socket(client, script, "alice")
        auth.revoke_token(token_id)
        started = asyncio.get_running_loop().time()
        await escalate(engine, "leak1")  # a hand-off with the customer's summary
        received = await until_closed(ws)
        assert asyncio.get_running_loop().time() - started < 30
        assert customer_data(received) == [] and "real person" not in str(received)
        assert ws.close_code == 4401


async def test_a_disabled_account_socket_is_closed_within_the_interval(client: Any, staff: Any) -> None:
    auth, hub = client.app[AUTH], client.app[HUB]
    hub.recheck_s = 0.5
    await staff("alice")
    async with aiohttp.ClientSession() as script:
        ws, _ = await token_socket(client, script, "alice")
        loop = asyncio.get_running_loop()
        auth.disable_user("alice")  # nothing happens on the server after this: the idle re-check finds it
        started = loop.time()
        assert customer_data(await until_closed(ws)) == []
        assert ws.close_code == 4401 and loop.time() - started < 0.5 + 10  # the interval, plus slack for a busy CPU


async def test_a_session_socket_is_closed_at_sign_out_and_role_change(client: Any, staff: Any) -> None:
    engine, auth = client.app[ENGINE], client.app[AUTH]
    client.app[HUB].recheck_s = 60.0
    alice, bob = await staff("alice"), await staff("bob")
    ws = await live(alice)
    assert (await next_message(ws, "queue"))["event"] == "snapshot"
    assert (await alice.call("POST", "/signout"))[0] == 303
    await escalate(engine, "leak2")
    received = await until_closed(ws)
    assert customer_data(received) == [] and "real person" not in str(received) and ws.close_code == 4401
    # Bob becomes an operator: his open console is closed, with the reason.
    bob_ws = await live(bob)
    assert (await next_message(bob_ws, "queue"))["event"] == "snapshot"  # leak2 waits: bob may see it now
    auth.set_role("bob", "operator")
    await escalate(engine, "leak3")
    received = await until_closed(bob_ws)
    assert customer_data(received) == [] and bob_ws.close_code == 4403
    # A socket whose credential is fine keeps working.
    carol = await staff("carol")
    carol_ws = await live(carol)
    await escalate(engine, "fine1")
    pushed = await next_message(carol_ws, "queue", lambda m: m["event"] == "handoff")
    assert [h["conversation"] for h in pushed["waiting"]][-1] == "fine1"
    await carol_ws.close()
