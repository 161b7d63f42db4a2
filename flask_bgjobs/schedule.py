"""When recurring tasks are due: cron expressions and fixed intervals, in a time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .clock import as_utc
from .errors import InvalidJobError

_NAMES = {"* * * * *": "every minute", "0 * * * *": "every hour", "0 0 * * *": "every day at 00:00",
          "0 0 * * 0": "every Sunday at 00:00", "0 0 1 * *": "on the 1st of every month at 00:00",
          "* * * * * *": "every second"}  # fmt: skip


@dataclass(frozen=True)
class Schedule:
    """A cron expression (5 fields, or 6 with seconds first) or a fixed interval.

    Build one with :meth:`cron`, :meth:`interval`, or a shortcut such as ``Schedule.hourly``.
    Cron times are read in ``tz`` (UTC by default); all answers are aware UTC datetimes.
    """

    kind: str  # "cron" or "interval"
    expression: str = ""
    seconds: float = 0.0
    tz: str = "UTC"

    every_second: ClassVar[Schedule]
    every_minute: ClassVar[Schedule]
    hourly: ClassVar[Schedule]
    daily: ClassVar[Schedule]
    weekly: ClassVar[Schedule]
    monthly: ClassVar[Schedule]

    @classmethod
    def cron(cls, expression: str, tz: str = "UTC") -> Schedule:
        """A cron schedule: ``"*/5 * * * *"``, or with seconds first ``"*/10 * * * * *"``."""
        if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
            raise InvalidJobError(
                f"a cron expression has 5 fields (minute hour day month weekday) or 6 (seconds "
                f"first), not {expression!r}"
            )
        schedule = cls("cron", expression=" ".join(expression.split()), tz=_zone_name(tz))
        try:
            schedule.next_after(datetime(2026, 1, 1, tzinfo=timezone.utc))
        except (CroniterError, ValueError, KeyError) as error:
            raise InvalidJobError(f"invalid cron expression {expression!r}: {error}") from None
        return schedule

    @classmethod
    def interval(cls, every: timedelta | float) -> Schedule:
        """A fixed interval (a timedelta, or seconds), counted from the previous due time."""
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise InvalidJobError(f"an interval must be positive, not {every!r}")
        return cls("interval", seconds=float(seconds))

    def next_after(self, moment: datetime) -> datetime:
        """The first due time strictly after ``moment``."""
        moment = as_utc(moment)
        if self.kind == "interval":
            return moment + timedelta(seconds=self.seconds)
        local = moment.astimezone(ZoneInfo(self.tz))
        found = croniter(self.expression, local, second_at_beginning=True).get_next(datetime)
        return as_utc(found)

    def due_times(
        self, first: datetime, now: datetime, limit: int
    ) -> tuple[list[datetime], datetime]:
        """The due times from ``first`` up to ``now`` and the next one after ``now``.

        Past ``limit`` due times (a long downtime), the list holds the first ``limit - 1`` and
        the latest one.
        """
        first, now = as_utc(first), as_utc(now)
        if first > now:
            return [], first
        if self.kind == "interval":
            step = timedelta(seconds=self.seconds)
            count = int((now - first).total_seconds() // self.seconds) + 1
            shown = range(count) if count <= limit else [*range(limit - 1), count - 1]
            return [first + step * n for n in shown], first + step * count
        found: list[datetime] = []
        due = first
        while due <= now:
            if len(found) == limit - 1 and limit > 0:
                # Long downtime: jump to the latest due time instead of walking every one.
                local = (now + timedelta(microseconds=1)).astimezone(ZoneInfo(self.tz))
                latest = croniter(self.expression, local, second_at_beginning=True)
                found.append(as_utc(latest.get_prev(datetime)))
                break
            found.append(due)
            due = self.next_after(due)
        return found, self.next_after(max(found[-1], now))

    def describe(self) -> str:
        """The schedule in words, for lists and pages."""
        if self.kind == "interval":
            return f"every {_duration(self.seconds)}"
        words = _NAMES.get(self.expression, f"cron {self.expression}")
        return words if self.tz == "UTC" else f"{words} ({self.tz})"

    def to_json(self) -> dict[str, Any]:
        if self.kind == "interval":
            return {"kind": "interval", "seconds": self.seconds}
        return {"kind": "cron", "expression": self.expression, "tz": self.tz}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        if data.get("kind") == "interval":
            return cls.interval(float(data["seconds"]))
        return cls.cron(str(data["expression"]), str(data.get("tz", "UTC")))

    def __str__(self) -> str:
        return self.describe()


def _zone_name(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidJobError(
            f"unknown time zone {tz!r} (use a name like 'Europe/Paris')"
        ) from None
    return tz


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


Schedule.every_second = Schedule.cron("* * * * * *")
Schedule.every_minute = Schedule.cron("* * * * *")
Schedule.hourly = Schedule.cron("0 * * * *")
Schedule.daily = Schedule.cron("0 0 * * *")
Schedule.weekly = Schedule.cron("0 0 * * 0")
Schedule.monthly = Schedule.cron("0 0 1 * *")
