"""One worker vs two behind nginx: closed-loop web chat turns through a real nginx, same run.

The bot: a copy of the demo project (extractive responder, escalation off, the query cache off
so every turn embeds and searches, as a new question does) served by ``botkit serve --workers 2``
on PostgreSQL (a schema of its own, dropped at the end) and Redis (a key prefix of its own).
Two nginx instances run in front of the same two workers: one lists worker 0 only, the other
both. Runs alternate between them (1, 2, 1, 2, ...), so a change in the machine's load hits
both alike, and the idle worker of a 1-worker run costs nothing.

The load generator (this process) runs S web chat sessions through nginx, each a closed loop
(send, wait for the final reply, send the next: benchmarks/webchat_load.py's client). Reported
per run: turns/s, latency p50/p95 (send -> final reply), lost (sent - replies), and where the
CPU went per turn: the workers, nginx, PostgreSQL, Redis and the client, from /proc. On a
2-core machine all of them share the cores with the workers, so the ratio is bounded well
below 2 by what is not the workers; the table shows by how much.

    python -m benchmarks.workers                        # 48 sessions x 20 messages, 2 repetitions
    python -m benchmarks.workers --sessions 32 --messages 10 --repeat 1

Needs nginx (apt-get install nginx), PostgreSQL ($BOTKIT_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/test) and Redis ($BOTKIT_BENCH_REDIS_URL, default
redis://127.0.0.1:6379/15). Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, load_test_demo, log, percentile, print_footer, print_header, print_table, workdir
from benchmarks.webchat_load import load, proc_stats

DSN = os.environ.get("BOTKIT_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BOTKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def free_port(pair: bool = False) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not pair:
            return port
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    sys.exit("no free ports on loopback")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait_for(condition: Any, timeout: float, what: str, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}" + (f"; log:\n{log_path.read_text()[-3000:]}" if log_path else ""))
        time.sleep(0.2)


def start_nginx(nginx: str, prefix: Path, upstreams: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    from botkit.app.workers import nginx_site

    prefix.mkdir(parents=True)
    port = free_port()
    temp = "".join(f"    {k}_temp_path {prefix / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    site = nginx_site([f"127.0.0.1:{p}" for p in upstreams], listen=f"127.0.0.1:{port}")
    conf = (("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
            f"events {{ worker_connections 4096; }}\nhttp {{\n    access_log off;\n{temp}{site}}}\n")
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                             str(prefix / "error.log")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for(lambda: healthy(f"http://127.0.0.1:{port}"), 20, "nginx", prefix / "error.log")
    return proc, port


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm in names:
                found.append(int(entry))
    return found


def children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry))
    return found


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_stats(pid)[1]
        except OSError:  # a PostgreSQL backend that ended meanwhile
            pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=48, help="concurrent web chat sessions (closed loop)")
    p.add_argument("--messages", type=int, default=20, help="messages per session per run")
    p.add_argument("--repeat", type=int, default=2, help="runs per configuration (alternating)")
    p.add_argument("--max-seconds", type=float, default=600, help="give up on a run after this long")
    p.add_argument("--worker-threads", type=int, help="OMP_NUM_THREADS for each worker (default: torch's own, "
                   "one per core: one worker alone then uses both cores while it embeds)")
    args = p.parse_args()
    if args.sessions * args.messages > 50_000 or args.sessions > 2000:
        sys.exit("bounded on purpose: at most 2000 sessions and 50,000 messages per run")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if nginx is None:
        sys.exit("nginx is not installed: apt-get install -y nginx")
    import yaml

    schema, prefix = f"botkit_bench_{uuid.uuid4().hex[:10]}", f"botkit-bench:{uuid.uuid4().hex[:10]}:"
    print_header("several workers: closed-loop web chat turns through nginx, 1 worker vs 2 (same processes)", [
        f"botkit serve --workers 2 on PostgreSQL ({DSN}, schema {schema}) and Redis ({REDIS_URL}); extractive "
        "responder, escalation off, query cache off (every turn embeds and searches); demo KB",
        "two nginx instances in front of the same workers: one lists worker 0 only, the other both; runs alternate",
        f"worker threads: {args.worker_threads or 'torch default (one per core)'}; "
        f"{args.sessions} sessions x {args.messages} messages per run, each session a closed loop; latency = "
        "send -> final reply; CPU ms/turn from /proc (workers, nginx, every postgres and redis-server process, "
        "this client)"])

    root = load_test_demo(REPO / "demo", workdir())
    cfg = yaml.safe_load((root / "bot.yaml").read_text())
    cfg["knowledge"].setdefault("retrieval", {})["query_cache_size"] = 0
    cfg["dialogue"] = {**(cfg.get("dialogue") or {}), "responder": "extractive"}
    cfg["server"] = {**(cfg.get("server") or {}), "behind_proxy": True, "max_connections": 10_000}
    cfg["storage"] = {"postgres_schema": schema, "redis_prefix": prefix}
    (root / "bot.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(REPO), "BOTKIT_DATABASE_URL": DSN, "BOTKIT_REDIS_URL": REDIS_URL}
    if args.worker_threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.worker_threads)
    log("importing the demo KB")
    subprocess.run([sys.executable, "-m", "botkit", "--project", str(root), "kb", "import"], cwd=REPO, check=True,
                   env=env, stdout=subprocess.DEVNULL)

    base = free_port(pair=True)
    log_path = workdir() / "workers.log"
    supervisor = subprocess.Popen([sys.executable, "-m", "botkit", "--project", str(root), "serve", "--workers", "2",
                                   "--port", str(base)], cwd=REPO, env=env, stdout=log_path.open("wb"),
                                  stderr=subprocess.STDOUT)
    proxies: list[subprocess.Popen[bytes]] = []
    rows: list[list[Any]] = []
    rates: dict[int, list[float]] = {1: [], 2: []}
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{base}") and healthy(f"http://127.0.0.1:{base + 1}"), 600,
                 "the two workers", log_path)
        workers = children(supervisor.pid)
        here = workdir()
        ports = {}
        for n in (1, 2):
            proc, ports[n] = start_nginx(nginx, here / f"nginx{n}", [base + i for i in range(n)])
            proxies.append(proc)
        nginx_pids = [pr.pid for pr in proxies] + [c for pr in proxies for c in children(pr.pid)]
        for n in (1, 2):
            log(f"warm-up through nginx with {n} worker(s): {args.sessions} sessions x 2 messages")
            asyncio.run(load(ports[n], args.sessions, 2, args.max_seconds))
        for rep in range(1, args.repeat + 1):
            for n in (1, 2):
                log(f"{n} worker(s), run {rep}: {args.sessions} sessions x {args.messages} messages")
                db, kv = pids_named("postgres"), pids_named("redis-server")
                before = [cpu_of(workers), cpu_of(nginx_pids), cpu_of(db), cpu_of(kv)]
                r = asyncio.run(load(ports[n], args.sessions, args.messages, args.max_seconds))
                after = [cpu_of(workers), cpu_of(nginx_pids), cpu_of(db), cpu_of(kv)]
                turns = max(r["replies"], 1)
                rate = r["replies"] / r["wall"] if r["wall"] else 0.0
                rates[n].append(rate)
                lat = r["latencies"]
                per = [(a - b) * 1000 / turns for a, b in zip(after, before, strict=True)] + [r["cpu"] * 1000 / turns]
                total = sum(per)  # CPU ms of everything a turn needs, on this machine
                cores = os.cpu_count() or 1
                rows.append([f"{n} worker{'s' if n > 1 else ''} #{rep}", r["replies"], r["wall"], rate,
                             percentile(lat, 0.5), percentile(lat, 0.95), r["sent"] - r["replies"], r["errors"],
                             *per, total * rate / 1000, cores * 1000 / total])
    finally:
        for proc in proxies:
            proc.send_signal(signal.SIGQUIT)  # graceful
            proc.wait(10)
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
        asyncio.run(_drop(schema, prefix))
    print_table(["workers", "turns", "wall s", "turns/s", "p50 ms", "p95 ms", "lost", "errors",
                 "workers CPU ms/turn", "nginx", "postgres", "redis", "client", "cores used",
                 "all-cores turns/s"], rows)
    print("cores used = the CPU all of them used per second of the run (the rest went to other programs); "
          "all-cores turns/s = the machine's cores divided by the CPU a turn costs in all of them: what the machine "
          "could give if nothing else ran")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"2 workers / 1 worker: {two / one:.2f}x (median turns/s {two:.1f} vs {one:.1f}; per repetition: "
          + ", ".join(f"{b / a:.2f}x" for a, b in zip(rates[1], rates[2], strict=True)) + f"); cores: {os.cpu_count()}")
    print_footer()


async def _drop(schema: str, prefix: str) -> None:
    import asyncpg
    import redis.asyncio as redis_asyncio

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


if __name__ == "__main__":
    main()
