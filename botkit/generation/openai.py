"""A chat-completions client for OpenAI-compatible servers (vLLM, TGI, llama.cpp, Ollama).

Streams ``POST {base_url}/chat/completions`` with ``stream: true`` and parses the Server-Sent
Events (``data: {...}`` lines, ended by ``data: [DONE]``), yielding ``choices[0].delta.content``.

Retries: connection failures, 429 and 5xx are retried with exponential backoff, but only
before the first token has been yielded; after that a retry would send the customer the start
of the reply twice, so a failure mid-stream is a :class:`GenerationError`. A 4xx other than
429, a malformed chunk and exhausted retries are errors too, with the status and a short
excerpt of the body. Timeouts apply per attempt: ``connect_timeout_s`` to open the socket,
``timeout_s`` for the whole request including the streamed body; a request that runs past
``timeout_s`` is not retried (the time is spent).

Redirects are not followed: the prompt (and the API key) would go wherever the ``Location``
points; a 3xx is an error that names the address to configure instead. The reply is bounded:
a stream longer than ``max_tokens`` allows (``MAX_CHARS_PER_TOKEN`` characters per token, or
twice as many events as tokens) is cut off and is a :class:`GenerationError`, as is a line or a
header the HTTP parser refuses (e.g. one ``data:`` line over 512 KiB), so the responder falls
back instead of forwarding an endless reply.

The API key is read from the environment variable named by ``api_key_env`` at start() and sent
as a Bearer header. It is never logged and never part of ``repr``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # aiohttp loads at start(), so importing botkit's core never pulls in a web client
    import aiohttp

from botkit.config import OpenAIConfig
from botkit.errors import GenerationError
from botkit.generation.prompt import ChatMessage

log = logging.getLogger(__name__)

EXCERPT_CHARS = 200
MAX_CHARS_PER_TOKEN = 16  # a token is ~4 characters of English: a reply past 16 per token is not honouring max_tokens
EXTRA_EVENTS = 32  # role, finish and usage chunks on top of one event per token


class _Retry(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


class OpenAICompatible:
    """Generator that talks to an OpenAI-compatible chat-completions endpoint.

    Args:
        config: the ``dialogue.openai`` section.
        backoff_s: first retry delay; doubles per attempt up to ``max_backoff_s``.
        max_backoff_s: upper bound of one delay, also for a server's ``Retry-After``.
    """

    def __init__(self, config: OpenAIConfig, *, backoff_s: float = 0.5, max_backoff_s: float = 8.0):
        self.config = config
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.name = f"openai:{config.model}"
        self._session: aiohttp.ClientSession | None = None
        self._api_key: str | None = None

    def __repr__(self) -> str:  # the key stays out on purpose
        return (f"OpenAICompatible(base_url={self.config.base_url!r}, model={self.config.model!r}, "
                f"api_key_env={self.config.api_key_env!r})")

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    async def start(self) -> None:
        """Read the API key and open the HTTP session (no request is made yet).

        Raises:
            GenerationError: ``api_key_env`` names a variable that is unset or empty.
        """
        if self._session is not None:
            return
        env = self.config.api_key_env
        if env:
            key = os.environ.get(env, "").strip()
            if not key:
                raise GenerationError(f"dialogue.openai.api_key_env: the environment variable {env} is not set "
                                      "or empty; export it with the server's API key, or remove the key")
            self._api_key = key
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(max(hint, 0.0), self.max_backoff_s)
        return min(self.backoff_s * (2**attempt), self.max_backoff_s)

    async def stream(self, messages: list[ChatMessage]) -> AsyncGenerator[str, None]:
        """Yield the server's reply as text deltas.

        Raises:
            GenerationError: not started; 4xx; malformed chunk; timeout; failure after the first
                token; retries exhausted. The message names the URL and status, never the key.
        """
        import aiohttp
        from aiohttp.http_exceptions import HttpProcessingError

        session = self._session
        if session is None:
            raise GenerationError(f"{self.name}: start() was not called (or close() was)", code="not_started")
        body = {
            "model": self.config.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = self.config.retries + 1
        last = ""
        for attempt in range(attempts):
            yielded = False
            delay = 0.0
            try:
                async with session.post(self.url, json=body, headers=headers, allow_redirects=False) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        text = _excerpt(await self._read_some(resp))
                        retry_after = resp.headers.get("Retry-After", "")
                        hint = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
                        raise _Retry(f"HTTP {resp.status}: {text}", hint)
                    if 300 <= resp.status < 400:
                        raise GenerationError(
                            f"{self.url} answered HTTP {resp.status}, a redirect to "
                            f"{resp.headers.get('Location', '(no Location)')!r}; not followed (the prompt and the API "
                            "key would go there): set dialogue.openai.base_url to the address that serves the API")
                    if resp.status >= 400 or resp.status < 200:
                        text = _excerpt(await self._read_some(resp))
                        raise GenerationError(f"{self.url} answered HTTP {resp.status} (not retried): {text}")
                    async for delta in self._deltas(resp):
                        yielded = True
                        yield delta
                    return
            except _Retry as retry:
                last = retry.reason
                delay = self._delay(attempt, retry.delay)
            except aiohttp.ConnectionTimeoutError as exc:  # the socket did not open: worth a retry
                if yielded:
                    raise GenerationError(f"{self.url}: connection lost mid-reply ({exc})") from exc
                last = f"connect timeout after {self.config.connect_timeout_s}s"
                delay = self._delay(attempt, None)
            except HttpProcessingError as exc:  # a line or header the parser refuses: the server misbehaves
                raise GenerationError(f"{self.url}: the server sent a response that cannot be read "
                                      f"({type(exc).__name__}: {_excerpt(str(exc))}); not retried") from exc
            except TimeoutError as exc:  # the whole-request bound: the time is spent, no retry
                raise GenerationError(f"{self.url}: no complete reply within timeout_s={self.config.timeout_s}s "
                                      f"(dialogue.openai.timeout_s)", code="timeout") from exc
            except aiohttp.ClientError as exc:  # refused, reset, disconnected, truncated body
                if yielded:
                    raise GenerationError(f"{self.url}: connection lost after the reply had started ({exc}); "
                                          "not retried, it would repeat text") from exc
                last = f"{type(exc).__name__}: {exc}"
                delay = self._delay(attempt, None)
            if attempt + 1 < attempts:
                log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs", self.url, attempt + 1, attempts,
                            last.split(":")[0], delay)
                await asyncio.sleep(delay)
        raise GenerationError(f"{self.url}: giving up after {attempts} attempt{'s' if attempts > 1 else ''}; "
                              f"last: {last}")

    @staticmethod
    async def _read_some(resp: aiohttp.ClientResponse, limit: int = 4096) -> str:
        """At most ``limit`` bytes of an error body (a proxy's HTML page can be large)."""
        import aiohttp

        try:
            raw = await resp.content.read(limit)
        except (aiohttp.ClientError, TimeoutError):
            return ""
        return raw.decode("utf-8", errors="replace")

    @property
    def max_reply_chars(self) -> int:
        return self.config.max_tokens * MAX_CHARS_PER_TOKEN

    def _too_long(self, what: str) -> GenerationError:
        return GenerationError(f"{self.url}: the reply ran past {what} for max_tokens={self.config.max_tokens} "
                               "(dialogue.openai.max_tokens); cut off, the server does not honour max_tokens")

    async def _deltas(self, resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
        """Parse an SSE body (or a plain JSON body from a server that ignored stream=true), at
        most ``max_reply_chars`` of text in at most ``2 * max_tokens + EXTRA_EVENTS`` events."""
        if resp.content_type == "application/json":
            content = self._field(self._parse(await self._read_json_body(resp)), "message")
            if len(content) > self.max_reply_chars:
                raise self._too_long(f"{self.max_reply_chars} characters")
            if content:
                yield content
            return
        chars, events, max_events = 0, 0, 2 * self.config.max_tokens + EXTRA_EVENTS
        async for content in self._sse_contents(resp):
            events += 1
            if events > max_events:
                raise self._too_long(f"{max_events} events")
            if not content:
                continue
            chars += len(content)
            if chars > self.max_reply_chars:
                raise self._too_long(f"{self.max_reply_chars} characters")
            yield content

    async def _read_json_body(self, resp: aiohttp.ClientResponse) -> str:
        limit = self.max_reply_chars * 4 + 64 * 1024  # the text, JSON-escaped, and the envelope
        raw = bytearray()
        async for chunk in resp.content.iter_any():
            raw += chunk
            if len(raw) > limit:
                raise self._too_long(f"{limit} bytes of JSON")
        return raw.decode("utf-8", errors="replace")

    async def _sse_contents(self, resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
        """The ``delta.content`` of each SSE event ('' for events without text)."""
        data: list[str] = []
        async for raw_line in resp.content:
            line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
            if line:
                if line.startswith(":"):  # SSE comment / keep-alive
                    continue
                field, _, value = line.partition(":")
                if field == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
                continue
            if not data:
                continue
            event, data = "\n".join(data), []  # a blank line ends one event
            if event.strip() == "[DONE]":
                return
            yield self._field(self._parse(event), "delta")
        if data and "\n".join(data).strip() != "[DONE]":  # last event without its blank line
            yield self._field(self._parse("\n".join(data)), "delta")

    def _parse(self, event: str) -> Any:
        try:
            return json.loads(event)
        except json.JSONDecodeError as exc:
            raise GenerationError(f"{self.url}: malformed chunk ({exc.msg}): {_excerpt(event)!r}") from exc

    def _field(self, obj: Any, kind: str) -> str:
        """``choices[0].<kind>.content`` of a chunk; '' for chunks without text (role, usage)."""
        if not isinstance(obj, dict):
            raise GenerationError(f"{self.url}: malformed chunk (not an object): {_excerpt(json.dumps(obj))!r}")
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            raise GenerationError(f"{self.url}: the server reported an error mid-stream: {_excerpt(str(msg))}")
        choices = obj.get("choices")
        if choices is None or choices == []:
            return ""
        if not isinstance(choices, list) or not isinstance(choices[0], dict):
            raise GenerationError(f"{self.url}: malformed chunk (bad 'choices'): {_excerpt(json.dumps(obj))!r}")
        part = choices[0].get(kind) or {}
        content = part.get("content") if isinstance(part, dict) else None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise GenerationError(f"{self.url}: malformed chunk ('content' is not text): {_excerpt(json.dumps(obj))!r}")
        return content
