"""Staff accounts and sign-in for the agent console and the knowledge-base editor.

Accounts live in ``<state_dir>/accounts.sqlite3``: a name, a role and a scrypt hash of the
password (random salt, constant-time comparison). Roles:

* ``agent``: the agent console (take hand-offs, reply, notes, return, close);
* ``operator``: the knowledge-base editor;
* ``admin``: both.

Browsers sign in at ``/signin`` and get a session: a random token in an ``HttpOnly``,
``SameSite=Strict`` cookie (``Secure`` on https, or when ``server.behind_proxy`` is set and
the proxy says the request came over https). Only a SHA-256 of the token is stored; the
session expires ``server.session_minutes`` after the last request (sliding). Every request
that changes state must carry the session's CSRF token (header ``X-CSRF-Token``, which the
pages get from ``/api/auth/me``; or a ``csrf`` form field). The sign-in form itself is
protected against login CSRF by a pre-session token (a cookie plus the same value in the
form).

Failed sign-ins slow the attacker down without locking the real user out (see
:class:`Throttle`): delays grow per (account, client address), so failures from one address
never hold up the same account signing in from another; and an address that fails very
often, across any accounts (a password spray), is slowed too, by at most a minute per try.
Nothing locks an account for everyone.

Passwords are hashed with scrypt at OWASP's cost (N=2**17, r=8, p=1; 128 MiB and about half a
second per hash); a hash stored at a lower cost is re-hashed at the current one the next time
its owner signs in. ``BOTKIT_SCRYPT_N`` (a power of two) lowers N, for test suites only.

Scripts use API tokens instead (``Authorization: Bearer bk_...``, stored hashed); a bearer
request is not a browser's ambient credential, so it needs no CSRF token.

Passwords, session tokens, API tokens and hashes are never logged or rendered.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from botkit import net
from botkit.errors import BotkitError
from botkit.project import Project
from botkit.sqlite import SQLiteDatabase

log = logging.getLogger(__name__)

Role = Literal["agent", "operator", "admin"]
ROLES: tuple[str, ...] = ("agent", "operator", "admin")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
SESSION_COOKIE = "botkit_session"
SIGNIN_COOKIE = "botkit_signin"  # the pre-session token that protects the sign-in form
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC = Path(__file__).resolve().parent / "static"

# scrypt cost, OWASP's guidance: N=2**17, r=8, p=1, so 128 * N * r = 128 MiB and 0.3-0.6 s per
# hash on one core. Sign-in runs it in a thread so other requests are not held up, and at most
# HASH_SLOTS hashes run at once (memory: 128 MiB each). BOTKIT_SCRYPT_N lowers N for test suites.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_LEN = 2**17, 8, 1, 32
SCRYPT_N_ENV = "BOTKIT_SCRYPT_N"
SCRYPT_N_RANGE = (2**10, 2**20)
_HASH_SLOTS = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))


class AuthError(BotkitError):
    """An account operation was refused (unknown user, bad name or role, weak password)."""


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: float
    disabled_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class Identity:
    """Who made a request, and how they proved it."""

    name: str
    role: Role
    via: Literal["session", "token"]
    csrf: str = ""  # the session's CSRF token ("" for API tokens, which need none)

    def can(self, role: str) -> bool:
        return role_allows(self.role, role)


def role_allows(have: str, need: str) -> bool:
    """``admin`` can do what agents and operators can; otherwise the role must match."""
    return have == "admin" or have == need


def generate_password() -> str:
    """A strong random password (about 120 bits), easy to copy."""
    return secrets.token_urlsafe(15)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scrypt_cost() -> int:
    """scrypt's N: ``BOTKIT_SCRYPT_N`` if set (tests), else OWASP's 2**17."""
    value = os.environ.get(SCRYPT_N_ENV, "").strip()
    if not value:
        return SCRYPT_N
    low, high = SCRYPT_N_RANGE
    if not value.isdigit() or not low <= int(value) <= high or int(value) & (int(value) - 1):
        raise AuthError(f"{SCRYPT_N_ENV}={value!r}: use a power of two from {low} to {high} "
                        f"(or unset it for the default, {SCRYPT_N}; lower values are for tests only)")
    return int(value)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    with _HASH_SLOTS:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                              maxmem=128 * r * (n + p + 2) + 2**20)


def hash_password(password: str, n: int | None = None) -> str:
    """A salted scrypt hash, ``scrypt$N$r$p$salt$digest`` (the cost travels with the hash)."""
    n = n or scrypt_cost()
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, SCRYPT_R, SCRYPT_P, SCRYPT_LEN)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def hash_cost(stored: str) -> tuple[int, int, int] | None:
    """(N, r, p) of a stored hash, or None when it is not one of ours."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(x.isdigit() for x in parts[1:4]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


def needs_rehash(stored: str, n: int) -> bool:
    """Whether a hash was made at a lower cost than N=n (r=8, p=1); never a downgrade."""
    cost = hash_cost(stored)
    return (cost is not None and cost != (n, SCRYPT_R, SCRYPT_P)
            and cost[0] * cost[1] * cost[2] < n * SCRYPT_R * SCRYPT_P)


def check_password(password: str, stored: str) -> bool:
    """Constant-time comparison of a password with a stored hash."""
    cost = hash_cost(stored)
    if cost is None or not 1 <= cost[0] * cost[1] <= 8 * SCRYPT_N_RANGE[1] or not 1 <= cost[2] <= 16:
        return False
    try:
        salt, digest = stored.split("$")[4:]
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), *cost, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _token_hash(token: str) -> str:
    # Tokens are 256-bit random values, so a fast hash is enough (nothing to brute-force).
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=4)
def _dummy_hash(n: int) -> str:
    """A real hash of a random password: verifying an unknown name costs as much as a known
    one, so response times do not tell which account names exist."""
    return hash_password(secrets.token_urlsafe(16), n)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY COLLATE NOCASE, role TEXT NOT NULL, password_hash TEXT NOT NULL,
    created_at REAL NOT NULL, disabled_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL COLLATE NOCASE, csrf TEXT NOT NULL,
    created_at REAL NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL COLLATE NOCASE,
    label TEXT NOT NULL, created_at REAL NOT NULL, last_used_at REAL);
"""


@dataclass(frozen=True)
class Throttle:
    """How failed sign-ins are slowed down (never an account locked for everyone).

    * Per (account, client address): ``pair_free`` failures are free; after that each failure
      doubles the wait before that address may try that account again (1 s, 2 s, 4 s, ...,
      at most ``pair_cap_s``). The same account from another address is not affected, so an
      attacker cannot lock the real user out; a success from that address clears it.
    * Per client address, over all accounts (a password spray: few guesses on many names):
      ``address_free`` failures are free, then the address waits a doubling delay of at most
      ``address_cap_s`` before each try, whatever the account. The threshold is far above what
      people sharing an address mistype, and the cap keeps the right password from that
      address a short wait away, never a lock-out. A success does not clear it (one valid
      account must not reset a spray).

    Failures are forgotten ``forget_s`` after they happened. An attempt counts as a failure
    from the moment it starts until it succeeds, so parallel guesses are throttled too.
    """

    pair_free: int = 3
    pair_cap_s: float = 300.0
    address_free: int = 100
    address_cap_s: float = 60.0
    forget_s: float = 3600.0
    max_keys: int = 50_000  # bounded memory under a spray of names or addresses

    @staticmethod
    def _delay(count: int, free: int, cap: float) -> float:
        return 0.0 if count < free else min(cap, 2.0 ** min(count - free, 32))

    def wait(self, pair: list[float], address: list[float], now: float) -> float:
        """Seconds until the next try (0: now), given the recent failure times of both keys."""
        wait = 0.0
        for times, free, cap in ((pair, self.pair_free, self.pair_cap_s),
                                 (address, self.address_free, self.address_cap_s)):
            if times:
                wait = max(wait, times[-1] + self._delay(len(times), free, cap) - now)
        return wait


class Auth:
    """Accounts, sessions, API tokens and the sign-in throttle of one project.

    The methods are synchronous (the CLI uses them directly); the web handlers run them in a
    thread. ``clock`` returns seconds (``time.time``); tests move it to expire sessions.
    The database is opened by :meth:`start`; a caller that never calls it (the CLI) gets it
    opened on first use. :meth:`close` closes it.
    """

    def __init__(self, project: Project | None = None, *, path: Path | str | None = None,
                 session_minutes: int | None = None, behind_proxy: bool | None = None,
                 clock: Callable[[], float] = time.time, throttle: Throttle | None = None,
                 scrypt_n: int | None = None):
        if path is None:
            if project is None:
                raise ValueError("Auth needs a project or a database path")
            path = project.state_dir / "accounts.sqlite3"
        server = project.config.server if project is not None else None
        self.path = Path(path)
        self.session_seconds = 60.0 * (session_minutes or (server.session_minutes if server else 480))
        self.behind_proxy = behind_proxy if behind_proxy is not None else bool(server and server.behind_proxy)
        self.public_url = server.public_url if server else None
        self.clock = clock
        self.throttle = throttle or Throttle()
        self.scrypt_n = scrypt_n or scrypt_cost()
        self._failures: dict[tuple[str, ...], list[float]] = {}
        # Password hashes: the helper creates the file 0600 before SQLite opens it (its -wal too).
        # SQLite's default synchronous (FULL), as it always had.
        self._sql = SQLiteDatabase(self.path, SCHEMA, what="the accounts database")
        self._lock = self._sql.lock  # also guards the throttle's failure counts

    def start(self) -> None:
        """Open the accounts database now (a caller that never calls this gets it opened on first use)."""
        self._sql.start()

    def close(self) -> None:
        self._sql.close()

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (opened on first use); use it under ``self._lock``."""
        return self._sql.connection

    # One connection shared by threads: every statement, and reading its rows, under the lock.
    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return self._sql.run(lambda db: db.execute(sql, params).rowcount)

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self._sql.run(lambda db: db.execute(sql, params).fetchone())

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._sql.run(lambda db: db.execute(sql, params).fetchall())

    # -- accounts ----------------------------------------------------------------------------
    def add_user(self, name: str, role: str = "agent", password: str | None = None) -> str:
        """Create an account; returns its password (a generated one when ``password`` is None)."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise AuthError(f"bad account name {name!r}: use letters, digits, '.', '_', '@' or '-' "
                            "(at most 64, starting with a letter or digit)")
        if role not in ROLES:
            raise AuthError(f"bad role {role!r} (allowed: {', '.join(ROLES)})")
        password = self._check_new_password(password)
        try:
            self._write("INSERT INTO users (name, role, password_hash, created_at) VALUES (?,?,?,?)",
                        (name, role, hash_password(password, self.scrypt_n), self.clock()))
        except sqlite3.IntegrityError:
            raise AuthError(f"an account named {name!r} exists already; "
                            f"`botkit users passwd {name}` sets a new password") from None
        log.info("account %s created with role %s", name, role)
        return password

    @staticmethod
    def _check_new_password(password: str | None) -> str:
        if password is None:
            return generate_password()
        if not isinstance(password, str) or not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise AuthError(f"a password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
        return password

    def get_user(self, name: str) -> User | None:
        row = self._one("SELECT * FROM users WHERE name=?", (name,))
        return User(row["name"], row["role"], row["created_at"], row["disabled_at"]) if row else None

    def list_users(self) -> list[User]:
        rows = self._all("SELECT * FROM users ORDER BY name")
        return [User(r["name"], r["role"], r["created_at"], r["disabled_at"]) for r in rows]

    def set_password(self, name: str, password: str | None = None) -> str:
        """Set a new password (generated when None) and end the account's sessions."""
        password = self._check_new_password(password)
        changed = self._write("UPDATE users SET password_hash=? WHERE name=?",
                              (hash_password(password, self.scrypt_n), name))
        if changed != 1:
            raise AuthError(f"no account named {name!r}; `botkit users list` shows them")
        self._write("DELETE FROM sessions WHERE name=?", (name,))
        log.info("password of %s changed; its sessions were ended", name)
        return password

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise AuthError(f"bad role {role!r} (allowed: {', '.join(ROLES)})")
        if self._write("UPDATE users SET role=? WHERE name=?", (role, name)) != 1:
            raise AuthError(f"no account named {name!r}")

    def disable_user(self, name: str, disabled: bool = True) -> None:
        """Disable (or re-enable) an account: its sessions end and its API tokens stop working."""
        changed = self._write("UPDATE users SET disabled_at=? WHERE name=?",
                              (self.clock() if disabled else None, name))
        if changed != 1:
            raise AuthError(f"no account named {name!r}")
        if disabled:
            self._write("DELETE FROM sessions WHERE name=?", (name,))

    def verify(self, name: str, password: str) -> User | None:
        """The account if the password is right and the account is enabled, else None.

        Costs one scrypt whether or not the account exists. A hash made at a lower cost than
        the current one is replaced by one at the current cost (the password is at hand).
        """
        row = self._one("SELECT * FROM users WHERE name=?", (name,)) if isinstance(name, str) else None
        password = password if isinstance(password, str) else ""
        ok = check_password(password, row["password_hash"] if row else _dummy_hash(self.scrypt_n))
        if row is None or not ok or row["disabled_at"] is not None:
            return None
        if needs_rehash(row["password_hash"], self.scrypt_n):
            self._upgrade_hash(row["name"], row["password_hash"], password)
        return User(row["name"], row["role"], row["created_at"], row["disabled_at"])

    def _upgrade_hash(self, name: str, old: str, password: str) -> None:
        # Conditional on the old hash: a password changed meanwhile is not overwritten.
        if self._write("UPDATE users SET password_hash=? WHERE name=? AND password_hash=?",
                       (hash_password(password, self.scrypt_n), name, old)):
            log.info("password hash of %s upgraded from scrypt N=%s to N=%d", name, hash_cost(old)[0],  # type: ignore[index]
                     self.scrypt_n)

    # -- sessions ----------------------------------------------------------------------------
    def create_session(self, name: str) -> tuple[str, str]:
        """A new session for an account: (token for the cookie, CSRF token)."""
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock()
        self._write("DELETE FROM sessions WHERE expires_at <= ?", (now,))  # housekeeping, one indexed scan
        self._write("INSERT INTO sessions (token_hash, name, csrf, created_at, expires_at) VALUES (?,?,?,?,?)",
                    (_token_hash(token), name, csrf, now, now + self.session_seconds))
        return token, csrf

    def session(self, token: str, *, slide: bool = True) -> Identity | None:
        """The identity behind a session token; ``slide`` extends the session (activity)."""
        if not token or len(token) > 200:
            return None
        key = _token_hash(token)
        row = self._one("SELECT s.name, s.csrf, s.expires_at, u.role, u.disabled_at FROM sessions s "
                        "JOIN users u ON u.name = s.name WHERE s.token_hash=?", (key,))
        if row is None:
            return None
        now = self.clock()
        if row["expires_at"] <= now or row["disabled_at"] is not None:
            self._write("DELETE FROM sessions WHERE token_hash=?", (key,))
            return None
        if slide and now + self.session_seconds - row["expires_at"] > 30:  # slide, writing at most every 30 s
            self._write("UPDATE sessions SET expires_at=? WHERE token_hash=?", (now + self.session_seconds, key))
        return Identity(row["name"], row["role"], "session", row["csrf"])

    def end_session(self, token: str) -> None:
        self._write("DELETE FROM sessions WHERE token_hash=?", (_token_hash(token),))

    # -- API tokens --------------------------------------------------------------------------
    def create_token(self, name: str, label: str = "") -> str:
        """A new API token for an account (shown once; only its hash is kept)."""
        if self.get_user(name) is None:
            raise AuthError(f"no account named {name!r}")
        token = "bk_" + secrets.token_urlsafe(32)
        self._write("INSERT INTO api_tokens (token_hash, name, label, created_at) VALUES (?,?,?,?)",
                    (_token_hash(token), name, label, self.clock()))
        return token

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, name, label, created_at, last_used_at FROM api_tokens"
        rows = self._all(sql + (" WHERE name=? ORDER BY id" if name else " ORDER BY id"),
                         (name,) if name else ())
        return [dict(r) for r in rows]

    def revoke_token(self, token_id: int) -> None:
        if self._write("DELETE FROM api_tokens WHERE id=?", (token_id,)) != 1:
            raise AuthError(f"no API token with id {token_id}")

    def token_identity(self, token: str, *, touch: bool = True) -> Identity | None:
        """The identity behind an API token (None: unknown, revoked, or its account disabled);
        ``touch`` records the use."""
        if not token.startswith("bk_") or len(token) > 200:
            return None
        key = _token_hash(token)
        row = self._one("SELECT t.name, u.role, u.disabled_at FROM api_tokens t JOIN users u ON u.name = t.name "
                        "WHERE t.token_hash=?", (key,))
        if row is None or row["disabled_at"] is not None:
            return None
        if touch:
            self._write("UPDATE api_tokens SET last_used_at=? WHERE token_hash=?", (self.clock(), key))
        return Identity(row["name"], row["role"], "token")

    def recheck(self, via: str, credential: str) -> Identity | None:
        """The current identity behind a long-lived connection's credential (a session token or
        an API token), with its current role; None once the session ended (signed out, expired,
        password changed) or the token was revoked or the account disabled. Changes nothing."""
        if via == "session":
            return self.session(credential, slide=False)
        return self.token_identity(credential, touch=False)

    # -- sign-in throttle (see Throttle) ----------------------------------------------------
    @staticmethod
    def _keys(ip: str, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("pair", ip, name.lower()), ("address", ip)

    def _recent(self, key: tuple[str, ...], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.throttle.forget_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def _prune(self, now: float) -> None:
        if len(self._failures) <= self.throttle.max_keys:
            return
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) > self.throttle.max_keys:  # still too many: forget the oldest half
            by_age = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in by_age[:len(by_age) // 2]:
                del self._failures[key]

    def retry_after(self, ip: str, name: str) -> float:
        """Seconds until this address may try this account again (0: it may try now)."""
        now = self.clock()
        pair, address = self._keys(ip, name)
        with self._lock:
            return self.throttle.wait(self._recent(pair, now), self._recent(address, now), now)

    def begin_attempt(self, ip: str, name: str) -> float:
        """Ask to try a password: 0 when allowed (the attempt counts as a failure until
        :meth:`succeeded`), else the seconds to wait (nothing is counted)."""
        now = self.clock()
        pair, address = self._keys(ip, name)
        with self._lock:
            wait = self.throttle.wait(self._recent(pair, now), self._recent(address, now), now)
            if wait > 0:
                return wait
            self._prune(now)
            for key in (pair, address):
                times = self._failures.setdefault(key, [])
                times.append(now)
                del times[:-1000]  # the delays need only the recent ones
            return 0.0

    def succeeded(self, ip: str, name: str) -> None:
        """The attempt was right: clear this (account, address); the address keeps its other failures."""
        pair, address = self._keys(ip, name)
        with self._lock:
            self._failures.pop(pair, None)
            times = self._failures.get(address)
            if times:
                times.pop()

    # -- requests ----------------------------------------------------------------------------
    def client_ip(self, request: web.BaseRequest) -> str:
        """The address sign-in attempts are counted under (botkit.net: the proxy's entry when behind one)."""
        return net.client_ip(request.headers, request.remote, self.behind_proxy) or "?"

    def is_https(self, request: web.BaseRequest) -> bool:
        return net.is_https(request.headers, request.scheme, self.behind_proxy)

    def allowed_origins(self, request: web.BaseRequest) -> set[str]:
        return net.own_origins(request.headers, request.scheme, request.host, self.behind_proxy, self.public_url)

    def origin_ok(self, request: web.BaseRequest, *, required: bool) -> bool:
        """Whether the request's Origin is this server (a missing one passes unless required)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return not required
        return net.origin_allowed(origin, request.headers, request.scheme, request.host, self.behind_proxy,
                                  self.public_url)

    async def identify(self, request: web.BaseRequest) -> Identity | None:
        """The signed-in account of a request: session cookie, or a bearer API token."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            ident = await asyncio.to_thread(self.session, token)
            if ident is not None:
                return ident
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return await asyncio.to_thread(self.token_identity, header[7:].strip())
        return None

    def set_session_cookie(self, request: web.BaseRequest, response: web.StreamResponse, token: str) -> None:
        # No Max-Age: the browser forgets it on exit, and the server's expiry is what counts.
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", secure=self.is_https(request),
                            path="/")


def ensure_demo_accounts(project: Project) -> dict[str, str]:
    """Create the demo accounts ``alice`` (agent) and ``olivia`` (operator) if missing.

    Returns the new accounts' passwords (empty when both existed already).
    """
    auth = Auth(project)
    try:
        created: dict[str, str] = {}
        for name, role in (("alice", "agent"), ("olivia", "operator")):
            if auth.get_user(name) is None:
                created[name] = auth.add_user(name, role)
        return created
    finally:
        auth.close()
