"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flask_bgjobs import ManualClock

pytest_plugins = ["tests.hooks"]

if TYPE_CHECKING:
    from flask import Flask

    from flask_bgjobs import BackgroundJobs


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


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., tuple[Flask, BackgroundJobs]]]:
    """Build a Flask app with BackgroundJobs under ``tmp_path``; runners are stopped after."""
    from flask import Flask

    from flask_bgjobs import BackgroundJobs

    made: list[tuple[Flask, BackgroundJobs]] = []

    def make(clock: object = None, **config: object) -> tuple[Flask, BackgroundJobs]:
        app = Flask("testapp", instance_path=str(tmp_path / f"instance{len(made)}"))
        app.config.update(
            TESTING=True,
            BGJOBS_AUTOSTART=False,
            BGJOBS_POLL_INTERVAL=0.01,
            BGJOBS_RETRY_BACKOFF=0.01,
            BGJOBS_CANCEL_GRACE=0.2,
        )
        app.config.update({f"BGJOBS_{k.upper()}": v for k, v in config.items()})
        jobs = BackgroundJobs(app, clock=clock) if clock is not None else BackgroundJobs(app)
        made.append((app, jobs))
        return app, jobs

    yield make
    for app, jobs in made:
        with app.app_context():
            jobs.stop(timeout=5)
            jobs.store().dispose()


@pytest.fixture
def make_logs(tmp_path: Path, clock: ManualClock) -> Iterator[Callable[..., tuple[Flask, Any]]]:
    """Build apps with a request logger (tests/apps/logs_app.py); all are stopped afterwards."""
    from .apps.logs_app import create_app

    made: list[tuple[Flask, Any]] = []

    def build(**config: Any) -> tuple[Flask, Any]:
        pair = create_app(tmp_path / f"logs{len(made)}", clock=clock, **config)
        made.append(pair)
        return pair

    yield build
    for app, logs in made:
        with app.app_context():
            logs.stop()
            assert not logs.state().flusher.running
            logs.store().dispose()
