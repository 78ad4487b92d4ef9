"""Staff sign-in on the real server (``build_app`` on a copy of the demo project, loopback):
passwords, sessions (cookie flags, sliding expiry), CSRF on every state-changing route, the
sign-in rate limit, roles, API tokens, and no secrets in logs, pages or the database."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from botkit.app.accounts import (
    Auth,
    AuthError,
    Throttle,
    check_password,
    ensure_demo_accounts,
    hash_cost,
    hash_password,
    scrypt_cost,
)
from botkit.app.keys import AUTH
from botkit.app.server import build_app
from botkit.engine import Engine
from botkit.escalation import EscalationConfig, build_rules, summarize
from botkit.project import Project
from botkit.responders.extractive import ExtractiveResponder
from botkit.store import SQLiteConversationStore
from knowledge.retriever import KnowledgeRetriever
from tests.conftest import copy_demo, open_kb

pytestmark = pytest.mark.slow


# -- fixtures (the same few lines open test_console.py and test_kb_editor.py) ------------------

@pytest.fixture
async def client(demo_dir: Path, tmp_path: Path, embedder: Any, aiohttp_client: Any) -> Any:
    """The whole server (build_app) on a private copy of the imported demo project."""
    config = yaml.safe_load((demo_dir / "bot.yaml").read_text(encoding="utf-8"))
    config["channels"] = {}  # no web chat needed here
    (demo_dir / "bot.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    engine = Engine(retriever=KnowledgeRetriever(open_kb(demo_dir, embedder)), responder=ExtractiveResponder(),
                    store=SQLiteConversationStore(tmp_path / "conversations.sqlite3"),
                    rules=build_rules(EscalationConfig()), summarize=summarize)
    return await aiohttp_client(build_app(Project.load(demo_dir), engine))


class Staff:
    """A browser of one staff member: its own cookie jar, the CSRF token from /api/auth/me."""

    def __init__(self, client: Any):
        self.client = client
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def signin(self, name: str, password: str, headers: dict[str, str] | None = None,
                     next_path: str = "", me: bool = True) -> aiohttp.ClientResponse:
        async with self.http.get(self.url("/signin")) as r:
            token = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)
        form = {"csrf": token, "name": name, "password": password, "next": next_path}
        async with self.http.post(self.url("/signin"), data=form, allow_redirects=False, headers=headers or {}) as r:
            await r.read()
        if r.status == 303 and me:
            self.csrf = (await self.call("GET", "/api/auth/me"))[1]["csrf"]
        return r

    async def call(self, method: str, path: str, json: Any = None, *, csrf: str | None = None,
                   **kw: Any) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}))
        if method != "GET":
            headers.setdefault("X-CSRF-Token", self.csrf if csrf is None else csrf)
        async with self.http.request(method, self.url(path), json=json, headers=headers,
                                     allow_redirects=False, **kw) as r:
            body = await (r.json() if r.content_type == "application/json" else r.text())
            return r.status, body


@pytest.fixture
async def staff(client: Any) -> Any:
    """staff(name, role) -> a signed-in Staff (the account is created first)."""
    opened: list[Staff] = []

    async def make(name: str, role: str = "agent") -> Staff:
        password = client.app[AUTH].add_user(name, role)
        person = Staff(client)
        opened.append(person)
        response = await person.signin(name, password)
        assert response.status == 303
        return person

    yield make
    for person in opened:
        await person.http.close()


# -- accounts ----------------------------------------------------------------------------------

def test_accounts_passwords_and_demo_accounts(tmp_path: Path) -> None:
    project = Project.load(copy_demo(tmp_path / "demo"))
    created = ensure_demo_accounts(project)
    assert set(created) == {"alice", "olivia"} and all(len(p) >= 16 for p in created.values())
    assert ensure_demo_accounts(project) == {}  # existing accounts are left alone
    auth = Auth(project)
    try:
        assert auth.verify("alice", created["alice"]).role == "agent"
        assert auth.verify("olivia", created["olivia"]).role == "operator"
        assert auth.verify("alice", created["olivia"]) is None and auth.verify("nobody", "x" * 12) is None
        with pytest.raises(AuthError, match="exists already"):
            auth.add_user("alice", "agent")
        with pytest.raises(AuthError, match="bad role"):
            auth.add_user("carol", "superuser")
        with pytest.raises(AuthError, match="10 to"):
            auth.add_user("carol", "agent", "short")
        token, _ = auth.create_session("alice")
        assert auth.session(token).name == "alice"
        new = auth.set_password("alice")
        assert new != created["alice"] and auth.verify("alice", new) and auth.session(token) is None
        auth.disable_user("olivia")
        assert auth.verify("olivia", created["olivia"]) is None
        assert [(u.name, u.role, u.disabled) for u in auth.list_users()] == [("alice", "agent", False),
                                                                             ("olivia", "operator", True)]
    finally:
        auth.close()
    # Hashes are salted scrypt, compared in constant time; the file never holds a password.
    first, second = hash_password("same password"), hash_password("same password")
    assert first != second and first.startswith("scrypt$") and check_password("same password", first)
    data = (project.state_dir / "accounts.sqlite3").read_bytes()
    assert new.encode() not in data and created["olivia"].encode() not in data


def test_password_cost_is_owasp_by_default_and_the_env_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOTKIT_SCRYPT_N")
    assert scrypt_cost() == 2**17
    stored = hash_password("correct horse battery", 2**17)  # 128 MiB: needs scrypt's maxmem raised
    assert hash_cost(stored) == (2**17, 8, 1) and check_password("correct horse battery", stored)
    for bad in ("1000", "2", "lots", str(2**21)):
        monkeypatch.setenv("BOTKIT_SCRYPT_N", bad)
        with pytest.raises(AuthError, match="power of two"):
            scrypt_cost()


async def test_an_old_hash_is_upgraded_at_sign_in(client: Any) -> None:
    auth = client.app[AUTH]
    password = auth.add_user("alice", "agent")
    old = auth._one("SELECT password_hash FROM users WHERE name='alice'")["password_hash"]
    assert hash_cost(old) == (2**14, 8, 1)  # made at the test suite's cost: the "old" one
    auth.scrypt_n = 2**17  # the server now runs at OWASP's cost
    browser = Staff(client)
    try:
        assert (await browser.signin("bob", "no such account")).status == 401  # nothing to upgrade
        assert (await browser.signin("alice", "wrong password!")).status == 401
        assert auth._one("SELECT password_hash FROM users WHERE name='alice'")["password_hash"] == old
        assert (await browser.signin("alice", password)).status == 303
    finally:
        await browser.http.close()
    new = auth._one("SELECT password_hash FROM users WHERE name='alice'")["password_hash"]
    assert hash_cost(new) == (2**17, 8, 1) and check_password(password, new) and not check_password("x" * 12, new)
    assert auth.verify("alice", password) is not None
    assert auth._one("SELECT password_hash FROM users WHERE name='alice'")["password_hash"] == new  # once only
    auth.scrypt_n = 2**14  # a lower setting never downgrades a stored hash
    assert auth.verify("alice", password) is not None
    assert auth._one("SELECT password_hash FROM users WHERE name='alice'")["password_hash"] == new


# -- sign-in -----------------------------------------------------------------------------------

async def test_signin_cookie_flags_and_redirect(client: Any) -> None:
    auth = client.app[AUTH]
    password = auth.add_user("alice", "agent")
    page = await client.get("/signin")
    assert page.status == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    pre = page.cookies["botkit_signin"]
    assert pre["httponly"] and pre["samesite"] == "Strict"
    token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
    assert token == pre.value  # double submit: the form's token must match the cookie
    r = await client.post("/signin", data={"csrf": token, "name": "alice", "password": password},
                          allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/console"
    cookie = r.cookies["botkit_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain http on loopback; see below for https
    me = await (await client.get("/api/auth/me")).json()
    assert me["name"] == "alice" and me["role"] == "agent" and len(me["csrf"]) > 30
    assert me["can"] == {"console": True, "kb": False, "analytics": False}
    # Behind a TLS-terminating proxy (server.behind_proxy) the cookie is Secure; otherwise the
    # header is not trusted.
    for trusted in (False, True):
        auth.behind_proxy = trusted
        browser = Staff(client)
        try:
            r = await browser.signin("alice", password, {"X-Forwarded-Proto": "https"}, next_path="/kb",
                                     me=False)  # a Secure cookie is not sent back over http
        finally:
            await browser.http.close()
        assert r.status == 303 and r.headers["Location"] == "/kb"
        assert bool(r.cookies["botkit_session"]["secure"]) is trusted
    # Only local paths are followed after sign-in (no open redirect).
    browser = Staff(client)
    try:
        r = await browser.signin("alice", password, next_path="//evil.example/x")
        assert r.status == 303 and r.headers["Location"] == "/console"
    finally:
        await browser.http.close()


async def test_wrong_password_and_no_secrets_in_logs_pages_or_db(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    auth = client.app[AUTH]
    password = auth.add_user("alice", "agent")
    browser = Staff(client)
    try:
        wrong = "Tr0ub4dor&3-wrong"
        r = await browser.signin("alice", wrong)
        assert r.status == 401 and "botkit_session" not in r.cookies
        async with browser.http.get(browser.url("/api/console/queue")) as q:
            assert q.status == 401 and (await q.json())["error"].startswith("sign in")
        r = await browser.signin("alice", password)
        assert r.status == 303
        session = next(c.value for c in browser.http.cookie_jar if c.key == "botkit_session")
        status, queue = await browser.call("GET", "/api/console/queue")
        assert status == 200 and queue["agent"] == "alice"
        pages = [(await browser.call("GET", path))[1] for path in ("/signin", "/console", "/api/auth/me")]
        status, page = await browser.call("POST", "/signin", data={"name": "alice", "password": wrong, "csrf": "x"})
        pages.append(page)
    finally:
        await browser.http.close()
    secrets = [password, wrong, session, browser.csrf]
    logged = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "alice" in logged and "signed in" in logged  # the sign-in was logged...
    for secret in secrets[:3]:
        assert secret not in logged  # ...without a password or the session token
    assert "scrypt$" not in logged
    for page in map(str, pages):
        for secret in secrets[:3]:
            assert secret not in page
        assert "scrypt$" not in page
    db = sqlite3.connect(auth.path)
    dump = "\n".join(db.iterdump())
    db.close()
    assert password not in dump and session not in dump  # only hashes are stored


async def test_signin_form_needs_its_pre_session_token(client: Any) -> None:
    password = client.app[AUTH].add_user("alice", "agent")
    # A cross-site form post carries neither the token nor (SameSite=Strict) the cookie.
    r = await client.post("/signin", data={"name": "alice", "password": password}, allow_redirects=False)
    assert r.status == 403 and "botkit_session" not in r.cookies and "expired" in await r.text()
    await client.get("/signin")  # the cookie is set, but the attacker cannot read it
    r = await client.post("/signin", data={"name": "alice", "password": password, "csrf": "guessed" * 7},
                          allow_redirects=False)
    assert r.status == 403 and "botkit_session" not in r.cookies
    assert (await client.get("/api/auth/me")).status == 401


def throttled(client: Any) -> tuple[Auth, list[float], Any]:
    """The server's Auth on a hand-moved clock, trusting X-Forwarded-For so each attempt can
    claim its address; and attempt(name, password, address) -> the sign-in response."""
    auth = client.app[AUTH]
    now = [1_000_000.0]
    auth.clock = lambda: now[0]
    auth.behind_proxy = True

    async def attempt(name: str, secret: str, address: str) -> aiohttp.ClientResponse:
        browser = Staff(client)
        try:
            return await browser.signin(name, secret, {"X-Forwarded-For": address}, me=False)
        finally:
            await browser.http.close()

    return auth, now, attempt


async def test_an_attacker_cannot_lock_the_real_user_out(client: Any) -> None:
    auth, now, attempt = throttled(client)
    password, bob_password = auth.add_user("alice", "agent"), auth.add_user("bob", "agent")
    attacker, office = "203.0.113.7", "198.51.100.1"
    # 20 wrong passwords for alice from one address, each as soon as it is allowed: the waits double.
    waits: list[int] = []
    failures = 0
    while failures < 20:
        r = await attempt("alice", "not-the-password", attacker)
        if r.status == 429:
            waits.append(int(r.headers["Retry-After"]))
            now[0] += waits[-1]
            continue
        assert r.status == 401
        failures += 1
    assert waits[:6] == [1, 2, 4, 8, 16, 32] and waits[-1] == 300 and waits == sorted(waits)  # capped at 5 min
    # Alice, from her own address, signs in at once; so does bob from the attacker's address.
    assert (await attempt("alice", password, office)).status == 303
    assert (await attempt("bob", bob_password, attacker)).status == 303
    # Only alice-from-that-address waits; after the wait her right password works there too.
    slowed = await attempt("alice", password, attacker)
    assert slowed.status == 429 and 0 < int(slowed.headers["Retry-After"]) <= 300
    now[0] += 300
    assert (await attempt("alice", password, attacker)).status == 303
    assert auth.retry_after(attacker, "alice") == 0  # the success cleared that pair


async def test_parallel_guesses_are_throttled_too(client: Any) -> None:
    auth, _now, attempt = throttled(client)
    auth.add_user("alice", "agent")
    results = await asyncio.gather(*(attempt("alice", f"guess-number-{i}", "203.0.113.9") for i in range(10)))
    statuses = sorted(r.status for r in results)
    assert statuses == [401] * auth.throttle.pair_free + [429] * (10 - auth.throttle.pair_free)


async def test_a_password_spray_from_one_address_is_slowed_never_locked(client: Any) -> None:
    auth, now, attempt = throttled(client)
    auth.throttle = Throttle(address_free=10, address_cap_s=60)  # the default threshold is 100
    bob_password = auth.add_user("bob", "agent")
    sprayer, other = "203.0.113.8", "198.51.100.2"
    for i in range(10):  # one guess on each of many names, known or not: the pair limit never triggers
        assert (await attempt(f"user{i}", "Summer2026!", sprayer)).status == 401
    # Now every try from that address waits (doubling, at most address_cap_s), whatever the name...
    waits = []
    for _ in range(8):
        r = await attempt("bob", "Winter2026!", sprayer)
        assert r.status == 429
        waits.append(int(r.headers["Retry-After"]))
        now[0] += waits[-1]
        assert (await attempt("bob", "Winter2026!", sprayer)).status == 401
    assert waits[:3] == [1, 2, 4] and max(waits) == 60 and waits == sorted(waits)
    # ...other addresses are not affected, and from the spraying address bob's right password is
    # at most a minute away (slowed, not locked).
    assert (await attempt("bob", bob_password, other)).status == 303
    r = await attempt("bob", bob_password, sprayer)
    assert r.status == 429 and int(r.headers["Retry-After"]) <= 60
    now[0] += 60
    assert (await attempt("bob", bob_password, sprayer)).status == 303


async def test_sessions_slide_then_expire_and_end_at_sign_out(client: Any, staff: Any) -> None:
    auth = client.app[AUTH]
    now = [1_000_000.0]
    auth.clock = lambda: now[0]
    alice = await staff("alice")
    lifetime = auth.session_seconds
    assert lifetime == 480 * 60  # server.session_minutes, the default
    for _ in range(3):  # activity keeps the session alive past its original lifetime
        now[0] += lifetime - 60
        assert (await alice.call("GET", "/api/console/queue"))[0] == 200
    now[0] += lifetime + 1
    status, body = await alice.call("GET", "/api/console/queue")
    assert status == 401 and "expired" in body["error"]
    status, _ = await alice.call("GET", "/console")
    assert status == 303
    # A fresh session ends server-side on sign-out: replaying the old cookie does not work.
    alice2 = await staff("alice2")
    old = next(c.value for c in alice2.http.cookie_jar if c.key == "botkit_session")
    assert (await alice2.call("POST", "/signout", csrf="wrong"))[0] == 403  # sign-out needs the token too
    assert (await alice2.call("POST", "/signout"))[0] == 303
    async with aiohttp.ClientSession() as replay:
        async with replay.get(alice2.url("/api/auth/me"), headers={"Cookie": f"botkit_session={old}"}) as r:
            assert r.status == 401


async def test_every_state_changing_route_needs_the_csrf_token(client: Any, staff: Any) -> None:
    admin = await staff("ada", "admin")  # may use every route, so only the CSRF check can refuse
    engine_store = client.app[AUTH]
    routes = sorted({(r.method, r.resource.canonical) for r in client.app.router.routes()
                     if r.method not in ("GET", "HEAD", "OPTIONS", "*")})
    assert ("POST", "/api/console/conversations/{cid}/take") in routes and ("PUT", "/api/kb/articles/{id}") in routes
    body = {"title": "Planted", "body": "should never be stored", "text": "hello", "to": 1, "rev": 1}
    for method, path in routes:
        # every placeholder filled (an id route may only match digits: {rid} itself would be a 404)
        url = re.sub(r"\{(\w+)\}", lambda m: {"cid": "c1", "id": "refund-timing"}.get(m.group(1), "1"), path)
        for token in ("", "wrong-token"):
            status, answer = await admin.call(method, url, body, csrf=token)
            assert status == 403, (method, url, token, answer)
            assert "CSRF" in str(answer) or "expired" in str(answer)
    # Nothing was changed by any of those requests.
    status, article = await admin.call("GET", "/api/kb/articles/refund-timing")
    assert status == 200 and article["article"]["rev"] == 1
    status, listing = await admin.call("GET", "/api/kb/articles")
    assert "Planted" not in str(listing)
    # With the token the same session can write; scripts use a bearer API token instead.
    status, _ = await admin.call("POST", "/api/kb/articles", {"title": "Via session", "body": "ok"})
    assert status == 201
    token = engine_store.create_token("ada", "ci script")
    async with aiohttp.ClientSession() as script:
        async with script.post(admin.url("/api/kb/articles"), json={"title": "Via token", "body": "ok"},
                               headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 201 and (await r.json())["article"]["updated_by"] == "ada"
        async with script.post(admin.url("/api/kb/articles"), json={"title": "x", "body": "y"},
                               headers={"Authorization": "Bearer bk_forged"}) as r:
            assert r.status == 401
    assert token not in sqlite3.connect(engine_store.path).execute("SELECT group_concat(token_hash) FROM api_tokens"
                                                                    ).fetchone()[0]


async def test_roles(client: Any, staff: Any) -> None:
    agent, operator = await staff("alice", "agent"), await staff("olivia", "operator")
    admin = await staff("ada", "admin")
    new = {"title": "Role test", "body": "Only operators may write this."}
    # Agents cannot use the KB editor, neither page nor API (reads included).
    assert (await agent.call("GET", "/kb"))[0] == 403
    assert (await agent.call("GET", "/api/kb/articles"))[0] == 403
    status, body = await agent.call("POST", "/api/kb/articles", new)
    assert status == 403 and "operator role" in body["error"]
    assert (await agent.call("DELETE", "/api/kb/articles/refund-timing?rev=1"))[0] == 403
    # Operators cannot work conversations.
    assert (await operator.call("GET", "/console"))[0] == 403
    assert (await operator.call("GET", "/api/console/queue"))[0] == 403
    status, body = await operator.call("POST", "/api/console/conversations/c1/take")
    assert status == 403 and "agent role" in body["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await operator.http.ws_connect(operator.url("/api/console/ws"), headers={"Origin": operator.url("/")[:-1]})
    assert refused.value.status == 403
    # Admins do both; nobody signed in gets 401 from the API and the sign-in page from pages.
    assert (await admin.call("GET", "/api/console/queue"))[0] == 200
    assert (await admin.call("POST", "/api/kb/articles", new))[0] == 201
    assert (await operator.call("GET", "/api/kb/articles/role-test"))[1]["article"]["updated_by"] == "ada"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(admin.url("/kb"), allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/signin?next=/kb"
        async with anonymous.post(admin.url("/api/kb/articles"), json=new) as r:
            assert r.status == 401 and (await r.json())["signin"] == "/signin"
