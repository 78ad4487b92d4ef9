"""``POST /api/cli/ask``: one customer turn for ``botkit ask``, answered by a running server.

The server's model is loaded already, so ``botkit ask`` beside a ``botkit serve`` of the same
project answers in milliseconds instead of loading the model again. Only a caller that can read
the project's state directory may use it: the bearer token is the one in ``serve.json`` (0600),
new at every start (:mod:`botkit.app.running`).
"""

from __future__ import annotations

import secrets

from aiohttp import web

from botkit.app.keys import ENGINE
from botkit.errors import MessageRejected
from botkit.types import IncomingMessage

CLI_ASK_PATH = "/api/cli/ask"
MAX_BODY = 256 * 1024


def mount_cli_api(app: web.Application, token: str) -> None:
    """Add ``POST /api/cli/ask`` to ``app``, accepting ``Authorization: Bearer <token>``."""

    async def ask(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), token.encode()):
            return web.json_response({"error": "this endpoint is for `botkit ask` on the same machine "
                                      "(the token in the state directory's serve.json)"}, status=401)
        if (request.content_length or 0) > MAX_BODY:
            return web.json_response({"error": "request too large"}, status=413)
        try:
            body = await request.json()
            text, conversation = body["text"], body["conversation"]
            customer = body.get("customer", "")
            if not all(isinstance(v, str) for v in (text, conversation, customer)) or not conversation:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'give JSON {"text": ..., "conversation": ..., "customer": ...}'},
                                     status=400)
        try:
            reply = await request.app[ENGINE].handle(IncomingMessage(conversation, text, channel="cli",
                                                                     customer_id=customer))
        except MessageRejected as exc:  # too long, empty: the CLI prints it as its error
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response(reply.to_json())

    app.router.add_post(CLI_ASK_PATH, ask)
