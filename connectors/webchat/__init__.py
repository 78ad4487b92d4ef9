"""The web chat channel: a websocket protocol, an embeddable widget and a demo page.

Enable it in bot.yaml (it is on by default)::

    channels:
      webchat:
        title: Help
        allowed_origins: ["https://shop.example.com"]

and put one tag on any page of an allowed origin::

    <script src="https://bot.example.com/channels/webchat/widget.js" data-botkit-title="Help" defer></script>

The protocol is documented in docs/webchat-protocol.md; configuration keys in
:mod:`connectors.webchat.config`; the server side in :mod:`connectors.webchat.connector`.
"""

from __future__ import annotations

from botkit.channels import ConnectorContext, validate_section
from connectors.webchat.config import RateLimit, WebChatConfig
from connectors.webchat.connector import WebChatConnector


def create(ctx: ConnectorContext) -> WebChatConnector:
    """The ``webchat`` connector for ``channels.<ctx.name>`` (validated here: errors name the key)."""
    config = validate_section(ctx.name, WebChatConfig, ctx.config)
    return WebChatConnector(ctx, config)


__all__ = ["RateLimit", "WebChatConfig", "WebChatConnector", "create"]
