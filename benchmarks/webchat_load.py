"""Web chat under load: N concurrent websocket sessions against a real botkit server process.

The server (``botkit.app.server.build_app`` on a copy of the demo project, its KB imported with
``python -m botkit --project DIR kb import``) runs in a child process on 127.0.0.1; this
process is the load generator. Each session is a closed loop over the chat protocol
(docs/webchat-protocol.md): hello → welcome, then M times: send a message, wait for its final
``reply``, send the next. Reported per N: messages/s, reply latency (send → final reply)
p50/p95/max, and messages lost (sent − final replies; must be 0).

Baseline, side by side: the same closed loops calling ``Engine.handle`` directly in a fresh
process (no sockets, no JSON), at the same concurrency on the same KB, so the table shows
what the web layer costs on top of a bot turn.

    python -m benchmarks.webchat_load                       # 100 and 300 sessions, 5 messages each
    python -m benchmarks.webchat_load --sessions 50 --messages 3 --no-baseline

Loopback only, bounded in count (N × M messages) and in time (--max-seconds per run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    load_test_demo,
    log,
    percentile,
    print_footer,
    print_header,
    print_table,
    stop_server,
    workdir,
)

QUESTIONS = [json.loads(line)["query"] for line in (REPO / "demo" / "eval" / "queries.jsonl").read_text().splitlines()
             if line.strip()]
HOST = "127.0.0.1"


def question(session: int, j: int) -> str:
    return QUESTIONS[(session * 7 + j) % len(QUESTIONS)]


# -- the server process ---------------------------------------------------------------------------
async def serve(root: Path) -> None:
    """Child mode: serve the project on a free loopback port; print it; run until SIGTERM."""
    from aiohttp import web

    from botkit.app.server import build_app
    from botkit.project import Project

    app = build_app(Project.load(root))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


async def engine_baseline(root: Path, sessions: int, messages: int) -> dict[str, Any]:
    """Child mode: the same closed loops straight into Engine.handle (no web layer)."""
    from botkit.app.compose import build_engine
    from botkit.project import Project
    from botkit.types import IncomingMessage

    engine = build_engine(Project.load(root), progress=False, conversations_db=workdir() / "baseline.sqlite3")
    latencies: list[float] = []
    async with engine:
        async def loop(i: int, count: int, prefix: str) -> None:
            for j in range(count):
                t0 = time.perf_counter()
                await engine.handle(IncomingMessage(f"{prefix}:{i}", question(i, j), "webchat"))
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(loop(i, 1, "warm-up") for i in range(sessions)))  # as the websocket runs warm up
        latencies.clear()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(loop(i, messages, "baseline") for i in range(sessions)))
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    return {"sent": sessions * messages, "replies": len(latencies), "errors": 0, "wall": wall,
            "latencies": latencies, "connect": 0.0, "cpu": cpu}


def cpu_seconds() -> float:
    """CPU time of this process so far (all its threads), seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the load generator ---------------------------------------------------------------------------
async def load(port: int, sessions: int, messages: int, max_seconds: float) -> dict[str, Any]:
    import aiohttp

    url = f"ws://{HOST}:{port}/channels/webchat/ws"
    latencies: list[float] = []
    counts = {"sent": 0, "replies": 0, "errors": 0}
    error_codes: dict[str, int] = {}
    connected = asyncio.Event()
    ready = 0

    async def session(http: aiohttp.ClientSession, i: int) -> None:
        nonlocal ready
        async with http.ws_connect(url, max_msg_size=0) as ws:
            await ws.send_json({"type": "hello", "session": None})
            welcome = await ws.receive_json(timeout=60)
            assert welcome["type"] == "welcome", welcome
            ready += 1
            if ready == sessions:
                connected.set()
            await connected.wait()  # everyone starts together
            for j in range(messages):
                mid = f"{i}-{j}"
                t0 = time.perf_counter()
                await ws.send_json({"type": "message", "id": mid, "text": question(i, j)})
                counts["sent"] += 1
                while True:
                    frame = await ws.receive_json(timeout=120)
                    if frame.get("id") != mid:
                        continue  # typing, and frames of no interest here
                    if frame["type"] == "reply":
                        latencies.append((time.perf_counter() - t0) * 1000)
                        counts["replies"] += 1
                        break
                    if frame["type"] == "error":
                        counts["errors"] += 1
                        error_codes[frame["code"]] = error_codes.get(frame["code"], 0) + 1
                        break

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        t_connect = time.perf_counter()
        tasks = [asyncio.create_task(session(http, i)) for i in range(sessions)]
        await asyncio.wait_for(connected.wait(), 120)
        connect = time.perf_counter() - t_connect
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        done, pending = await asyncio.wait(tasks, timeout=max_seconds)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        for t in pending:
            t.cancel()
        failures = [t.exception() for t in done if t.exception() is not None]
        if failures:
            log(f"{len(failures)} sessions failed; first: {failures[0]!r}")
    return {**counts, "wall": wall, "latencies": latencies, "connect": connect, "codes": error_codes, "cpu": cpu,
            "timed_out": len(pending), "failed": len(failures)}


def proc_stats(pid: int) -> tuple[float, float]:
    """(resident MiB, CPU seconds used so far) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def child(*args: str, **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "benchmarks.webchat_load", *args], cwd=REPO, env=env,
                            text=True, **kw)


def start_server(root: Path, log_path: Path) -> tuple[subprocess.Popen[str], int]:
    server = child("--serve", str(root), stdout=subprocess.PIPE, stderr=log_path.open("w"))
    deadline = time.monotonic() + 300
    assert server.stdout is not None
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if line.startswith("PORT "):
            return server, int(line.split()[1])
        if not line and server.poll() is not None:
            break
    server.kill()
    sys.exit(f"the server did not start; its log:\n{log_path.read_text()[-3000:]}")


def row(label: str, sessions: int, messages: int, r: dict[str, Any], extra: list[Any]) -> list[Any]:
    lat = r["latencies"]
    return [label, sessions, messages, r["sent"], r["wall"], r["replies"] / r["wall"] if r["wall"] else None,
            percentile(lat, 0.5), percentile(lat, 0.95), max(lat) if lat else None,
            r["sent"] - r["replies"], r["errors"], *extra]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", default="100,300", help="concurrent sessions per run, comma-separated")
    p.add_argument("--messages", type=int, default=5, help="messages per session (closed loop)")
    p.add_argument("--max-seconds", type=float, default=300, help="give up on a run after this long")
    p.add_argument("--no-baseline", action="store_true", help="skip the engine-only baseline")
    p.add_argument("--repeat", type=int, default=1, help="runs per size (alternating with the baseline)")
    p.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--engine", nargs=3, metavar=("DIR", "N", "M"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return
    if args.engine:
        r = asyncio.run(engine_baseline(Path(args.engine[0]), int(args.engine[1]), int(args.engine[2])))
        print(json.dumps(r))
        return

    sizes = [int(x) for x in args.sessions.split(",")]
    if max(sizes) * args.messages > 100_000 or max(sizes) > 5000:
        sys.exit("bounded on purpose: at most 5000 sessions and 100,000 messages per run")
    print_header("web chat: concurrent websocket sessions against a botkit server (extractive responder, demo KB)", [
        ("closed loop: each session waits for the final reply before its next message; server in a child process, "
         "load generator in this one, both on 127.0.0.1 and sharing the machine's cores"),
        ("webchat rate limits raised for the run (one client address); escalation rules off so every message is a "
         "bot turn (retrieval + reply + SQLite write)"),
        ("each run is preceded by a warm-up of the same sessions with one message; latency = send → final reply; "
         "lost = sent − final replies; baseline = Engine.handle in a fresh process, same concurrency, no web layer")])

    root = load_test_demo(REPO / "demo", workdir())
    log("importing the demo KB")
    subprocess.run([sys.executable, "-m", "botkit", "--project", str(root), "kb", "import"], cwd=REPO, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL)

    log_path = workdir() / "server.log"
    server, port = start_server(root, log_path)
    rows: list[list[Any]] = []
    notes: list[str] = []
    try:
        log(f"server up on port {port}")
        for n in sizes:
            log(f"warm-up: {n} sessions x 1 message")
            asyncio.run(load(port, n, 1, args.max_seconds))
            for rep in range(1, args.repeat + 1):  # alternating, so a change in the machine's load hits both
                tag = f" #{rep}" if args.repeat > 1 else ""
                _, cpu0 = proc_stats(server.pid)
                log(f"{n} sessions x {args.messages} messages over websockets{tag}")
                r = asyncio.run(load(port, n, args.messages, args.max_seconds))
                rss1, cpu1 = proc_stats(server.pid)
                per = 1000 / max(r["replies"], 1)
                rows.append(row("websocket" + tag, n, args.messages, r,
                                [r["connect"], rss1, (cpu1 - cpu0) * per, r["cpu"] * per]))
                if r["codes"] or r["timed_out"] or r["failed"]:
                    notes.append(f"{n} sessions{tag}: error codes {r['codes']}, sessions timed out {r['timed_out']}, "
                                 f"failed {r['failed']}")
                if not args.no_baseline:
                    log(f"{n} sessions x {args.messages} messages, engine only (baseline){tag}")
                    out = child("--engine", str(root), str(n), str(args.messages), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL).communicate(timeout=args.max_seconds + 300)[0]
                    b = json.loads(out.strip().splitlines()[-1])
                    rows.append(row("engine only (baseline)" + tag, n, args.messages, b,
                                    [None, None, b["cpu"] * 1000 / max(b["replies"], 1), None]))
    finally:
        stop_server(server)
    print_table(["path", "sessions", "msgs/session", "messages", "wall s", "msgs/s", "p50 ms", "p95 ms", "max ms",
                 "lost", "errors", "connect s", "server RSS MiB", "bot CPU ms/msg", "client CPU ms/msg"], rows)
    print("bot CPU = CPU time of the process answering (the server; the baseline's engine process) per reply; "
          "client CPU = the load generator's")
    for note in notes:
        print(f"note: {note}")
    print_footer()


if __name__ == "__main__":
    main()
