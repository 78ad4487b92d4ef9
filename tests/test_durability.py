"""Accepted means answered, across a crash: real ``botkit serve`` processes killed with SIGKILL
mid-burst, then restarted on the same state; Telegram with a crash between storing and answering.

The web chat test opens 20 sockets, sends 200 messages at once, kills the server 0.1 / 0.3 /
1.0 s into the burst, and counts, per kill time: acknowledged (acks the sockets received),
stored (in SQLite at the kill), answered after the restart (before any retransmission) and,
after every tab resumed and resent all ten of its messages (acknowledged or not, as a flaky
client might), how many answers each message got: exactly one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import REPO, wait_healthy

pytestmark = pytest.mark.slow

TABS, PER_TAB = 20, 10
QUESTIONS = ["how long does a refund take to reach my card?", "can I pay with paypal", "do you ship to canada",
             "how do I reset my password", "where is my parcel"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(root: Path) -> Path:
    config = yaml.safe_load((root / "bot.yaml").read_text(encoding="utf-8"))
    config["dialogue"] = {**(config.get("dialogue") or {}), "responder": "extractive"}
    config["escalation"] = {"rules": []}  # every message gets a bot reply (no hand-off silences the bot)
    config["channels"] = {"webchat": {"rate_limit_per_session": {"messages": 100, "seconds": 10},
                                      "rate_limit_per_ip": {"messages": 10_000, "seconds": 10},
                                      "max_connections_per_ip": 100}}
    (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


class Server:
    def __init__(self, project: Path):
        self.project = project
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-m", "botkit", "serve", "--project", str(self.project),
                                      "--port", str(self.port)], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await wait_healthy(self.url, self.proc, timeout=120)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _db(project: Path) -> sqlite3.Connection:
    return sqlite3.connect(project / ".botkit" / "conversations.sqlite3", timeout=30)


def _customer_texts(project: Path) -> list[str]:
    with _db(project) as db:
        return [r[0] for r in db.execute("SELECT text FROM turns WHERE role='customer'")]


def _stored_texts(project: Path) -> set[str]:
    with _db(project) as db:
        stored = {r[0] for r in db.execute("SELECT text FROM turns WHERE role='customer'")}
        try:
            stored |= {r[0] for r in db.execute("SELECT text FROM inbox")}
        except sqlite3.OperationalError:  # no inbox table: a botkit without one
            pass
    return stored


def _pending(project: Path) -> int:
    with _db(project) as db:
        try:
            return int(db.execute("SELECT count(*) FROM inbox WHERE state='pending'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def _read(ws: aiohttp.ClientWebSocketResponse, frames: list[dict[str, Any]]) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(json.loads(msg.data))


async def _hello(http: aiohttp.ClientSession, url: str, session: str | None
                 ) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(url + "/channels/webchat/ws")
    await ws.send_json({"type": "hello", "session": session})
    welcome = json.loads((await ws.receive(timeout=30)).data)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


def _text(tab: int, n: int) -> str:
    return f"{QUESTIONS[(tab + n) % len(QUESTIONS)]} (tab {tab} message {n})"


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("kill_after", [0.1, 0.3, 1.0])
async def test_acknowledged_messages_survive_a_kill_and_are_answered_exactly_once(
        demo_dir: Path, kill_after: float) -> None:
    project = _project(demo_dir)
    server = Server(project)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            tabs = [await _hello(http, server.url, None) for _ in range(TABS)]
            frames: list[list[dict[str, Any]]] = [[] for _ in range(TABS)]
            readers = [asyncio.create_task(_read(ws, frames[i])) for i, (ws, _) in enumerate(tabs)]
            started = time.monotonic()
            await asyncio.gather(*(ws.send_json({"type": "message", "id": f"t{i}-m{n}", "text": _text(i, n)})
                                   for i, (ws, _) in enumerate(tabs) for n in range(PER_TAB)))
            await asyncio.sleep(max(0.0, kill_after - (time.monotonic() - started)))
            server.kill()
            await asyncio.wait(readers, timeout=10)
            acked = {f["id"] for fs in frames for f in fs if f["type"] == "ack"}
            texts = {f"t{i}-m{n}": _text(i, n) for i in range(TABS) for n in range(PER_TAB)}
            stored = {mid for mid, text in texts.items() if text in _stored_texts(project)}
            answered_before = {mid for mid, text in texts.items() if text in _customer_texts(project)}

            await server.start()  # the same project and state: the restart answers what was pending
            await _wait(lambda: _pending(project) == 0, 120, "the restart to answer the pending messages")
            answered_after = {mid for mid, text in texts.items() if text in _customer_texts(project)}

            # every tab resumes and sends all its messages again (same ids and texts)
            resumed = [await _hello(http, server.url, welcome["session"]) for _, welcome in tabs]
            frames = [[] for _ in range(TABS)]
            readers = [asyncio.create_task(_read(ws, frames[i])) for i, (ws, _) in enumerate(resumed)]
            await asyncio.gather(*(ws.send_json({"type": "message", "id": f"t{i}-m{n}", "text": _text(i, n)})
                                   for i, (ws, _) in enumerate(resumed) for n in range(PER_TAB)))
            await _wait(lambda: sum(f["type"] == "ack" for fs in frames for f in fs) >= TABS * PER_TAB, 60,
                        "the retransmissions to be acknowledged")
            await _wait(lambda: _pending(project) == 0 and len(_customer_texts(project)) >= TABS * PER_TAB, 120,
                        "every message to be answered")
            await asyncio.sleep(1.0)  # anything answered twice would show up by now
            for ws, _ in resumed:
                await ws.close()
            for task in readers:
                task.cancel()
            customer = _customer_texts(project)
            with _db(project) as db:
                roles = db.execute("SELECT role, count(*) FROM turns GROUP BY role").fetchall()
    finally:
        server.stop()

    counts = {mid: customer.count(text) for mid, text in texts.items()}
    print(f"\nkill after {kill_after:.1f}s: acked {len(acked)}, stored at the kill {len(stored)} "
          f"(answered {len(answered_before)}), answered after the restart {len(answered_after)} "
          f"(acked among them {len(acked & answered_after)}), after resend: answered once "
          f"{sum(c == 1 for c in counts.values())}, twice or more {sum(c > 1 for c in counts.values())}")
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)[:10]}"
    assert acked <= answered_after, \
        f"acknowledged, not answered after the restart: {sorted(acked - answered_after)[:10]}"
    assert all(c == 1 for c in counts.values()), {m: c for m, c in counts.items() if c != 1}
    assert dict(roles) == {"customer": TABS * PER_TAB, "bot": TABS * PER_TAB}


# -- Telegram ---------------------------------------------------------------------------------------

from aiohttp.test_utils import TestClient  # noqa: E402

from botkit.app.keys import CONNECTORS  # noqa: E402
from botkit.app.server import build_app  # noqa: E402
from botkit.engine import Engine  # noqa: E402
from botkit.escalation import EscalationConfig, build_rules  # noqa: E402
from botkit.project import Project  # noqa: E402
from botkit.responders.extractive import ExtractiveResponder  # noqa: E402
from botkit.store import SQLiteConversationStore  # noqa: E402
from botkit.types import IncomingMessage  # noqa: E402
from tests.conftest import DEMO  # noqa: E402
from tests.fake_telegram import FakeTelegram, text_update  # noqa: E402
from tests.test_telegram import SECRET, TOKEN, WEBHOOK, SharedRetriever, shared_kb  # noqa: E402,F401


@pytest.fixture
def telegram_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)


def _engine(shared_kb: Any, db: Path) -> Engine:
    return Engine(retriever=SharedRetriever(shared_kb), responder=ExtractiveResponder(),
                  store=SQLiteConversationStore(db), rules=build_rules(EscalationConfig()), bot_name="Tallow & Pine")


async def _serve_telegram(root: Path, engine: Engine, fake: FakeTelegram, aiohttp_client: Any,
                          **channel: Any) -> TestClient:
    root.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((DEMO / "bot.yaml").read_text(encoding="utf-8"))
    config["channels"] = {"telegram": {"base_url": fake.base_url, "retry_backoff": 0.01, **channel}}
    config["server"] = {"public_url": "https://bot.example.com"}
    (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return await aiohttp_client(build_app(Project.load(root), engine))  # type: ignore[no-any-return]


async def _post_update(client: TestClient, update: dict[str, Any]) -> Any:
    """Telegram's webhook call delivering one update."""
    return await client.post(WEBHOOK, data=json.dumps(update), headers={"X-Telegram-Bot-Api-Secret-Token": SECRET,
                                                                         "Content-Type": "application/json"})


def _inbox_states(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT state FROM inbox ORDER BY id")]


def _roles(db: Path, conversation: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT role FROM turns WHERE conversation_id=? ORDER BY seq",
                                           (conversation,))]


async def test_telegram_update_stored_then_crash_is_answered_once_after_restart(
        shared_kb: Any, tmp_path: Path, aiohttp_client: Any, telegram_env: None) -> None:
    """Polling: the process stored the update and died before answering (so its offset was never
    confirmed). The restart answers it from the inbox, Telegram redelivers it too: one reply."""
    db = tmp_path / "conv.sqlite3"
    update = text_update(9401, "how long does a refund take to reach my card?")
    crashed = _engine(shared_kb, db)
    await crashed.store.start()
    await crashed.accept(IncomingMessage("telegram:9401", update["message"]["text"], "telegram", "9401"),
                         str(update["message"]["message_id"]))
    await crashed.store.close()  # the crash: stored, never answered, offset unconfirmed

    async with FakeTelegram(TOKEN) as fake:
        await fake.enqueue(update)  # still pending at Telegram: getUpdates hands it out again
        client = await _serve_telegram(tmp_path / "p", _engine(shared_kb, db), fake, aiohttp_client, mode="polling")
        (sent,) = await fake.wait_sent(1, chat_id=9401)
        await fake.wait_for(lambda: fake.served.get(update["update_id"], 0) >= 1)
        await client.server.app[CONNECTORS]["telegram"].application.update_queue.join()
        await asyncio.sleep(0.5)
        await client.close()
    assert "Sources:" in sent.text and fake.texts(9401) == [sent.text]  # answered and sent once
    assert _roles(db, "telegram:9401") == ["customer", "bot"] and _inbox_states(db) == ["delivered"]


async def test_telegram_reply_that_failed_to_send_is_sent_once_after_restart(
        shared_kb: Any, tmp_path: Path, aiohttp_client: Any, telegram_env: None) -> None:
    """Webhook: the answer was stored but Telegram refused every send (the process then went
    down). The restart sends the stored answer once; Telegram redelivering the update adds nothing."""
    db = tmp_path / "conv.sqlite3"
    update = text_update(9402, "can I pay with paypal")
    async with FakeTelegram(TOKEN) as fake:
        fake.fail_next_sends(1000, 500, chat_id=9402)
        client = await _serve_telegram(tmp_path / "p1", _engine(shared_kb, db), fake, aiohttp_client, send_retries=0)
        response = await _post_update(client, update)
        assert response.status == 200 and _inbox_states(db) in (["pending"], ["answered"])  # stored before the 200
        await client.server.app[CONNECTORS]["telegram"].application.update_queue.join()
        await client.close()
        assert fake.texts(9402) == [] and _inbox_states(db) == ["answered"]  # answered, never delivered

        fake.failures.clear()
        client = await _serve_telegram(tmp_path / "p2", _engine(shared_kb, db), fake, aiohttp_client, send_retries=0)
        (sent,) = await fake.wait_sent(1, chat_id=9402)
        response = await _post_update(client, update)  # Telegram redelivers it
        assert response.status == 200
        await client.server.app[CONNECTORS]["telegram"].application.update_queue.join()
        await asyncio.sleep(0.5)
        await client.close()
    assert fake.texts(9402) == [sent.text] and "PayPal" in sent.text
    assert _roles(db, "telegram:9402") == ["customer", "bot"] and _inbox_states(db) == ["delivered"]


async def test_telegram_reply_refused_for_good_is_not_resent_at_every_start(
        shared_kb: Any, tmp_path: Path, aiohttp_client: Any, telegram_env: None) -> None:
    """403 (the customer blocked the bot) is final: the answer stays in the history, marked
    undeliverable, and a restart does not try to send it again (a 500 would be retried)."""
    db = tmp_path / "conv.sqlite3"
    update = text_update(9403, "can I pay with paypal")
    async with FakeTelegram(TOKEN) as fake:
        fake.fail_next_sends(1, 403, chat_id=9403)
        client = await _serve_telegram(tmp_path / "p1", _engine(shared_kb, db), fake, aiohttp_client, send_retries=0)
        response = await _post_update(client, update)
        assert response.status == 200
        await client.server.app[CONNECTORS]["telegram"].application.update_queue.join()
        await client.close()
        assert [a.status for a in fake.attempts if a.chat_id == 9403] == [403]
        assert _inbox_states(db) == ["undeliverable"] and _roles(db, "telegram:9403") == ["customer", "bot"]

        client = await _serve_telegram(tmp_path / "p2", _engine(shared_kb, db), fake, aiohttp_client, send_retries=0)
        await asyncio.sleep(1.0)  # the start-up recovery has run
        await client.close()
    assert fake.texts(9403) == [] and len([a for a in fake.attempts if a.chat_id == 9403]) == 1
    assert _inbox_states(db) == ["undeliverable"]


async def test_telegram_answers_a_chat_in_order_when_a_new_message_beats_the_recovery(
        shared_kb: Any, tmp_path: Path, aiohttp_client: Any, telegram_env: None) -> None:
    """A crash left 200 chats' questions unanswered, chat 9450's last. Right after the restart,
    chat 9450 writes again (webhook: Telegram does not redeliver what got its 200): its earlier
    question is answered first, then the new one; each once."""
    db = tmp_path / "conv.sqlite3"
    crashed = _engine(shared_kb, db)
    await crashed.store.start()
    for chat in range(9500, 9700):
        await crashed.accept(IncomingMessage(f"telegram:{chat}", "do you ship to canada", "telegram", str(chat)), "1")
    await crashed.accept(IncomingMessage("telegram:9450", "can I pay with paypal", "telegram", "9450"), "1")
    await crashed.store.close()

    later = text_update(9450, "how long does a refund take to reach my card?")
    later["message"]["message_id"] = 2
    async with FakeTelegram(TOKEN) as fake:
        client = await _serve_telegram(tmp_path / "p", _engine(shared_kb, db), fake, aiohttp_client)
        response = await _post_update(client, later)
        assert response.status == 200
        await fake.wait_sent(2, chat_id=9450, timeout=60)
        await fake.wait_sent(201, timeout=120)  # the recovery finished the other chats too
        await client.server.app[CONNECTORS]["telegram"].application.update_queue.join()
        await asyncio.sleep(0.5)
        await client.close()
    with sqlite3.connect(db) as conn:
        turns = conn.execute("SELECT role, text FROM turns WHERE conversation_id='telegram:9450' "
                             "ORDER BY seq").fetchall()
    assert [t for _, t in turns[0::2]] == ["can I pay with paypal", later["message"]["text"]]  # asked order
    sent = fake.texts(9450)  # answered and sent in that order (Telegram's text adds the sources)
    assert len(sent) == 2 and sent[0].startswith(turns[1][1]) and sent[1].startswith(turns[3][1]), sent
    assert _roles(db, "telegram:9450") == ["customer", "bot", "customer", "bot"]
    assert set(_inbox_states(db)) == {"delivered"} and len(fake.sent) == 202
