"""The composed server: health, metrics, channel selection, third-party connectors by entry point."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from aiohttp import WSMsgType

from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.errors import ConfigError
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from knowledge.retriever import KnowledgeRetriever
from tests.fake_telegram import FakeTelegram, text_update

pytestmark = pytest.mark.slow

ECHO_PLUGIN = textwrap.dedent('''
    """A third-party connector, installed as a package: GET /channels/echo/say?user=U&text=T."""
    from aiohttp import web
    from botkit.types import IncomingMessage

    SENT = []

    class EchoConnector:
        name = "echo"

        def __init__(self, ctx):
            self.engine = ctx.engine
            self.prefix = ctx.config.get("prefix", "")
            ctx.app.router.add_get("/channels/echo/say", self.say)

        async def start(self):
            SENT.append(("started",))

        async def stop(self):
            SENT.append(("stopped",))

        async def send(self, conversation, message):
            SENT.append((conversation.id, message.kind, message.text))

        async def say(self, request):
            reply = await self.engine.handle(IncomingMessage("echo:" + request.query["user"], request.query["text"],
                                                             channel="echo"))
            return web.json_response({"text": self.prefix + reply.text, "action": reply.action})

    def create(ctx):
        return EchoConnector(ctx)
''')


def install_plugin(root: Path) -> None:
    (root / "botkit_echo").mkdir(parents=True)
    (root / "botkit_echo" / "__init__.py").write_text(ECHO_PLUGIN)
    info = root / "botkit_echo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: botkit-echo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[botkit.connectors]\necho = botkit_echo:create\n")


def with_channels(demo_dir: Path, channels: dict) -> Project:
    cfg = yaml.safe_load((demo_dir / "bot.yaml").read_text())
    cfg["channels"] = channels
    (demo_dir / "bot.yaml").write_text(yaml.safe_dump(cfg))
    return Project.load(demo_dir)


def engine_for(project: Project, kb, tmp_path: Path) -> Engine:
    return Engine(retriever=KnowledgeRetriever(kb), responder=ExtractiveResponder(),
                  store=SQLiteConversationStore(tmp_path / "conv.sqlite3"), rules=build_rules(EscalationConfig()),
                  config=project.config.dialogue, summarize=summarize)


async def test_third_party_connector_from_an_entry_point(demo_kb, demo_dir: Path, tmp_path: Path,
                                                         aiohttp_client, monkeypatch):
    install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    project = with_channels(demo_dir, {"echo": {"prefix": "[echo] "}})
    engine = engine_for(project, demo_kb, tmp_path)
    client = await aiohttp_client(build_app(project, engine))
    import botkit_echo

    assert botkit_echo.SENT == [("started",)]
    resp = await client.get("/channels/echo/say", params={"user": "1", "text": "can I pay with paypal?"})
    body = await resp.json()
    assert body["text"].startswith("[echo] Yes, PayPal is available")
    resp = await client.get("/channels/echo/say", params={"user": "1", "text": "let me talk to a person"})
    assert (await resp.json())["action"] == "escalate"
    await engine.take("echo:1", "alice")
    await engine.agent_message("echo:1", "alice", "Alice here, on your plugin channel")
    assert ("echo:1", "agent", "Alice here, on your plugin channel") in botkit_echo.SENT
    assert ("echo:1", "system", "alice from our team has joined the conversation.") in botkit_echo.SENT

    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["channels"] == ["echo"] and health["kb_version"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'botkit_turns_total{action="answer",channel="echo"} 1.0' in metrics
    assert 'botkit_handoffs_total{reason="asked_for_human"} 1.0' in metrics
    assert "botkit_turn_seconds_count 2.0" in metrics
    await client.close()
    assert botkit_echo.SENT[-1] == ("stopped",)


async def test_unknown_channel_is_a_config_error_naming_it(demo_dir: Path, demo_kb, tmp_path: Path):
    project = with_channels(demo_dir, {"carrier-pigeon": {}})
    with pytest.raises(ConfigError, match=r"channels.carrier-pigeon: no connector named 'carrier-pigeon' "
                                          r"\(available: .*telegram.*webchat"):
        build_app(project, engine_for(project, demo_kb, tmp_path))


async def test_bad_channel_setting_names_the_key(demo_dir: Path, demo_kb, tmp_path: Path):
    project = with_channels(demo_dir, {"webchat": {"max_message_chars": "lots"}})
    with pytest.raises(ConfigError, match=r"channels.webchat.max_message_chars: bad value 'lots'"):
        build_app(project, engine_for(project, demo_kb, tmp_path))


TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghij"
SECRET = "s3cret-webhook_Token"
WEBHOOK = "/channels/telegram/webhook"


async def test_metrics_count_turns_per_channel_and_bad_requests_are_refused(
        demo_kb, demo_dir: Path, tmp_path: Path, aiohttp_client, monkeypatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", SECRET)
    async with FakeTelegram(TOKEN) as fake:
        cfg = yaml.safe_load((demo_dir / "bot.yaml").read_text())
        cfg["server"] = {"public_url": "https://bot.example.com"}
        (demo_dir / "bot.yaml").write_text(yaml.safe_dump(cfg))
        project = with_channels(demo_dir, {"webchat": {}, "telegram": {"base_url": fake.base_url,
                                                                       "retry_backoff": 0.05}})
        client = await aiohttp_client(build_app(project, engine_for(project, demo_kb, tmp_path)))
        secret = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}

        # Telegram: JSON nested deeper than the parser can go is a 400, not a crash (500)
        resp = await client.post(WEBHOOK, data="[" * 100_000, headers=secret)
        assert resp.status == 400 and "nested too deeply" in await resp.text()
        resp = await client.post(WEBHOOK, data='{"update_id": 1, "message": ' + "[" * 100_000, headers=secret)
        assert resp.status == 400

        # one question on each channel
        resp = await client.post(WEBHOOK, data=json.dumps(text_update(4101, "can I pay with paypal?")),
                                 headers=secret)
        assert resp.status == 200
        await fake.wait_sent(1, chat_id=4101)
        ws = await client.ws_connect("/channels/webchat/ws")
        await ws.send_json({"type": "hello", "session": None})
        await ws.send_json({"type": "message", "id": "m1", "text": "can I pay with paypal?"})
        while True:
            msg = await ws.receive(timeout=30)
            assert msg.type == WSMsgType.TEXT
            if json.loads(msg.data)["type"] == "reply":
                break
        await ws.close()

        metrics = await (await client.get("/metrics")).text()
        assert 'botkit_turns_total{action="answer",channel="telegram"} 1.0' in metrics
        assert 'botkit_turns_total{action="answer",channel="webchat"} 1.0' in metrics
        assert 'channel="any"' not in metrics and 'channel="unknown"' not in metrics

        # the chat page's CSP never carries an unchecked Host header
        page = await client.get("/chat")
        assert page.status == 200
        assert f"ws://{client.host}:{client.port} " in page.headers["Content-Security-Policy"]
        forged = await client.get("/chat", headers={"Host": "x; frame-ancestors *"})
        assert forged.status == 400 and "Content-Security-Policy" not in forged.headers
        assert "frame-ancestors *" not in str(forged.headers)
        await client.close()
