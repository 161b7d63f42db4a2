"""Time as the rest of the package sees it: aware UTC datetimes from an injectable clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

#: A clock is any callable returning the current time as an aware UTC datetime.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime (the default clock)."""
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class ManualClock:
    """A clock that moves only when told to, for tests of anything time-dependent.

    >>> clock = ManualClock(datetime(2026, 1, 31, 23, 59, 59))
    >>> clock.advance(seconds=1).month
    2
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = as_utc(start) if start is not None else utcnow()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, value: datetime) -> datetime:
        """Jump to ``value`` (forwards or backwards) and return it."""
        with self._lock:
            self._now = as_utc(value)
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        """Move forwards by ``delta`` or by ``timedelta(**kwargs)`` and return the new time."""
        step = delta if delta is not None else timedelta(**kwargs)
        with self._lock:
            self._now += step
            return self._now
