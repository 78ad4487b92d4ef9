"""The public help centre: each knowledge-base entry as a read-only page, and a search for the
demo page's search box.

``GET /help/articles/{id}``  the entry as a page (what a source chip in the web chat links to when
                             ``channels.webchat.source_url_template`` is not set)
``GET /help/search?q=``      JSON ``{query, articles: [{id, title, passage, url}]}``: the entries the
                             bot's own search finds above its threshold (rate-limited per address)

Everything from the knowledge base is HTML-escaped before the little Markdown it uses
(headings, lists, tables, bold) is turned into tags; no HTML from an entry is ever passed on.
"""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any
from urllib.parse import quote

from aiohttp import web

from botkit import net
from botkit.app.keys import KB, PROJECT
from connectors.webchat.limits import RATE_LIMITER, Limit, LocalRateLimiter
from connectors.webchat.protocol import OWN_ARTICLE_URL

ARTICLE_PATH = OWN_ARTICLE_URL  # what the web chat's source chips link to by default
SEARCH_PATH = "/help/search"
MAX_QUERY_CHARS = 300
SEARCHES_PER_MINUTE = 30
SEARCH_LIMIT = Limit("help-search", SEARCHES_PER_MINUTE, 60.0)
_LOCAL_LIMITER = web.AppKey("help_search_limiter", LocalRateLimiter)  # without the app's shared one

PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · {site}</title>
<link rel="icon" href="data:,">
<style>
body {{ margin: 0; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color: #1d232b; }}
header {{ padding: 18px 24px; border-bottom: 1px solid #e3e7ec; }}
header a {{ color: #2f6f5e; font-weight: 700; text-decoration: none; }}
main {{ max-width: 760px; margin: 0 auto; padding: 32px 24px 80px; }}
h1 {{ font-size: 28px; line-height: 1.25; margin: 0 0 8px; letter-spacing: -0.01em; }}
h2 {{ font-size: 20px; margin: 28px 0 8px; }} h3, h4 {{ font-size: 17px; margin: 22px 0 6px; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
th, td {{ border: 1px solid #e3e7ec; padding: 6px 10px; text-align: left; }}
.tags {{ color: #5d6875; font-size: 14px; margin: 0 0 24px; }}
.questions {{ color: #5d6875; }}
.ask {{ margin-top: 40px; padding: 18px; border-radius: 12px; background: #f7f8fa; }}
.ask a {{ color: #2f6f5e; }}
</style>
</head>
<body>
<header><a href="/chat">{site}</a></header>
<main>
<article>
<h1>{title}</h1>
<p class="tags">{tags}</p>
{questions}{body}
</article>
<p class="ask">Still need help? <a href="/chat">Ask the assistant</a>: it answers from these articles and can pass you
to a member of our team.</p>
</main>
</body>
</html>
"""


def article_url(article_id: str) -> str:
    """The path of an entry's page (the id URL-quoted)."""
    return ARTICLE_PATH.format(id=quote(article_id, safe=""))


def _inline(text: str) -> str:
    """Escaped text with **bold** made <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text, quote=True))


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    if len(cells) > 1 and all(re.fullmatch(r":?-{2,}:?", c) for c in cells[1]):
        head, body = cells[0], cells[2:]
    else:
        head, body = [], cells
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body]
    return "\n".join([*out, "</table>"])


_LIST_MARK = re.compile(r"^(?:[-*+]|\d+[.)])\s+")


def render_markdown(text: str) -> str:
    """The small Markdown of a help-centre entry as HTML; every piece of text is escaped first."""
    out: list[str] = []
    block: list[str] = []
    kind = ""

    def flush() -> None:
        nonlocal kind
        if kind == "p":
            out.append("<p>" + " ".join(_inline(line.strip()) for line in block) + "</p>")
        elif kind in ("ul", "ol"):
            items = "".join(f"<li>{_inline(_LIST_MARK.sub('', line.strip()))}</li>" for line in block)
            out.append(f"<{kind}>{items}</{kind}>")
        elif kind == "table":
            out.append(_table(block))
        block.clear()
        kind = ""

    for line in text.splitlines():
        stripped = line.strip()
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        this = ("" if not stripped else "h" if heading else "table" if stripped.startswith("|")
                else "ul" if re.match(r"[-*+]\s+", stripped) else "ol" if re.match(r"\d+[.)]\s+", stripped) else "p")
        if this != kind or this == "h":
            flush()
        if this == "h" and heading:
            level = min(6, len(heading.group(1)) + 1)  # the page's title is the h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif this:
            kind = this
            block.append(line)
    flush()
    return "\n".join(out)


def render_article(article: Any, site: str, language: str) -> str:
    questions = ""
    if article.questions:
        questions = ('<ul class="questions">' + "".join(f"<li>{_inline(q)}</li>" for q in article.questions)
                     + "</ul>\n")
    tags = " · ".join(html.escape(t) for t in article.tags)
    return PAGE.format(lang=html.escape(language), title=html.escape(article.title), site=html.escape(site),
                       tags=tags, questions=questions, body=render_markdown(article.body))


async def article_page(request: web.Request) -> web.Response:
    kb = request.app[KB]
    project = request.app[PROJECT]
    if kb is None:
        raise web.HTTPNotFound(text="this server has no knowledge base")
    article = await asyncio.to_thread(kb.store.find, request.match_info["id"])  # type: ignore[attr-defined]
    if article is None:
        raise web.HTTPNotFound(text="no such article (it may have been removed)")
    body = render_article(article, project.config.name, project.config.language)
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers={
        "Cache-Control": "no-cache", "X-Frame-Options": "SAMEORIGIN",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                                   "form-action 'none'; frame-ancestors 'self'"})


async def search(request: web.Request) -> web.Response:
    kb = request.app[KB]
    project = request.app[PROJECT]
    query = request.query.get("q", "").strip()
    if not query:
        return web.json_response({"error": "give a query: ?q=..."}, status=400)
    if len(query) > MAX_QUERY_CHARS:
        return web.json_response({"error": f"the query is too long (at most {MAX_QUERY_CHARS} characters)"},
                                 status=400)
    address = net.client_ip(request.headers, request.remote, project.config.server.behind_proxy) or "unknown"
    limiter = request.app.get(RATE_LIMITER) or request.app[_LOCAL_LIMITER]  # shared by the workers with Redis
    wait = await limiter.take([(SEARCH_LIMIT, address)])
    if wait:
        return web.json_response({"error": "too many searches; try again shortly"}, status=429,
                                 headers={"Retry-After": str(max(1, round(wait)))})
    if kb is None:
        return web.json_response({"query": query, "articles": []})
    result = await asyncio.to_thread(kb.search, query, 5)  # type: ignore[attr-defined]
    found = [{"id": h.article_id, "title": h.title, "passage": h.passage[:300], "url": article_url(h.article_id)}
             for h in result.hits if h.score >= result.threshold]
    return web.json_response({"query": query, "articles": found})


def setup_help_pages(app: web.Application) -> None:
    app[_LOCAL_LIMITER] = LocalRateLimiter()
    app.router.add_get(ARTICLE_PATH, article_page)
    app.router.add_get(SEARCH_PATH, search)
