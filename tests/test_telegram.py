"""The Telegram channel end to end: the real server (``build_app``), the real engine on the demo
knowledge base, real python-telegram-bot talking HTTP to a fake Bot API on 127.0.0.1
(tests/fake_telegram.py). Assertions are on what the customer receives: the messages the fake
accepted from sendMessage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from telegram import Bot
from telegram.error import BadRequest
from telegram.helpers import escape_markdown

from botkit.app.keys import CONNECTORS
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.errors import ConfigError
from botkit.escalation import EscalationConfig, build_rules
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from botkit.types import Conversation
from connectors.base import ConnectorContext, OutgoingMessage
from connectors.telegram import ONLY_TEXT, TelegramConnector, TelegramDeliveryError, create, split_text
from knowledge.retriever import KnowledgeRetriever
from tests.conftest import DEMO, open_kb
from tests.fake_telegram import (
    FakeTelegram,
    command_update,
    document_update,
    location_update,
    photo_update,
    sticker_update,
    text_update,
    utf16_len,
    voice_update,
)

pytestmark = [
    pytest.mark.slow,
    # python-telegram-bot 22 warns about its own RetryAfter.retry_after while building the exception
    pytest.mark.filterwarnings("ignore:.*retry_after.*:telegram.warnings.PTBDeprecationWarning"),
]

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghij"
SECRET = "s3cret-webhook_Token"
PUBLIC_URL = "https://bot.example.com"
WEBHOOK = "/channels/telegram/webhook"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_kb(tmp_path_factory: pytest.TempPathFactory, embedder: Any, demo_template: Path) -> Any:
    """A copy of the session's imported demo KB, shared by the module (the tests only read it)."""
    demo_dir = tmp_path_factory.mktemp("tg") / "demo"
    shutil.copytree(demo_template, demo_dir)
    kb = open_kb(demo_dir, embedder)
    kb.start()
    yield kb
    kb.close()


class SharedRetriever(KnowledgeRetriever):
    """A retriever whose close() leaves the module's shared KB open."""

    async def close(self) -> None:
        self._pool.shutdown(wait=False)


@pytest.fixture
def engine(shared_kb: Any, tmp_path: Path) -> Engine:
    return Engine(retriever=SharedRetriever(shared_kb), responder=ExtractiveResponder(),
                  store=SQLiteConversationStore(tmp_path / "conv.sqlite3"), rules=build_rules(EscalationConfig()),
                  bot_name="Tallow & Pine")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)


@dataclass
class Running:
    """A running server with the Telegram channel, and the fake Telegram it talks to."""

    client: TestClient
    fake: FakeTelegram
    engine: Engine
    connector: TelegramConnector

    async def post(self, update: Any, secret: str | None = SECRET) -> int:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        body = update if isinstance(update, (str, bytes)) else json.dumps(update)
        response = await self.client.post(WEBHOOK, data=body, headers={**headers, "Content-Type": "application/json"})
        return response.status

    async def processed(self) -> None:
        """Wait until every update handed to the Application has been handled (replies sent)."""
        await self.connector.application.update_queue.join()

    async def ask(self, chat_id: int, text: str, **kw: Any) -> str:
        """Post a text message and return the (single) reply the customer receives."""
        before = len(self.fake.texts(chat_id))
        assert await self.post(text_update(chat_id, text, **kw)) == 200
        sent = await self.fake.wait_sent(before + 1, chat_id=chat_id)
        await self.processed()
        assert len(self.fake.texts(chat_id)) == before + 1, self.fake.texts(chat_id)[before:]
        return sent[-1].text


async def serve(tmp_path: Path, engine: Engine, fake: FakeTelegram, aiohttp_client: Any, **channel: Any) -> Running:
    """The whole server from a bot.yaml with ``channels.telegram`` pointing at the fake."""
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    config = yaml.safe_load((DEMO / "bot.yaml").read_text(encoding="utf-8"))
    config["channels"] = {"telegram": {"base_url": fake.base_url, "retry_backoff": 0.05, **channel}}
    if channel.get("mode") != "polling":
        config["server"] = {"public_url": PUBLIC_URL}
    (project_dir / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    app = build_app(Project.load(project_dir), engine)
    client = await aiohttp_client(app)  # runs cleanup_ctx: engine and connector start
    return Running(client, fake, engine, app[CONNECTORS]["telegram"])


@pytest.fixture
async def bot(tmp_path: Path, engine: Engine, fake: FakeTelegram, aiohttp_client: Any) -> Running:
    return await serve(tmp_path, engine, fake, aiohttp_client)


def conversation(chat_id: int) -> Conversation:
    return Conversation(f"telegram:{chat_id}", "telegram", str(chat_id), "bot", datetime.now(UTC))


# -- webhook mode -------------------------------------------------------------------------------


async def test_question_gets_grounded_answer_with_source(bot: Running, shared_kb: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert bot.fake.webhook == {"url": PUBLIC_URL + WEBHOOK, "secret_token": SECRET, "allowed_updates": ["message"]}

    text = await bot.ask(1001, "how long does a refund take to reach my card?", language_code="de", user_id=42)
    article = shared_kb.store.get("refund-timing")
    answer, _, sources = text.rpartition("\n\nSources: ")
    assert sources.startswith(article.title)
    assert answer.strip() and answer in article.body.replace("**", "")
    (sent,) = bot.fake.sent
    assert sent.chat_id == 1001 and sent.parse_mode is None

    conv = await bot.engine.store.get("telegram:1001")
    assert conv is not None and conv.channel == "telegram" and conv.customer_id == "42"
    assert conv.attributes.get("language") == "de"
    assert conv.attributes.get("customer_name") == "Ada"  # the user's name, for the console's customer panel
    assert "telegram_username" not in conv.attributes  # this user has none
    # the token never reaches logs or reprs (httpx logs request URLs, which contain it)
    assert TOKEN not in caplog.text and "<token>" in caplog.text
    assert TOKEN not in repr(bot.connector)


async def test_start_help_and_unknown_command(bot: Running) -> None:
    assert await bot.post(command_update(2001, "start", first_name="Grace")) == 200
    assert await bot.post(command_update(2001, "help")) == 200
    assert await bot.post(command_update(2001, "frobnicate")) == 200
    start, help_, unknown = [m.text for m in await bot.fake.wait_sent(3, chat_id=2001)]
    assert start.startswith("Hello Grace!") and "Tallow & Pine" in start
    assert "Ask me a question" in help_ and "talk to a person" in help_
    assert unknown == help_
    assert await bot.engine.store.get("telegram:2001") is None  # commands are not conversation turns


async def test_non_text_messages_get_the_text_only_reply(bot: Running) -> None:
    updates = [photo_update(3001, caption="what about this?"), sticker_update(3001), voice_update(3001),
               document_update(3001), location_update(3001)]
    for update in updates:
        assert await bot.post(update) == 200
    sent = await bot.fake.wait_sent(len(updates), chat_id=3001)
    assert [m.text for m in sent] == [ONLY_TEXT] * len(updates)
    assert await bot.engine.store.get("telegram:3001") is None


async def test_rejected_message_gets_a_polite_reason(bot: Running) -> None:
    too_long = "where is my order " * 225  # over dialogue.max_message_chars (4000), under Telegram's 4096
    reply = await bot.ask(3501, too_long)
    assert reply.startswith("Sorry, I couldn't take that message: message is") and "limit is 4000" in reply
    assert "bot.yaml" not in reply  # the operator's hint is not for the customer


async def test_forged_and_malformed_requests_are_refused(bot: Running, caplog: pytest.LogCaptureFixture) -> None:
    real = text_update(4001, "how do I reset my password?")
    assert await bot.post(real, secret=None) == 403
    assert await bot.post(real, secret="wrong-secret") == 403
    assert await bot.post(real, secret=SECRET + "x") == 403
    assert "refused a webhook call with a missing secret" in caplog.text
    assert "refused a webhook call with a wrong secret" in caplog.text
    assert SECRET not in caplog.text and "wrong-secret" not in caplog.text

    assert await bot.post(b"{not json") == 400
    assert await bot.post(b"\xff\xfe\x00") == 400
    assert await bot.post("[1, 2]") == 400
    assert await bot.post({"message": {"text": "no update_id"}}) == 400
    assert await bot.post({"update_id": 5, "message": "not a message"}) == 400

    await bot.processed()
    await asyncio.sleep(0.2)
    assert bot.fake.sent == [] and await bot.engine.store.get("telegram:4001") is None
    # ... and the server keeps serving
    assert "password" in (await bot.ask(4001, "how do I reset my password?")).lower()


async def test_long_message_is_split_at_boundaries(bot: Running) -> None:
    paragraph = ("Your parcel left our warehouse and is with the carrier. " * 12).strip()
    lines = "\n".join(f"Line {i}: check the tracking page for the latest scan." for i in range(60))
    long_text = "\n\n".join([paragraph] * 8 + [lines] + [paragraph] * 4)
    assert len(long_text) > 2 * 4096

    await bot.connector.send(conversation(5001), OutgoingMessage("telegram:5001", long_text, "agent", author="Alice"))
    sent = bot.fake.texts(5001)
    assert len(sent) >= 3 and all(utf16_len(m) <= 4096 for m in sent)
    assert sent[0].startswith("Alice (support): ")
    assert " ".join(" ".join(sent).split()) == " ".join(f"Alice (support): {long_text}".split())
    # cuts happen at paragraph breaks while there are any in reach, never inside a word
    assert all(m.endswith(".") for m in sent)


def test_split_text_edges() -> None:
    assert split_text("short", 100) == ["short"]
    assert split_text("  \n ", 100) == []
    word = "x" * 250
    assert split_text(word, 100) == ["x" * 100, "x" * 100, "x" * 50]  # one word longer than a message
    emoji = "🙂" * 60  # 2 UTF-16 units each
    assert [utf16_len(c) for c in split_text(emoji, 100)] == [100, 20]
    parts = split_text("a" * 70 + "\n\n" + "b" * 20 + " " + "c" * 20, 100)
    assert parts == ["a" * 70, "b" * 20 + " " + "c" * 20]


async def test_markdown_characters_arrive_intact(bot: Running) -> None:
    text = await bot.ask(6001, "how do I cancel my order?")
    bot_turn = [t for t in await bot.engine.history("telegram:6001") if t.role == "bot"][-1]
    assert text.startswith(bot_turn.text) and any(c in bot_turn.text for c in "().>-")  # KB text, verbatim

    tricky = r"Refund: 5.00 EUR (approx.) *not* _final_ [see](x) #1 a+b=c | ~x~ `TP-100482` {ok}! \o/ a_b*c"
    await bot.connector.send(conversation(6001), OutgoingMessage("telegram:6001", tricky, "agent", author="Bo"))
    assert bot.fake.sent[-1].text == f"Bo (support): {tricky}" and bot.fake.sent[-1].parse_mode is None


async def test_fake_rejects_invalid_markdown_v2_like_telegram(fake: FakeTelegram) -> None:
    """Keeps the fake honest: had the connector used MarkdownV2 without escaping, tests would fail."""
    async with Bot(TOKEN, base_url=fake.base_url) as raw:
        with pytest.raises(BadRequest, match="(?i)can't parse entities"):
            await raw.send_message(7001, "Costs 5.00 (approx)", parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="(?i)can't parse entities"):
            await raw.send_message(7001, "*bold never closed", parse_mode="MarkdownV2")
        await raw.send_message(7001, escape_markdown("Costs 5.00 (approx) *x*", version=2), parse_mode="MarkdownV2")
        with pytest.raises(BadRequest, match="(?i)too long"):
            await raw.send_message(7001, "x" * 4097)
    assert fake.texts(7001) == ["Costs 5.00 (approx) *x*"]


async def test_escalation_agent_messages_and_bot_silence(bot: Running) -> None:
    chat, conv = 8001, "telegram:8001"
    assert await bot.ask(chat, "I want to talk to a person") == bot.engine.config.handoff_message

    await bot.engine.take(conv, "Alice")  # delivered by the server's listener through connector.send
    await bot.engine.agent_message(conv, "Alice", "Hi, Alice here. Let me check TP-100482.")
    await bot.engine.agent_message(conv, "Alice", "internal: carrier says Tuesday", internal=True)
    assert bot.fake.texts(chat)[1:] == ["Alice from our team has joined the conversation.",
                                        "Alice (support): Hi, Alice here. Let me check TP-100482."]

    assert await bot.post(text_update(chat, "thanks, are you still there?")) == 200
    await bot.processed()
    assert len(bot.fake.texts(chat)) == 3  # a human has it: the bot says nothing
    assert (await bot.engine.history(conv))[-1].text == "thanks, are you still there?"  # stored for Alice

    await bot.engine.release(conv, "Alice", "returned")
    assert bot.fake.texts(chat)[-1] == bot.engine.config.returned_message
    assert "Sources:" in await bot.ask(chat, "how long does a refund take?")


async def test_flood_control_waits_retry_after_then_delivers_once(bot: Running) -> None:
    bot.fake.fail_next_sends(1, 429, retry_after=1)
    message = OutgoingMessage("telegram:9001", "Your refund was approved.", "system")
    await bot.connector.send(conversation(9001), message)
    assert bot.fake.texts(9001) == ["Your refund was approved."]
    (flood, ok) = [a for a in bot.fake.attempts if a.chat_id == 9001]
    assert (flood.status, ok.status) == (429, 200) and ok.at - flood.at >= 0.99


async def test_one_slow_chat_does_not_block_others_and_keeps_its_order(bot: Running) -> None:
    bot.fake.fail_next_sends(1, 429, retry_after=1, chat_id=9101)  # chat 9101's first reply waits 1 s
    for update in (command_update(9101, "help"), command_update(9101, "start"), command_update(9102, "help")):
        assert await bot.post(update) == 200
    await bot.fake.wait_sent(3)
    await bot.processed()
    order = [(m.chat_id, m.text.split()[0]) for m in bot.fake.sent]
    assert order == [(9102, "Ask"), (9101, "Ask"), (9101, "Hello")]


async def test_persistent_server_errors_surface_and_the_server_keeps_serving(
        bot: Running, caplog: pytest.LogCaptureFixture) -> None:
    bot.fake.fail_next_sends(1000, 500, chat_id=9201)
    assert await bot.post(command_update(9201, "help")) == 200  # answered at once, whatever happens later
    await bot.processed()
    assert [a.status for a in bot.fake.attempts if a.chat_id == 9201] == [500] * 4  # 1 try + send_retries
    assert "could not deliver a message to conversation telegram:9201 after 4 attempts" in caplog.text

    with pytest.raises(TelegramDeliveryError, match="after 4 attempts"):
        await bot.connector.send(conversation(9201), OutgoingMessage("telegram:9201", "An agent will call.", "system"))
    assert bot.fake.texts(9201) == []

    assert "Ask me a question" in await bot.ask(9202, "/help")  # other chats are fine
    bot.fake.failures.clear()
    assert "Ask me a question" in await bot.ask(9201, "/help")  # and so is this one once Telegram recovers


# -- polling mode -------------------------------------------------------------------------------


async def test_polling_fetches_answers_confirms_and_stops_promptly(tmp_path: Path, engine: Engine,
                                                                   fake: FakeTelegram, aiohttp_client: Any) -> None:
    fake.webhook = {"url": "https://old.example.com/hook", "secret_token": None, "allowed_updates": None}
    first = [command_update(9301, "start"), text_update(9302, "how long does a refund take?")]
    await fake.enqueue(*first)  # waiting before the bot starts
    bot = await serve(tmp_path, engine, fake, aiohttp_client, mode="polling")
    assert fake.webhook is None  # polling removed the webhook (getUpdates would be refused otherwise)
    assert all(r.canonical != WEBHOOK for r in bot.client.server.app.router.resources())  # no webhook route

    await fake.wait_sent(2)
    later = text_update(9301, "/help")
    await fake.enqueue(later)
    await fake.wait_sent(3)
    assert fake.texts(9301)[0].startswith("Hello Ada!") and "Ask me a question" in fake.texts(9301)[1]
    assert "Sources:" in fake.texts(9302)[0]

    await fake.wait_for(lambda: fake.polls_waiting > 0)  # a long poll is in flight
    started = time.monotonic()
    await bot.connector.stop()
    assert time.monotonic() - started < 3.0  # the 10 s long poll was cancelled, not waited out
    polls = len(fake.calls_of("getUpdates"))
    await asyncio.sleep(0.3)
    assert len(fake.calls_of("getUpdates")) == polls  # no polling after stop()

    ids = [u["update_id"] for u in [*first, later]]
    assert [fake.served[i] for i in ids] == [1, 1, 1]  # no update fetched (or answered) twice
    assert len(fake.sent) == 3
    offsets = [o for o in fake.offsets if o is not None]
    assert offsets == sorted(offsets) and offsets[-1] == max(ids) + 1  # confirmed on the way out
    assert fake.pending == []


async def test_polling_drops_an_unreadable_update_and_answers_the_next(tmp_path: Path, engine: Engine,
                                                                       fake: FakeTelegram, aiohttp_client: Any,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    # The storing queue retries while the store fails; an update no handler can read (a null chat)
    # is not a store failure, and retrying it forever would stall every update behind it.
    broken = {"update_id": 7001, "message": {"message_id": 1, "date": 0, "chat": None, "text": "hi"}}
    good = text_update(9310, "how long does a refund take?")
    good["update_id"] = 7002
    await fake.enqueue(broken, good)
    bot = await serve(tmp_path, engine, fake, aiohttp_client, mode="polling")
    (sent,) = await fake.wait_sent(1, timeout=10)
    assert sent.chat_id == 9310 and "Sources:" in sent.text
    await bot.connector.stop()
    assert any("dropped update 7001" in r.getMessage() for r in caplog.records)


# -- configuration and start-up -----------------------------------------------------------------


def _ctx(config: dict[str, Any], public_url: str | None = None) -> ConnectorContext:
    engine, project = SimpleNamespace(bot_name="x"), SimpleNamespace(root=Path("."))  # start-up needs neither
    return ConnectorContext("telegram", config, engine, web.Application(), project, public_url)  # type: ignore[arg-type]


async def test_config_errors_name_the_key_and_never_show_secrets(fake: FakeTelegram,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"channels\.telegram\.mode"):
        create(_ctx({"mode": "carrier-pigeon"}))
    with pytest.raises(ConfigError, match=r"channels\.telegram\.max_message_chars"):
        create(_ctx({"max_message_chars": 5000}))
    with pytest.raises(ConfigError, match=r"channels\.telegram\.tokn"):
        create(_ctx({"tokn": "x"}))

    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET")
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET"):
        await create(_ctx({"base_url": fake.base_url})).start()
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "has spaces and ümlauts")
    with pytest.raises(ConfigError, match="other characters") as bad_secret:
        await create(_ctx({"base_url": fake.base_url})).start()
    assert "ümlauts" not in str(bad_secret.value)

    wrong = "999:WRONG-token-value"
    monkeypatch.setenv("MY_TOKEN", wrong)
    connector = create(_ctx({"mode": "polling", "token_env": "MY_TOKEN", "base_url": fake.base_url}))
    with pytest.raises(ConfigError, match="rejected the bot token in MY_TOKEN") as rejected:
        await connector.start()
    assert wrong not in str(rejected.value) and rejected.value.__cause__ is None
    assert rejected.value.__suppress_context__
    assert fake.calls_of("getUpdates") == []
