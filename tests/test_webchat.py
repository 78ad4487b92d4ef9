"""The web chat channel end to end: a real aiohttp server on loopback (``aiohttp_client``),
``botkit.app.server.build_app`` with ``channels.webchat`` from bot.yaml, the real engine on the
demo knowledge base (real embedder, FAISS, SQLite). Every test asserts what the customer's
socket receives.

The demo KB is imported once per module (importing it is the slow part, ~10 s) and each test
opens its own KnowledgeBase on it, with its own conversation store and session table.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import WSMsgType, WSServerHandshakeError
from conftest import REPO, open_kb

from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.errors import ConfigError
from botkit.escalation import EscalationConfig, build_rules
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from connectors.base import validate_section
from connectors.webchat import WebChatConfig
from connectors.webchat import protocol as proto
from connectors.webchat.sessions import SESSIONS_DB
from knowledge.retriever import KnowledgeRetriever

pytestmark = pytest.mark.slow

WS = "/channels/webchat/ws"
REFUND_Q = "how long does a refund take to reach my card?"
XSS = "<script>alert('x')</script><img src=x onerror=\"alert(1)\"> & \"quotes\" </b>"


@pytest.fixture(scope="module")
def kb_dir(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> Path:
    """A copy of the session's imported demo project, shared by the module."""
    root = tmp_path_factory.mktemp("webchat") / "demo"
    shutil.copytree(demo_template, root)
    return root


class StreamingExtractive(ExtractiveResponder):
    """The extractive responder, streamed word by word (as a generative responder streams)."""

    name = "streaming-test"

    async def respond_stream(self, request):  # type: ignore[no-untyped-def]
        candidate = await self.respond(request)
        for word in re.findall(r"\S+\s*", candidate.text):
            yield word
        yield candidate


class Chat:
    """One running server and helpers to talk to it like a browser."""

    def __init__(self, client: Any, engine: Engine, app: Any):
        self.client = client
        self.engine = engine
        self.app = app

    @property
    def origin(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def socket(self, session: str | None = None, **kw: Any) -> tuple[Any, dict[str, Any]]:
        ws = await self.client.ws_connect(WS, **kw)
        await ws.send_json({"type": "hello", "session": session})
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        return ws, welcome

    async def ask(self, ws: Any, text: str, id: str = "m1") -> list[dict[str, Any]]:
        await ws.send_json({"type": "message", "id": id, "text": text})
        return await until(ws, lambda f: f["type"] in ("reply", "error") and f.get("id") == id)


async def recv(ws: Any, timeout: float = 20) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return json.loads(msg.data)


async def until(ws: Any, done: Callable[[dict[str, Any]], bool], timeout: float = 30) -> list[dict[str, Any]]:
    """Frames up to and including the first one for which ``done`` is true."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(await recv(ws, timeout))
            if done(frames[-1]):
                return frames


async def quiet(ws: Any, seconds: float = 0.3) -> list[dict[str, Any]]:
    """Whatever arrives within ``seconds`` (to assert that nothing, or nothing more, came)."""
    frames = []
    try:
        while True:
            frames.append(await recv(ws, seconds))
    except TimeoutError:
        return frames


MakeChat = Callable[..., Awaitable[Chat]]


@pytest.fixture
async def make_chat(kb_dir: Path, embedder, tmp_path: Path, aiohttp_client) -> MakeChat:
    """Start a server for a project whose bot.yaml has ``channels.webchat`` = the keyword arguments.
    Calling it again (after closing the first) is a restart on the same state."""

    async def make(responder: Any = None, server: dict[str, Any] | None = None, **webchat: Any) -> Chat:
        root = tmp_path / "bot"
        root.mkdir(exist_ok=True)
        config = {"name": "Tallow & Pine help centre", "state_dir": str(tmp_path / "state"),
                  "server": server or {}, "channels": {"webchat": webchat}}
        (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        project = Project.load(root)
        engine = Engine(retriever=KnowledgeRetriever(open_kb(kb_dir, embedder)),
                        responder=responder or ExtractiveResponder(),
                        store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                        rules=build_rules(EscalationConfig()), config=project.config.dialogue)
        app = build_app(project, engine)
        client = await aiohttp_client(app)
        return Chat(client, engine, app)

    return make


# -- a conversation ----------------------------------------------------------------------------------

async def test_question_gets_typing_then_a_reply_with_its_source(make_chat: MakeChat):
    chat = await make_chat(source_url_template="https://help.example.com/articles/{id}", greeting="Hello there!")
    ws, welcome = await chat.socket()
    assert welcome["resumed"] is False and welcome["history"] == [] and welcome["status"] == "bot"
    assert welcome["conversation"].startswith("webchat:") and len(welcome["session"]) >= 40
    assert welcome["title"] == "Tallow & Pine help centre" and welcome["greeting"] == "Hello there!"
    assert welcome["max_message_chars"] == 2000

    frames = await chat.ask(ws, REFUND_Q, id="q-1")
    assert [f["type"] for f in frames] == ["ack", "typing", "reply"]
    assert frames[0] == {"type": "ack", "for": "message", "id": "q-1"} and frames[1] == {"type": "typing", "on": True}
    reply = frames[2]
    assert reply["action"] == "answer" and reply["turn"] == 2 and reply["escalation"] is None
    assert reply["sources"][0] == {"id": "refund-timing", "title": reply["sources"][0]["title"],
                                   "url": "https://help.example.com/articles/refund-timing"}
    assert "refund" in reply["text"].lower()
    assert await recv(ws) == {"type": "typing", "on": False}

    turns = await chat.engine.history(welcome["conversation"])
    assert [(t.role, t.text) for t in turns] == [("customer", REFUND_Q), ("bot", reply["text"])]
    conv = await chat.engine.store.get(welcome["conversation"])
    assert conv is not None and conv.channel == "webchat"

    await ws.send_json({"type": "ping", "data": 12345})
    assert await recv(ws) == {"type": "pong", "data": 12345}


async def test_streamed_deltas_grow_and_the_final_reply_is_authoritative(make_chat: MakeChat):
    chat = await make_chat(responder=StreamingExtractive())
    ws, _ = await chat.socket()
    frames = await chat.ask(ws, REFUND_Q, id=7)
    deltas = [f for f in frames if f["type"] == "delta"]
    assert len(deltas) > 3 and all(f["id"] == 7 for f in deltas)
    assert "".join(f["text"] for f in deltas) == frames[-1]["text"] and frames[-1]["type"] == "reply"
    assert [f["type"] for f in frames[:2]] == ["ack", "typing"]


async def test_a_session_resumes_after_a_disconnect_and_after_a_restart(make_chat: MakeChat, tmp_path: Path):
    chat = await make_chat(source_url_template="https://help.example.com/a/{id}")
    ws, first = await chat.socket()
    reply = (await chat.ask(ws, REFUND_Q))[-1]
    await ws.close()

    ws, again = await chat.socket(first["session"])
    assert again["resumed"] is True and again["conversation"] == first["conversation"]
    assert again["session"] == first["session"]
    customer, bot = again["history"]
    assert customer["role"] == "customer" and customer["text"] == REFUND_Q and customer["turn"] == 1
    assert bot["role"] == "bot" and bot["text"] == reply["text"] and bot["turn"] == 2 and bot["action"] == "answer"
    assert bot["sources"] == reply["sources"] and bot["sources"][0]["url"].endswith("/a/refund-timing")
    assert re.match(r"\d{4}-\d\d-\d\dT", bot["at"])
    await ws.close()

    ws, other = await chat.socket("not-a-token-we-issued")  # a forged or expired token: a new conversation
    assert other["resumed"] is False and other["conversation"] != first["conversation"] and other["history"] == []
    await ws.close()

    await chat.client.close()  # the server stops ...
    chat = await make_chat(source_url_template="https://help.example.com/a/{id}")  # ... and starts again
    ws, restarted = await chat.socket(first["session"])
    assert restarted["resumed"] is True and restarted["conversation"] == first["conversation"]
    assert [h["text"] for h in restarted["history"]] == [REFUND_Q, reply["text"]]
    frames = await chat.ask(ws, "and how long do I have to return something?", id="m2")
    assert frames[-1]["type"] == "reply" and frames[-1]["turn"] == 4  # the same conversation goes on

    with sqlite3.connect(tmp_path / "state" / SESSIONS_DB) as db:  # the token itself is never stored
        dump = "\n".join(db.iterdump())
    assert first["session"] not in dump and first["conversation"] in dump


async def test_a_long_conversation_is_windowed_not_loaded_whole(make_chat: MakeChat):
    """20k stored turns: the welcome carries the last 50 (and a cursor to older ones), and a new
    message costs about what it costs in a short conversation."""
    from datetime import UTC, datetime

    from botkit.types import Turn

    chat = await make_chat()
    questions = ["can I pay with paypal", "do you ship to canada", "how do I reset my password",
                 "where is my parcel", REFUND_Q]

    async def seconds_per_message(ws: Any) -> float:
        started = time.perf_counter()
        for i, q in enumerate(questions):
            assert (await chat.ask(ws, q, id=f"w{i}"))[-1]["type"] == "reply"
        return (time.perf_counter() - started) / len(questions)

    short_ws, _ = await chat.socket()
    await chat.ask(short_ws, "hello", id="warm-up")
    long_ws, long_welcome = await chat.socket()
    conv = long_welcome["conversation"]
    await chat.ask(long_ws, "hello", id="first")  # creates the conversation (turns 1 and 2)
    await long_ws.close()
    at = datetime.now(UTC)
    await chat.engine.store.record([Turn(conv, seq, "agent" if seq % 2 else "bot", f"old turn {seq} " + "x" * 80, at,
                                         action="agent" if seq % 2 else "answer", author="Dana",
                                         meta={"grounded": True}) for seq in range(3, 20_003)])

    long_ws, resumed = await chat.socket(long_welcome["session"])
    size = len(proto.dumps(resumed))
    assert len(resumed["history"]) == proto.WELCOME_TURNS and resumed["history"][-1]["turn"] == 20_002
    assert size < 50_000, f"the welcome frame is {size} bytes"
    assert resumed["before"] == 20_002 - proto.WELCOME_TURNS + 1
    await long_ws.send_json({"type": "history", "before": resumed["before"], "limit": 3, "id": "h1"})
    page = await until(long_ws, lambda f: f["type"] == "history")
    assert [h["turn"] for h in page[-1]["history"]] == [19_950, 19_951, 19_952] and page[-1]["before"] == 19_950
    assert page[-1]["id"] == "h1" and page[-1]["for_before"] == resumed["before"]  # the client can match it
    await long_ws.send_json({"type": "history", "before": resumed["before"], "limit": 500, "id": "h2"})
    refused = await until(long_ws, lambda f: f["type"] == "error")
    assert refused[-1]["id"] == "h2" and refused[-1]["code"] == "bad_request"

    short = await seconds_per_message(short_ws)
    long = await seconds_per_message(long_ws)
    print(f"\nper message: short conversation {short * 1000:.0f} ms, 20k turns {long * 1000:.0f} ms; "
          f"welcome {size} bytes")
    assert long < 3 * short + 0.05, (short, long)


async def test_feedback_and_rating_are_stored(make_chat: MakeChat):
    chat = await make_chat()
    ws, welcome = await chat.socket()
    conv_id = welcome["conversation"]
    await ws.send_json({"type": "rate", "score": 4})
    assert (await recv(ws))["code"] == "not_allowed"  # nothing to rate before the first message

    reply = (await chat.ask(ws, REFUND_Q))[-1]
    assert (await recv(ws))["type"] == "typing"
    await ws.send_json({"type": "feedback", "turn": reply["turn"], "value": -1})
    assert await recv(ws) == {"type": "ack", "for": "feedback", "id": None, "turn": 2, "value": -1}
    await ws.send_json({"type": "feedback", "turn": 1, "value": 1})  # turn 1 is the customer's own
    assert (await recv(ws))["code"] == "not_found"
    await ws.send_json({"type": "feedback", "turn": 2, "value": 5})
    assert (await recv(ws))["code"] == "bad_request"
    await ws.send_json({"type": "rate", "score": 5, "id": "r"})
    assert await recv(ws) == {"type": "ack", "for": "rate", "id": "r", "score": 5}
    await ws.send_json({"type": "rate", "score": 6})
    assert (await recv(ws))["code"] == "bad_request"

    turns = await chat.engine.history(conv_id)
    assert turns[1].feedback == -1
    assert (await chat.engine.store.get(conv_id)).satisfaction == 5
    await ws.close()
    _, resumed = await chat.socket(welcome["session"])
    assert resumed["history"][1]["feedback"] == -1


# -- a human takes over, and gives it back -------------------------------------------------------------

async def test_handoff_to_an_agent_and_back_reaches_every_tab(make_chat: MakeChat):
    chat = await make_chat()
    ws, welcome = await chat.socket()
    conv_id = welcome["conversation"]
    tab2, _ = await chat.socket(welcome["session"])  # the same customer in a second tab

    frames = await chat.ask(ws, "I want to talk to a human please")
    reply = frames[-1]
    assert reply["action"] == "escalate" and reply["escalation"] == "asked_for_human" and reply["sources"] == []
    tab2_frames = await until(tab2, lambda f: f["type"] == "reply")
    assert {"type": "customer", "id": "m1", "text": "I want to talk to a human please", "turn": 1} in tab2_frames
    assert tab2_frames[-1] == reply
    for sock in (ws, tab2):  # typing ends, and the waiting customer is told their place in the queue
        seen: list[dict[str, Any]] = []
        while not ({"type": "typing", "on": False} in seen and any(f.get("event") == "queue" for f in seen)):
            seen.append(await recv(sock))
        (queue,) = [f for f in seen if f.get("event") == "queue"]
        assert queue["position"] == 1 and queue["expected_wait_s"] is None and queue["initial"] is True
        assert "next in line" in queue["text"] and "can't estimate" in queue["text"]

    await chat.engine.take(conv_id, "Dana")
    for sock in (ws, tab2):
        event = await recv(sock)
        assert event["type"] == "event" and event["event"] == "agent_joined" and event["name"] == "Dana"
        assert "Dana" in event["text"]
    await chat.engine.agent_message(conv_id, "Dana", "Hi, I'm Dana. Let me look at your order.")
    await chat.engine.agent_message(conv_id, "Dana", "customer seems upset", internal=True)  # a note: never shown
    for sock in (ws, tab2):
        assert await recv(sock) == {"type": "agent", "name": "Dana", "text": "Hi, I'm Dana. Let me look at your order."}

    frames = await chat.ask(ws, "thanks, it's order TP-1234", id="m2")  # the bot stays silent while Dana has it
    assert frames[-1]["action"] == "handoff" and frames[-1]["text"] == "" and frames[-1]["turn"] is None
    await until(ws, lambda f: f == {"type": "typing", "on": False})

    await chat.engine.release(conv_id, "Dana", "returned")
    for sock in (ws, tab2):
        event = (await until(sock, lambda f: f["type"] == "event"))[-1]
        assert event["event"] == "agent_left" and "virtual assistant" in event["text"]
    frames = await chat.ask(ws, REFUND_Q, id="m3")
    assert frames[-1]["action"] == "answer" and frames[-1]["sources"][0]["id"] == "refund-timing"
    assert await quiet(tab2, 0.5) != []  # tab 2 saw the question and the answer too

    _, resumed = await chat.socket(welcome["session"])  # the history a new tab shows: no internal note
    texts = [(h["role"], h.get("name"), h["text"]) for h in resumed["history"]]
    assert ("agent", "Dana", "Hi, I'm Dana. Let me look at your order.") in texts
    assert not any("upset" in t for _, _, t in texts)
    assert resumed["status"] == "bot"

    await chat.ask(ws, "can I speak to a real person", id="m4")
    await chat.engine.take(conv_id, "Sam")
    await chat.engine.release(conv_id, "Sam", "closed")
    events = [f for f in await until(ws, lambda f: f.get("event") == "closed") if f["type"] == "event"]
    assert [e["event"] for e in events if e["event"] != "queue"] == ["agent_joined", "closed"]  # queue: its place


async def test_agent_messages_sent_while_offline_appear_on_resume(make_chat: MakeChat):
    chat = await make_chat()
    ws, welcome = await chat.socket()
    await chat.ask(ws, "let me talk to an agent")
    await ws.close()
    await chat.engine.take(welcome["conversation"], "Dana")
    await chat.engine.agent_message(welcome["conversation"], "Dana", "Are you still there?")
    _, resumed = await chat.socket(welcome["session"])
    assert resumed["status"] == "handed_off" and resumed["agent"] == "Dana"
    assert resumed["history"][-1] == {"role": "agent", "name": "Dana", "text": "Are you still there?", "turn": 3,
                                      "at": resumed["history"][-1]["at"]}


async def test_another_workers_agent_reply_reaches_the_tab_once_even_when_its_history_had_it(make_chat: MakeChat):
    """With several workers (a Redis bus) an agent's reply committed on another worker can reach
    this worker after a tab resumed with it in its history: shown once; a newer one is shown."""
    from dataclasses import replace

    from botkit.events import Event

    chat = await make_chat()
    ws, welcome = await chat.socket()
    conv_id = welcome["conversation"]
    await chat.ask(ws, "let me talk to an agent")
    await ws.close()
    await chat.engine.take(conv_id, "Dana")
    events: list[Event] = []

    async def keep(event: Event) -> None:
        events.append(event)

    unsubscribe = chat.engine.subscribe(keep)
    await chat.engine.agent_message(conv_id, "Dana", "Are you still there?")
    unsubscribe()
    ws2, resumed = await chat.socket(welcome["session"])
    assert resumed["history"][-1]["text"] == "Are you still there?"
    agent_event = next(e for e in events if e.kind == "agent")
    await chat.engine.bus.publish(replace(agent_event, remote=True))  # late, from "another worker"
    assert [f for f in await quiet(ws2) if f.get("type") == "agent"] == []
    assert agent_event.turn is not None
    newer = replace(agent_event.turn, seq=agent_event.turn.seq + 1, text="Found it!")
    await chat.engine.bus.publish(replace(agent_event, turn=newer, remote=True))
    frames = await until(ws2, lambda f: f.get("type") == "agent")
    assert frames[-1]["text"] == "Found it!"


async def test_markup_travels_as_raw_text_and_the_widget_inserts_text_only(make_chat: MakeChat):
    chat = await make_chat()
    ws, welcome = await chat.socket()
    frames = await chat.ask(ws, XSS)
    assert frames[-1]["type"] == "reply"
    await chat.ask(ws, "get me a human", id="m2")
    await chat.engine.take(welcome["conversation"], "<img src=x onerror=alert(2)>")
    await chat.engine.agent_message(welcome["conversation"], "<img src=x onerror=alert(2)>", XSS)
    agent = await until(ws, lambda f: f["type"] == "agent")
    assert agent[-1] == {"type": "agent", "name": "<img src=x onerror=alert(2)>", "text": XSS.strip()}
    _, resumed = await chat.socket(welcome["session"])
    assert resumed["history"][0]["text"] == XSS.strip()  # exactly as typed: escaping is the page's job

    js = (REPO / "connectors" / "webchat" / "static" / "widget.js").read_text(encoding="utf-8")
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", js, flags=re.DOTALL)  # comments may name what the code never does
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"on", ".onclick", "javascript:"):
        assert sink not in code, sink
    assert "textContent" in code and "createTextNode" in code
    assert re.search(r"href: href", code) and "safeHref(s.url)" in code  # links only through the http(s) check


# -- refusals ------------------------------------------------------------------------------------------

async def test_an_origin_that_is_not_allowed_gets_403(make_chat: MakeChat):
    chat = await make_chat(allowed_origins=["https://shop.example.com"])
    for origin in ("https://evil.example", "null", "http://shop.example.com", "https://shop.example.com.evil.io"):
        with pytest.raises(WSServerHandshakeError) as exc:
            await chat.client.ws_connect(WS, headers={"Origin": origin})
        assert exc.value.status == 403, origin
    for origin in ("https://shop.example.com", "HTTPS://Shop.Example.com:443", chat.origin):
        ws, welcome = await chat.socket(headers={"Origin": origin})
        assert welcome["type"] == "welcome"
        await ws.close()


async def test_any_origin_only_when_configured(make_chat: MakeChat):
    chat = await make_chat(allowed_origins=["*"])
    _, welcome = await chat.socket(headers={"Origin": "https://anywhere.example"})
    assert welcome["type"] == "welcome"


async def test_bad_frames_get_errors_and_the_socket_keeps_working(make_chat: MakeChat):
    chat = await make_chat(max_message_chars=100)
    ws = await chat.client.ws_connect(WS)
    await ws.send_json({"type": "message", "id": "early", "text": "hi"})
    assert (await recv(ws))["code"] == "not_allowed"  # hello first
    await ws.send_json({"type": "hello", "session": None})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and welcome["max_message_chars"] == 100

    cases: list[tuple[Any, str, Any]] = [
        ("{not json", "bad_json", None),
        ("[1, 2, 3]", "bad_json", None),
        ('{"type": "dance", "id": "d1"}', "unknown_type", "d1"),
        ("{}", "unknown_type", None),
        (b"\x89PNG\r\n", "bad_frame", None),
        ({"type": "message", "id": "long", "text": "x" * 101}, "too_long", "long"),
        ({"type": "message", "id": "blank", "text": "  \n\t "}, "empty", "blank"),
        ({"type": "message", "id": "ctl", "text": "\x00\x01\x02"}, "empty", "ctl"),
        ({"type": "message", "id": "num", "text": 5}, "bad_request", "num"),
        ({"type": "message", "id": "x" * 65, "text": "hi"}, "bad_request", None),
        ({"type": "hello", "session": None}, "not_allowed", None),
        ({"type": "feedback", "turn": "two", "value": 1}, "bad_request", None),
    ]
    for sent, code, client_id in cases:
        if isinstance(sent, bytes):
            await ws.send_bytes(sent)
        elif isinstance(sent, str):
            await ws.send_str(sent)
        else:
            await ws.send_json(sent)
        frame = await recv(ws)
        assert frame["type"] == "error" and frame["code"] == code, (sent, frame)
        assert frame["id"] == client_id and frame["message"]
    frames = await chat.ask(ws, REFUND_Q, id="good")  # after all that, a good message is answered
    assert frames[-1]["type"] == "reply" and frames[-1]["sources"][0]["id"] == "refund-timing"
    assert (await chat.engine.history(welcome["conversation"]))[0].text == REFUND_Q  # nothing refused was stored

    await ws.send_json({"type": "message", "id": "big", "text": "x" * 50_000})  # a big frame: refused, read
    assert (await until(ws, lambda f: f["type"] == "error"))[-1]["code"] == "too_long"
    await ws.send_str(json.dumps({"type": "message", "text": "x" * 100_000}))  # over the frame limit: closed
    msg = await until_closed(ws)
    assert msg.type == WSMsgType.CLOSE and msg.data == 1009
    ws2, _ = await chat.socket()  # and the server carries on
    assert (await chat.ask(ws2, REFUND_Q))[-1]["type"] == "reply"


async def until_closed(ws: Any) -> Any:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return msg


async def test_a_flood_is_rate_limited_while_other_sessions_are_served(make_chat: MakeChat):
    chat = await make_chat()  # 10 messages per 10 s per session
    flood, fwelcome = await chat.socket()
    calm, _ = await chat.socket()
    for i in range(15):
        await flood.send_json({"type": "message", "id": f"f{i}", "text": f"where is my order number {i}?"})
    started = time.perf_counter()
    calm_frames = await chat.ask(calm, REFUND_Q, id="calm")
    assert calm_frames[-1]["type"] == "reply" and calm_frames[-1]["sources"][0]["id"] == "refund-timing"
    calm_seconds = time.perf_counter() - started

    frames = await until(flood, lambda f: f["type"] == "reply" and f["id"] == "f9")
    acks = [f["id"] for f in frames if f["type"] == "ack"]
    limited = [f for f in frames if f["type"] == "error"]
    assert acks == [f"f{i}" for i in range(10)]
    assert [f["id"] for f in limited] == [f"f{i}" for i in range(10, 15)]
    assert all(f["code"] == "rate_limited" and f["retry_after"] > 0 for f in limited)
    assert [f["id"] for f in frames if f["type"] == "reply"] == acks  # every accepted message is answered, in order
    assert calm_seconds < 15

    for i in range(60):  # a sustained flood: the socket is closed with 1008
        try:
            await flood.send_json({"type": "message", "id": f"g{i}", "text": "again"})
        except ConnectionError:
            break
    codes, later_acks, msg = [], 0, None
    async with asyncio.timeout(20):
        while True:
            msg = await flood.receive()
            if msg.type != WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame["type"] == "error":
                codes.append(frame["code"])
            elif frame["type"] == "ack":
                later_acks += 1  # the bucket refilled a little meanwhile
    assert msg.type == WSMsgType.CLOSE and msg.data == 1008
    assert len(codes) > 10 and set(codes) == {"rate_limited"}
    assert (await chat.ask(calm, "can I pay with PayPal?", id="calm2"))[-1]["type"] == "reply"

    async with asyncio.timeout(30):  # acknowledged messages are answered and stored even after the close
        while True:
            turns = await chat.engine.history(fwelcome["conversation"])
            if len([t for t in turns if t.role == "customer"]) == len(acks) + later_acks:
                break
            await asyncio.sleep(0.1)
    assert [t.text for t in turns if t.role == "customer"][:10] == [f"where is my order number {i}?" for i in range(10)]


async def test_connections_per_address_are_capped(make_chat: MakeChat):
    chat = await make_chat(max_connections_per_ip=2)
    a, _ = await chat.socket()
    await chat.socket()
    c = await chat.client.ws_connect(WS)
    frame = await recv(c)
    assert frame["type"] == "error" and frame["code"] == "too_many_connections"
    assert (await until_closed(c)).data == 1008
    await a.close()
    async with asyncio.timeout(10):  # a slot is free again once the server has seen the close
        while True:
            d = await chat.client.ws_connect(WS)
            await d.send_json({"type": "hello", "session": None})
            if (await recv(d))["type"] == "welcome":
                break
            await asyncio.sleep(0.05)


async def test_behind_a_proxy_the_forwarded_address_counts(make_chat: MakeChat):
    chat = await make_chat(server={"behind_proxy": True}, max_connections_per_ip=1)
    await chat.socket(headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.1"})
    await chat.socket(headers={"X-Forwarded-For": "198.51.100.2"})  # another customer
    c = await chat.client.ws_connect(WS, headers={"X-Forwarded-For": "10.0.0.1, 198.51.100.1"})
    assert (await recv(c))["code"] == "too_many_connections"  # the proxy's entry is what counts


async def test_a_socket_that_never_says_hello_is_closed(make_chat: MakeChat, monkeypatch: pytest.MonkeyPatch):
    from connectors.webchat import connector

    monkeypatch.setattr(connector, "HELLO_TIMEOUT_S", 0.3)
    chat = await make_chat()
    ws = await chat.client.ws_connect(WS)
    assert (await recv(ws, 5))["code"] == "not_allowed"
    assert (await until_closed(ws)).data == 1008


async def test_a_message_accepted_before_shutdown_is_still_answered_and_stored(make_chat: MakeChat,
                                                                                 tmp_path: Path):
    chat = await make_chat()
    ws, welcome = await chat.socket()
    await ws.send_json({"type": "message", "id": "last", "text": REFUND_Q})
    assert (await recv(ws)) == {"type": "ack", "for": "message", "id": "last"}
    await chat.client.close()  # the server shuts down at once: sockets closed (1001), work in flight finishes
    assert ws.closed or (await until_closed(ws)).data == 1001
    with sqlite3.connect(tmp_path / "conversations.sqlite3") as db:
        rows = db.execute("SELECT role, text FROM turns WHERE conversation_id=? ORDER BY seq",
                          (welcome["conversation"],)).fetchall()
    assert rows[0] == ("customer", REFUND_Q) and rows[1][0] == "bot"


# -- static files --------------------------------------------------------------------------------------

async def test_widget_files_and_demo_page_are_served(make_chat: MakeChat):
    chat = await make_chat()
    js = await chat.client.get("/channels/webchat/widget.js")
    assert js.status == 200 and js.content_type == "text/javascript" and js.charset == "utf-8"
    assert "window.BotkitChat" in await js.text() and js.headers["X-Content-Type-Options"] == "nosniff"
    again = await chat.client.get("/channels/webchat/widget.js", headers={"If-None-Match": js.headers["ETag"]})
    assert again.status == 304
    css = await chat.client.get("/channels/webchat/widget.css")
    assert css.status == 200 and css.content_type == "text/css" and ".bkw-launcher" in await css.text()

    page = await chat.client.get("/chat")
    assert page.status == 200 and page.content_type == "text/html"
    body = await page.text()
    tags = re.findall(r"<script[^>]*>", body)
    title = "Tallow &amp; Pine help centre"
    assert tags == [f'<script src="/channels/webchat/widget.js" data-botkit-title="{title}" defer>',
                    '<script src="/channels/webchat/chat.js" defer>']  # the search box and topic cards
    demo_js = await chat.client.get("/channels/webchat/chat.js")
    assert demo_js.status == 200 and demo_js.content_type == "text/javascript" and "data-ask" in await demo_js.text()
    assert "<title>Tallow &amp; Pine help centre</title>" in body and "{{" not in body
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "sha256-" in csp
    assert (await chat.client.get("/channels/webchat/nothing.js")).status == 404


# -- configuration and protocol (no server) --------------------------------------------------------------

def test_config_errors_name_the_key_and_the_value():
    cfg = validate_section("webchat", WebChatConfig, None)
    assert cfg.allowed_origins == [] and cfg.max_message_chars == 2000 and cfg.rate_limit_per_session.messages == 10
    cfg = validate_section("webchat", WebChatConfig, {"allowed_origins": ["https://Shop.example.com/", "*"]})
    assert cfg.allowed_origins == ["https://shop.example.com", "*"]
    cases = [
        ({"allowed_origns": []}, "channels.webchat.allowed_origns: unknown key", "did you mean 'allowed_origins'"),
        ({"allowed_origins": ["shop.example.com"]}, "channels.webchat.allowed_origins", "not an origin"),
        ({"source_url_template": "https://x/{slug}"}, "channels.webchat.source_url_template", "{id}"),
        ({"source_url_template": "javascript:alert({id})"}, "channels.webchat.source_url_template", "http(s)"),
        ({"max_message_chars": 0}, "channels.webchat.max_message_chars", "bad value 0"),
        ({"rate_limit_per_ip": {"messages": 5}}, "channels.webchat.rate_limit_per_ip.seconds", "missing"),
    ]
    for section, where, what in cases:
        with pytest.raises(ConfigError) as exc:
            validate_section("webchat", WebChatConfig, section)
        assert where in str(exc.value) and what in str(exc.value), str(exc.value)


def test_protocol_frames():
    assert proto.parse('{"type":"message","id":"a","text":"  hi\\u0000 "}', 10) == proto.SendMessage("a", "hi")
    assert proto.parse('{"type":"hello","session":""}', 10) == proto.Hello(None)
    assert proto.parse('{"type":"feedback","turn":2,"value":-1}', 10) == proto.Feedback(2, -1)
    for bad, code in [("1", "bad_json"), ('{"type":true}', "unknown_type"),
                      ('{"type":"hello","session":1}', "bad_request"), ('{"type":"rate","score":true}', "bad_request"),
                      ('{"type":"message","id":1.5,"text":"a"}', "bad_request"), ("[" * 100_000, "bad_json")]:
        with pytest.raises(proto.ProtocolError) as exc:
            proto.parse(bad, 10)
        assert exc.value.code == code, bad
    assert set(proto.ERROR_CODES) >= {"bad_json", "unknown_type", "too_long", "rate_limited", "empty", "not_allowed"}
