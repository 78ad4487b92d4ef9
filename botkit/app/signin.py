"""Sign-in for staff: ``/signin``, ``/signout``, ``/api/auth/me`` and the ``require(role)``
guard every staff route is wrapped in (session cookie or bearer token; CSRF on state changes).
The accounts themselves live in :mod:`botkit.app.accounts`."""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from botkit.app.accounts import (
    CSRF_HEADER,
    NAME_PATTERN,
    ROLES,
    SAFE_METHODS,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    STATIC,
    Auth,
    Role,
)
from botkit.app.http import api_error, api_json, page_headers, static_route
from botkit.app.keys import AUTH, PROJECT, USER
from botkit.errors import StorageError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_api(request: web.BaseRequest) -> bool:
    return request.path.startswith("/api/")


def _answers_storage_errors(handler: Handler) -> Handler:
    """The accounts database locked or not reachable (PostgreSQL down) is a 503 that says so
    (JSON with ``retry`` on API paths, a short page otherwise), not a 500. The reason is logged,
    not shown: these pages are public, and it names the database's host."""

    @functools.wraps(handler)
    async def answered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StorageError as exc:
            log.error("%s %s: the accounts database failed: %s", request.method, request.path, exc)
            status = exc.http_status if exc.http_status >= 500 else 503
            text = ("sign-in is unavailable for now (the accounts database is not answering); try again in a moment"
                    if exc.retry else "sign-in is unavailable: the accounts database failed (the server log says why)")
            if _is_api(request):
                return api_error(status, text, retry=exc.retry)
            return web.Response(status=status, text=f"{text[0].upper()}{text[1:]}.", headers=page_headers(request))

    return answered


def require(role: Role) -> Callable[[Handler], Handler]:
    """Decorate a handler: signed in with ``role`` (or admin), CSRF token on state changes.

    API paths (``/api/...``) answer 401/403 JSON; pages redirect to ``/signin``. The handler
    finds the account in ``request[USER]``.
    """
    if role not in ROLES:
        raise ValueError(f"bad role {role!r} (allowed: {', '.join(ROLES)})")

    def decorate(handler: Handler) -> Handler:
        @_answers_storage_errors
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            auth = request.app[AUTH]
            ident = await auth.identify(request)
            if ident is None:
                if _is_api(request):
                    return api_error(401, "sign in first (your session may have expired)", signin="/signin")
                raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='/')}")
            if not ident.can(role):
                message = f"this needs the {role} role; {ident.name} is {ident.role}"
                if _is_api(request):
                    return api_error(403, message)
                return web.Response(status=403, text=f"Forbidden: {message}.", headers=page_headers(request))
            if request.method not in SAFE_METHODS and ident.via == "session":
                if not auth.origin_ok(request, required=False):
                    return api_error(403, "cross-site request refused (Origin is not this server)")
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent and request.content_type == "application/x-www-form-urlencoded":
                    sent = str((await request.post()).get("csrf", ""))
                if not sent or not hmac.compare_digest(sent.encode(), ident.csrf.encode()):
                    return api_error(403, f"missing or wrong CSRF token: send the {CSRF_HEADER} header "
                                          "with the token from /api/auth/me")
            request[USER] = ident
            return await handler(request)

        return guarded

    return decorate


# -- sign-in pages -----------------------------------------------------------------------------

def _safe_next(value: str | None, default: str) -> str:
    """Only same-site paths: '/console', never '//evil.example' or 'https://...'."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or any(
            ord(c) < 32 for c in value):
        return default
    return value


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _home(role: str) -> str:
    return "/kb" if role == "operator" else "/console"


def _signin_html(request: web.Request, token: str, next_path: str, name: str = "", error: str = "") -> str:

    project = request.app.get(PROJECT)
    bot = project.config.name if project is not None else "botkit"
    e = html.escape
    message = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · {e(bot)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/staff/staff.css">
</head>
<body class="signin">
<main class="signin-box">
<h1>{e(bot)}</h1>
<p class="muted">Staff sign-in: agent console and knowledge editor</p>
{message}
<form method="post" action="/signin">
<input type="hidden" name="csrf" value="{e(token)}">
<input type="hidden" name="next" value="{e(next_path)}">
<label>Name <input name="name" autocomplete="username" required{"" if name else " autofocus"} value="{e(name)}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
  required{" autofocus" if name else ""}></label>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""


def _signin_token(request: web.Request) -> str:
    token = request.cookies.get(SIGNIN_COOKIE, "")
    return token if re.fullmatch(r"[A-Za-z0-9_-]{40,64}", token) else secrets.token_urlsafe(32)


def _signin_response(request: web.Request, status: int, next_path: str, name: str = "", error: str = "",
                     headers: dict[str, str] | None = None) -> web.Response:
    auth = request.app[AUTH]
    token = _signin_token(request)
    response = web.Response(status=status, text=_signin_html(request, token, next_path, name, error),
                            content_type="text/html", headers={**page_headers(request), **(headers or {})})
    response.set_cookie(SIGNIN_COOKIE, token, httponly=True, samesite="Strict", secure=auth.is_https(request),
                        path="/signin", max_age=3600)
    return response


@_answers_storage_errors
async def signin_page(request: web.Request) -> web.StreamResponse:
    ident = await request.app[AUTH].identify(request)
    next_path = _safe_next(request.query.get("next"), "")
    if ident is not None and ident.via == "session":
        raise web.HTTPSeeOther(next_path or _home(ident.role))
    return _signin_response(request, 200, next_path)


def _wait_text(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole} second{'s' if whole != 1 else ''}" if whole < 120 else f"{math.ceil(whole / 60)} minutes"


@_answers_storage_errors
async def signin_submit(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    form = await request.post()
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")), "")
    sent, cookie = str(form.get("csrf", "")), request.cookies.get(SIGNIN_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        return _signin_response(request, 403, next_path, name,
                                "The sign-in form expired or came from another site. Please try again.")
    ip = auth.client_ip(request)
    wait = await asyncio.to_thread(auth.begin_attempt, ip, name)  # with Redis: a round trip
    if wait > 0:
        log.warning("sign-in slowed down: recent failures from %s (for this account, or many accounts)", ip)
        return _signin_response(request, 429, next_path, name,
                                f"Too many failed sign-ins. Try again in {_wait_text(wait)}.",
                                headers={"Retry-After": str(math.ceil(wait))})
    user = await asyncio.to_thread(auth.verify, name, password[:1024])
    if user is None:
        known = await asyncio.to_thread(auth.get_user, name) if NAME_PATTERN.match(name) else None
        # The name is logged only for existing accounts: people type passwords into name fields.
        log.warning("failed sign-in for %s from %s", known.name if known else "an unknown account", ip)
        return _signin_response(request, 401, next_path, name, "Wrong name or password.")
    await asyncio.to_thread(auth.succeeded, ip, name)
    token, _csrf = await asyncio.to_thread(auth.create_session, user.name)
    log.info("%s (%s) signed in from %s", user.name, user.role, ip)
    response = _see_other(next_path or _home(user.role))
    auth.set_session_cookie(request, response, token)
    response.del_cookie(SIGNIN_COOKIE, path="/signin")
    return response


@_answers_storage_errors
async def signout(request: web.Request) -> web.StreamResponse:
    auth = request.app[AUTH]
    token = request.cookies.get(SESSION_COOKIE, "")
    ident = await auth.identify(request)
    if ident is not None and ident.via == "session":
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent and request.content_type == "application/x-www-form-urlencoded":
            sent = str((await request.post()).get("csrf", ""))
        if not sent or not hmac.compare_digest(sent.encode(), ident.csrf.encode()):
            return api_error(403, f"missing or wrong CSRF token: send the {CSRF_HEADER} header")
        await asyncio.to_thread(auth.end_session, token)
        log.info("%s signed out", ident.name)
    response = _see_other("/signin")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@_answers_storage_errors
async def me(request: web.Request) -> web.StreamResponse:
    """Who is signed in, and the CSRF token the page must send with state changes."""
    ident = await request.app[AUTH].identify(request)
    if ident is None:
        return api_error(401, "sign in first", signin="/signin")
    return api_json({"name": ident.name, "role": ident.role, "csrf": ident.csrf,
                     "can": {"console": ident.can("agent"), "kb": ident.can("operator"),
                             "analytics": ident.can("operator")}})


def setup_auth(app: web.Application) -> Auth:
    """Accounts, ``/signin``, ``/signout`` and ``/api/auth/me`` for an app (idempotent)."""
    if AUTH in app:
        return app[AUTH]

    auth = Auth(app[PROJECT])
    app[AUTH] = auth
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin_submit)
    app.router.add_post("/signout", signout)
    app.router.add_get("/api/auth/me", me)
    static_route(app, "/static/staff", STATIC, {"staff.css", "staff.js"})

    async def close(_app: web.Application) -> None:
        auth.close()

    app.on_cleanup.append(close)
    return auth
