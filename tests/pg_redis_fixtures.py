"""Shared helpers for tests against the real PostgreSQL (synchronous, psycopg 3).

The server: $BOTKIT_TEST_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test. Each
test gets a throwaway schema of its own, dropped afterwards. Without a server such tests skip
here, but fail under CI=true: CI must never pass by skipping them (as tests/test_postgres_store.py).

    from pg_redis_fixtures import pg_dsn, throwaway_schema
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DSN = os.environ.get("BOTKIT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
_probed: list[str] = []  # the reason the server is missing, once probed ("" when it is there)


def unavailable(reason: str) -> None:
    """Skip (here) or fail (under CI) a test that needs a server that is not there."""
    if IN_CI:
        pytest.fail(f"{reason}: CI runs these tests against a real server (scripts/test.sh starts it)")
    pytest.skip(reason)


def pg_dsn() -> str:
    """The test server's DSN, once it answered (skip or fail otherwise)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - the postgres extra is part of the test install
        if IN_CI:
            raise
        pytest.skip(f"psycopg is not installed ({exc}): pip install -e '.[postgres]'")
    if not _probed:
        try:
            psycopg.connect(DSN, connect_timeout=5).close()
            _probed.append("")
        except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
            _probed.append(f"PostgreSQL at {DSN} is not reachable ({type(exc).__name__}: {exc})")
    if _probed[0]:
        unavailable(_probed[0])
    return DSN


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
