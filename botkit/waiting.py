"""The customer's place in the hand-off queue and an honest expected wait.

The wait is estimated from recent pick-ups: the median time between a hand-off and an agent
taking it, over the last :data:`SAMPLES` pick-ups of the past :data:`RECENT` (so a quiet week
long ago does not speak for today). Fewer than :data:`MIN_SAMPLES` of them: the estimate is
``None`` and the customer is told it is not known, never a made-up figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from botkit.store import ConversationStore
from botkit.types import Handoff

SAMPLES = 20
MIN_SAMPLES = 3
RECENT = timedelta(days=7)


@dataclass(frozen=True)
class QueuePlace:
    handoff: Handoff
    position: int  # 1 = next to be picked up
    expected_wait_s: float | None  # None: not enough recent pick-ups to say

    @property
    def text(self) -> str:
        return queue_text(self.position, self.expected_wait_s)

    def data(self, initial: bool) -> dict[str, object]:
        """The ``OutgoingMessage.data`` of a ``queue`` notice (``initial``: the first since the hand-off)."""
        return {"position": self.position, "expected_wait_s": self.expected_wait_s, "initial": initial}


async def place_of(store: ConversationStore, conversation_id: str, now: datetime) -> QueuePlace | None:
    """The conversation's place in the queue, or None when it is not waiting."""
    waiting = await store.handoffs("waiting")
    if not any(h.conversation_id == conversation_id for h in waiting):
        return None
    return next(p for p in places(waiting, await store.recent_pickups(SAMPLES), now)
                if p.handoff.conversation_id == conversation_id)


def expected_wait(pickups: Sequence[Handoff], now: datetime) -> float | None:
    """The median wait (seconds) of the recent pick-ups, or None when there are too few."""
    waits = [(h.assigned_at - h.created_at).total_seconds() for h in pickups
             if h.assigned_at is not None and now - h.assigned_at <= RECENT]
    waits = [w for w in waits if w >= 0]
    return statistics.median(waits) if len(waits) >= MIN_SAMPLES else None


def places(waiting: Sequence[Handoff], pickups: Sequence[Handoff], now: datetime) -> list[QueuePlace]:
    """Every waiting hand-off (oldest first) with its position and the expected wait."""
    wait = expected_wait(pickups, now)
    ordered = sorted(waiting, key=lambda h: (h.created_at, h.id))
    return [QueuePlace(h, i, wait) for i, h in enumerate(ordered, 1)]


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return "about 1 minute" if minutes == 1 else f"about {minutes} minutes"


def queue_text(position: int, expected_wait_s: float | None) -> str:
    place = "You're next in line for an agent." if position == 1 else f"You're number {position} in the queue."
    if expected_wait_s is None:
        return f"{place} We can't estimate the wait yet."
    return f"{place} Recently, customers waited {_minutes(expected_wait_s)} for an agent."


__all__ = ["MIN_SAMPLES", "QueuePlace", "RECENT", "SAMPLES", "expected_wait", "place_of", "places", "queue_text"]
