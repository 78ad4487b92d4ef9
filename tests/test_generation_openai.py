"""OpenAICompatible and GenerativeResponder against a local OpenAI-compatible server.

The fake server is a small aiohttp app on 127.0.0.1 that speaks the chat-completions streaming
protocol (SSE). Its reply is built from the request: the first sentence of passage 1 of the
system message, so a well-behaved reply is grounded. Scripted misbehaviour (500, 429, 401,
stalls, malformed chunks, a dropped connection, an invented number) tests the client's and the
responder's handling. Timeouts and backoff are tiny so the module runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lm_fixtures import make_hit, make_request

from botkit.config import DialogueConfig, OpenAIConfig
from botkit.errors import GenerationError
from botkit.generation.openai import OpenAICompatible
from botkit.generation.prompt import build_messages
from botkit.responders.extractive import DONT_KNOW, ExtractiveResponder
from botkit.responders.factory import make_responder
from botkit.responders.generative import GenerativeResponder

KEY = "sk-test-0123456789"
QUESTION = "How long do I have to return something?"
HITS = [make_hit("return-policy", score=0.83), make_hit("return-policy", "Return shipping", score=0.70)]
SENTENCE = ("If something isn't right for your home, you can return it within 30 days of delivery for a refund "
            "or a free exchange.")


class FakeLLM:
    """Records every request and answers according to ``script`` (one entry per request, then "ok")."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.release = asyncio.Event()
        self.base_url = ""
        self.redirect_to = ""  # where "redirect" sends the client

    @staticmethod
    def reply_for(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        passage = re.search(r'<passage id="1"[^>]*>\n(.*?)\n</passage>', system, re.DOTALL)
        assert passage, "no passage 1 in the system message"
        return passage.group(1).split(". ")[0].rstrip(".") + "."

    @staticmethod
    def chunk(content: str | None, finish: str | None = None) -> bytes:
        delta = ({"role": "assistant"} if content is None and finish is None
                 else ({"content": content} if content else {}))
        event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "tiny-chat",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(event)}\n\n".encode()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        mode = self.script.pop(0) if self.script else "ok"
        if mode in ("500", "503"):
            return web.Response(status=int(mode), text="upstream model crashed: CUDA out of memory")
        if mode == "429":
            return web.Response(status=429, text="slow down", headers={"Retry-After": "0"})
        if mode == "401":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if mode == "redirect":
            raise web.HTTPTemporaryRedirect(self.redirect_to)  # 307: a client that follows re-sends the body
        if mode == "stall":
            try:
                await asyncio.wait_for(self.release.wait(), 5)
            except TimeoutError:
                pass
            return web.Response(status=500, text="too late")
        reply = self.reply_for(body)
        if mode == "json":  # a server that ignores stream=true
            return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
        if mode == "invent":
            reply = reply.replace("30 days", "60 days")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if mode == "malformed":
            await resp.write(b"data: {not json\n\n")
            return resp
        if mode == "longline":  # one SSE line far longer than any chunk (and no newline)
            for _ in range(64):
                await resp.write(b"data: " + b"x" * 16_384)
            return resp
        if mode == "endless":  # a server that ignores max_tokens: 100,000 deltas
            await resp.write(self.chunk(reply))
            for _ in range(1000):
                await resp.write(b"".join(self.chunk(" again") for _ in range(100)))
            await resp.write(b"data: [DONE]\n\n")
            return resp
        await resp.write(b": keep-alive comment\n\n" + self.chunk(None))
        words = reply.split(" ")
        for i in range(0, len(words), 4):
            await resp.write(self.chunk(" ".join(words[i:i + 4]) + (" " if i + 4 < len(words) else "")))
            if mode == "drop":  # one delta, then the connection dies
                assert request.transport is not None
                request.transport.close()
                return resp
        await resp.write(self.chunk("", finish="stop") + b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def fake(aiohttp_server: Any) -> Any:
    llm = FakeLLM()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", llm.handle)
    server = await aiohttp_server(app)
    llm.base_url = str(server.make_url("/v1"))
    yield llm
    llm.release.set()  # let a stalled handler finish before the server shuts down


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTKIT_TEST_KEY", KEY)


def config(base_url: str, **kw: Any) -> OpenAIConfig:
    return OpenAIConfig(**{"base_url": base_url, "model": "tiny-chat", "api_key_env": "BOTKIT_TEST_KEY",
                           "timeout_s": 2.0, "connect_timeout_s": 0.5, "retries": 2, "max_tokens": 64, **kw})


async def client(base_url: str, **kw: Any) -> OpenAICompatible:
    gen = OpenAICompatible(config(base_url, **kw), backoff_s=0.01)
    await gen.start()
    return gen


async def responder_for(fake: FakeLLM, **kw: Any) -> GenerativeResponder:
    dialogue = DialogueConfig(responder="openai", openai=config(fake.base_url, **kw))
    responder = make_responder(dialogue, project_root=Path("."))
    assert isinstance(responder, GenerativeResponder)
    responder.generator.backoff_s = 0.01  # type: ignore[attr-defined]
    await responder.start()
    return responder


def messages(query: str = QUESTION) -> list[Any]:
    return build_messages(make_request(query, HITS), HITS, history_turns=6)


async def collect(gen: OpenAICompatible, msgs: list[Any] | None = None) -> list[str]:
    async with aclosing(gen.stream(msgs or messages())) as deltas:
        return [d async for d in deltas]


async def test_streams_deltas_and_sends_what_the_protocol_needs(fake: FakeLLM) -> None:
    gen = await client(fake.base_url)
    deltas = await collect(gen)
    assert len(deltas) >= 4
    assert "".join(deltas) == SENTENCE
    [req] = fake.requests
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"
    body = req["body"]
    assert body["model"] == "tiny-chat" and body["stream"] is True and body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][-1]["content"] == f"<customer_message>\n{QUESTION}\n</customer_message>"
    assert KEY not in repr(gen)
    await gen.close()


async def test_a_server_that_ignores_stream_true_still_works(fake: FakeLLM) -> None:
    fake.script = ["json"]
    gen = await client(fake.base_url)
    assert await collect(gen) == [SENTENCE]
    await gen.close()


async def test_responder_returns_a_grounded_generated_answer(fake: FakeLLM) -> None:
    responder = await responder_for(fake)
    items = [item async for item in responder.respond_stream(make_request(QUESTION, HITS))]
    *deltas, final = items
    assert "".join(deltas) == SENTENCE
    assert final.action == "answer" and final.text == SENTENCE and final.note == ""
    assert final.responder == "openai:tiny-chat" and final.confidence == pytest.approx(0.83)
    assert [(s.id, s.score) for s in final.sources] == [("return-policy", 0.83), ("return-policy", 0.70)]
    await responder.close()


@pytest.mark.parametrize("first", ["500", "503", "429"])
async def test_a_transient_error_before_any_token_is_retried(fake: FakeLLM, first: str) -> None:
    fake.script = [first]
    gen = await client(fake.base_url)
    assert "".join(await collect(gen)) == SENTENCE  # one reply, not two
    assert len(fake.requests) == 2
    await gen.close()


async def test_persistent_500_gives_up_after_retries_and_the_responder_falls_back(fake: FakeLLM) -> None:
    fake.script = ["500"] * 3
    gen = await client(fake.base_url, retries=2)
    with pytest.raises(GenerationError, match=r"giving up after 3 attempts; last: HTTP 500: upstream model crashed"):
        await collect(gen)
    assert len(fake.requests) == 3
    await gen.close()

    fake.script = ["500"] * 2
    responder = await responder_for(fake, retries=1)
    candidate = await responder.respond(make_request(QUESTION, HITS))
    assert len(fake.requests) == 5
    assert candidate.responder == "extractive" and candidate.text.startswith("If something isn't right for your home")
    assert candidate.note.startswith("generation failed: ") and "HTTP 500" in candidate.note
    await responder.close()


async def test_a_stalled_server_times_out_quickly_without_retry(fake: FakeLLM) -> None:
    fake.script = ["stall"]
    gen = await client(fake.base_url, timeout_s=0.3, retries=2)
    t0 = time.perf_counter()
    with pytest.raises(GenerationError, match=r"no complete reply within timeout_s=0.3s"):
        await collect(gen)
    assert time.perf_counter() - t0 < 1.5
    assert len(fake.requests) == 1  # the time budget is spent; retrying would triple the wait
    await gen.close()


async def test_a_malformed_chunk_is_an_error(fake: FakeLLM) -> None:
    fake.script = ["malformed"]
    gen = await client(fake.base_url)
    with pytest.raises(GenerationError, match=r"malformed chunk .*\{not json"):
        await collect(gen)
    assert len(fake.requests) == 1
    await gen.close()


async def test_401_is_not_retried(fake: FakeLLM) -> None:
    fake.script = ["401"]
    gen = await client(fake.base_url, retries=3)
    with pytest.raises(GenerationError, match=r"HTTP 401 \(not retried\): .*invalid api key"):
        await collect(gen)
    assert len(fake.requests) == 1
    await gen.close()


async def test_a_connection_lost_mid_reply_is_not_retried(fake: FakeLLM) -> None:
    fake.script = ["drop"]
    gen = await client(fake.base_url, retries=2)
    got: list[str] = []
    with pytest.raises(GenerationError, match="after the reply had started"):
        async with aclosing(gen.stream(messages())) as deltas:
            async for d in deltas:
                got.append(d)
    assert got == ["If something isn't right "]
    assert len(fake.requests) == 1  # a retry would have sent these words twice
    await gen.close()


async def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = await client(f"http://127.0.0.1:{port}/v1", retries=1)
    with pytest.raises(GenerationError, match=r"giving up after 2 attempts; last: Client\w*Error"):
        await collect(gen)
    await gen.close()


async def test_an_invented_number_makes_the_responder_fall_back(fake: FakeLLM) -> None:
    fake.script = ["invent"]
    responder = await responder_for(fake)
    items = [item async for item in responder.respond_stream(make_request(QUESTION, HITS))]
    *deltas, final = items
    assert "60 days" in "".join(deltas)  # streamed, so the channel must replace it
    assert final.responder == "extractive" and "60 days" not in final.text
    assert final.note == "generated reply not grounded: unsupported number 60"
    await responder.close()


async def test_no_generation_where_the_kb_has_no_answer_or_must_clarify(fake: FakeLLM) -> None:
    responder = await responder_for(fake)
    weak = make_request(QUESTION, [make_hit("return-policy", score=0.30)])
    dont_know = await responder.respond(weak)
    assert dont_know.text == DONT_KNOW and not dont_know.grounded
    close = make_request(QUESTION, [make_hit("return-policy", score=0.80), make_hit("exchanges", score=0.79)])
    clarify = await responder.respond(close)
    assert clarify.action == "clarify" and [o.id for o in clarify.options] == ["return-policy", "exchanges"]
    assert fake.requests == []  # the model was never asked
    await responder.close()


async def test_a_missing_api_key_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOTKIT_TEST_KEY")
    gen = OpenAICompatible(config("http://127.0.0.1:9/v1"))
    with pytest.raises(GenerationError, match="dialogue.openai.api_key_env: the environment variable BOTKIT_TEST_KEY"):
        await gen.start()
    with pytest.raises(GenerationError, match="start"):
        await collect(gen)


def test_extractive_is_the_default() -> None:
    assert type(make_responder(DialogueConfig(), Path("."))) is ExtractiveResponder


@pytest.fixture
async def elsewhere(aiohttp_server: Any) -> Any:
    """Another origin, recording what reaches it."""
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({"headers": dict(request.headers), "body": await request.text()})
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "stolen"}}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(app)
    return server, seen


async def test_a_redirect_is_not_followed_and_the_prompt_stays_home(fake: FakeLLM, elsewhere: Any) -> None:
    server, seen = elsewhere
    fake.redirect_to = str(server.make_url("/v1/chat/completions"))
    fake.script = ["redirect"]
    gen = await client(fake.base_url, retries=2)
    with pytest.raises(GenerationError, match=r"answered HTTP 307, a redirect to 'http://127\.0\.0\.1:\d+/v1/chat/"
                                              r"completions'; not followed .*dialogue\.openai\.base_url"):
        await collect(gen)
    assert seen == []  # neither the prompt nor the key left for the other address
    assert len(fake.requests) == 1  # not retried either
    await gen.close()

    fake.script = ["redirect"]
    responder = await responder_for(fake)
    candidate = await responder.respond(make_request(QUESTION, HITS))
    assert candidate.responder == "extractive" and candidate.fallback == "error" and "redirect" in candidate.note
    assert seen == []
    await responder.close()


async def test_an_oversized_sse_line_is_a_clear_error_and_a_fallback(fake: FakeLLM) -> None:
    fake.script = ["longline"]
    gen = await client(fake.base_url)
    with pytest.raises(GenerationError, match=r"a response that cannot be read \(LineTooLong: .*not retried"):
        await collect(gen)
    assert len(fake.requests) == 1
    await gen.close()

    fake.script = ["longline"]
    responder = await responder_for(fake)
    candidate = await responder.respond(make_request(QUESTION, HITS))
    assert candidate.responder == "extractive" and "LineTooLong" in candidate.note
    await responder.close()


async def test_a_stream_past_max_tokens_is_cut_off_and_falls_back(fake: FakeLLM) -> None:
    fake.script = ["endless"]
    gen = await client(fake.base_url, max_tokens=64)
    got: list[str] = []
    with pytest.raises(GenerationError,
                       match=r"ran past .* for max_tokens=64 \(dialogue\.openai\.max_tokens\); cut off"):
        async with aclosing(gen.stream(messages())) as deltas:
            async for delta in deltas:
                got.append(delta)
    assert len(got) <= 2 * 64 + 32 and len("".join(got)) <= 64 * 16  # not 100,000 deltas
    await gen.close()

    fake.script = ["endless"]
    responder = await responder_for(fake, max_tokens=64)
    items = [item async for item in responder.respond_stream(make_request(QUESTION, HITS))]
    *deltas, final = items
    assert len(deltas) <= 2 * 64 + 32
    assert final.responder == "extractive" and final.fallback == "error" and "cut off" in final.note
    assert "again again" not in final.text
    await responder.close()
