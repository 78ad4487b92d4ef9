"""Who is on the other end of an HTTP request: the client's address, its scheme, and the
origins that are this server. One reading for the staff sign-in (botkit.app.accounts) and the
web chat (connectors.webchat), so the two never disagree about the same request.

Functions take the request's headers, the peer address and ``server.behind_proxy``, not a
web framework's request, so botkit core needs no aiohttp: ``headers`` is any mapping with
``get`` (aiohttp's ``CIMultiDictProxy`` also has ``getall``, and then every header line counts).

The proxy rule (``behind_proxy: true``): exactly one proxy, the one that connects to us, is
trusted. It *appends* what it saw to each ``X-Forwarded-*`` header (or sets the header when
there is none), so the LAST entry, over all lines of that header, is its word; every entry
before it came from the client, which can write anything there. This is what werkzeug's
``ProxyFix`` does with one trusted proxy. Without ``behind_proxy`` the headers are ignored:
anyone could send them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol
from urllib.parse import urlsplit


class Headers(Protocol):
    """Request headers: aiohttp's CIMultiDictProxy (whose ``getall`` gives every line) or a plain mapping."""

    def get(self, key: str, /) -> str | None: ...


def forwarded(headers: Headers, name: str) -> str | None:
    """The last entry of header ``name`` over all its lines (the one our proxy wrote); None
    when the header is absent or its last entry is empty."""
    getall = getattr(headers, "getall", None)
    lines: list[str]
    if getall is not None:
        lines = list(getall(name, []))
    else:
        value = headers.get(name)
        lines = [value] if value is not None else []
    if not lines:
        return None
    last = ",".join(lines).split(",")[-1].strip()
    return last or None


def client_ip(headers: Headers, peer: str | None, behind_proxy: bool) -> str | None:
    """The client's address: the proxy's last X-Forwarded-For entry when ``behind_proxy``
    (falling back to the peer when there is none), else the peer; None when neither is known."""
    if behind_proxy:
        address = forwarded(headers, "X-Forwarded-For")
        if address:
            return address
    return peer or None


def client_scheme(headers: Headers, scheme: str, behind_proxy: bool) -> str:
    """The scheme the client used: our own, or the proxy's X-Forwarded-Proto when ``behind_proxy``."""
    proxied = forwarded(headers, "X-Forwarded-Proto") if behind_proxy else None
    return (proxied or scheme).lower()


def is_https(headers: Headers, scheme: str, behind_proxy: bool) -> bool:
    """Whether the client's connection is TLS (to us, or to the TLS-terminating proxy)."""
    return scheme.lower() == "https" or client_scheme(headers, scheme, behind_proxy) == "https"


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port; None when not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, hostname = parts.scheme.lower(), (parts.hostname or "")  # urlsplit lower-cases the host
    if scheme not in ("http", "https") or not hostname or parts.path not in ("", "/") or parts.query \
            or parts.fragment or parts.username or parts.password:
        return None
    host = f"[{hostname}]" if ":" in hostname else hostname  # an IPv6 literal keeps its brackets
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def origin_of(url: str) -> str | None:
    """The origin of any http(s) URL (``https://example.com/bot/`` -> ``https://example.com``)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return normalise_origin(f"{parts.scheme}://{parts.netloc}")


def own_origins(headers: Headers, scheme: str, host: str, behind_proxy: bool,
                public_url: str | None = None) -> set[str]:
    """The origins that are this server: as the request reached us, ``public_url``'s, and, when
    ``behind_proxy``, as the client reached the proxy (X-Forwarded-Proto and -Host)."""
    found = {origin_of(f"{scheme}://{host}")}
    if public_url:
        found.add(origin_of(public_url))
    if behind_proxy:
        proxied_host = forwarded(headers, "X-Forwarded-Host") or host
        found.add(origin_of(f"{client_scheme(headers, scheme, behind_proxy)}://{proxied_host}"))
    return {o for o in found if o is not None}


def origin_allowed(origin: str, headers: Headers, scheme: str, host: str, behind_proxy: bool,
                   public_url: str | None = None, also: Iterable[str] = ()) -> bool:
    """Whether a request's ``Origin`` is this server (or one of ``also``, normalised origins).
    ``null`` (a file:// page, a sandboxed frame) and anything not http(s) never are."""
    wanted = normalise_origin(origin)
    if wanted is None:
        return False
    return wanted in set(also) or wanted in own_origins(headers, scheme, host, behind_proxy, public_url)
