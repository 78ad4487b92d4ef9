"""The analytics page for operators: ``/analytics`` and ``GET /api/analytics`` (role ``operator``).

``GET /api/analytics?since=&until=&bucket=`` answers :func:`botkit.app.analytics_data.analytics_report`
on the engine's conversation store: the same figures as ``botkit report --json`` (docs/analytics.md).
``since``/``until`` are UTC dates (``until`` inclusive), ISO times or ``Nd``; empty: unbounded.
A bad range is a 400 that says what to send. The page draws its charts with uPlot, served from
``/static/vendor/`` (botkit/app/static/vendor/README.md), never from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from botkit.analytics import parse_range
from botkit.app.analytics_data import analytics_report
from botkit.app.http import api_json, error_response, page_response, static_route
from botkit.app.keys import ENGINE, PROJECT
from botkit.app.signin import require, setup_auth

STATIC = Path(__file__).resolve().parent / "static"
_MOUNTED = web.AppKey("analytics_mounted", bool)


@require("operator")
async def analytics_page(request: web.Request) -> web.StreamResponse:
    return page_response(request, STATIC / "analytics.html")


@require("operator")
async def analytics_api(request: web.Request) -> web.StreamResponse:
    q = request.query
    try:
        rng = parse_range(q.get("since"), q.get("until"), q.get("bucket"))
        report = await analytics_report(request.app[PROJECT], request.app[ENGINE].store, rng)
    except Exception as exc:  # noqa: BLE001 - error_response answers what it knows, re-raised otherwise
        answer = error_response(exc, request)
        if answer is None:
            raise
        return answer
    return api_json(report)


def setup_analytics(app: web.Application) -> None:
    """Mount the analytics page, its API and the vendored chart library."""
    setup_auth(app)
    if _MOUNTED in app:
        return
    app[_MOUNTED] = True
    r = app.router
    r.add_get("/analytics", analytics_page)
    r.add_get("/api/analytics", analytics_api)
    static_route(app, "/static/analytics", STATIC, {"analytics.js", "analytics.css"})
    static_route(app, "/static/vendor", STATIC / "vendor", {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"})


__all__ = ["setup_analytics"]
