"""botkit.net: one reading of X-Forwarded-* and Origin for the staff sign-in and the web chat.

Behind the one trusted proxy, only the LAST entry of a forwarded header (over all its lines)
is the proxy's word; everything before it is whatever the client sent. Each test below fails
with a reader that takes the first entry, or only the first header line.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from botkit import net
from botkit.app.accounts import Auth


def _h(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


def test_client_ip_is_the_proxys_last_entry_not_what_the_client_wrote_first() -> None:
    spoofed = _h(("X-Forwarded-For", "10.0.0.1, 198.51.100.7"))
    assert net.client_ip(spoofed, "127.0.0.1", behind_proxy=True) == "198.51.100.7"


def test_client_ip_reads_every_header_line() -> None:
    # The client sent its own X-Forwarded-For line; the proxy added a second one (HAProxy does).
    # Reading only the first line (headers.get) would count the client's invented address.
    two_lines = _h(("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "198.51.100.7"))
    assert net.client_ip(two_lines, "127.0.0.1", behind_proxy=True) == "198.51.100.7"


def test_client_ip_falls_back_to_the_peer() -> None:
    trailing = _h(("X-Forwarded-For", "198.51.100.7, "))  # an empty last entry is no address
    assert net.client_ip(trailing, "192.0.2.1", behind_proxy=True) == "192.0.2.1"
    assert net.client_ip(_h(), "192.0.2.1", behind_proxy=True) == "192.0.2.1"
    assert net.client_ip(_h(), None, behind_proxy=True) is None


def test_without_behind_proxy_forwarded_headers_are_ignored() -> None:
    headers = _h(("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-Proto", "https"),
                 ("X-Forwarded-Host", "evil.example"))
    assert net.client_ip(headers, "192.0.2.1", behind_proxy=False) == "192.0.2.1"
    assert not net.is_https(headers, "http", behind_proxy=False)
    assert net.own_origins(headers, "http", "shop.example.com", behind_proxy=False) == {"http://shop.example.com"}


def test_plain_mappings_work_too() -> None:
    assert net.client_ip({"X-Forwarded-For": "10.0.0.1, 198.51.100.7"}, None, True) == "198.51.100.7"


def test_scheme_and_host_are_the_proxys_last_entries() -> None:
    # The client claimed https; the proxy it reached over plain http appended "http".
    claimed = _h(("X-Forwarded-Proto", "https, http"))
    assert not net.is_https(claimed, "http", behind_proxy=True)
    assert net.is_https(_h(("X-Forwarded-Proto", "HTTPS")), "http", behind_proxy=True)
    assert net.is_https(_h(), "https", behind_proxy=True)
    hosts = _h(("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "evil.example, shop.example.com"))
    assert net.own_origins(hosts, "http", "app:8080", behind_proxy=True) == {
        "http://app:8080", "https://shop.example.com"}


def test_origins_are_compared_normalised() -> None:
    ok = net.origin_allowed
    assert ok("https://Shop.Example.com:443", _h(), "https", "shop.example.com", False)
    assert not ok("https://shop.example.com.evil.example", _h(), "https", "shop.example.com", False)
    assert not ok("null", _h(), "https", "shop.example.com", False)
    assert ok("https://partner.example", _h(), "http", "app", False, also=["https://partner.example"])
    # public_url may carry a path; its origin is still this server's
    assert ok("https://example.com", _h(), "http", "app:8080", False, public_url="https://example.com/bot/")


def test_origin_of_and_normalise_origin() -> None:
    assert net.origin_of("https://Example.com:443/bot/?x=1") == "https://example.com"
    assert net.normalise_origin("https://example.com/bot/") is None  # an origin has no path
    assert net.normalise_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert net.normalise_origin("ftp://example.com") is None


def test_the_sign_in_and_the_web_chat_read_a_request_the_same_way(tmp_path: Path) -> None:
    from connectors.webchat.config import WebChatConfig
    from connectors.webchat.connector import WebChatConnector

    request = make_mocked_request("GET", "/", headers=_h(
        ("Host", "app:8080"), ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "198.51.100.7"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "shop.example.com"),
        ("Origin", "https://shop.example.com")))
    auth = Auth(path=tmp_path / "accounts.sqlite3", behind_proxy=True)
    chat = WebChatConnector.__new__(WebChatConnector)  # only the request readers, no engine
    chat.behind_proxy, chat.public_url = True, None
    chat.config = WebChatConfig()  # allowed_origins: [] = this server only
    assert auth.client_ip(request) == chat._client_ip(request) == "198.51.100.7"
    assert auth.is_https(request)
    assert auth.origin_ok(request, required=True) and chat._origin_allowed("https://shop.example.com", request)
    assert not auth.origin_ok(make_mocked_request("GET", "/", headers=_h(("Origin", "https://evil.example"))),
                              required=True)
