"""A responder that follows the model registry: a promoted (or rolled back) model version is
picked up by a running server at the next customer message, without a restart.

The check before each reply is one ``stat`` of the registry's pointer file. When it changed,
the new responder is started (models load) while the old one keeps serving, then swapped in;
if the new one fails to start, the old one keeps serving and the error is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from botkit.responders.base import Responder
from botkit.types import Candidate, ResponderRequest

log = logging.getLogger(__name__)


class ReloadingResponder:
    def __init__(self, build: Callable[[Any], Responder], watch: Callable[[], Any]):
        self._build = build  # version (or None) -> an unstarted responder serving it
        self._watch = watch
        self._version = watch()
        self._current: Responder = build(self._version)
        self._swap_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def version(self) -> Any:
        return self._version

    async def start(self) -> None:
        await self._current.start()

    async def close(self) -> None:
        await self._current.close()

    async def _maybe_reload(self) -> None:
        version = self._watch()
        if version == self._version:
            return
        async with self._swap_lock:
            if version == self._version:
                return
            candidate = self._build(version)
            try:
                await candidate.start()
            except Exception:  # noqa: BLE001 - a bad version must not take the bot down
                log.exception("could not start model version %s; still serving %s", version, self._version)
                self._version = version  # do not retry on every message; a new promotion retries
                return
            old, self._current, self._version = self._current, candidate, version
            log.info("now serving model version %s", getattr(version, "label", version))
            await old.close()

    async def respond(self, request: ResponderRequest) -> Candidate:
        await self._maybe_reload()
        return await self._current.respond(request)

    async def respond_stream(self, request: ResponderRequest) -> AsyncIterator[str | Candidate]:
        await self._maybe_reload()
        stream = getattr(self._current, "respond_stream", None)
        if stream is None:
            yield await self._current.respond(request)
            return
        async for item in stream(request):
            yield item
