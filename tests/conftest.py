"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from flask_bgjobs import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A clock standing still at 2026-03-15 12:00 UTC until a test moves it."""
    return ManualClock(datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc))


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01
) -> None:
    """Poll ``predicate`` until it is true; fail the test if it is not within ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)
