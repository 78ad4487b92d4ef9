"""HTTP helpers shared by the staff pages and their JSON APIs: JSON answers, the one mapping
from exceptions to HTTP statuses (:func:`status_for`, :func:`error_response`), page headers
(a strict Content-Security-Policy), static files."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from botkit.errors import (
    ArticleNotFound,
    BotkitError,
    ConfigError,
    EmbeddingError,
    GenerationError,
    IndexCorrupt,
    MessageRejected,
    ProjectError,
    QueryError,
    StorageError,
)
from botkit.store import ConflictError

log = logging.getLogger(__name__)

def api_json(data: Any, status: int = 200) -> web.Response:
    """A JSON API response that no cache keeps."""
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def api_error(status: int, message: str, **extra: Any) -> web.Response:
    return api_json({"error": message, **extra}, status=status)


class Refused(Exception):
    """A request a staff API refuses: its HTTP status, the message, the field at fault (if one
    is) and extra JSON keys. Raised by handlers; :func:`error_response` turns it into the answer."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra


# Failures of the server's own setup, not of the request: a 500, though still with the message.
_SERVER_SIDE = (ConfigError, ProjectError, EmbeddingError, GenerationError, IndexCorrupt)


def status_for(exc: BaseException) -> int | None:
    """The HTTP status a staff API answers ``exc`` with; None for an exception that is a bug
    (it propagates, aiohttp logs it and answers 500).

    Most specific first: a :class:`Refused` or a BotkitError carrying its own ``status`` (e.g.
    training.gaps.ProposalError) says it; a StorageError its ``http_status`` (503 locked: retry,
    507 disk full); no such article 404; a lost race 409; other botkit errors are the request's
    doing (400) unless they are the server's setup (500).
    """
    if isinstance(exc, Refused):
        return exc.status
    if not isinstance(exc, BotkitError):
        return None
    own = getattr(exc, "status", None)
    if isinstance(own, int):
        return own
    if isinstance(exc, StorageError):
        return exc.http_status
    if isinstance(exc, ArticleNotFound):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, _SERVER_SIDE):
        return 500
    return 400


def error_response(exc: BaseException, request: web.BaseRequest | None = None) -> web.Response | None:
    """The JSON answer for ``exc`` (``{"error": message, ...}`` at :func:`status_for`'s status),
    or None when it is not an error an API answers (let it propagate). A 5xx answer is logged
    (with ``request``'s method and path): someone has to act on a locked or full database.

    Fields name what the client should fix: ``field`` (+ ``reason``) for a Refused that names
    one, ``text`` for a rejected message, ``q`` for a rejected search; ``retry`` tells a client
    whether trying a StorageError again later can succeed.
    """
    status = status_for(exc)
    if status is None:
        return None
    message = str(exc)
    if status >= 500:
        where = f"{request.method} {request.path}" if request is not None else "API"
        log.warning("%s: %s", where, message)
    if isinstance(exc, Refused):
        fields = {"field": exc.field, "reason": exc.message} if exc.field else {}
        return api_error(status, exc.message, **fields, **exc.extra)
    if isinstance(exc, MessageRejected):
        return api_error(status, message, field="text")
    if isinstance(exc, QueryError):
        return api_error(status, message, field="q", reason=message)
    if isinstance(exc, StorageError):
        return api_error(status, message, retry=exc.retry)
    return api_error(status, message)


def _csp(request: web.BaseRequest) -> str:
    host = request.host if re.fullmatch(r"[A-Za-z0-9.\[\]:-]{1,255}", request.host) else ""
    sockets = f" ws://{host} wss://{host}" if host else ""  # older browsers: 'self' does not cover ws://
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'{sockets}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'; object-src 'none'")


def page_headers(request: web.BaseRequest) -> dict[str, str]:
    """Headers of a staff page: a strict CSP (no inline script, so injected markup cannot run)."""
    return {"Content-Security-Policy": _csp(request), "X-Frame-Options": "DENY", "Cache-Control": "no-store"}


def page_response(request: web.BaseRequest, path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers=page_headers(request))


def static_route(app: web.Application, prefix: str, directory: Path, names: set[str]) -> None:
    """Serve a fixed set of files (no directory listing, no path tricks)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in names:
            raise web.HTTPNotFound()
        return web.FileResponse(directory / name, headers={"Cache-Control": "no-cache"})

    app.router.add_get(f"{prefix}/{{name}}", handler)


# -- the guard ---------------------------------------------------------------------------------
