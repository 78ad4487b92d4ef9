"""HTTP helpers shared by the staff pages and their JSON APIs: JSON answers, page headers
(a strict Content-Security-Policy), static files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp import web

def api_json(data: Any, status: int = 200) -> web.Response:
    """A JSON API response that no cache keeps."""
    return web.json_response(data, status=status, headers={"Cache-Control": "no-store"})


def api_error(status: int, message: str, **extra: Any) -> web.Response:
    return api_json({"error": message, **extra}, status=status)


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
