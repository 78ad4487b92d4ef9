"""Staff accounts and sign-in for the agent console and the knowledge-base editor.

Accounts live in ``<state_dir>/accounts.sqlite3``: a name, a role and a scrypt hash of the
password (random salt, constant-time comparison); with ``BOTKIT_DATABASE_URL`` set, in PostgreSQL
instead, shared by every worker (the :class:`~botkit.staff_store.AccountStore` seam;
botkit/app/storage_switch.py says what the switch moves). Roles:

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
Nothing locks an account for everyone. The failure counts are this process's
(botkit/signin_throttle.py), or, with ``BOTKIT_REDIS_URL`` set, Redis's, so N workers throttle
one attacker together (botkit/backends/redis_counters.py: with Redis down each worker throttles
on its own, logged as an error).

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
from botkit.signin_throttle import FailureCounts, LocalFailureCounts, Throttle
from botkit.staff_store import SQLITE_SCHEMA, AccountStore, SQLiteAccountStore, UserRecord

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

SCHEMA = SQLITE_SCHEMA  # the SQLite store's tables (botkit/staff_store.py)


class Auth:
    """Accounts, sessions, API tokens and the sign-in throttle of one project.

    The methods are synchronous (the CLI uses them directly); the web handlers run them in a
    thread. ``clock`` returns seconds (``time.time``); tests move it to expire sessions.

    Where the rows live is ``store`` (:class:`~botkit.staff_store.AccountStore`): given, or
    ``<state_dir>/accounts.sqlite3`` (``path``), or, for a project whose storage switch says
    PostgreSQL (``BOTKIT_DATABASE_URL``), the shared PostgreSQL store
    (botkit/app/storage_switch.py). The sign-in failure counts are ``failures``: given, in Redis
    when ``BOTKIT_REDIS_URL`` is set for a project, else in this process. The store is opened
    by :meth:`start`; a caller that never calls it (the CLI) gets it opened on first use.
    :meth:`close` closes both.
    """

    def __init__(self, project: Project | None = None, *, path: Path | str | None = None,
                 session_minutes: int | None = None, behind_proxy: bool | None = None,
                 clock: Callable[[], float] = time.time, throttle: Throttle | None = None,
                 scrypt_n: int | None = None, store: AccountStore | None = None,
                 failures: FailureCounts | None = None):
        if path is None and store is None and project is None:
            raise ValueError("Auth needs a project, a database path or an account store")
        server = project.config.server if project is not None else None
        self.session_seconds = 60.0 * (session_minutes or (server.session_minutes if server else 480))
        self.behind_proxy = behind_proxy if behind_proxy is not None else bool(server and server.behind_proxy)
        self.public_url = server.public_url if server else None
        self.clock = clock
        throttle = throttle or Throttle()
        self.scrypt_n = scrypt_n or scrypt_cost()
        if store is None and path is None:
            from botkit.app.storage_switch import account_store

            store = account_store(project)  # type: ignore[arg-type]  # not None: checked above
        if store is None:
            # Password hashes: the helper creates the file 0600 before SQLite opens it (its -wal too).
            store = SQLiteAccountStore(Path(path))  # type: ignore[arg-type]  # path is set here
        self.store: AccountStore = store
        self.path: Path | None = getattr(store, "path", None)  # the SQLite file, for tools and tests
        if failures is None and project is not None and path is None:
            from botkit.app.storage_switch import failure_counts

            failures = failure_counts(project, throttle)
        self.failures: FailureCounts = failures or LocalFailureCounts(throttle)

    @property
    def throttle(self) -> Throttle:
        """The throttle's rule (setting it applies to the counts kept so far too)."""
        return self.failures.throttle

    @throttle.setter
    def throttle(self, value: Throttle) -> None:
        self.failures.throttle = value

    def __repr__(self) -> str:
        return f"Auth({self.store!r}, failures={self.failures!r})"

    def start(self) -> None:
        """Open the accounts store now (a caller that never calls this gets it opened on first use)."""
        self.store.start()

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self.failures.close()

    # The SQLite store's connection and one-row query, for tools and tests that look at the file.
    @property
    def _db(self) -> sqlite3.Connection:
        return self._sqlite().connection

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self._sqlite().one(sql, params)

    def _sqlite(self) -> SQLiteAccountStore:
        if not isinstance(self.store, SQLiteAccountStore):
            raise AuthError(f"the accounts are not in SQLite here but in {self.store!r}")
        return self.store

    # -- accounts ----------------------------------------------------------------------------
    def add_user(self, name: str, role: str = "agent", password: str | None = None) -> str:
        """Create an account; returns its password (a generated one when ``password`` is None)."""
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise AuthError(f"bad account name {name!r}: use letters, digits, '.', '_', '@' or '-' "
                            "(at most 64, starting with a letter or digit)")
        if role not in ROLES:
            raise AuthError(f"bad role {role!r} (allowed: {', '.join(ROLES)})")
        password = self._check_new_password(password)
        if not self.store.add_user(name, role, hash_password(password, self.scrypt_n), self.clock()):
            raise AuthError(f"an account named {name!r} exists already; "
                            f"`botkit users passwd {name}` sets a new password")
        log.info("account %s created with role %s", name, role)
        return password

    @staticmethod
    def _check_new_password(password: str | None) -> str:
        if password is None:
            return generate_password()
        if not isinstance(password, str) or not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
            raise AuthError(f"a password needs {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")
        return password

    @staticmethod
    def _user(row: UserRecord) -> User:
        return User(row.name, row.role, row.created_at, row.disabled_at)  # type: ignore[arg-type]

    def get_user(self, name: str) -> User | None:
        row = self.store.user(name)
        return self._user(row) if row else None

    def list_users(self) -> list[User]:
        return [self._user(r) for r in self.store.users()]

    def set_password(self, name: str, password: str | None = None) -> str:
        """Set a new password (generated when None) and end the account's sessions."""
        password = self._check_new_password(password)
        if not self.store.set_password_hash(name, hash_password(password, self.scrypt_n)):
            raise AuthError(f"no account named {name!r}; `botkit users list` shows them")
        self.store.end_sessions_of(name)
        log.info("password of %s changed; its sessions were ended", name)
        return password

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise AuthError(f"bad role {role!r} (allowed: {', '.join(ROLES)})")
        if not self.store.set_role(name, role):
            raise AuthError(f"no account named {name!r}")

    def disable_user(self, name: str, disabled: bool = True) -> None:
        """Disable (or re-enable) an account: its sessions end and its API tokens stop working."""
        if not self.store.set_disabled(name, self.clock() if disabled else None):
            raise AuthError(f"no account named {name!r}")
        if disabled:
            self.store.end_sessions_of(name)

    def verify(self, name: str, password: str) -> User | None:
        """The account if the password is right and the account is enabled, else None.

        Costs one scrypt whether or not the account exists. A hash made at a lower cost than
        the current one is replaced by one at the current cost (the password is at hand).
        """
        row = self.store.user(name) if isinstance(name, str) else None
        password = password if isinstance(password, str) else ""
        ok = check_password(password, row.password_hash if row else _dummy_hash(self.scrypt_n))
        if row is None or not ok or row.disabled_at is not None:
            return None
        if needs_rehash(row.password_hash, self.scrypt_n):
            self._upgrade_hash(row.name, row.password_hash, password)
        return self._user(row)

    def _upgrade_hash(self, name: str, old: str, password: str) -> None:
        # Conditional on the old hash: a password changed meanwhile is not overwritten.
        if self.store.set_password_hash(name, hash_password(password, self.scrypt_n), only_if=old):
            log.info("password hash of %s upgraded from scrypt N=%s to N=%d", name, hash_cost(old)[0],  # type: ignore[index]
                     self.scrypt_n)

    # -- sessions ----------------------------------------------------------------------------
    def create_session(self, name: str) -> tuple[str, str]:
        """A new session for an account: (token for the cookie, CSRF token)."""
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock()
        self.store.add_session(_token_hash(token), name, csrf, now, now + self.session_seconds)
        return token, csrf

    def session(self, token: str, *, slide: bool = True) -> Identity | None:
        """The identity behind a session token; ``slide`` extends the session (activity)."""
        if not token or len(token) > 200:
            return None
        key = _token_hash(token)
        row = self.store.session(key)
        if row is None:
            return None
        now = self.clock()
        if row.expires_at <= now or row.disabled_at is not None:
            self.store.end_session(key)
            return None
        if slide and now + self.session_seconds - row.expires_at > 30:  # slide, writing at most every 30 s
            self.store.extend_session(key, now + self.session_seconds)
        return Identity(row.name, row.role, "session", row.csrf)  # type: ignore[arg-type]

    def end_session(self, token: str) -> None:
        self.store.end_session(_token_hash(token))

    # -- API tokens --------------------------------------------------------------------------
    def create_token(self, name: str, label: str = "") -> str:
        """A new API token for an account (shown once; only its hash is kept)."""
        if self.get_user(name) is None:
            raise AuthError(f"no account named {name!r}")
        token = "bk_" + secrets.token_urlsafe(32)
        self.store.add_token(_token_hash(token), name, label, self.clock())
        return token

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        return self.store.tokens(name)

    def revoke_token(self, token_id: int) -> None:
        if not self.store.revoke_token(token_id):
            raise AuthError(f"no API token with id {token_id}")

    def token_identity(self, token: str, *, touch: bool = True) -> Identity | None:
        """The identity behind an API token (None: unknown, revoked, or its account disabled);
        ``touch`` records the use."""
        if not token.startswith("bk_") or len(token) > 200:
            return None
        key = _token_hash(token)
        row = self.store.token(key)
        if row is None or row.disabled_at is not None:
            return None
        if touch:
            self.store.touch_token(key, self.clock())
        return Identity(row.name, row.role, "token")  # type: ignore[arg-type]

    def recheck(self, via: str, credential: str) -> Identity | None:
        """The current identity behind a long-lived connection's credential (a session token or
        an API token), with its current role; None once the session ended (signed out, expired,
        password changed) or the token was revoked or the account disabled. Changes nothing."""
        if via == "session":
            return self.session(credential, slide=False)
        return self.token_identity(credential, touch=False)

    # -- sign-in throttle (see Throttle; the counts: self.failures) --------------------------
    def retry_after(self, ip: str, name: str) -> float:
        """Seconds until this address may try this account again (0: it may try now)."""
        return self.failures.retry_after(ip, name, self.clock())

    def begin_attempt(self, ip: str, name: str) -> float:
        """Ask to try a password: 0 when allowed (the attempt counts as a failure until
        :meth:`succeeded`), else the seconds to wait (nothing is counted). With the counts in
        Redis this is a network round trip: async callers run it in a thread."""
        return self.failures.begin(ip, name, self.clock())

    def succeeded(self, ip: str, name: str) -> None:
        """The attempt was right: clear this (account, address); the address keeps its other failures."""
        self.failures.succeeded(ip, name)

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
