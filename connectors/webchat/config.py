"""``channels.webchat`` in bot.yaml, validated by :func:`connectors.base.validate_section`.

All keys are optional::

    channels:
      webchat:
        title: Help                       # the chat panel's heading (default: the bot's name)
        greeting: "Hi! How can I help?"   # shown when a conversation is empty (never stored)
        allowed_origins: []               # pages that may open the chat socket; [] = same origin only,
                                          # ["*"] = any site, or e.g. ["https://shop.example.com"]
        max_message_chars: 2000           # longer customer messages are refused (too_long)
        rate_limit_per_session: {messages: 10, seconds: 10}   # token bucket per session (all its tabs)
        rate_limit_per_ip: {messages: 60, seconds: 60}        # token bucket per client address
        max_connections_per_ip: 20        # open chat sockets per client address
        source_url_template: null         # e.g. "https://help.example.com/articles/{id}"; null: sources link to
                                          # the bot's own page of the entry, /help/articles/{id}
        session_days: 30                  # a session unused this long starts a new conversation
        prechat: false                    # ask the customer's name and e-mail before the chat (skippable)
"""

from __future__ import annotations

import string

from pydantic import Field, field_validator

from botkit.net import normalise_origin
from botkit.schema import StrictModel


class RateLimit(StrictModel):
    """A token bucket: ``messages`` at once, refilled evenly over ``seconds``."""

    messages: int = Field(ge=1, le=1_000_000)
    seconds: float = Field(gt=0, le=86_400)

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


class WebChatConfig(StrictModel):
    """``channels.webchat`` in bot.yaml."""

    title: str | None = Field(None, min_length=1, max_length=100,
                              description="the chat panel's heading (default: the bot's name)")
    greeting: str = Field("Hi! I'm the virtual assistant. Ask me a question, or ask for a person at any time.",
                          max_length=1000, description="shown at the top of an empty conversation; never stored")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose pages may open the chat socket; "
                    "empty = same origin only; '*' = any")
    max_message_chars: int = Field(2000, ge=1, le=100_000)
    rate_limit_per_session: RateLimit = RateLimit(messages=10, seconds=10)
    rate_limit_per_ip: RateLimit = RateLimit(messages=60, seconds=60)
    max_connections_per_ip: int = Field(20, ge=1, le=1_000_000)
    source_url_template: str | None = Field(
        None, description="link for a source, e.g. https://help.example.com/articles/{id}; null = the bot's own "
        "page of the entry, /help/articles/{id}")
    session_days: int = Field(30, ge=1, le=3650, description="an unused session expires after this many days")
    prechat: bool = Field(False, description="ask the customer's name and e-mail (both optional, skippable) before "
                          "the chat; the agent console shows what they gave")

    @field_validator("allowed_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        out = []
        for item in value:
            if item.strip() == "*":
                out.append("*")
                continue
            origin = normalise_origin(item)
            if origin is None:
                raise ValueError(f"{item!r} is not an origin: write scheme://host[:port] "
                                 "(e.g. 'https://shop.example.com', no path) or '*' for any site")
            out.append(origin)
        return out

    @field_validator("source_url_template")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.lower().startswith(("http://", "https://")) or _placeholders(value) != ["id"]:
            raise ValueError(f"{value!r}: give an http(s) URL with exactly one {{id}} placeholder, "
                             "e.g. 'https://help.example.com/articles/{id}'")
        return value


def _placeholders(template: str) -> list[str] | None:
    """The ``{field}`` names of a format string; None when it does not parse."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:
        return None
