"""Two workers' sign-in pages (two aiohttp apps, each with its own Auth) on one PostgreSQL and one
Redis, chosen by BOTKIT_DATABASE_URL and BOTKIT_REDIS_URL alone: a session made on one worker
is valid on the other and ends on both; wrong passwords spread over both workers are throttled
as one attacker's. Real servers (tests/pg_redis_fixtures.py); without them these skip, and fail
under CI=true."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from botkit.app.accounts import SESSION_COOKIE, SIGNIN_COOKIE
from botkit.app.keys import AUTH, PROJECT
from botkit.app.signin import setup_auth
from botkit.project import Project

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_redis_fixtures import REDIS_URL, pg_dsn, throwaway_prefix, throwaway_schema, unavailable  # noqa: E402

try:
    import redis
except ImportError:  # pragma: no cover
    redis = None  # type: ignore[assignment]


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    if redis is None:
        unavailable("the redis extra is not installed: pip install -e '.[redis]'")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} is not reachable ({exc})")
    with throwaway_prefix(REDIS_URL) as prefix, throwaway_schema(pg_dsn()) as schema:
        root = tmp_path / "bot"
        root.mkdir()
        (root / "bot.yaml").write_text(f"name: two workers\nstorage:\n  postgres_schema: {schema}\n"
                                       f"  redis_prefix: '{prefix}'\nchannels: {{}}\n", encoding="utf-8")
        monkeypatch.setenv("BOTKIT_DATABASE_URL", pg_dsn())
        monkeypatch.setenv("BOTKIT_REDIS_URL", REDIS_URL)
        yield root


async def worker(aiohttp_client: Any, root: Path) -> Any:
    app = web.Application()
    app[PROJECT] = Project.load(root)
    setup_auth(app)
    return await aiohttp_client(app)


async def signin(client: Any, name: str, password: str) -> Any:
    page = await client.get("/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)  # type: ignore[union-attr]
    return await client.post("/signin", data={"csrf": token, "name": name, "password": password, "next": ""},
                             cookies={SIGNIN_COOKIE: token}, allow_redirects=False)


async def test_a_session_made_on_one_worker_is_valid_on_the_other(project_dir: Path, aiohttp_client: Any) -> None:
    a, b = await worker(aiohttp_client, project_dir), await worker(aiohttp_client, project_dir)
    assert type(a.app[AUTH].store).__name__ == "PostgresAccountStore"
    password = a.app[AUTH].add_user("alice", "agent")
    response = await signin(a, "alice", password)
    assert response.status == 303
    session = response.cookies[SESSION_COOKIE].value
    me = await b.get("/api/auth/me", cookies={SESSION_COOKIE: session})
    assert me.status == 200 and (await me.json())["name"] == "alice"
    csrf = (await me.json())["csrf"]
    out = await b.post("/signout", headers={"X-CSRF-Token": csrf}, cookies={SESSION_COOKIE: session},
                       allow_redirects=False)
    assert out.status == 303
    assert (await a.get("/api/auth/me", cookies={SESSION_COOKIE: session})).status == 401  # ended on both


async def test_wrong_passwords_spread_over_two_workers_are_throttled_together(project_dir: Path,
                                                                              aiohttp_client: Any) -> None:
    a, b = await worker(aiohttp_client, project_dir), await worker(aiohttp_client, project_dir)
    assert type(a.app[AUTH].failures).__name__ == "RedisFailureCounts"
    password = a.app[AUTH].add_user("alice", "agent")
    for w in (a, b):
        w.app[AUTH].clock = lambda: 1_790_000_000.0  # time stands still: the 1 s wait does not run out meanwhile
    statuses = [(await signin(w, "alice", "not the password")).status for w in (a, b, a, b, a)]
    assert statuses == [401, 401, 401, 429, 429]  # 3 free in all, not 3 per worker
    refused = await signin(b, "alice", password)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"  # even the right one waits its turn


async def test_the_accounts_database_down_is_a_503_that_says_so_without_its_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    from botkit.app.signin import require

    root = tmp_path / "down"
    root.mkdir()
    (root / "bot.yaml").write_text("name: db down\nchannels: {}\n", encoding="utf-8")
    monkeypatch.setenv("BOTKIT_DATABASE_URL", "postgresql://botkit:s3cret-pw@127.0.0.1:1/botkit")
    monkeypatch.delenv("BOTKIT_REDIS_URL", raising=False)
    app = web.Application()
    app[PROJECT] = Project.load(root)
    setup_auth(app)

    @require("agent")
    async def console(_request: web.Request) -> web.Response:
        return web.Response(text="console")

    app.router.add_get("/api/console", console)
    client = await aiohttp_client(app)
    assert (await client.get("/signin")).status == 200  # the form itself needs no database
    response = await signin(client, "alice", "a password of some length")
    text = await response.text()
    assert response.status == 503 and "not answering" in text and "try again in a moment" in text
    api = await client.get("/api/console", cookies={SESSION_COOKIE: "x" * 43})
    assert api.status == 503 and (await api.json())["retry"] is True
    for body in (text, await api.text()):
        assert "127.0.0.1:1" not in body and "s3cret" not in body  # public pages: the address stays in the log
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot reach PostgreSQL at 127.0.0.1:1/botkit" in logged and "s3cret-pw" not in logged
