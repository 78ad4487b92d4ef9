"""Shared helpers for tests against the real PostgreSQL (synchronous, psycopg 3).

The server: $BOTKIT_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test. Each
test gets a throwaway schema of its own, dropped afterwards. Without a server such tests skip
here, but fail under CI=true: CI must never pass by skipping them (as tests/test_postgres_store.py).

    from pg_redis_fixtures import pg_dsn, throwaway_schema

Redis: $BOTKIT_TEST_REDIS_URL (``REDIS_URL``, default redis://127.0.0.1:6379/15), a key prefix per
test (:func:`throwaway_prefix`), its keys deleted afterwards.

A module testing one contract on SQLite and on PostgreSQL imports the fixtures ``kind``
(``"sqlite"``, ``"postgresql"``: the test runs once on each) and ``where`` (the throwaway schema
on PostgreSQL, None on SQLite) by their names here, ``backend_kind`` and ``backend_where``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DSN = os.environ.get("BOTKIT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BOTKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_probed: dict[str, str] = {}  # DSN -> the reason its server is missing, once probed ("" when it is there)


def unavailable(reason: str) -> None:
    """Skip (here) or fail (under CI) a test that needs a server that is not there."""
    if IN_CI:
        pytest.fail(f"{reason}: CI runs these tests against a real server (scripts/test.sh starts it)")
    pytest.skip(reason)


def pg_dsn() -> str:
    """The test server's DSN, once it answered (skip or fail otherwise)."""
    try:
        import psycopg  # noqa: F401 - a missing driver skips here (pg_unreachable probes with it)
    except ImportError as exc:  # pragma: no cover - the postgres extra is part of the test install
        if IN_CI:
            raise
        pytest.skip(f"psycopg is not installed ({exc}): pip install -e '.[postgres]'")
    reason = pg_unreachable(DSN)
    if reason:
        unavailable(reason)
    return DSN


def pg_unreachable(dsn: str = DSN) -> str:
    """Why PostgreSQL at ``dsn`` does not answer ("" when it does), probed once per process;
    for a module that words its own skip (or CI failure)."""
    if dsn not in _probed:
        import psycopg

        try:
            psycopg.connect(dsn, connect_timeout=5).close()
            _probed[dsn] = ""
        except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
            _probed[dsn] = f"PostgreSQL at {dsn} is not reachable ({type(exc).__name__}: {exc})"
    return _probed[dsn]


@contextmanager
def throwaway_schema(dsn: str) -> Iterator[str]:
    """A fresh schema name (the store creates it), dropped with everything in it afterwards."""
    import psycopg

    name = f"botkit_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')



@contextmanager
def throwaway_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A fresh Redis key prefix, its keys in the Redis at ``url`` deleted afterwards."""
    import redis

    name = f"botkit-test:{uuid.uuid4().hex[:10]}:"
    try:
        yield name
    finally:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{name}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(name="kind", params=["sqlite", "postgresql"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The backend of this run of the test: ``"sqlite"``, then ``"postgresql"``."""
    return str(request.param)


@pytest.fixture(name="where")
def backend_where(kind: str) -> Iterator[str | None]:
    """The PostgreSQL schema of this test (None on SQLite)."""
    if kind == "sqlite":
        yield None
        return
    with throwaway_schema(pg_dsn()) as name:
        yield name
