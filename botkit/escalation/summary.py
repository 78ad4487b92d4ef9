"""The short deterministic summary a human agent reads when a conversation is handed over."""

from __future__ import annotations

from botkit.escalation.phrases import _quote
from botkit.types import ConversationState


def summarize(state: ConversationState, max_chars: int = 400) -> str:
    """A short deterministic summary of the conversation for the agent who takes over.

    Says how many customer turns there were, the first question and the latest message
    (each truncated), whether the bot was unsure (ungrounded replies, the proposed one
    included) and the knowledge-base titles the bot cited, deduplicated in order of first
    citation. Never longer than ``max_chars`` (at least 40).
    """
    if max_chars < 40:
        raise ValueError(f"max_chars must be at least 40, got {max_chars!r}")
    customers = state.customer_turns
    count = max(state.customer_turn_count, 1)
    quote_len = max(24, max_chars // 4)
    first = state.first_customer_text or (customers[0].text if customers else state.message.text)
    latest = state.message.text
    parts = [f"{count} customer turn{'s' if count != 1 else ''}."]
    if count == 1 or _quote(first) == _quote(latest):
        parts.append(f'Asked: "{_quote(latest, quote_len)}".')
    else:
        parts.append(f'First: "{_quote(first, quote_len)}". Latest: "{_quote(latest, quote_len)}".')

    bot = state.bot_turns
    ungrounded = sum(1 for t in bot if t.meta.get("grounded") is False) + (0 if state.candidate.grounded else 1)
    if ungrounded:
        latest_note = ", the proposed one included" if not state.candidate.grounded else ""
        parts.append(f"Bot unsure: {ungrounded} of {len(bot) + 1} replies ungrounded{latest_note}.")
    else:
        parts.append("Bot unsure: no.")

    titles: list[str] = []
    seen: set[str] = set()
    for turn in bot:
        for source in turn.sources:
            key = source.id or source.title
            if key not in seen:
                seen.add(key)
                titles.append(_quote(source.title, 60))
    parts.append(f"Cited: {'; '.join(titles)}." if titles else "Cited: none.")
    return _quote(" ".join(parts), max_chars)
