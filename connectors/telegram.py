"""The Telegram channel: a python-telegram-bot ``Application`` held (not subclassed) by a connector.

Inbound, in webhook mode Telegram POSTs updates to ``webhook_path`` on *our* aiohttp server;
the route checks the secret token, parses the update and puts it on the Application's
``update_queue`` (the Application has no updater of its own). In polling mode the
Application's updater long-polls ``getUpdates``. Either way the same handlers run:
``/start``, ``/help``, text → :meth:`Engine.handle` → reply, anything else → "text only".

Outbound, replies and :meth:`TelegramConnector.send` share one delivery path: plain text (no
``parse_mode``: see :func:`split_text`), split at 4096 characters on paragraph, line or word
boundaries, with retries on flood control (429 ``RetryAfter``) and on server/network errors.
python-telegram-bot itself does not retry (no ``AIORateLimiter`` is configured and its HTTPX
transport has no retries), so retries happen exactly once, here.

Ordering: updates of one chat are processed one after another in arrival order (reply
included), updates of different chats concurrently: :class:`_PerChatOrder` is the dispatcher.

Durability: a customer's text message is stored in the engine's inbox *before* Telegram is
told it arrived. The Application's ``update_queue`` is a :class:`_StoringQueue`, and both
inbound paths go through its ``put``: the webhook route answers 200 only after it returns
(503 if the store failed: Telegram redelivers), and python-telegram-bot's updater confirms an
offset (on its next ``getUpdates``) only after ``put`` returned for every update before it.
The inbox is keyed by the chat and Telegram's ``message_id``, so a redelivered update is
answered once; a reply counts as delivered once ``sendMessage`` succeeded. On start, what is
stored but not answered, or answered but not delivered, is answered and sent.

Configuration (``channels.telegram`` in bot.yaml), all optional::

    mode: webhook                   # webhook | polling
    token_env: TELEGRAM_BOT_TOKEN   # the environment variable holding the bot token
    secret_env: TELEGRAM_WEBHOOK_SECRET  # holds the webhook secret (webhook mode: required)
    base_url: https://api.telegram.org/bot   # a local Bot API server, or a fake in tests
    webhook_path: /channels/telegram/webhook
    max_message_chars: 4096         # longer replies are split into several messages
    send_retries: 3                 # retries after a 429 / 5xx / network error, then give up
    retry_backoff: 1.0              # first wait after a 5xx / network error (doubles each time)
    max_retry_after: 30             # cap on a 429's retry_after wait, seconds
    poll_timeout: 10                # polling mode: long-poll seconds per getUpdates

The token and the secret are read from the environment in :meth:`TelegramConnector.start`;
neither appears in ``repr``, error messages or logs (python-telegram-bot's and httpx's log
records carry the token in URLs, so a redacting filter is attached to their loggers while the
connector runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import warnings
from collections.abc import Awaitable, Coroutine
from datetime import timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from telegram import Bot, Update
from telegram.constants import MessageLimit
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.ext.filters import BaseFilter
from telegram.warnings import PTBDeprecationWarning

from botkit.channels import ConnectorContext, OutgoingMessage, as_text, validate_section
from botkit.errors import BotkitError, ConfigError, MessageRejected
from botkit.types import Conversation, InboxItem, IncomingMessage, Reply

log = logging.getLogger(__name__)

TELEGRAM_BASE_URL = "https://api.telegram.org/bot"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_SECRET_OK = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what setWebhook accepts as secret_token
_ALLOWED_UPDATES = ["message"]  # edits, channel posts, callbacks... are not conversations here
# python-telegram-bot and httpx log request URLs, which contain the token (/bot<TOKEN>/method).
_TOKEN_LOGGERS = ("httpx", "telegram", "telegram.Bot", "telegram.ext", "telegram.ext.ExtBot",
                  "telegram.ext.Application", "telegram.ext.Updater", "telegram.request.BaseRequest",
                  "telegram.request.HTTPXRequest")

ONLY_TEXT = ("Sorry, I can only read text messages. Please type your question and I'll do my best "
             "to help.")
FAILED = "Sorry, something went wrong on our side. Please try again in a moment."
# New messages in private chats only: an edit is not a new question, and in a group the
# "customer" of a conversation would be everyone in it.
_INCOMING: BaseFilter = filters.UpdateType.MESSAGE & filters.ChatType.PRIVATE
_QUESTION: BaseFilter = _INCOMING & filters.TEXT & ~filters.COMMAND  # what _on_text gets: stored before the ack
STORE_RETRY_MAX_S = 30.0  # polling: how long the wait between tries to store an update grows to


class TelegramConfig(BaseModel):
    """``channels.telegram`` in bot.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["webhook", "polling"] = "webhook"
    token_env: str = Field("TELEGRAM_BOT_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="environment variable holding the bot token")
    secret_env: str = Field("TELEGRAM_WEBHOOK_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="environment variable holding the webhook secret (webhook mode)")
    base_url: str = Field(TELEGRAM_BASE_URL, pattern=r"^https?://\S+$",
                          description="Bot API URL; the token is appended (or fills a {token} placeholder)")
    webhook_path: str = Field("/channels/telegram/webhook", pattern=r"^/[A-Za-z0-9_./-]*$")
    max_message_chars: int = Field(MessageLimit.MAX_TEXT_LENGTH, ge=64, le=MessageLimit.MAX_TEXT_LENGTH)
    send_retries: int = Field(3, ge=0, le=10)
    retry_backoff: float = Field(1.0, ge=0, le=60, description="seconds before the first retry after a 5xx")
    max_retry_after: float = Field(30.0, ge=0, le=3600, description="cap on a 429's retry_after wait, seconds")
    poll_timeout: int = Field(10, ge=0, le=50, description="polling mode: long-poll seconds per getUpdates")


class TelegramChannelError(BotkitError):
    """The Telegram channel failed: Telegram unreachable at start-up, or a message undeliverable.

    ::

        BotkitError
        └── TelegramChannelError        start-up failed (a rejected token is a ConfigError instead)
            └── TelegramDeliveryError   a message was refused, or kept failing after the retries
    """


class MalformedUpdate(TelegramChannelError):
    """An update no handler can read (a null or non-numeric chat, ...): refused (400), not retried."""


class TelegramDeliveryError(TelegramChannelError):
    """A message could not be delivered to a Telegram chat (after the configured retries).
    ``permanent``: Telegram refused it for good (the user blocked the bot, the chat is gone),
    so trying again at the next start cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


# -- text -------------------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    # Telegram measures text in UTF-16 code units (an emoji outside the BMP counts twice);
    # measuring this way is never longer than Telegram's count, whichever it applies.
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """The length of the longest prefix of ``text`` within ``limit`` UTF-16 code units."""
    if _utf16_len(text) <= limit:
        return len(text)
    units = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return i
    return len(text)


def split_text(text: str, limit: int = MessageLimit.MAX_TEXT_LENGTH) -> list[str]:
    """Split ``text`` into messages of at most ``limit`` characters, at the last paragraph
    break, else line break, else space that fits; a single longer word is cut.

    Text is sent as plain text (no ``parse_mode``): knowledge-base articles and agents write
    ``*``, ``_``, ``.``, ``(`` freely, and one unescaped MarkdownV2 character makes Telegram
    refuse the whole message, which a customer then never sees. Plain text also keeps the
    split simple: no escape sequence or entity can be cut in two.
    """
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        cut = _prefix_within(rest, limit)
        if cut == len(rest):
            chunks.append(rest)
            break
        window = rest[:cut + 1]  # a separator right at the limit still counts
        at = -1
        # a paragraph break early in the window would leave a tiny message: only take it from halfway
        for sep, earliest in (("\n\n", cut // 2), ("\n", cut // 2), (" ", 1)):
            found = window.rfind(sep)
            if found >= earliest:
                at = found
                break
        if at <= 0:
            for i in range(cut, 0, -1):  # any whitespace at all (tabs, no-break spaces...)
                if rest[i].isspace():
                    at = i
                    break
        if at <= 0:
            at = cut  # one word longer than a message
        chunk = rest[:at].rstrip()
        if chunk:
            chunks.append(chunk)
        rest = rest[at:].lstrip()
    return chunks


def _polite_rejection(exc: MessageRejected) -> str:
    # The engine's reasons name bot.yaml keys for operators; the customer gets the plain reason.
    reason = re.sub(r"\s*\([^()]*bot\.yaml[^()]*\)", "", str(exc)).strip()
    return f"Sorry, I couldn't take that message: {reason}."


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int form becomes a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: Any = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class _RedactToken(logging.Filter):
    """Replaces the bot token in log records of python-telegram-bot and httpx."""

    def __init__(self, token: str):
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg, record.args = message.replace(self._token, "<token>"), ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            if self._token in text:
                record.exc_text = text.replace(self._token, "<token>")
        return True


# -- dispatch ---------------------------------------------------------------------------------


class _PerChatOrder(BaseUpdateProcessor):
    """The dispatcher: one chat's updates one after another, different chats concurrently.

    ``concurrent_updates(True)`` alone lets two messages of one chat race, and their replies
    can arrive swapped (a 429 retry on the first, say). Here each update takes a ticket in
    its chat's queue before its first ``await``; python-telegram-bot starts the processing
    tasks in ``update_queue`` order, so tickets follow arrival order, and an update waits
    only for the earlier updates of its own chat (reply delivery included).
    """

    def __init__(self, max_concurrent_updates: int = 512):
        super().__init__(max_concurrent_updates)
        self._tails: dict[int, asyncio.Future[None]] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        if chat is None:
            await coroutine
            return
        previous = self._tails.get(chat.id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat.id] = mine
        try:
            if previous is not None:
                try:
                    await asyncio.wait({previous})  # not `await previous`: cancelling us must not cancel it
                except BaseException:
                    if isinstance(coroutine, Coroutine):
                        coroutine.close()  # never started; closing it avoids "never awaited" warnings
                    raise
            await coroutine
        finally:
            mine.set_result(None)
            if self._tails.get(chat.id) is mine:
                del self._tails[chat.id]

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""


class _StoringQueue(asyncio.Queue[object]):  # PTB's update queue carries any object
    """The Application's update queue: ``put`` stores a question in the inbox first.

    ``retry``: keep trying while the store fails (polling: the updater must not confirm the
    offset, and an exception would end its loop); otherwise the error is raised (webhook: 503).
    """

    def __init__(self, store: Any, retry: bool):
        super().__init__()
        self._store = store
        self._retry = retry

    async def put(self, item: Any) -> None:
        wait = 1.0
        while True:
            try:
                await self._store(item)
                break
            except MalformedUpdate as exc:  # no store can take it: retrying would stall every later update
                if not self._retry:
                    raise
                log.warning("telegram: dropped update %s: %s", getattr(item, "update_id", "?"), exc)
                return
            except Exception:  # noqa: BLE001 - never confirm what is not stored
                if not self._retry:
                    raise
                log.exception("telegram: could not store an update; retrying in %.0fs (its offset stays "
                              "unconfirmed meanwhile)", wait)
                await asyncio.sleep(wait)
                wait = min(STORE_RETRY_MAX_S, wait * 2)
        await super().put(item)


# -- the connector ----------------------------------------------------------------------------


class TelegramConnector:
    """Connects a Telegram bot to the engine; see the module docstring."""

    def __init__(self, ctx: ConnectorContext, config: TelegramConfig):
        self.name = ctx.name
        self.config = config
        self._ctx = ctx
        self._engine = ctx.engine
        self._application: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._secret = b""
        self._redactor: _RedactToken | None = None
        self._accepting = False
        self._claimed: set[tuple[str, str]] = set()  # (conversation, message id) being answered and sent
        self._recovery: asyncio.Task[None] | None = None
        if config.mode == "webhook":
            # Routes must exist before the server starts (aiohttp freezes the router); the
            # handler answers 503 until start() has built the Application.
            ctx.app.router.add_post(config.webhook_path, self._webhook)

    def __repr__(self) -> str:
        # never the Application or Bot: their reprs include the token
        return f"TelegramConnector(name={self.name!r}, mode={self.config.mode!r}, running={self._accepting})"

    @property
    def application(self) -> Application[Any, Any, Any, Any, Any, Any]:
        """The python-telegram-bot ``Application`` (only while started): add handlers of your own
        here, or ``await connector.application.update_queue.join()`` to wait for queued updates."""
        if self._application is None:
            raise BotkitError(f"channel {self.name}: the Telegram connector is not started")
        return self._application

    @property
    def bot(self) -> Bot:
        """The python-telegram-bot ``Bot`` (only while started)."""
        return self.application.bot

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Read the secrets, build the Application, check the token (getMe), register the
        webhook or start polling."""
        cfg = self.config
        token = os.environ.get(cfg.token_env, "").strip()
        if not token:
            raise ConfigError(f"channels.{self.name}: the bot token is missing; set the environment variable "
                              f"{cfg.token_env} (channels.{self.name}.token_env names it)")
        if cfg.mode == "webhook":
            secret = os.environ.get(cfg.secret_env, "").strip()
            if not _SECRET_OK.match(secret):
                raise ConfigError(f"channels.{self.name}: webhook mode needs a secret in the environment variable "
                                  f"{cfg.secret_env}: 1 to 256 characters of A-Z, a-z, 0-9, _ and - "
                                  f"({'it is not set' if not secret else 'it has other characters or is too long'})")
            self._secret = secret.encode()

        self._redactor = _RedactToken(token)
        for name in _TOKEN_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        try:
            self._application = await self._start_application(token)
        except BaseException:
            self._remove_redactor()
            raise
        self._accepting = True
        self._recovery = asyncio.create_task(self._recover())
        log.info("channel %s: Telegram bot @%s started (%s mode)", self.name, self._application.bot.username,
                 cfg.mode)

    async def _start_application(self, token: str) -> Application[Any, Any, Any, Any, Any, Any]:
        cfg = self.config
        builder = (ApplicationBuilder().token(token).base_url(cfg.base_url).base_file_url(_file_url(cfg.base_url))
                   .concurrent_updates(_PerChatOrder()).job_queue(None)
                   .update_queue(_StoringQueue(self._store_update, retry=cfg.mode == "polling")))
        if cfg.mode == "webhook":
            builder = builder.updater(None)  # updates come through our own aiohttp route
        application = builder.build()
        self._install_handlers(application)
        try:
            await application.initialize()  # getMe: a wrong token fails here, not on a customer
            if cfg.mode == "polling":
                assert application.updater is not None
                # get_updates adds the long-poll time to its read timeout itself
                await application.updater.start_polling(timeout=timedelta(seconds=cfg.poll_timeout),
                                                        allowed_updates=_ALLOWED_UPDATES, drop_pending_updates=False)
            await application.start()
            if cfg.mode == "webhook":
                await self._register_webhook(application.bot)
        except InvalidToken:
            await self._shutdown(application)
            # `from None`: python-telegram-bot's message for this error quotes the token
            raise ConfigError(f"channels.{self.name}: Telegram rejected the bot token in {cfg.token_env}; "
                              "check it with @BotFather") from None
        except TelegramError as exc:
            await self._shutdown(application)
            raise TelegramChannelError(f"channel {self.name}: could not start the Telegram bot: {exc}") from exc
        except BaseException:
            await self._shutdown(application)
            raise
        return application

    async def _register_webhook(self, bot: Bot) -> None:
        public_url = self._ctx.public_url
        if not public_url:
            log.warning("channel %s: server.public_url is not set, so no webhook is registered with Telegram; "
                        "updates arrive only if the webhook to %s was set elsewhere", self.name,
                        self.config.webhook_path)
            return
        url = public_url.rstrip("/") + self.config.webhook_path
        await bot.set_webhook(url=url, secret_token=self._secret.decode(), allowed_updates=_ALLOWED_UPDATES)
        log.info("channel %s: webhook registered at %s", self.name, url)

    async def stop(self) -> None:
        """Stop taking updates; let the queued and in-flight ones finish (replies included).

        The webhook stays registered with Telegram: while the server is down Telegram queues
        updates and redelivers them, which is what a restart or a rolling deploy needs.
        """
        self._accepting = False
        if self._recovery is not None and not self._recovery.done():
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):  # what is left: next start
                await asyncio.wait_for(self._recovery, self._ctx.project.config.server.shutdown_timeout_s)
        self._recovery = None
        application, self._application = self._application, None
        if application is not None:
            await self._shutdown(application)
        self._remove_redactor()

    def _remove_redactor(self) -> None:
        if self._redactor is not None:
            for name in _TOKEN_LOGGERS:
                logging.getLogger(name).removeFilter(self._redactor)
            self._redactor = None

    async def _shutdown(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        try:
            if application.updater is not None and application.updater.running:
                await application.updater.stop()  # cancels the in-flight long poll, confirms the offset
            if application.running:
                await application.stop()  # waits for update_queue to drain and handlers to finish
        finally:
            await application.shutdown()

    # -- inbound --------------------------------------------------------------------------------
    async def _webhook(self, request: web.Request) -> web.Response:
        """``POST webhook_path``: Telegram's delivery of one update."""
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not self._secret or not hmac.compare_digest(given, self._secret):
            log.warning("channel %s: refused a webhook call with a %s secret token from %s", self.name,
                        "wrong" if given else "missing", request.remote)
            return web.Response(status=403, text="forbidden")
        application = self._application
        if application is None or not self._accepting:
            return web.Response(status=503, text="not started")  # Telegram redelivers later
        try:
            data = json.loads(await request.read())
        except ValueError:  # includes undecodable bytes
            return web.Response(status=400, text="body is not JSON")
        except RecursionError:  # '[[[[...' nested deeper than the parser's stack
            return web.Response(status=400, text="body is not a Telegram update (JSON nested too deeply)")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return web.Response(status=400, text="body is not a Telegram update")
        try:
            update = Update.de_json(data, application.bot)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError, OverflowError, OSError):
            # OverflowError / OSError: a date past what datetime (or the platform's time_t) holds
            return web.Response(status=400, text="body is not a Telegram update")
        # Answer once stored (put stores a question in the inbox): the reply is sent by the
        # Application's own task, so a slow answer (or a send that is retrying) never makes
        # Telegram time out and redeliver.
        try:
            await application.update_queue.put(update)
        except MalformedUpdate as exc:
            return web.Response(status=400, text=f"body is not a Telegram update: {exc}")
        except Exception:  # noqa: BLE001 - not stored: Telegram must redeliver it
            log.exception("channel %s: could not store update %s", self.name, update.update_id)
            return web.Response(status=503, text="could not store the update; retry")
        return web.Response(status=200)

    def _install_handlers(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        incoming = _INCOMING
        application.add_handler(CommandHandler("start", self._on_start, filters=incoming))
        application.add_handler(CommandHandler("help", self._on_help, filters=incoming))
        application.add_handler(MessageHandler(incoming & filters.COMMAND, self._on_help))
        application.add_handler(MessageHandler(incoming & filters.TEXT, self._on_text))
        application.add_handler(MessageHandler(incoming & filters.ATTACHMENT, self._on_other))
        application.add_error_handler(self._on_error)

    def _help_text(self) -> str:
        return ("Ask me a question in your own words, for example about an order, delivery or returns, "
                "and I'll answer from our help centre. If you'd rather talk to a person, just say so. "
                "I can read text messages only.")

    async def _on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        hello = f"Hello {user.first_name}!" if user and user.first_name else "Hello!"
        text = f"{hello} I'm the virtual assistant of {self._engine.bot_name}.\n\n{self._help_text()}"
        chat = self._chat(update)
        await self._deliver(chat, text, self._conversation_id(chat))

    async def _on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = self._chat(update)
        await self._deliver(chat, self._help_text(), self._conversation_id(chat))

    async def _on_other(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = self._chat(update)
        await self._deliver(chat, ONLY_TEXT, self._conversation_id(chat))

    def _incoming(self, update: Update) -> tuple[IncomingMessage, str]:
        """The customer message of a text update, and its inbox id (Telegram's message_id)."""
        chat = self._chat(update)
        message, user = update.effective_message, update.effective_user
        attributes: dict[str, object] = {}
        if user is not None and user.language_code:
            attributes["language"] = user.language_code
        if user is not None:  # who is writing, for the agent console's customer panel
            name = " ".join(p for p in (user.first_name, user.last_name) if p)
            if name:
                attributes["customer_name"] = name
            if user.username:
                attributes["telegram_username"] = user.username
        text = (message.text or "") if message else ""  # only text updates come here
        incoming = IncomingMessage(conversation_id=self._conversation_id(chat), text=text,
                                   channel=self.name, customer_id=str(user.id if user else chat),
                                   attributes=attributes)
        return incoming, str(message.message_id if message else update.update_id)

    async def _store_update(self, update: object) -> None:
        """Store a question in the inbox (the update queue calls this before queueing it).

        Raises:
            MalformedUpdate: no handler could read it (checked here, before it reaches the per-chat
                ordering, which keys on the chat id).
        """
        if not isinstance(update, Update):
            return
        chat = update.effective_chat
        if chat is not None and (not isinstance(chat.id, int) or isinstance(chat.id, bool)):
            raise MalformedUpdate(f"its chat id is {type(chat.id).__name__}, not a number")
        message = update.message or update.edited_message
        if message is not None and chat is None:
            raise MalformedUpdate("its message has no chat")
        try:
            if not _QUESTION.check_update(update):
                return
        except (AttributeError, TypeError, ValueError) as exc:
            raise MalformedUpdate(f"its message cannot be read ({type(exc).__name__}: {exc})") from exc
        incoming, message_id = self._incoming(update)
        try:
            await self._engine.accept(incoming, message_id, {"update_id": update.update_id})
        except MessageRejected:
            pass  # never answerable: the handler sends the polite reason

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = self._chat(update)
        incoming, message_id = self._incoming(update)
        conversation_id = incoming.conversation_id
        try:
            item = await self._engine.accept(incoming, message_id, {"update_id": update.update_id})
            if item.state in ("delivered", "undeliverable"):  # a redelivered update: answered and sent before
                return
            # This chat's accepted messages up to this one (a crash may have left earlier ones unsent)
            # are answered and sent in the order they were accepted, under the conversation's lock
            # throughout: another worker given the same update, or the chat's next one, waits and then
            # finds it sent (several workers: the lock is Redis's, the inbox is shared).
            await self._engine.answer_pending(conversation_id, self._deliver_recovered, undelivered=True)
        except MessageRejected as exc:
            await self._deliver(chat, _polite_rejection(exc), conversation_id)
        except Exception:  # noqa: BLE001 - the customer still gets an answer; the error is logged with the id
            log.exception("channel %s: engine failed on a message of conversation %s", self.name, conversation_id)
            await self._deliver(chat, FAILED, conversation_id)

    async def _send_reply(self, chat: int, item: InboxItem, reply: Reply) -> None:
        """Send an answer and record that it was delivered (a silent bot has nothing to send)."""
        if reply.action != "handoff" and reply.text:  # handoff: a human has the conversation, the bot is silent
            try:
                await self._deliver(chat, as_text(OutgoingMessage(item.conversation_id, reply.text,
                                                                  sources=reply.sources)), item.conversation_id)
            except TelegramDeliveryError as exc:
                if exc.permanent:  # not retried at every start: the answer stays in the conversation's history
                    await self._engine.mark_delivered(item, undeliverable=True)
                raise
        await self._engine.mark_delivered(item)

    async def _recover(self) -> None:
        """Answer and send what was stored but not answered, or answered but not sent (a crash)."""
        try:
            pending = await self._engine.pending(self.name, undelivered=True)
            conversations = list(dict.fromkeys(item.conversation_id for item in pending))
            if conversations:
                log.info("channel %s: answering %d messages accepted before the restart", self.name, len(pending))
            for conversation_id in conversations:
                await self._engine.answer_pending(conversation_id, self._deliver_recovered, undelivered=True)
        except Exception:  # noqa: BLE001 - still stored: the next start tries again
            log.exception("channel %s: answering the messages accepted before the restart failed", self.name)

    async def _deliver_recovered(self, item: InboxItem, reply: Reply) -> None:
        key = (item.conversation_id, item.message_id)
        if key in self._claimed:  # being sent already (the lock is held while sending: a safeguard)
            return
        self._claimed.add(key)
        try:
            current = await self._engine.store.inbox_item(*key)
            if current is None or current.state in ("delivered", "undeliverable"):
                return
            await self._send_reply(self._chat_of(item.conversation_id), current, reply)
        except TelegramChannelError as exc:  # only a delivery error says whether it is for good
            permanent = isinstance(exc, TelegramDeliveryError) and exc.permanent
            log.error("channel %s: %s%s", self.name, exc,
                      "" if permanent else " (it is tried again at the next start)")
        finally:
            self._claimed.discard(key)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat if isinstance(update, Update) else None
        conversation = self._conversation_id(chat.id) if chat else "-"
        update_id = update.update_id if isinstance(update, Update) else "-"
        log.error("channel %s: update %s of conversation %s failed: %s", self.name, update_id, conversation,
                  context.error, exc_info=context.error)

    # -- outbound -------------------------------------------------------------------------------
    async def send(self, conversation: Conversation, message: OutgoingMessage) -> None:
        """Deliver an agent's message, a system event or a bot message outside a reply.

        Raises:
            TelegramDeliveryError: Telegram refused it, or kept failing after the retries.
        """
        if message.event == "queue":
            return  # a chat has no status line to update: one message per queue move would flood it
        chat = self._chat_of(conversation.id)
        text = as_text(message)
        if message.kind == "agent":
            text = f"{message.author or 'Support'} (support): {text}"
        await self._deliver(chat, text, conversation.id)

    async def _deliver(self, chat_id: int, text: str, conversation_id: str) -> None:
        for chunk in split_text(text, self.config.max_message_chars):
            await self._send_chunk(chat_id, chunk, conversation_id)

    async def _send_chunk(self, chat_id: int, text: str, conversation_id: str) -> None:
        """One sendMessage, retried on 429 (after ``retry_after``) and 5xx/network errors (backoff)."""
        bot = self.bot
        retries = self.config.send_retries
        attempt = 0
        while True:
            try:
                # no parse_mode: plain text arrives exactly as written (see split_text)
                await bot.send_message(chat_id=chat_id, text=text)
                return
            except RetryAfter as exc:
                error: TelegramError = exc
                wait = min(_retry_after_seconds(exc), self.config.max_retry_after)
            except BadRequest as exc:  # (a NetworkError subclass) the request itself is wrong: retrying won't help
                raise TelegramDeliveryError(f"channel {self.name}: Telegram refused a message to conversation "
                                            f"{conversation_id}: {exc}", permanent=True) from exc
            except NetworkError as exc:  # 5xx, timeouts, connection errors
                # A timeout may hide a message that did arrive; a duplicate beats a lost reply.
                error = exc
                wait = self.config.retry_backoff * 2 ** attempt
            except TelegramError as exc:  # 403 blocked by the user, 401 token revoked, ...
                # Blocked by the user is for good; a revoked token is the bot's, not this message's.
                raise TelegramDeliveryError(f"channel {self.name}: Telegram refused a message to conversation "
                                            f"{conversation_id}: {exc}", permanent=isinstance(exc, Forbidden)) from exc
            attempt += 1
            if attempt > retries:
                raise TelegramDeliveryError(f"channel {self.name}: could not deliver a message to conversation "
                                            f"{conversation_id} after {attempt} attempts: {error}") from error
            log.warning("channel %s: sending to conversation %s failed (%s); retry %d of %d in %.1fs", self.name,
                        conversation_id, type(error).__name__, attempt, retries, wait)
            await asyncio.sleep(wait)

    # -- ids ------------------------------------------------------------------------------------
    @staticmethod
    def _chat(update: Update) -> int:
        chat = update.effective_chat
        if chat is None:  # the handlers' filters only let messages with a chat through
            raise BotkitError("update without a chat")
        return chat.id

    def _conversation_id(self, chat_id: int) -> str:
        return f"{self.name}:{chat_id}"

    def _chat_of(self, conversation_id: str) -> int:
        prefix, _, chat = conversation_id.partition(":")
        try:
            if prefix != self.name:
                raise ValueError
            return int(chat)
        except ValueError:
            raise BotkitError(f"channel {self.name}: {conversation_id!r} is not a Telegram conversation id "
                              f"({self.name}:<chat id>)") from None


def _file_url(base_url: str) -> str:
    """The file URL beside a Bot API URL (``.../bot`` → ``.../file/bot``), for local API servers."""
    if base_url.endswith("/bot"):
        return base_url[: -len("/bot")] + "/file/bot"
    return TELEGRAM_BASE_URL.replace("/bot", "/file/bot")


def create(ctx: ConnectorContext) -> TelegramConnector:
    """The ``telegram`` connector for a ``channels.telegram`` section (validated here)."""
    config: TelegramConfig = validate_section(ctx.name, TelegramConfig, ctx.config)
    return TelegramConnector(ctx, config)


__all__ = ["TelegramChannelError", "TelegramConfig", "TelegramConnector", "TelegramDeliveryError", "create",
           "split_text"]
