"""A fake Telegram Bot API server: a small aiohttp app on 127.0.0.1 that python-telegram-bot
talks real HTTP to (``ApplicationBuilder().base_url(fake.base_url)``), so tests exercise the
whole client stack and never patch library methods.

Implemented: ``getMe``, ``sendMessage`` (validated like Telegram: empty text, too long,
MarkdownV2 with unescaped reserved characters, unbalanced entities), ``setWebhook``,
``deleteWebhook``, ``getWebhookInfo`` and ``getUpdates`` (queued updates, ``offset``
confirms, brief long polling, 409 while a webhook is set). Scripted failures: the next N
``sendMessage`` calls (optionally for one chat) answer 429 with ``retry_after`` or 5xx.

Also: builders for realistic Update JSON (text, commands with entities, photo, sticker,
voice, document, location).

    async with FakeTelegram(TOKEN) as fake:
        app = ApplicationBuilder().token(TOKEN).base_url(fake.base_url).build()
        ...
        (message,) = await fake.wait_sent(1)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_update_ids = itertools.count(700_000)
_message_ids = itertools.count(1)
_file_ids = itertools.count(1)

MARKDOWN_V2_RESERVED = "_*[]()~`>#+-=|{}.!"
_SECRET_OK = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
MAX_TEXT_LENGTH = 4096


@dataclass(frozen=True)
class SentMessage:
    """A message the fake accepted (what the customer would see)."""

    chat_id: int | str
    text: str
    parse_mode: str | None
    message_id: int
    at: float  # time.monotonic() when it was accepted


@dataclass(frozen=True)
class Attempt:
    """One sendMessage call, accepted or failed."""

    chat_id: int | str | None
    status: int
    at: float


@dataclass
class Failure:
    """A scripted failure: the next ``remaining`` sendMessage calls (to ``chat_id``, or any)."""

    status: int
    remaining: int
    retry_after: int | None = None
    chat_id: int | None = None


class TelegramAPIError(Exception):
    """Raised inside the fake to answer with a Telegram error object."""

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_markdown_v2(text: str) -> str:
    """The text Telegram would show for a MarkdownV2 message; raises TelegramAPIError(400) the way
    Telegram does ("can't parse entities") for an unescaped reserved character or an entity
    that is never closed. A simplification of Telegram's parser, strict where it matters."""
    out: list[str] = []
    open_marks: list[tuple[str, int]] = []  # (marker, offset)
    i = 0
    in_code = False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 < len(text) and 1 <= ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
                continue
            raise TelegramAPIError(400, "Bad Request: can't parse entities: Character '\\' is reserved and must "
                                        "be escaped with the preceding '\\'")
        if ch == "`":
            in_code = not in_code
            if in_code:
                open_marks.append(("`", i))
            else:
                open_marks.pop()
            i += 1
            continue
        if in_code:
            out.append(ch)
            i += 1
            continue
        marker = "||" if text.startswith("||", i) else "__" if text.startswith("__", i) else ch
        if marker in ("*", "_", "__", "~", "||", "[", "]"):
            if marker == "]":
                if not open_marks or open_marks[-1][0] != "[" or not text.startswith("](", i):
                    raise _reserved(ch)
                close = text.find(")", i)
                if close < 0:
                    raise TelegramAPIError(400, "Bad Request: can't parse entities: Can't find end of a URL")
                open_marks.pop()
                i = close + 1
                continue
            if open_marks and open_marks[-1][0] == marker and marker != "[":
                open_marks.pop()
            else:
                open_marks.append((marker, i))
            i += len(marker)
            continue
        if ch in MARKDOWN_V2_RESERVED:
            raise _reserved(ch)
        out.append(ch)
        i += 1
    if open_marks:
        marker, offset = open_marks[-1]
        raise TelegramAPIError(400, f"Bad Request: can't parse entities: Can't find end of the entity starting "
                                    f"at byte offset {len(text[:offset].encode())}")
    return "".join(out)


def _reserved(ch: str) -> TelegramAPIError:
    return TelegramAPIError(400, f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be "
                                 "escaped with the preceding '\\'")


@dataclass(repr=False)
class FakeTelegram:
    """The fake Bot API for one bot token. Use as an async context manager."""

    token: str = "123456789:AAFakeTokenForTestsOnly_abcdefghij"
    bot_first_name: str = "Tallow & Pine"
    bot_username: str = "tallow_pine_bot"
    max_long_poll: float = 10.0  # getUpdates waits at most this long (and at most its `timeout`)

    sent: list[SentMessage] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    webhook: dict[str, Any] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)  # updates not yet confirmed
    served: Counter[int] = field(default_factory=Counter)  # update_id -> times returned by getUpdates
    offsets: list[int | None] = field(default_factory=list)  # the offset of each getUpdates call
    polls_waiting: int = 0

    def __post_init__(self) -> None:
        self.bot_id = int(self.token.split(":")[0])
        self._runner: web.AppRunner | None = None
        self._changed: asyncio.Condition | None = None
        self._closing = False
        self.port = 0

    def __repr__(self) -> str:
        return f"FakeTelegram(port={self.port}, sent={len(self.sent)}, pending={len(self.pending)})"

    # -- lifecycle ------------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/bot{token:[^/]+}/{method}", self._dispatch)
        return app

    async def start(self) -> "FakeTelegram":
        self._changed = asyncio.Condition()
        self._runner = web.AppRunner(self.make_app(), shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self._closing = True
        await self._notify()  # wake long polls so that shutdown is immediate
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeTelegram":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """What to give python-telegram-bot as ``base_url`` (it appends the token)."""
        return f"http://127.0.0.1:{self.port}/bot"

    # -- scripting and inspection ---------------------------------------------------------------
    def fail_next_sends(self, count: int, status: int = 429, *, retry_after: int | None = None,
                        chat_id: int | None = None) -> None:
        """The next ``count`` sendMessage calls (to ``chat_id``, or any chat) fail with ``status``;
        a 429 carries ``parameters.retry_after`` (default 1)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        self.failures.append(Failure(status, count, retry_after, chat_id))

    async def enqueue(self, *updates: dict[str, Any]) -> None:
        """Queue updates for getUpdates (polling mode)."""
        self.pending.extend(updates)
        await self._notify()

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [m.text for m in self.sent if chat_id is None or m.chat_id == chat_id]

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name.lower() == method.lower()]

    async def wait_sent(self, count: int, *, chat_id: int | None = None, timeout: float = 15.0) -> list[SentMessage]:
        """Wait until at least ``count`` messages were accepted (to ``chat_id``, or in all)."""
        return await self.wait_for(lambda: len(self._sent_to(chat_id)) >= count, timeout,
                                   lambda: f"{count} messages to {chat_id or 'any chat'}; got {self.texts(chat_id)}",
                                   result=lambda: self._sent_to(chat_id))

    async def wait_for(self, predicate: Any, timeout: float = 15.0, what: Any = None, result: Any = None) -> Any:
        """Wait until ``predicate()`` holds (re-checked whenever the fake handles a call)."""
        assert self._changed is not None, "start() the fake first"
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what() if what else 'a condition'}") from None
        return result() if result else None

    def _sent_to(self, chat_id: int | None) -> list[SentMessage]:
        return [m for m in self.sent if chat_id is None or m.chat_id == chat_id]

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    # -- the API --------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"].lower()
        params = await _params(request)
        self.calls.append((method, params))
        handler = {"getme": self._get_me, "sendmessage": self._send_message, "setwebhook": self._set_webhook,
                   "deletewebhook": self._delete_webhook, "getwebhookinfo": self._get_webhook_info,
                   "getupdates": self._get_updates}.get(method)
        try:
            if handler is None:
                raise TelegramAPIError(404, "Not Found")
            result = await handler(params)
        except TelegramAPIError as exc:
            return _error(exc.status, exc.description, exc.parameters)
        finally:
            await self._notify()
        return web.json_response({"ok": True, "result": result})

    def bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name, "username": self.bot_username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user()

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = _chat_id(params.get("chat_id"))
        now = time.monotonic()
        failure = next((f for f in self.failures if f.remaining > 0 and f.chat_id in (None, chat_id)), None)
        if failure is not None:
            failure.remaining -= 1
            self.attempts.append(Attempt(chat_id, failure.status, now))
            if failure.status == 429:
                raise TelegramAPIError(429, f"Too Many Requests: retry after {failure.retry_after}",
                                       {"retry_after": failure.retry_after})
            if failure.status == 403:
                raise TelegramAPIError(403, "Forbidden: bot was blocked by the user")
            raise TelegramAPIError(failure.status, "Internal Server Error")
        try:
            if chat_id is None:
                raise TelegramAPIError(400, "Bad Request: chat_id is empty")
            text = str(params.get("text") or "")
            parse_mode = params.get("parse_mode") or None
            shown = text
            if parse_mode == "MarkdownV2":
                shown = parse_markdown_v2(text)
            elif parse_mode is not None:
                raise TelegramAPIError(400, f"Bad Request: unsupported parse_mode {parse_mode!r} in this fake")
            if not shown.strip():
                raise TelegramAPIError(400, "Bad Request: message text is empty")
            # Telegram counts UTF-16 code units after entity parsing; this is the stricter reading
            if utf16_len(shown) > MAX_TEXT_LENGTH:
                raise TelegramAPIError(400, "Bad Request: message is too long")
        except TelegramAPIError as exc:
            self.attempts.append(Attempt(chat_id, exc.status, now))
            raise
        message_id = next(_message_ids)
        self.attempts.append(Attempt(chat_id, 200, now))
        self.sent.append(SentMessage(chat_id, shown, parse_mode, message_id, now))
        chat: dict[str, Any] = {"id": chat_id, "type": "private"} if isinstance(chat_id, int) else \
            {"id": -100, "type": "channel", "username": str(chat_id).lstrip("@")}
        return {"message_id": message_id, "date": int(time.time()), "chat": chat, "from": self.bot_user(),
                "text": shown}

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        if not url:
            self.webhook = None
            return True
        if not url.startswith("https://"):
            raise TelegramAPIError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_OK.match(str(secret)):
            raise TelegramAPIError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = {"url": url, "secret_token": secret, "allowed_updates": _json(params.get("allowed_updates"))}
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        if _json(params.get("drop_pending_updates")) is True:
            self.pending.clear()
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                "pending_update_count": len(self.pending)}

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise TelegramAPIError(409, "Conflict: can't use getUpdates method while webhook is active; use "
                                        "deleteWebhook to delete the webhook first")
        offset = _int(params.get("offset"))
        limit = _int(params.get("limit")) or 100
        timeout = float(_int(params.get("timeout")) or 0)
        self.offsets.append(offset)
        if offset is not None:  # confirms every update before it, for good
            self.pending = [u for u in self.pending if u["update_id"] >= offset]
        deadline = time.monotonic() + min(timeout, self.max_long_poll)
        assert self._changed is not None
        self.polls_waiting += 1
        await self._notify()
        try:
            async with self._changed:
                while not self.pending and not self._closing and (left := deadline - time.monotonic()) > 0:
                    try:
                        await asyncio.wait_for(self._changed.wait(), left)
                    except TimeoutError:
                        break
        finally:
            self.polls_waiting -= 1
        batch = self.pending[:limit]
        for update in batch:
            self.served[update["update_id"]] += 1
        return batch


def _error(status: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)


async def _params(request: web.Request) -> dict[str, Any]:
    """Parameters the way the Bot API takes them: query string, form, multipart or JSON body."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.body_exists:
        form = await request.post()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


def _json(value: Any) -> Any:
    """A form value python-telegram-bot JSON-encoded (lists, booleans, numbers)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _chat_id(value: Any) -> int | str | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)  # @channelusername


# -- Update JSON ----------------------------------------------------------------------------------


def user_json(user_id: int, first_name: str = "Ada", language_code: str | None = "en") -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if language_code:
        user["language_code"] = language_code
    return user


def message_update(chat_id: int, *, user_id: int | None = None, first_name: str = "Ada",
                   language_code: str | None = "en", chat_type: str = "private", update_id: int | None = None,
                   **content: Any) -> dict[str, Any]:
    """An Update with a new message in ``chat_id`` from ``user_id`` (by default the chat's own
    user, as in a private chat); ``content`` is the message's payload (``text=...``, ``photo=[...]``)."""
    user = user_json(user_id if user_id is not None else chat_id, first_name, language_code)
    chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
    if chat_type == "private":
        chat["first_name"] = first_name
    else:
        chat["title"] = "A group"
    message = {"message_id": next(_message_ids), "date": int(time.time()), "chat": chat, "from": user, **content}
    return {"update_id": update_id if update_id is not None else next(_update_ids), "message": message}


def text_update(chat_id: int, text: str, **kw: Any) -> dict[str, Any]:
    """A text message; a leading ``/command`` gets its ``bot_command`` entity, as Telegram sends it."""
    content: dict[str, Any] = {"text": text}
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        content["entities"] = [{"type": "bot_command", "offset": 0, "length": utf16_len(command)}]
    return message_update(chat_id, **content, **kw)


def command_update(chat_id: int, command: str, args: str = "", **kw: Any) -> dict[str, Any]:
    """``/command args`` (``command`` without the slash; ``start@bot_name`` works too)."""
    return text_update(chat_id, f"/{command}" + (f" {args}" if args else ""), **kw)


def _file(prefix: str) -> dict[str, Any]:
    n = next(_file_ids)
    return {"file_id": f"{prefix}{n:06d}AgADBAADfakefileid", "file_unique_id": f"{prefix}u{n}"}


def photo_update(chat_id: int, caption: str | None = None, **kw: Any) -> dict[str, Any]:
    sizes = [{**_file("ph"), "width": w, "height": w, "file_size": w * 40} for w in (90, 320, 800)]
    content: dict[str, Any] = {"photo": sizes}
    if caption:
        content["caption"] = caption
    return message_update(chat_id, **content, **kw)


def sticker_update(chat_id: int, emoji: str = "👍", **kw: Any) -> dict[str, Any]:
    sticker = {**_file("st"), "type": "regular", "width": 512, "height": 512, "is_animated": False,
               "is_video": False, "emoji": emoji, "set_name": "FakeStickers"}
    return message_update(chat_id, sticker=sticker, **kw)


def voice_update(chat_id: int, seconds: int = 3, **kw: Any) -> dict[str, Any]:
    return message_update(chat_id, voice={**_file("vo"), "duration": seconds, "mime_type": "audio/ogg",
                                          "file_size": 4000 * seconds}, **kw)


def document_update(chat_id: int, file_name: str = "invoice.pdf", **kw: Any) -> dict[str, Any]:
    return message_update(chat_id, document={**_file("do"), "file_name": file_name, "mime_type": "application/pdf",
                                             "file_size": 52000}, **kw)


def location_update(chat_id: int, latitude: float = 51.5072, longitude: float = -0.1276, **kw: Any) -> dict[str, Any]:
    return message_update(chat_id, location={"latitude": latitude, "longitude": longitude}, **kw)
