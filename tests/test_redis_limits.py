"""Rate-limit buckets in Redis (botkit/backends/redis_limits.py) against the real Redis at
$BOTKIT_TEST_REDIS_URL: two limiters (two workers) share one budget, it refills, its keys
expire, Redis going away falls back to the process's own buckets (and back), and the web chat
refuses a message on one worker when the session spent its budget on the other. Without a
reachable Redis these fail under CI (CI=true) and skip elsewhere (test_redis_backends' rules)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from test_redis_backends import URL, keys_under, prefix, wait_until  # noqa: F401 - prefix: the fixture

from botkit.app.compose import build_rate_limiter
from botkit.app.server import build_app
from botkit.backends.redis_limits import RedisRateLimiter
from botkit.config import StorageConfig
from botkit.engine import Engine
from botkit.errors import ConfigError, StorageError
from botkit.project import Project
from botkit.store import SQLiteConversationStore
from botkit.testing import ScriptedResponder, StaticRetriever
from connectors.webchat.limits import RATE_LIMITER, Limit, RateLimiter

PER_MINUTE_3 = Limit("test", 3, 60.0)


@pytest.fixture
async def workers(prefix: str) -> AsyncIterator[tuple[RedisRateLimiter, RedisRateLimiter]]:
    a, b = RedisRateLimiter(URL, prefix=prefix), RedisRateLimiter(URL, prefix=prefix)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def test_two_workers_share_one_budget(workers: tuple[RedisRateLimiter, RedisRateLimiter]):
    a, b = workers
    assert isinstance(a, RateLimiter)
    assert [await a.take([(PER_MINUTE_3, "ip-1")]), await b.take([(PER_MINUTE_3, "ip-1")]),
            await a.take([(PER_MINUTE_3, "ip-1")])] == [0.0, 0.0, 0.0]
    wait_a, wait_b = await a.take([(PER_MINUTE_3, "ip-1")]), await b.take([(PER_MINUTE_3, "ip-1")])
    assert 19.0 < wait_a <= 20.0 and 19.0 < wait_b <= 20.0  # one token takes 60/3 s to come back
    assert await b.take([(PER_MINUTE_3, "ip-2")]) == 0.0  # another key has its own bucket
    assert not a.degraded and not b.degraded


async def test_a_message_takes_from_every_bucket_or_from_none(workers: tuple[RedisRateLimiter, RedisRateLimiter]):
    a, b = workers
    session, ip = Limit("session", 10, 60.0), Limit("ip", 1, 60.0)
    assert await a.take([(session, "s1"), (ip, "10.0.0.1")]) == 0.0
    assert await b.take([(session, "s2"), (ip, "10.0.0.1")]) > 0  # the address is spent: s2 keeps its 10
    assert await b.take([(session, "s2")], cost=10, peek=True) == 0.0
    assert await a.take([(session, "s1")], cost=10, peek=True) > 0  # s1 paid its one token
    assert await a.take([(session, "s3")], peek=True) == 0.0
    assert await a.take([(session, "s3")], cost=10) == 0.0  # the peek took nothing


async def test_buckets_refill_at_their_rate(workers: tuple[RedisRateLimiter, RedisRateLimiter]):
    a, b = workers
    fast = Limit("fast", 2, 0.4)  # 5 tokens a second
    assert await a.take([(fast, "k")]) == 0.0 and await a.take([(fast, "k")]) == 0.0
    wait = await b.take([(fast, "k")])
    assert 0.1 < wait <= 0.2
    await asyncio.sleep(wait + 0.02)
    assert await b.take([(fast, "k")]) == 0.0
    assert await a.take([(fast, "k")]) > 0


async def test_a_bucket_expires_when_it_would_be_full_again(prefix: str,
                                                            workers: tuple[RedisRateLimiter, RedisRateLimiter]):
    a, _ = workers
    quick = Limit("quick", 2, 0.2)  # 10 tokens a second: one token is back in 0.1 s
    assert await a.take([(quick, "k")], peek=True) == 0.0
    assert await keys_under(prefix) == []  # a peek writes nothing
    assert await a.take([(quick, "k")]) == 0.0
    key = a.key(quick, "k")
    assert await keys_under(prefix) == [key]
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(URL)
    try:
        ttl = await client.pttl(key)
        assert 900 < ttl <= 1100  # full again after 100 ms, plus 1 s of slack
        slow = Limit("slow", 3, 60.0)
        await a.take([(slow, "k")])
        assert 20_000 < await client.pttl(a.key(slow, "k")) <= 21_000  # 20 s to refill its one token
    finally:
        await client.aclose()
    loop = asyncio.get_running_loop()
    gone_by = loop.time() + 3.0
    while key in await keys_under(prefix):
        assert loop.time() < gone_by, "the bucket's key did not expire"
        await asyncio.sleep(0.05)


class Proxy:
    """A TCP relay to Redis that can be stopped (Redis away: connections cut, new ones refused)
    and started again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


async def test_redis_away_falls_back_to_this_workers_buckets_then_back(prefix: str,
                                                                       caplog: pytest.LogCaptureFixture):
    """Fail open, not unlimited: a customer's message is never refused because Redis is away,
    but each worker still holds each client to the rate; once Redis answers again (tried every
    ``retry_s``), the shared budget counts again."""
    parts = urlsplit(URL)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    now = [1000.0]
    limiter = RedisRateLimiter(f"redis://127.0.0.1:{proxy.port}{parts.path}", prefix=prefix, retry_s=5.0,
                               clock=lambda: now[0])
    await limiter.start()
    try:
        assert [await limiter.take([(PER_MINUTE_3, "c")]) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert await limiter.take([(PER_MINUTE_3, "c")]) > 0  # spent, in Redis
        await proxy.stop()
        caplog.set_level(logging.WARNING, logger="botkit.backends.redis_limits")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await limiter.take([(PER_MINUTE_3, "c")]) == 0.0  # fails open, to a fresh local bucket
        assert limiter.degraded
        assert [await limiter.take([(PER_MINUTE_3, "c")]) for _ in range(3)][:2] == [0.0, 0.0]
        assert await limiter.take([(PER_MINUTE_3, "c")]) > 0  # still limited: by this worker's bucket
        assert loop.time() - started < 2.0  # no wait per message while Redis is away
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "not answering" in errors[0].getMessage()  # once per outage

        await proxy.start()  # Redis is back, but it is only tried again after retry_s
        assert await limiter.take([(PER_MINUTE_3, "other")]) == 0.0 and limiter.degraded
        now[0] += 5.1
        assert await limiter.take([(PER_MINUTE_3, "c")]) > 0  # the shared bucket, still spent
        assert not limiter.degraded
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await limiter.close()
        with contextlib.suppress(Exception):
            await proxy.stop()


async def test_redis_down_at_start_or_a_wrong_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(StorageError, match="not reachable .*at start-up"):
        await RedisRateLimiter("redis://127.0.0.1:1/0").start()
    with pytest.raises(ConfigError, match="redis://host"):
        RedisRateLimiter("http://127.0.0.1:6379")
    storage = StorageConfig()
    monkeypatch.delenv(storage.redis_url_env, raising=False)
    assert build_rate_limiter(storage) is None
    monkeypatch.setenv(storage.redis_url_env, URL)
    limiter = build_rate_limiter(StorageConfig(redis_prefix="bot-a:"))
    assert isinstance(limiter, RedisRateLimiter) and limiter.prefix == "bot-a:"
    with pytest.raises(RuntimeError, match="before start"):
        await limiter.take([(PER_MINUTE_3, "k")])


# -- the web chat on two workers -------------------------------------------------------------------
async def _worker(root: Path, aiohttp_client: Any) -> Any:
    project = Project.load(root)
    engine = Engine(retriever=StaticRetriever({}), responder=ScriptedResponder(lambda request: "Noted."),
                    store=SQLiteConversationStore(root / "conversations.sqlite3"), config=project.config.dialogue)
    app = build_app(project, engine)
    return await aiohttp_client(app), engine


async def _recv(ws: Any, until: str, id: str) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while not frames or not (frames[-1]["type"] in (until, "error") and frames[-1].get("id") == id):
            frames.append(await ws.receive_json())
    return frames


async def test_the_web_chat_refuses_a_message_on_one_worker_when_the_session_spent_its_budget_on_another(
        prefix: str, tmp_path: Path, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "bot"
    root.mkdir()
    config = {"name": "two workers", "state_dir": str(tmp_path / "state"), "storage": {"redis_prefix": prefix},
              "channels": {"webchat": {"rate_limit_per_session": {"messages": 2, "seconds": 60},
                                       "rate_limit_per_ip": {"messages": 100, "seconds": 60}}}}
    (root / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("BOTKIT_REDIS_URL", URL)
    (a, engine_a), (b, _) = await _worker(root, aiohttp_client), await _worker(root, aiohttp_client)
    assert isinstance(a.app[RATE_LIMITER], RedisRateLimiter)

    ws_a = await a.ws_connect("/channels/webchat/ws")
    await ws_a.send_json({"type": "hello", "session": None})
    welcome = await ws_a.receive_json()
    for i in (1, 2):
        await ws_a.send_json({"type": "message", "id": f"a{i}", "text": f"question {i}"})
        frames = await _recv(ws_a, "reply", f"a{i}")
        assert {"type": "ack", "for": "message", "id": f"a{i}"} in frames and frames[-1]["type"] == "reply"

    ws_b = await b.ws_connect("/channels/webchat/ws")  # the same tab, reconnected through the balancer
    await ws_b.send_json({"type": "hello", "session": welcome["session"]})
    assert (await ws_b.receive_json())["resumed"] is True
    await ws_b.send_json({"type": "message", "id": "b1", "text": "question 3"})
    frames = await _recv(ws_b, "reply", "b1")
    assert [f["type"] for f in frames if f.get("id") == "b1"] == ["error"]
    refused = frames[-1]
    assert refused["code"] == "rate_limited" and 29 < refused["retry_after"] <= 30  # 60 s / 2
    assert "sending messages too quickly" in refused["message"]
    history = await engine_a.history(welcome["conversation"], 20)
    assert [t.text for t in history if t.role == "customer"] == ["question 1", "question 2"]  # not stored
    await ws_a.close()
    await ws_b.close()
