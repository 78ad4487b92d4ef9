"""The served app against misbehaving HTTP clients, over real sockets (``botkit.app.server.start``,
the runner ``botkit serve`` uses): slow headers and bodies are dropped after bounded times, a
connection over ``server.max_connections`` gets a clear 503, and clients that hang up are one
log line each, never a traceback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from botkit.app.server import GuardedRunner, GuardedServer, build_app, start
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from knowledge.retriever import KnowledgeRetriever
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SLOW_BODY = (b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 1000\r\n\r\nname=al")


def project_with_server(demo_dir: Path, **server: Any) -> Project:
    cfg = yaml.safe_load((demo_dir / "bot.yaml").read_text())
    cfg["server"] = {**(cfg.get("server") or {}), **server}
    (demo_dir / "bot.yaml").write_text(yaml.safe_dump(cfg))
    return Project.load(demo_dir)


async def serve(demo_dir: Path, demo_kb: Any, tmp_path: Path, **server: Any) -> GuardedRunner:
    project = project_with_server(demo_dir, **server)
    engine = Engine(retriever=KnowledgeRetriever(demo_kb), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conv.sqlite3"), rules=build_rules(EscalationConfig()),
                    config=project.config.dialogue, summarize=summarize)
    return await start(build_app(project, engine), "127.0.0.1", 0, project.config.server)


@pytest.fixture
async def runner_factory(demo_dir: Path, demo_kb: Any, tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[GuardedRunner] = []

    async def make(**server: Any) -> tuple[GuardedRunner, int]:
        runner = await serve(demo_dir, demo_kb, tmp_path, **server)
        runners.append(runner)
        return runner, runner.addresses[0][1]

    yield make
    for runner in runners:
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took."""
    t0 = time.monotonic()
    data = await asyncio.wait_for(reader.read(), limit_s)
    return data, time.monotonic() - t0


async def trickle(writer: asyncio.StreamWriter, chunk: bytes, every_s: float = 0.1) -> None:
    """One byte at a time, for ever: a slowloris client."""
    try:
        while True:
            await asyncio.sleep(every_s)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, RuntimeError):
        return


async def healthz(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as resp:
        return resp.status


async def test_a_body_trickled_byte_by_byte_is_answered_408_and_dropped(runner_factory: Any) -> None:
    _, port = await runner_factory(body_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(SLOW_BODY)
    feeding = asyncio.create_task(trickle(writer, b"i"))
    try:
        data, took = await read_until_closed(reader, limit_s=10)
    finally:
        feeding.cancel()
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"server.body_timeout_s" in data
    assert 0.4 < took < 5  # the 0.5 s limit, not the trickle (which would run for ever)
    assert await healthz(port) == 200


async def test_headers_trickled_byte_by_byte_are_dropped(runner_factory: Any) -> None:
    _, port = await runner_factory(header_timeout_s=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    feeding = asyncio.create_task(trickle(writer, b"X"))  # one endless header line
    try:
        data, took = await read_until_closed(reader, limit_s=10)
    finally:
        feeding.cancel()
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 ") and b"headers did not arrive in time" in data
    assert 0.4 < took < 5
    # a client that sends its headers at once is not affected
    assert await healthz(port) == 200


async def test_connections_over_the_cap_get_a_clear_503_and_the_server_recovers(
        runner_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    runner, port = await runner_factory(max_connections=5, header_timeout_s=30)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    await asyncio.sleep(0.2)
    refused = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        refused.append((await read_until_closed(reader, limit_s=10))[0])
        writer.close()
    for answer in refused:
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:80]
        assert b"\r\nRetry-After: 5\r\n" in answer
        assert b"limit of 5 connections (server.max_connections)" in answer
    for _, writer in held:
        writer.close()
    await all_closed(runner)
    assert await healthz(port) == 200
    # a burst well over the cap, all connecting at once: exactly the cap is let in
    burst = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(30)))
    first = await asyncio.gather(*(first_bytes(reader) for reader, _ in burst))
    assert sum(b.startswith(b"HTTP/1.1 503 ") for b in first) == 25
    assert first.count(b"") == 5  # held open, waiting for a request
    for _, writer in burst:
        writer.close()
    await all_closed(runner)
    assert await healthz(port) == 200
    # 33 refusals, one log line (the rest are summed up in the next one, 10 s later)
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused ")]
    assert refusals == ["refused 1 connection: 5 are open, the limit is server.max_connections=5"]


async def all_closed(runner: GuardedRunner) -> None:
    """Wait until the server has seen the test's connections go."""
    server = runner.server
    assert isinstance(server, GuardedServer)
    deadline = time.monotonic() + 10
    while server.open_connections > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def first_bytes(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(64), 1.5)
    except TimeoutError:
        return b""


async def test_200_clients_hanging_up_mid_body_are_one_line_each_and_no_traceback(
        runner_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, port = await runner_factory()
    caplog.set_level(logging.INFO)
    caplog.clear()

    async def hang_up() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(SLOW_BODY)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    await asyncio.gather(*(hang_up() for _ in range(200)))
    deadline = time.monotonic() + 20
    while len([r for r in caplog.records if "hung up" in r.getMessage()]) < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    text = "\n".join(formatter.format(r) for r in caplog.records)
    hung_up = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert len(hung_up) == 200
    assert "hung up during POST /signin" in hung_up[0].getMessage()
    assert "Traceback" not in text
    assert len(text.splitlines()) <= 200
    assert await healthz(port) == 200


async def one_request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    data = (await read_until_closed(reader, limit_s=20))[0]
    writer.close()
    return data


async def test_botkit_serve_runs_the_guarded_server_and_stops_cleanly_on_sigterm(demo_dir: Path) -> None:
    project_with_server(demo_dir, max_connections=2, header_timeout_s=30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "botkit", "serve", "--project", str(demo_dir), "--port", str(port)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "botkit serve exited during start-up"
            assert time.monotonic() < deadline, "botkit serve did not become healthy within 120 s"
            try:
                if await healthz(port) == 200:
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        await asyncio.sleep(0.2)
        assert (await one_request(port)).startswith(b"HTTP/1.1 503 ")
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.5)
        assert await healthz(port) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
