"""The in-tree backends of the retriever, embedder and connector seams, and botkit.testing's
fakes of them, against the contract suites in :mod:`botkit.testing`.

Fast ones run on the fakes (HashEmbedder, StaticRetriever, an engine on botkit.testing's
store and responder); the real MiniLM, ONNX and the demo knowledge base are ``slow``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiohttp import WSMsgType, web
from conftest import DEMO, open_kb

from botkit.channels import Connector, ConnectorContext, OutgoingMessage
from botkit.engine import Engine
from botkit.errors import BotkitError
from botkit.project import Project
from botkit.testing import (
    ChannelHarness,
    CollectingConnector,
    ConnectorContract,
    EmbedderContract,
    HashEmbedder,
    InMemoryConversationStore,
    RetrieverContract,
    ScriptedResponder,
    StaticRetriever,
    echo,
    hit,
)
from botkit.testing.channel_fakes import create as create_collecting
from botkit.types import Conversation
from knowledge.base import KnowledgeBase
from knowledge.batching import BatchingEmbedder
from knowledge.retriever import KnowledgeRetriever
from knowledge.store import KnowledgeStore

REFUND_Q = "how long does a refund take to reach my card?"
ADDRESS_Q = "can I change the delivery address of my order?"


def fake_engine() -> Engine:
    return Engine(retriever=StaticRetriever(), responder=ScriptedResponder(echo), store=InMemoryConversationStore())


def write_project(root: Path, channels: Mapping[str, Any] | None = None, **knowledge: Any) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"name": "Contract shop", "state_dir": str(root / "state"),
                              "channels": dict(channels or {})}
    if knowledge:
        config["knowledge"] = knowledge
    (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return Project.load(root)


async def stored(engine: Engine, conversation: Conversation) -> list[tuple[str, str]]:
    return [(t.role, t.text) for t in await engine.history(conversation.id)]


# -- retrievers ---------------------------------------------------------------------------------

class TestStaticRetriever(RetrieverContract):
    known_query = REFUND_Q
    other_query = ADDRESS_Q
    unrelated_query = "zebra accordion quantum"

    @pytest.fixture
    async def retriever(self) -> AsyncIterator[StaticRetriever]:
        r = StaticRetriever({REFUND_Q: [hit("refund-timing", "Refunds reach your card in 5-10 days.", 0.62),
                                        hit("refund-policy", "You can return items within 30 days.", 0.91),
                                        hit("returns", "Print a label to return an item.", 0.4)],
                             ADDRESS_Q: [hit("change-delivery-address", "Change it before dispatch.", 0.88)],
                             "zebra accordion quantum": [hit("candle-safety", "Never leave a candle lit.", 0.1)]},
                            threshold=0.5)
        await r.start()
        yield r
        await r.close()


def _small_kb(root: Path, embedder: Any, **retrieval: Any) -> KnowledgeBase:
    """Six demo articles imported into a fresh project."""
    project = write_project(root, retrieval=retrieval) if retrieval else write_project(root)
    (root / "kb").mkdir()
    for name in ("refund-timing", "return-policy", "change-delivery-address", "password-reset", "lost-parcel",
                 "candle-safety"):
        shutil.copy(DEMO / "kb" / f"{name}.md", root / "kb")
    kb = KnowledgeBase(KnowledgeStore(project.db_path), embedder, project.index_dir, project.config.knowledge,
                       progress=False)
    kb.start()
    kb.import_paths([root / "kb"], author="test")
    return kb


class TestKnowledgeRetrieverOnHashedVectors(RetrieverContract):
    """The real retriever (SQLite, FAISS, BM25, batching, threads) with vectors from HashEmbedder."""

    known_query = REFUND_Q
    other_query = ADDRESS_Q
    unrelated_query = "zebra accordion quantum"

    @pytest.fixture
    async def retriever(self, tmp_path: Path) -> AsyncIterator[KnowledgeRetriever]:
        # Hashed features score lower than MiniLM: the project sets its threshold to match, as one would.
        r = KnowledgeRetriever(_small_kb(tmp_path / "bot", HashEmbedder(), threshold=0.35))
        await r.start()
        yield r
        await r.close()


@pytest.mark.slow
class TestKnowledgeRetrieverOnTheDemo(RetrieverContract):
    """The real retriever on the whole demo knowledge base with the real MiniLM embedder."""

    known_query = REFUND_Q
    other_query = ADDRESS_Q
    unrelated_query = "zebra accordion quantum physics"

    @pytest.fixture
    async def retriever(self, demo_dir: Path, embedder: Any) -> AsyncIterator[KnowledgeRetriever]:
        r = KnowledgeRetriever(open_kb(demo_dir, embedder))
        await r.start()
        yield r
        await r.close()


# -- embedders ----------------------------------------------------------------------------------

class TestHashEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self) -> HashEmbedder:
        return HashEmbedder()


class TestBatchingEmbedderOverHashEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self) -> BatchingEmbedder:
        return BatchingEmbedder(HashEmbedder(), max_batch=4)


def test_hash_embedder_is_the_same_across_instances_and_its_name_carries_the_width() -> None:
    a, b = HashEmbedder(64), HashEmbedder(64)
    np.testing.assert_array_equal(a.embed(["refund policy"]), b.embed(["refund policy"]))
    assert a.name != HashEmbedder(128).name and a.embed(["x"]).shape == (1, 64)
    with pytest.raises(ValueError, match="dim"):
        HashEmbedder(4)


@pytest.mark.slow
class TestSentenceTransformerEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self, embedder: Any) -> Any:  # the session's real MiniLM (tests/conftest.py)
        return embedder


@pytest.mark.slow
class TestBatchingEmbedderOverMiniLM(EmbedderContract):
    @pytest.fixture
    def embedder(self, embedder: Any) -> BatchingEmbedder:
        return BatchingEmbedder(embedder)


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One ONNX export for the whole class (a module fixture: class-scoped instance-method fixtures
    are deprecated in pytest)."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: `pip install onnxruntime onnx`")
    from knowledge.models import default_model_path
    from knowledge.onnx_embedding import OnnxEmbedder

    e = OnnxEmbedder(default_model_path(), cache_dir=tmp_path_factory.mktemp("onnx-cache"))
    e.start()
    return e


@pytest.mark.slow
class TestOnnxEmbedder(EmbedderContract):
    min_batch_cosine = 0.999  # fp32 kernels, but padded batches sum in another order than torch

    @pytest.fixture
    def embedder(self, onnx_embedder: Any) -> Any:
        return onnx_embedder


# -- connectors ---------------------------------------------------------------------------------

class CollectingHarness(ChannelHarness):
    def __init__(self, connector: CollectingConnector, engine: Engine):
        self.connector = connector
        self.name = connector.name
        self.engine = engine
        self._customers = itertools.count(1)
        self._read: dict[str, int] = {}

    async def open_conversation(self, text: str) -> tuple[Conversation, str]:
        customer = f"c{next(self._customers)}"
        reply = await self.connector.customer_says(text, customer=customer)
        conversation = await self.engine.store.get(reply.conversation_id)
        assert conversation is not None
        return conversation, reply.text

    async def say(self, conversation: Conversation, text: str) -> str:
        return (await self.connector.customer_says(text, customer=conversation.customer_id)).text

    async def received(self, conversation: Conversation, count: int) -> list[str]:
        start = self._read.get(conversation.id, 0)
        texts = self.connector.texts(conversation.id)[start:start + count]
        assert len(texts) == count, self.connector.texts(conversation.id)
        self._read[conversation.id] = start + count
        return texts

    async def stored_texts(self, conversation: Conversation) -> list[tuple[str, str]]:
        return await stored(self.engine, conversation)


class TestCollectingConnector(ConnectorContract):
    @pytest.fixture
    def make_connector(self) -> Callable[[str, Mapping[str, Any]], Connector]:
        engine = fake_engine()
        return lambda name, config: create_collecting(ConnectorContext(name, config, engine, None, None))  # type: ignore[arg-type]

    @pytest.fixture
    async def channel(self) -> AsyncIterator[CollectingHarness]:
        engine = fake_engine()
        await engine.start()
        connector = create_collecting(ConnectorContext("collect", {}, engine, None, None))  # type: ignore[arg-type]
        await connector.start()
        yield CollectingHarness(connector, engine)
        await connector.stop()
        await engine.close()


async def test_collecting_connector_answers_what_was_accepted_before_a_restart_and_can_fail_sends() -> None:
    engine = fake_engine()
    await engine.start()
    from botkit.types import IncomingMessage

    await engine.accept(IncomingMessage("collect:ada", "still there?", "collect", "ada"), "m1")
    connector = create_collecting(ConnectorContext("collect", {"fail_sends": True}, engine, None, None))  # type: ignore[arg-type]
    with pytest.raises(BotkitError, match="not started"):
        await connector.customer_says("hello")
    await connector.start()
    assert [r.text for r in connector.replies] == ["You asked: still there?"]
    conversation = await engine.store.get("collect:ada")
    with pytest.raises(BotkitError, match="fail_sends"):
        await connector.send(conversation, OutgoingMessage(conversation.id, "hi"))
    assert connector.sent == []
    await engine.close()


WS = "/channels/webchat/ws"


class WebChatHarness(ChannelHarness):
    """A browser tab per conversation on a real aiohttp server."""

    OUT_OF_REPLY = {"agent", "bot", "event"}

    def __init__(self, client: Any, connector: Connector, engine: Engine):
        self.client = client
        self.connector = connector
        self.name = connector.name
        self.engine = engine
        self._sockets: dict[str, Any] = {}
        self._ids = itertools.count(1)

    async def _frame(self, ws: Any) -> dict[str, Any]:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
        return json.loads(msg.data)

    async def _ask(self, ws: Any, text: str) -> str:
        client_id = f"m{next(self._ids)}"
        await ws.send_json({"type": "message", "id": client_id, "text": text})
        while True:
            frame = await self._frame(ws)
            if frame.get("id") == client_id and frame["type"] in ("reply", "error"):
                assert frame["type"] == "reply", frame
                return str(frame["text"])

    async def open_conversation(self, text: str) -> tuple[Conversation, str]:
        ws = await self.client.ws_connect(WS)
        await ws.send_json({"type": "hello", "session": None})
        welcome = await self._frame(ws)
        assert welcome["type"] == "welcome", welcome
        self._sockets[welcome["conversation"]] = ws
        reply = await self._ask(ws, text)
        conversation = await self.engine.store.get(welcome["conversation"])
        assert conversation is not None
        return conversation, reply

    async def say(self, conversation: Conversation, text: str) -> str:
        return await self._ask(self._sockets[conversation.id], text)

    async def received(self, conversation: Conversation, count: int) -> list[str]:
        ws, texts = self._sockets[conversation.id], []
        while len(texts) < count:
            frame = await self._frame(ws)
            if frame["type"] in self.OUT_OF_REPLY:
                texts.append(str(frame["text"]))
        return texts

    async def stored_texts(self, conversation: Conversation) -> list[tuple[str, str]]:
        return await stored(self.engine, conversation)


class TestWebChatConnector(ConnectorContract):
    @pytest.fixture
    def make_connector(self, tmp_path: Path) -> Callable[[str, Mapping[str, Any]], Connector]:
        from connectors.webchat import create

        project = write_project(tmp_path / "made")
        return lambda name, config: create(ConnectorContext(name, config, fake_engine(), web.Application(), project))

    @pytest.fixture
    async def channel(self, tmp_path: Path, aiohttp_client: Any) -> WebChatHarness:
        from botkit.app.keys import CONNECTORS
        from botkit.app.server import build_app

        engine = fake_engine()
        app = build_app(write_project(tmp_path / "bot", {"webchat": {}}), engine)
        client = await aiohttp_client(app)  # starts the engine and the connector; stops them afterwards
        return WebChatHarness(client, app[CONNECTORS]["webchat"], engine)


class TelegramHarness(ChannelHarness):
    """Private chats with the bot through a real local fake of the Bot API (polling mode)."""

    def __init__(self, fake: Any, connector: Connector, engine: Engine):
        self.fake = fake
        self.connector = connector
        self.name = connector.name
        self.engine = engine
        self._chats = itertools.count(5_000_001)
        self._read: dict[int, int] = {}

    def _chat(self, conversation: Conversation) -> int:
        return int(conversation.id.partition(":")[2])

    async def _ask(self, chat: int, text: str) -> str:
        from fake_telegram import text_update

        before = len(self.fake.texts(chat))
        await self.fake.enqueue(text_update(chat, text))
        sent = await self.fake.wait_sent(before + 1, chat_id=chat)
        self._read[chat] = before + 1
        return str(sent[before].text)

    async def open_conversation(self, text: str) -> tuple[Conversation, str]:
        chat = next(self._chats)
        reply = await self._ask(chat, text)
        conversation = await self.engine.store.get(f"{self.name}:{chat}")
        assert conversation is not None
        return conversation, reply

    async def say(self, conversation: Conversation, text: str) -> str:
        return await self._ask(self._chat(conversation), text)

    async def received(self, conversation: Conversation, count: int) -> list[str]:
        chat = self._chat(conversation)
        start = self._read.get(chat, 0)
        sent = await self.fake.wait_sent(start + count, chat_id=chat, timeout=10)
        self._read[chat] = start + count
        return [m.text for m in sent[start:start + count]]

    async def stored_texts(self, conversation: Conversation) -> list[tuple[str, str]]:
        return await stored(self.engine, conversation)


TOKEN = "123456789:AAFakeTokenForContractTests_abcdefg"


class TestTelegramConnector(ConnectorContract):
    @pytest.fixture(autouse=True)
    def token(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)

    @pytest.fixture
    def make_connector(self, tmp_path: Path) -> Callable[[str, Mapping[str, Any]], Connector]:
        from connectors.telegram import create

        project = write_project(tmp_path / "made")
        return lambda name, config: create(ConnectorContext(name, config, fake_engine(), web.Application(), project))

    @pytest.fixture
    async def channel(self, tmp_path: Path) -> AsyncIterator[TelegramHarness]:
        from fake_telegram import FakeTelegram

        from connectors.telegram import create

        engine = fake_engine()
        await engine.start()
        async with FakeTelegram(TOKEN) as fake:
            config = {"mode": "polling", "base_url": fake.base_url, "poll_timeout": 1, "retry_backoff": 0.05}
            connector = create(ConnectorContext("telegram", config, engine, web.Application(),
                                                write_project(tmp_path / "bot")))
            await connector.start()
            yield TelegramHarness(fake, connector, engine)
            await connector.stop()
        await engine.close()


# -- the contracts catch broken backends -------------------------------------------------------

class _Unnormalised(HashEmbedder):
    def embed(self, texts):  # type: ignore[no-untyped-def]
        return super().embed(texts) * 2.0


class _ReordersRows(HashEmbedder):
    def embed(self, texts):  # type: ignore[no-untyped-def]
        return super().embed(sorted(texts, key=len))  # sorted to batch, never put back


class _IgnoresK(StaticRetriever):
    async def search(self, query, k=None):  # type: ignore[no-untyped-def]
        return await super().search(query, None)


def test_the_embedder_contract_fails_broken_embedders() -> None:
    contract = EmbedderContract()
    with pytest.raises(AssertionError):
        contract.test_rows_are_unit_float32_vectors_one_per_text(_Unnormalised())
    with pytest.raises(AssertionError):
        contract.test_a_row_does_not_depend_on_the_batch_or_its_order(_ReordersRows())


async def test_the_retriever_and_connector_contracts_fail_broken_backends() -> None:
    broken = _IgnoresK({REFUND_Q: [hit("a", "A.", 0.9), hit("b", "B.", 0.8), hit("c", "C.", 0.7)]})
    with pytest.raises(AssertionError):
        await TestStaticRetriever().test_k_caps_the_hits_and_a_smaller_k_is_the_top_of_a_bigger_one(broken)

    def hard_coded(name: str, config: Mapping[str, Any]) -> Connector:
        connector = create_collecting(ConnectorContext(name, config, fake_engine(), None, None))  # type: ignore[arg-type]
        connector.name = "collect"
        return connector

    with pytest.raises(AssertionError):
        ConnectorContract().test_it_is_a_connector_named_by_its_context(hard_coded)
