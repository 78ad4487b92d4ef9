"""Staff accounts on SQLite and on PostgreSQL (botkit/staff_store.py, botkit/backends/pg_accounts.py):
the same contract through :class:`~botkit.app.accounts.Auth` on both (accounts, sessions, API
tokens, two workers sharing one store), then PostgreSQL's own: migrations (fresh, re-run, beside
the other components, a newer schema refused, two processes at once), a wrong DSN or a server
that is not there, the storage switch, ``botkit users`` and the demo accounts.

PostgreSQL: $BOTKIT_TEST_DATABASE_URL (tests/pg_redis_fixtures.py), a throwaway schema per test;
without the server these skip, and fail under CI=true.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from botkit.app.accounts import Auth, AuthError, ensure_demo_accounts
from botkit.errors import ConfigError, DatabaseUnavailable, StorageError
from botkit.project import Project
from botkit.staff_store import AccountStore, SQLiteAccountStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_redis_fixtures import backend_kind, backend_where, pg_dsn, throwaway_schema  # noqa: E402, F401

REPO = Path(__file__).resolve().parent.parent
T0 = 1_790_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def schema() -> Iterator[str]:
    with throwaway_schema(pg_dsn()) as name:
        yield name


def make_store(kind: str, tmp_path: Path, schema: str | None) -> AccountStore:
    if kind == "sqlite":
        return SQLiteAccountStore(tmp_path / "accounts.sqlite3")
    from botkit.backends.pg_accounts import PostgresAccountStore

    assert schema is not None
    return PostgresAccountStore(pg_dsn(), schema=schema, pool_size=2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(kind: str, tmp_path: Path, where: str | None, clock: Clock) -> Iterator[Auth]:
    a = Auth(store=make_store(kind, tmp_path, where), clock=clock, session_minutes=60)
    a.start()
    yield a
    a.close()


@pytest.fixture
def other_worker(kind: str, tmp_path: Path, where: str | None, clock: Clock) -> Iterator[Auth]:
    """A second Auth over the same database (another worker)."""
    a = Auth(store=make_store(kind, tmp_path, where), clock=clock, session_minutes=60)
    yield a
    a.close()


# -- the contract: the same on both --------------------------------------------------------------
def test_accounts_are_found_by_name_in_any_case_and_listed_in_order(auth: Auth) -> None:
    auth.add_user("Olivia", "operator", "olivia's password")
    auth.add_user("alice", "agent")
    auth.add_user("bob.smith@example.com", "admin")
    with pytest.raises(AuthError, match="exists already"):
        auth.add_user("ALICE", "admin")
    assert [u.name for u in auth.list_users()] == ["alice", "bob.smith@example.com", "Olivia"]
    user = auth.get_user("olivia")
    assert user is not None and (user.name, user.role, user.created_at, user.disabled) == \
        ("Olivia", "operator", T0, False)
    assert auth.get_user("nobody") is None
    assert auth.verify("OLIVIA", "olivia's password") is not None
    assert auth.verify("Olivia", "wrong password") is None
    assert auth.verify("nobody", "olivia's password") is None


def test_bad_names_roles_and_passwords_are_refused_before_the_store(auth: Auth) -> None:
    for name in ("", "-x", "a b", "x" * 65, "é"):
        with pytest.raises(AuthError, match="bad account name"):
            auth.add_user(name)
    with pytest.raises(AuthError, match="bad role"):
        auth.add_user("carol", "root")
    with pytest.raises(AuthError, match="10 to 1024"):
        auth.add_user("carol", "agent", "short")
    assert auth.list_users() == []


def test_a_new_password_works_the_old_one_not_and_sessions_end(auth: Auth) -> None:
    old = auth.add_user("alice", "agent")
    token, csrf = auth.create_session("alice")
    ident = auth.session(token)
    assert ident is not None and (ident.name, ident.role, ident.via, ident.csrf) == ("alice", "agent", "session", csrf)
    new = auth.set_password("ALICE")
    assert new != old and auth.verify("alice", new) is not None and auth.verify("alice", old) is None
    assert auth.session(token) is None
    with pytest.raises(AuthError, match="no account named"):
        auth.set_password("nobody")


def test_a_role_change_shows_in_live_sessions_and_a_disabled_account_is_shut_out(auth: Auth) -> None:
    password = auth.add_user("alice", "agent")
    token, _ = auth.create_session("alice")
    api = auth.create_token("alice", "script")
    auth.set_role("alice", "admin")
    assert auth.session(token).role == "admin"  # type: ignore[union-attr]
    assert auth.token_identity(api).role == "admin"  # type: ignore[union-attr]
    auth.disable_user("alice")
    assert auth.get_user("alice").disabled  # type: ignore[union-attr]
    assert auth.session(token) is None and auth.token_identity(api) is None
    assert auth.verify("alice", password) is None
    auth.disable_user("alice", False)
    assert auth.verify("alice", password) is not None
    assert auth.token_identity(api) is not None  # the token lives on; the sessions ended for good
    assert auth.session(token) is None
    with pytest.raises(AuthError, match="no account named"):
        auth.set_role("nobody", "agent")
    with pytest.raises(AuthError, match="no account named"):
        auth.disable_user("nobody")


def test_sessions_slide_with_activity_and_expire_without(auth: Auth, clock: Clock) -> None:
    auth.add_user("alice", "agent")
    token, _ = auth.create_session("alice")
    clock.now += 50 * 60
    assert auth.session(token) is not None  # active: now valid until +110 min
    clock.now += 50 * 60
    assert auth.session(token, slide=False) is not None  # still inside the slid hour
    clock.now += 11 * 60
    assert auth.session(token) is None  # 61 min without activity
    clock.now -= 30 * 60
    assert auth.session(token) is None  # and it was deleted, not only refused
    assert auth.session("not a token") is None and auth.session("") is None and auth.session("x" * 300) is None


def test_a_new_session_forgets_the_expired_ones(auth: Auth, clock: Clock) -> None:
    from botkit.app.accounts import _token_hash

    auth.add_user("alice", "agent")
    stale, _ = auth.create_session("alice")
    clock.now += 2 * 3600
    fresh, _ = auth.create_session("alice")
    assert auth.store.session(_token_hash(stale)) is None  # gone from the store, not just expired
    assert auth.store.session(_token_hash(fresh)) is not None
    auth.end_session(fresh)
    assert auth.session(fresh) is None


def test_api_tokens_are_listed_touched_and_revoked(auth: Auth, clock: Clock) -> None:
    auth.add_user("alice", "agent")
    auth.add_user("bob", "operator")
    a1 = auth.create_token("alice", "nightly export")
    auth.create_token("bob")
    clock.now += 10
    ident = auth.token_identity(a1)
    assert ident is not None and (ident.name, ident.role, ident.via, ident.csrf) == ("alice", "agent", "token", "")
    listed = auth.list_tokens("ALICE")
    assert [(t["name"], t["label"], t["created_at"], t["last_used_at"]) for t in listed] == \
        [("alice", "nightly export", T0, T0 + 10)]
    assert [t["name"] for t in auth.list_tokens()] == ["alice", "bob"]
    assert auth.recheck("token", a1) is not None
    auth.revoke_token(listed[0]["id"])
    assert auth.token_identity(a1) is None and auth.recheck("token", a1) is None
    with pytest.raises(AuthError, match="no API token"):
        auth.revoke_token(listed[0]["id"])
    with pytest.raises(AuthError, match="no account named"):
        auth.create_token("nobody")
    assert auth.token_identity("bk_unknown") is None and auth.token_identity("not ours") is None


def test_a_hash_is_upgraded_only_if_nobody_changed_it_meanwhile(auth: Auth) -> None:
    auth.add_user("alice", "agent", "the first password")
    old = auth.store.user("alice").password_hash  # type: ignore[union-attr]
    assert not auth.store.set_password_hash("alice", "scrypt$changed", only_if="scrypt$not-the-stored-one")
    assert auth.store.user("alice").password_hash == old  # type: ignore[union-attr]
    assert auth.store.set_password_hash("alice", "scrypt$changed", only_if=old)
    assert auth.store.user("alice").password_hash == "scrypt$changed"  # type: ignore[union-attr]


def test_two_workers_on_one_store_know_the_same_staff(auth: Auth, other_worker: Auth) -> None:
    password = auth.add_user("alice", "agent")
    token, csrf = auth.create_session("alice")
    ident = other_worker.session(token)  # the load balancer sent the next request to the other worker
    assert ident is not None and ident.csrf == csrf
    assert other_worker.verify("alice", password) is not None
    other_worker.set_password("alice")  # changed on one worker: the session ends on both
    assert auth.session(token) is None
    with pytest.raises(AuthError, match="exists already"):
        other_worker.add_user("Alice")


def test_nothing_secret_is_stored(kind: str, auth: Auth, where: str | None, tmp_path: Path) -> None:
    password = auth.add_user("alice", "agent")
    token, _ = auth.create_session("alice")
    api = auth.create_token("alice")
    if kind == "sqlite":
        import sqlite3

        db = sqlite3.connect(tmp_path / "accounts.sqlite3")
        dump = "\n".join(db.iterdump())
        db.close()
    else:
        import psycopg

        with psycopg.connect(pg_dsn()) as conn:
            rows = [conn.execute(f'SELECT * FROM "{where}".{t}').fetchall()
                    for t in ("staff_users", "staff_sessions", "staff_api_tokens")]
        dump = repr(rows)
    assert "alice" in dump  # the right tables were read
    for secret in (password, token, api):
        assert secret not in dump


# -- PostgreSQL: migrations ------------------------------------------------------------------------
def _versions(schema: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(pg_dsn()) as conn:
        return dict(conn.execute(f'SELECT component, version FROM "{schema}".schema_version').fetchall())  # type: ignore[arg-type]


def test_a_fresh_schema_gets_the_accounts_as_their_own_component(schema: str) -> None:
    import asyncio

    from botkit.backends import pg_accounts
    from botkit.backends.postgres import MIGRATIONS as CONVERSATIONS
    from botkit.backends.postgres import PostgresConversationStore

    async def conversations() -> None:
        async with PostgresConversationStore(pg_dsn(), schema=schema):
            pass

    asyncio.run(conversations())  # the conversation store first, then the accounts beside it
    store = pg_accounts.PostgresAccountStore(pg_dsn(), schema=schema)
    store.start()
    store.close()
    assert _versions(schema) == {"conversations": len(CONVERSATIONS), "accounts": len(pg_accounts.MIGRATIONS)}


def test_starting_again_migrates_nothing_and_keeps_the_accounts(schema: str) -> None:
    import psycopg

    from botkit.backends.pg_accounts import COMPONENT, PostgresAccountStore
    from botkit.backends.pg_schema import migrate_sync

    auth = Auth(store=PostgresAccountStore(pg_dsn(), schema=schema))
    password = auth.add_user("alice", "agent")  # opened on first use, as the CLI does
    auth.close()
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        before = conn.execute(f'SELECT updated_at FROM "{schema}".schema_version').fetchone()
        assert migrate_sync(conn, schema, COMPONENT) == 0
        assert conn.execute(f'SELECT updated_at FROM "{schema}".schema_version').fetchone() == before
    auth = Auth(store=PostgresAccountStore(pg_dsn(), schema=schema))
    try:
        assert auth.verify("alice", password) is not None
    finally:
        auth.close()


def test_an_older_schema_is_brought_up_keeping_its_rows(schema: str) -> None:
    import psycopg

    from botkit.backends.pg_accounts import COMPONENT, PostgresAccountStore
    from botkit.backends.pg_schema import Component, migrate_sync

    # A later botkit's version 2 on top of this one's version 1: a column added.
    newer = Component(COMPONENT.name, COMPONENT.what, (*COMPONENT.migrations,
                                                       "ALTER TABLE staff_users ADD COLUMN email TEXT"))
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        assert migrate_sync(conn, schema, newer, newer.migrations[:1]) == 1
        conn.execute(f"INSERT INTO \"{schema}\".staff_users VALUES ('alice', 'agent', 'scrypt$x', {T0}, NULL)")
        assert migrate_sync(conn, schema, newer) == 1
        assert conn.execute(f'SELECT name, email FROM "{schema}".staff_users').fetchall() == [("alice", None)]
    assert _versions(schema) == {"accounts": 2}
    with pytest.raises(StorageError, match="version 2, made by a newer botkit; this one knows versions up to 1"):
        PostgresAccountStore(pg_dsn(), schema=schema).start()


def test_a_newer_schema_is_refused_and_left_as_it_is(schema: str) -> None:
    import psycopg

    from botkit.backends.pg_accounts import PostgresAccountStore, SchemaTooNew

    PostgresAccountStore(pg_dsn(), schema=schema).start()
    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"UPDATE \"{schema}\".schema_version SET version=7 WHERE component='accounts'")
    with pytest.raises(SchemaTooNew) as caught:
        Auth(store=PostgresAccountStore(pg_dsn(), schema=schema)).add_user("alice")
    message = str(caught.value)
    assert "the staff accounts" in message and f"{schema!r}" in message and "version 7" in message
    assert "pip install -U botkit" in message
    assert _versions(schema) == {"accounts": 7}


MIGRATE_AT_ONCE = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {repo!r})
    from botkit.backends.pg_accounts import PostgresAccountStore
    from botkit.backends.postgres import PostgresConversationStore
    dsn, schema, which = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.stdin.readline()  # all start together
    if which == "accounts":
        store = PostgresAccountStore(dsn, schema=schema)
        store.start()
        store.close()
    else:
        async def main():
            async with PostgresConversationStore(dsn, schema=schema):
                pass
        asyncio.run(main())
    print("ok")
""")


def test_workers_starting_at_once_migrate_once(schema: str) -> None:
    """Four processes on a fresh schema at the same moment: three accounts stores and a
    conversation store. Each creates what it needs once (a race would fail one of them with a
    duplicate schema, table or version row)."""
    from botkit.backends import pg_accounts

    script = MIGRATE_AT_ONCE.format(repo=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_dsn(), schema, which], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for which in ("accounts", "accounts", "conversations", "accounts")]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=120) for p in procs]
    assert [(p.returncode, out.strip()) for p, (out, _err) in zip(procs, results, strict=True)] == [(0, "ok")] * 4, \
        [err[-2000:] for _out, err in results]
    assert _versions(schema)["accounts"] == len(pg_accounts.MIGRATIONS)
    auth = Auth(store=pg_accounts.PostgresAccountStore(pg_dsn(), schema=schema))
    try:
        auth.add_user("alice")
        assert [u.name for u in auth.list_users()] == ["alice"]
    finally:
        auth.close()


# -- PostgreSQL: a wrong DSN, a server that is not there ------------------------------------------
def _dsn_with(**parts: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(pg_dsn())
    user = parts.get("user", u.username or "postgres")
    password = parts.get("password", u.password or "")
    netloc = f"{user}{':' + password if password else ''}@{parts.get('host', u.hostname or '127.0.0.1')}:" \
             f"{parts.get('port', str(u.port or 5432))}"
    return urlunsplit((u.scheme, netloc, "/" + parts.get("db", u.path.lstrip("/")), "", ""))


def test_a_server_that_is_not_there_is_a_clear_error_without_the_password() -> None:
    from botkit.backends.pg_accounts import PostgresAccountStore

    store = PostgresAccountStore(_dsn_with(port="1", password="s3cret-pw"), schema="botkit")
    with pytest.raises(DatabaseUnavailable) as caught:
        store.start()
    message = str(caught.value)
    assert "cannot reach PostgreSQL at 127.0.0.1:1/" in message and "pg_isready" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(store)
    with pytest.raises(DatabaseUnavailable):  # the CLI's path: opened on first use
        Auth(store=store).list_users()


def test_a_missing_database_or_role_says_what_to_fix() -> None:
    from botkit.backends.pg_accounts import PostgresAccountStore

    with pytest.raises(StorageError, match="createdb") as caught:
        PostgresAccountStore(_dsn_with(db="no_such_database_here")).start()
    assert not isinstance(caught.value, DatabaseUnavailable)  # retrying will not help: fix the DSN
    with pytest.raises(StorageError, match="refused the login.*check the user and password"):
        PostgresAccountStore(_dsn_with(user="no_such_role_here")).start()


def test_a_bad_schema_name_is_refused_before_connecting() -> None:
    from botkit.backends.pg_accounts import PostgresAccountStore

    with pytest.raises(StorageError, match="storage.postgres_schema: 'Bad-Name'"):
        PostgresAccountStore(pg_dsn(), schema="Bad-Name")


# -- the switch, the CLI and the demo accounts -----------------------------------------------------
def _project(tmp_path: Path, schema: str, backend: str = "auto") -> Path:
    root = tmp_path / "bot"
    root.mkdir(parents=True)
    (root / "bot.yaml").write_text(f"name: test bot\nstorage:\n  backend: {backend}\n  postgres_schema: {schema}\n"
                                   "channels: {}\n", encoding="utf-8")
    return root


def test_the_switch_picks_the_store(tmp_path: Path, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from botkit.backends.pg_accounts import PostgresAccountStore

    root = _project(tmp_path, schema)
    monkeypatch.delenv("BOTKIT_DATABASE_URL", raising=False)
    assert isinstance(Auth(Project.load(root)).store, SQLiteAccountStore)
    monkeypatch.setenv("BOTKIT_DATABASE_URL", pg_dsn())
    auth = Auth(Project.load(root))
    assert isinstance(auth.store, PostgresAccountStore) and auth.store.schema == schema and auth.path is None
    monkeypatch.setenv("BOTKIT_DATABASE_URL", "mysql://db/x")
    with pytest.raises(ConfigError, match="must be a postgresql:// address"):
        Auth(Project.load(root))
    monkeypatch.delenv("BOTKIT_DATABASE_URL")
    with pytest.raises(ConfigError, match="needs the database's address in the environment variable"):
        Auth(Project.load(_project(tmp_path / "pg", schema, backend="postgresql")))


def test_botkit_users_and_the_demo_accounts_work_against_postgresql(tmp_path: Path, schema: str,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from botkit.app.cli import main

    root = _project(tmp_path, schema)
    monkeypatch.setenv("BOTKIT_DATABASE_URL", pg_dsn())
    assert main(["users", "add", "dana", "--role", "admin", "--project", str(root)]) == 0
    password = capsys.readouterr().out.rsplit(": ", 1)[1].strip()
    assert main(["users", "add", "DANA", "--project", str(root)]) == 1
    assert "exists already" in capsys.readouterr().err
    created = ensure_demo_accounts(Project.load(root))
    assert sorted(created) == ["alice", "olivia"]
    assert ensure_demo_accounts(Project.load(root)) == {}  # a second start creates nothing
    assert main(["users", "list", "--project", str(root)]) == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert listed == [["alice", "agent"], ["dana", "admin"], ["olivia", "operator"]]
    assert main(["users", "passwd", "dana", "--project", str(root)]) == 0
    assert not (root / ".botkit" / "accounts.sqlite3").exists()  # nothing went to the SQLite file
    # another worker (a fresh process's Auth) sees them, with the new password only
    auth = Auth(Project.load(root))
    try:
        assert auth.verify("dana", password) is None
        assert auth.verify("alice", created["alice"]) is not None
    finally:
        auth.close()


def test_connections_a_server_restart_ended_are_replaced(schema: str) -> None:
    import uuid

    import psycopg

    from botkit.backends.pg_accounts import PostgresAccountStore

    name = f"botkit-test-{uuid.uuid4().hex[:8]}"
    auth = Auth(store=PostgresAccountStore(pg_dsn(), schema=schema, application_name=name))
    try:
        auth.add_user("alice")
        with psycopg.connect(pg_dsn(), autocommit=True) as admin:  # what a restart does to the pool's connections
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE application_name=%s", (name,)).fetchone()
        assert ended is not None and ended[0] >= 1
        assert [u.name for u in auth.list_users()] == ["alice"]  # a checked, fresh connection: no error
    finally:
        auth.close()
