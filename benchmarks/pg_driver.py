"""psycopg 3 (async) vs asyncpg for the conversation store's round trips (issue 13: the driver is
chosen by measurement).

Both drivers run the same two operations against the same real PostgreSQL server, each in a
throwaway schema of its own (dropped at the end):

- append-turn: one exchange as the store writes it, in one transaction: mark the inbox message
  answered, insert the customer's and the bot's turn, update the conversation's status;
- load-conversation: the engine's window read: the last 20 turns of a conversation, then its row.

Sequentially on one connection (latency per round trip) and with 10 connections at once (the
throughput several customers get), interleaved in rounds so that the machine's load hits both.

    python benchmarks/pg_driver.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--ops 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_line  # noqa: E402

SCHEMA = """
CREATE TABLE {s}.conversations (id TEXT PRIMARY KEY, status TEXT NOT NULL, attributes JSONB NOT NULL);
CREATE TABLE {s}.turns (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL, meta JSONB NOT NULL, PRIMARY KEY (conversation_id, seq));
CREATE TABLE {s}.inbox (conversation_id TEXT NOT NULL, message_id TEXT NOT NULL, state TEXT NOT NULL,
    reply_seq INTEGER, PRIMARY KEY (conversation_id, message_id));
"""
CONVERSATIONS = 50
META = json.dumps({"grounded": True, "sources": ["returns", "shipping"]})


class Driver:
    name = ""

    async def connect(self, dsn: str) -> Any: ...
    async def execute(self, conn: Any, sql: str) -> None: ...
    async def append(self, conn: Any, s: str, conv: str, seq: int) -> None: ...
    async def load(self, conn: Any, s: str, conv: str) -> None: ...
    async def close(self, conn: Any) -> None: ...


class Psycopg(Driver):
    name = "psycopg 3 (async)"

    async def connect(self, dsn: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def execute(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def append(self, conn: Any, s: str, conv: str, seq: int) -> None:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {s}.inbox VALUES (%s, %s, 'pending', NULL)", (conv, f"m{seq}"))
            await conn.execute(f"UPDATE {s}.inbox SET state='answered', reply_seq=%s WHERE conversation_id=%s "
                               "AND message_id=%s AND state='pending'", (seq + 1, conv, f"m{seq}"))
            await conn.execute(f"INSERT INTO {s}.turns VALUES (%s, %s, 'customer', 'where is my order', now(), %s),"
                               " (%s, %s, 'bot', 'It ships in 2 days.', now(), %s)",
                               (conv, seq, META, conv, seq + 1, META))
            await conn.execute(f"UPDATE {s}.conversations SET status='bot' WHERE id=%s", (conv,))

    async def load(self, conn: Any, s: str, conv: str) -> None:
        cur = await conn.execute(f"SELECT * FROM {s}.turns WHERE conversation_id=%s ORDER BY seq DESC LIMIT 20",
                                 (conv,))
        await cur.fetchall()
        cur = await conn.execute(f"SELECT * FROM {s}.conversations WHERE id=%s", (conv,))
        await cur.fetchone()

    async def close(self, conn: Any) -> None:
        await conn.close()


class Asyncpg(Driver):
    name = "asyncpg"

    async def connect(self, dsn: str) -> Any:
        import asyncpg

        return await asyncpg.connect(dsn)

    async def execute(self, conn: Any, sql: str) -> None:
        await conn.execute(sql)

    async def append(self, conn: Any, s: str, conv: str, seq: int) -> None:
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {s}.inbox VALUES ($1, $2, 'pending', NULL)", conv, f"m{seq}")
            await conn.execute(f"UPDATE {s}.inbox SET state='answered', reply_seq=$1 WHERE conversation_id=$2 "
                               "AND message_id=$3 AND state='pending'", seq + 1, conv, f"m{seq}")
            await conn.execute(f"INSERT INTO {s}.turns VALUES ($1, $2, 'customer', 'where is my order', now(), $3),"
                               " ($1, $4, 'bot', 'It ships in 2 days.', now(), $3)", conv, seq, META, seq + 1)
            await conn.execute(f"UPDATE {s}.conversations SET status='bot' WHERE id=$1", conv)

    async def load(self, conn: Any, s: str, conv: str) -> None:
        await conn.fetch(f"SELECT * FROM {s}.turns WHERE conversation_id=$1 ORDER BY seq DESC LIMIT 20", conv)
        await conn.fetchrow(f"SELECT * FROM {s}.conversations WHERE id=$1", conv)

    async def close(self, conn: Any) -> None:
        await conn.close()


async def timed(op: Awaitable[None]) -> float:
    t = time.perf_counter()  # a coroutine does nothing until awaited: this times all of it
    await op
    return time.perf_counter() - t


async def run_once(driver: Driver, dsn: str, ops: int, workers: int) -> dict[str, list[float]]:
    """``ops`` appends then ``ops`` loads spread over ``workers`` connections; per-op seconds and wall."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await driver.connect(dsn)
    await driver.execute(admin, f"CREATE SCHEMA {schema}" + SCHEMA.format(s=schema).replace("\n", "\n"))
    await driver.execute(admin, f"INSERT INTO {schema}.conversations SELECT 'c' || i, 'bot', '{{}}'::jsonb "
                                f"FROM generate_series(0, {CONVERSATIONS - 1}) i")
    conns = [await driver.connect(dsn) for _ in range(workers)]
    seqs = {f"c{i}": 1 for i in range(CONVERSATIONS)}
    out: dict[str, list[float]] = {"append": [], "load": [], "append_wall": [], "load_wall": []}
    try:
        for kind in ("append", "load"):
            queue = list(range(ops))

            async def worker(conn: Any, kind: str = kind, queue: list[int] = queue) -> None:
                while queue:
                    i = queue.pop()
                    conv = f"c{i % CONVERSATIONS}"
                    if kind == "append":
                        seq = seqs[conv]
                        seqs[conv] += 2
                        out[kind].append(await timed(driver.append(conn, schema, conv, seq)))
                    else:
                        out[kind].append(await timed(driver.load(conn, schema, conv)))

            t = time.perf_counter()
            await asyncio.gather(*(worker(c) for c in conns))
            out[f"{kind}_wall"].append(time.perf_counter() - t)
    finally:
        for c in conns:
            await driver.close(c)
        await driver.execute(admin, f"DROP SCHEMA {schema} CASCADE")
        await driver.close(admin)
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("BOTKIT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--ops", type=int, default=400, help="appends (and loads) per round and setting")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    print(f"command: python benchmarks/pg_driver.py --ops {args.ops} --rounds {args.rounds}")
    import asyncpg
    import psycopg

    print(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__} libpq {psycopg.pq.version()}), "
          f"asyncpg {asyncpg.__version__}")
    drivers: list[Driver] = [Psycopg(), Asyncpg()]
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for workers in (1, 10):
            for driver in drivers if r % 2 == 0 else drivers[::-1]:
                print(f"round {r + 1}: {driver.name}, {workers} connection(s)", file=sys.stderr)
                got = await run_once(driver, args.dsn, args.ops, workers)
                acc = results.setdefault((driver.name, workers), {})
                for k, v in got.items():
                    acc.setdefault(k, []).extend(v)
    print()
    print(f"{'driver':<20} {'conns':>5}  {'append p50 ms':>13} {'p95':>7} {'/s':>7}   {'load p50 ms':>11} "
          f"{'p95':>7} {'/s':>7}")
    for workers in (1, 10):
        for driver in drivers:
            acc = results[(driver.name, workers)]
            rate = {k: args.ops * args.rounds / sum(acc[f"{k}_wall"]) for k in ("append", "load")}
            print(f"{driver.name:<20} {workers:>5}  {1000 * statistics.median(acc['append']):>13.2f} "
                  f"{1000 * pct(acc['append'], 0.95):>7.2f} {rate['append']:>7.0f}   "
                  f"{1000 * statistics.median(acc['load']):>11.2f} {1000 * pct(acc['load'], 0.95):>7.2f} "
                  f"{rate['load']:>7.0f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
