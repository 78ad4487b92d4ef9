"""psycopg 3 (sync) vs an asyncpg bridge for the staff accounts' round trips (issue 13: Auth is
synchronous, so its PostgreSQL driver is chosen by reason and by this measurement).

Auth runs in a worker thread (the web handlers use ``asyncio.to_thread``; the CLI calls it
directly). Two ways to reach PostgreSQL from such a thread, measured in the same run, rounds
interleaved so that the machine's load hits both:

- psycopg 3, synchronous, a connection from a ``psycopg_pool.ConnectionPool`` per call (what
  botkit/backends/pg_accounts.py does, connection check included);
- asyncpg through a private event loop in a thread of its own: ``run_coroutine_threadsafe`` per
  call, a connection from an asyncpg pool.

Each call is the session lookup Auth makes on every staff request (a primary-key SELECT joined
with the account) against a throwaway schema, dropped at the end.

    python benchmarks/accounts_driver.py [--dsn postgresql://postgres@127.0.0.1:5432/test] [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import psycopg
from psycopg_pool import ConnectionPool

LOOKUP = ("SELECT s.name, s.csrf, s.expires_at, u.role, u.disabled_at FROM staff_sessions s "
          "JOIN staff_users u ON lower(u.name) = lower(s.name) WHERE s.token_hash={}")


def setup(dsn: str, schema: str) -> None:
    from botkit.backends.pg_accounts import PostgresAccountStore

    store = PostgresAccountStore(dsn, schema=schema)
    store.add_user("alice", "agent", "scrypt$x", 0.0)
    store.add_session("h" * 64, "alice", "csrf", 0.0, 1e12)
    store.close()


def psycopg_calls(dsn: str, schema: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        dsn, min_size=1, max_size=2, kwargs={"autocommit": True, "options": f"-c search_path={schema}"},
        check=ConnectionPool.check_connection, open=True)
    sql = LOOKUP.format("%s")

    def call() -> Any:
        with pool.connection() as conn:
            return conn.execute(sql, ("h" * 64,)).fetchone()

    return call, pool.close


def bridge_calls(dsn: str, schema: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def make() -> asyncpg.Pool:
        return await asyncpg.create_pool(dsn, min_size=1, max_size=2, server_settings={"search_path": schema})

    pool = asyncio.run_coroutine_threadsafe(make(), loop).result()
    sql = LOOKUP.format("$1")

    async def lookup() -> Any:
        async with pool.acquire() as conn:
            return await conn.fetchrow(sql, "h" * 64)

    def call() -> Any:
        return asyncio.run_coroutine_threadsafe(lookup(), loop).result()

    def close() -> None:
        asyncio.run_coroutine_threadsafe(pool.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    return call, close


def per_call_us(call: Callable[[], Any], n: int) -> float:
    for _ in range(50):
        call()
    start = time.perf_counter()
    for _ in range(n):
        assert call() is not None
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    setup(args.dsn, schema)
    results: dict[str, list[float]] = {"psycopg 3 sync + pool": [], "asyncpg via a loop thread": []}
    try:
        for _ in range(args.rounds):
            for name, make in (("psycopg 3 sync + pool", psycopg_calls), ("asyncpg via a loop thread", bridge_calls)):
                call, close = make(args.dsn, schema)
                try:
                    results[name].append(per_call_us(call, args.calls))
                finally:
                    close()
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"session lookup from a plain thread, {args.calls} calls x {args.rounds} rounds "
          f"(psycopg {psycopg.__version__}, asyncpg {asyncpg.__version__})")
    for name, values in results.items():
        print(f"  {name:<28} median {statistics.median(values):7.0f} us/call   "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
