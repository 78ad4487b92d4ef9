"""Engine.handle_stream with a generative responder talking to a local OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_generation_openai import FakeLLM, fake  # noqa: F401 - the fixture is used by name

from botkit.config import DialogueConfig, OpenAIConfig
from botkit.engine import Engine
from botkit.generation.openai import OpenAICompatible
from botkit.responders.extractive import ExtractiveResponder
from botkit.responders.generative import GenerativeResponder
from botkit.store import SQLiteConversationStore
from botkit.types import IncomingMessage, Reply
from knowledge.retriever import KnowledgeRetriever

pytestmark = pytest.mark.slow


@pytest.fixture
async def engine(demo_kb, tmp_path: Path, fake: FakeLLM):  # noqa: F811
    dialogue = DialogueConfig()
    generator = OpenAICompatible(OpenAIConfig(base_url=fake.base_url, model="tiny-chat", timeout_s=5, retries=0))
    eng = Engine(retriever=KnowledgeRetriever(demo_kb), store=SQLiteConversationStore(tmp_path / "c.sqlite3"),
                 responder=GenerativeResponder(generator, ExtractiveResponder(), dialogue), config=dialogue)
    await eng.store.start()
    await eng.responder.start()
    yield eng
    await eng.responder.close()
    await eng.store.close()


async def collect(engine: Engine, text: str, conv: str = "s1") -> tuple[list[str], Reply]:
    deltas, final = [], None
    async for item in engine.handle_stream(IncomingMessage(conv, text)):
        if isinstance(item, str):
            deltas.append(item)
        else:
            final = item
    assert final is not None
    return deltas, final


async def test_grounded_generation_streams_and_the_final_reply_matches(engine: Engine, fake: FakeLLM):  # noqa: F811
    deltas, reply = await collect(engine, "how long do I have to return something?")
    assert len(deltas) > 1 and "".join(deltas) == reply.text
    assert reply.action == "answer" and reply.responder == "openai:tiny-chat" and reply.sources
    stored = (await engine.history("s1"))[-1]
    assert stored.text == reply.text and stored.author == "openai:tiny-chat"
    assert len(fake.requests) == 1


async def test_ungrounded_generation_is_replaced_in_the_final_reply(engine: Engine, fake: FakeLLM):  # noqa: F811
    fake.script = ["invent"]
    deltas, reply = await collect(engine, "how long do I have to return something?", "s2")
    assert "60 days" in "".join(deltas)  # what the model streamed ...
    assert "60 days" not in reply.text and reply.responder == "extractive"  # ... is not what was sent and stored
    stored = (await engine.history("s2"))[-1]
    assert stored.text == reply.text and "unsupported number" in stored.meta["note"]


async def test_no_generation_when_the_kb_has_no_answer(engine: Engine, fake: FakeLLM):  # noqa: F811
    deltas, reply = await collect(engine, "what is the boiling point of tungsten", "s3")
    assert deltas == [] and "couldn't find an answer" in reply.text and fake.requests == []
