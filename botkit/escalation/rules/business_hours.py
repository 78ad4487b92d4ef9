"""Rule ``business_hours``: the message arrives outside business hours."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from botkit.escalation.base import Rule, _escalation
from botkit.schema import StrictModel
from botkit.types import ConversationState, Escalation

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun",
}


def _parse_hhmm(value: str, allow_24: bool) -> int:
    """Minutes after midnight for "HH:MM"; ValueError naming the value otherwise."""
    m = re.fullmatch(r"(\d{2}):(\d{2})", value)
    if m and int(m.group(2)) < 60 and (int(m.group(1)) < 24 or (allow_24 and value == "24:00")):
        return int(m.group(1)) * 60 + int(m.group(2))
    allowed = "00:00-24:00" if allow_24 else "00:00-23:59"
    raise ValueError(f"bad time {value!r} (expected HH:MM, {allowed})")


def _zone(name: str) -> tzinfo:
    """The tzinfo for an IANA name; "UTC" works even without a tz database."""
    if name.upper() == "UTC":
        return timezone.utc
    return ZoneInfo(name)


def _weekdays() -> list[Day]:
    """The default opening days (a new list each time)."""
    return ["mon", "tue", "wed", "thu", "fri"]


class BusinessHoursConfig(StrictModel):
    """Fires when ``state.now`` falls outside business hours.

    ``state.now`` is converted to ``timezone`` (IANA name; a naive ``now`` is taken as UTC).
    The business is open on ``days`` from ``open`` to ``close`` (local "HH:MM", ``close``
    may be "24:00"); when ``close`` is earlier than ``open`` the window runs past midnight
    and belongs to the day it opened. ``holidays`` (dates) are closed all day.

    The rule fires on *every* message outside those hours, so a bot with this rule hands
    every out-of-hours conversation to the human queue, where it waits for the next business
    day. Operators place it where they want that queuing to take precedence: first, to record
    every out-of-hours hand-off as ``outside_business_hours``; after the other rules, so that a
    more specific reason (legal, asked for a human) is recorded when one applies.
    Reason ``outside_business_hours``.
    """

    type: Literal["business_hours"] = "business_hours"
    timezone: str = "UTC"
    days: list[Day] = Field(default_factory=_weekdays, min_length=1)
    open: str = "09:00"
    close: str = "17:00"
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, v: str) -> str:
        try:
            _zone(v)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as 'Europe/Paris')") from None
        return v

    @field_validator("days", mode="before")
    @classmethod
    def _day_names(cls, v: object) -> object:
        # Accept "Mon", "monday" as well as "mon"; anything else reaches the Literal check.
        if isinstance(v, list):
            return [_FULL_DAYS.get(d.strip().lower(), d.strip().lower()) if isinstance(d, str) else d for d in v]
        return v

    @field_validator("open")
    @classmethod
    def _valid_open(cls, v: str) -> str:
        _parse_hhmm(v, allow_24=False)
        return v

    @field_validator("close")
    @classmethod
    def _valid_close(cls, v: str) -> str:
        _parse_hhmm(v, allow_24=True)
        return v

    @model_validator(mode="after")
    def _window(self) -> BusinessHoursConfig:
        if _parse_hhmm(self.open, False) == _parse_hhmm(self.close, True) % (24 * 60) and self.close != "24:00":
            raise ValueError(f"open {self.open!r} and close {self.close!r} are the same time "
                             "(use 00:00-24:00 for all day)")
        return self

    def local_time(self, now: datetime) -> datetime:
        """``now`` in the configured timezone (naive datetimes are taken as UTC)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        return now.astimezone(_zone(self.timezone))

    def is_open(self, now: datetime) -> bool:
        """Whether the business is open at ``now``."""
        local = self.local_time(now)
        opens, closes = _parse_hhmm(self.open, False), _parse_hhmm(self.close, True)
        minute = local.hour * 60 + local.minute + local.second / 60
        today, yesterday = local.date(), local.date() - timedelta(days=1)

        def working(d: date) -> bool:
            return _DAYS[d.weekday()] in self.days and d not in self.holidays

        if opens < closes:
            return working(today) and opens <= minute < closes
        # Overnight window (e.g. 22:00-06:00): the evening part opens today, the early
        # morning part belongs to yesterday's opening.
        return (working(today) and minute >= opens) or (working(yesterday) and minute < closes)


def _build_business_hours(cfg: BusinessHoursConfig, name: str) -> Rule:
    def business_hours(state: ConversationState) -> Escalation | None:
        if cfg.is_open(state.now):
            return None
        local = cfg.local_time(state.now)
        holiday = " (holiday)" if local.date() in cfg.holidays else ""
        return _escalation(
            "outside_business_hours", name,
            f"{local:%a %Y-%m-%d %H:%M} {cfg.timezone}{holiday} is outside business hours "
            f"({','.join(cfg.days)} {cfg.open}-{cfg.close})",
        )

    return business_hours
