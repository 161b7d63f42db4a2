"""The buffer and its flush: capacity, a locked database, the timer thread, exit, month rollover,
fork, retention, and the ``flask sqlitelogs`` commands."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_bgjobs import DatabaseBusyError, ManualClock
from flask_sqlitelogs import SqliteRequestLogger

from .conftest import wait_until

REPO = Path(__file__).resolve().parent.parent
Make = Callable[..., tuple[Flask, SqliteRequestLogger]]


@pytest.fixture
def make(make_logs: Make) -> Make:
    """``make(**config)`` builds a logged app (see ``make_logs`` in conftest)."""
    return make_logs


def paths(app: Flask, logs: SqliteRequestLogger, month: str | None = None) -> list[str]:
    with app.app_context():
        return [e.path for e in logs.query(month, order_by="id", limit=10_000).items]


def test_past_capacity_entries_are_dropped_counted_and_logged(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    app, logs = make(capacity=5)
    client = app.test_client()
    for number in range(8):
        assert client.get(f"/items/{number}").status_code == 200  # never blocked
    with app.app_context():
        assert logs.stats()["dropped"] == 3
        with caplog.at_level(logging.WARNING, logger="flask_sqlitelogs"):
            assert logs.flush() == 5
    assert "dropped 3 request log entries" in caplog.text
    assert paths(app, logs) == [f"/items/{n}" for n in range(5)]
    client.get("/items/99")  # room again after the flush
    with app.app_context():
        logs.flush()
        assert logs.stats()["dropped"] == 3
    assert paths(app, logs)[-1] == "/items/99"


def test_a_large_flush_writes_every_row_in_order_in_one_transaction(make: Make) -> None:
    from flask_sqlitelogs.store import CHUNK

    count = 2 * CHUNK + 37  # two full statements and the rest
    app, logs = make(capacity=count + 1)
    client = app.test_client()
    for number in range(count):
        client.get(f"/items/{number}")
    with app.app_context():
        files = logs.store().files
        opened: list[str | None] = []
        write = files.write

        def counting(month: str | None = None) -> Any:
            opened.append(month)
            return write(month)

        files.write = counting  # type: ignore[method-assign]
        assert logs.flush() == count
    assert opened == ["2026-03"]  # one write transaction
    assert paths(app, logs) == [f"/items/{n}" for n in range(count)]


def test_a_flush_against_a_locked_database_keeps_everything_and_retries(make: Make) -> None:
    app, logs = make(sqlite_busy_timeout=0.2, capacity=10)
    client = app.test_client()
    client.get("/items/0")
    with app.app_context():
        logs.flush()  # creates the month's file
        path = logs.store().files.path_for("2026-03")
    for number in range(1, 6):
        client.get(f"/items/{number}")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        with app.app_context():
            with pytest.raises(DatabaseBusyError):
                logs.flush()
            stats = logs.stats()
            assert stats["pending"] == 5 and stats["failures"] == 1
            assert "DatabaseBusyError" in stats["last_error"]
        for number in range(6, 11):
            client.get(f"/items/{number}")  # 5 in the backlog + 5 new = capacity
        client.get("/items/11")  # past capacity: dropped, the backlog is not
        with app.app_context(), pytest.raises(DatabaseBusyError):
            logs.flush()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with app.app_context():
        assert logs.flush() == 10
        stats = logs.stats()
        assert (stats["pending"], stats["dropped"], stats["last_error"]) == (0, 1, None)
    assert paths(app, logs) == [f"/items/{n}" for n in range(11)]


def test_entries_taken_by_a_flush_still_count_against_the_capacity(make: Make) -> None:
    """While a flush waits on another process's lock, the buffer must not fill a second time."""
    app, logs = make(sqlite_busy_timeout=2.0, capacity=4)
    client = app.test_client()
    client.get("/items/0")
    with app.app_context():
        logs.flush()
        path = logs.store().files.path_for("2026-03")
    for number in range(1, 5):
        client.get(f"/items/{number}")  # the buffer is full
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    errors: list[BaseException] = []

    def flush() -> None:
        with app.app_context():
            try:
                logs.flush()
            except BaseException as error:
                errors.append(error)

    flusher = threading.Thread(target=flush)
    try:
        flusher.start()
        with app.app_context():
            wait_until(lambda: len(logs.state().buffer) == 0)  # taken, now waiting on the lock
            for number in range(5, 8):
                assert client.get(f"/items/{number}").status_code == 200
            assert logs.stats()["dropped"] == 3
            assert logs.stats()["pending"] == 4
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        flusher.join()
    assert errors == []  # the lock went within the busy timeout
    assert paths(app, logs) == [f"/items/{n}" for n in range(5)]


def test_the_timer_thread_starts_lazily_flushes_and_stops(make: Make) -> None:
    app, logs = make(flush_interval=0.02)
    with app.app_context():
        state = logs.state()
    assert not state.flusher.running  # nothing before the first request
    client = app.test_client()
    client.get("/items/1")
    assert state.flusher.running
    names = [t.name for t in threading.enumerate()]
    assert names.count("sqlitelogs-flush") >= 1
    wait_until(lambda: paths(app, logs) == ["/items/1"])
    client.get("/items/2")
    wait_until(lambda: len(paths(app, logs)) == 2)
    with app.app_context():
        thread = state.flusher._thread
        logs.stop()
    assert thread is not None and not thread.is_alive()
    assert not state.flusher.running


def test_a_half_full_buffer_is_flushed_before_the_interval(make: Make) -> None:
    app, logs = make(flush_interval=3600, capacity=10)
    client = app.test_client()
    for number in range(4):
        client.get(f"/items/{number}")
    with app.app_context():
        assert logs.stats()["pending"] == 4  # below half: waits for the timer
    client.get("/items/4")  # the fifth of ten: the flush thread is woken
    wait_until(lambda: len(paths(app, logs)) == 5)


def test_stop_flushes_what_is_buffered(make: Make) -> None:
    app, logs = make(flush_interval=3600)
    app.test_client().get("/items/1")
    with app.app_context():
        assert logs.state().flusher.running
        logs.stop()
    assert paths(app, logs) == ["/items/1"]


@pytest.mark.parametrize("mode", ["no-timer", "timer"])
def test_a_process_flushes_at_exit(tmp_path: Path, mode: str) -> None:
    instance = tmp_path / "instance"
    args = [sys.executable, "-m", "tests.apps.logs_app", str(instance), "25"]
    if mode == "timer":
        args.append("timer")
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "served 25" in done.stdout
    files = list((instance / "requests").glob("requests_*.db"))
    assert len(files) == 1
    with sqlite3.connect(files[0]) as conn:
        rows = conn.execute("SELECT path FROM request_log ORDER BY id").fetchall()
    assert [row[0] for row in rows] == [f"/items/{n}" for n in range(25)]


def test_entries_go_to_the_month_they_happened_in(make: Make, clock: ManualClock) -> None:
    clock.set(datetime(2026, 3, 31, 23, 59, 59, tzinfo=timezone.utc))
    app, logs = make()
    client = app.test_client()
    client.get("/items/1")
    clock.advance(seconds=1)  # 2026-04-01 00:00:00
    client.get("/items/2")
    with app.app_context():
        assert logs.flush() == 2  # one flush, two files
        assert logs.months() == ["2026-04", "2026-03"]
    assert paths(app, logs, "2026-03") == ["/items/1"]
    assert paths(app, logs, "2026-04") == ["/items/2"]
    assert paths(app, logs) == ["/items/2"]  # the current month by default


def test_a_forked_child_does_not_write_its_parents_entries(make: Make) -> None:
    app, logs = make()
    app.test_client().get("/items/1")
    pid = os.fork()
    if pid == 0:  # the child: its buffer starts empty
        code = 0
        try:
            with app.app_context():
                code = 0 if logs.flush() == 0 and logs.stats()["pending"] == 0 else 3
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with app.app_context():
        assert logs.flush() == 1
    assert paths(app, logs) == ["/items/1"]


def test_retention_deletes_whole_old_months(make: Make, clock: ManualClock) -> None:
    app, logs = make(retention_months=2)
    client = app.test_client()
    for month in (1, 2, 3):
        clock.set(datetime(2026, month, 10, tzinfo=timezone.utc))
        client.get(f"/items/{month}")
        with app.app_context():
            logs.flush()  # the first write of a month prunes what is too old
    with app.app_context():
        assert logs.months() == ["2026-03", "2026-02"]
        assert not logs.store().files.path_for("2026-01").exists()


def test_the_prune_and_stats_commands(make: Make, clock: ManualClock, tmp_path: Path) -> None:
    app, logs = make()
    client = app.test_client()
    for month in (1, 2, 3):
        clock.set(datetime(2026, month, 10, 8, 30, tzinfo=timezone.utc))
        for _ in range(month):
            client.get("/hello")
        if month == 3:
            with pytest.raises(ValueError):
                client.get("/boom")
        with app.app_context():
            logs.flush()
    runner = app.test_cli_runner()
    stats = runner.invoke(args=["sqlitelogs", "stats"])
    assert stats.exit_code == 0, stats.output
    lines = stats.output.splitlines()
    assert any(line.startswith("2026-03") and " 4 " in line and " 1 " in line for line in lines)
    assert any(line.startswith("total") and " 7 " in line for line in lines)
    as_json = runner.invoke(args=["sqlitelogs", "stats", "--json"])
    assert '"rows": 2' in as_json.output
    no_keep = runner.invoke(args=["sqlitelogs", "prune"])
    assert no_keep.exit_code != 0 and "SQLITELOGS_RETENTION_MONTHS" in no_keep.output
    archive = tmp_path / "archive"
    pruned = runner.invoke(
        args=["sqlitelogs", "prune", "--keep-months", "2", "--archive-dir", str(archive)]
    )
    assert pruned.exit_code == 0, pruned.output
    assert "archived 1 month(s): 2026-01" in pruned.output
    assert (archive / "requests_2026-01.db").exists()
    again = runner.invoke(args=["sqlitelogs", "prune", "--keep-months", "2"])
    assert "nothing to prune" in again.output
    with app.app_context():
        assert logs.months() == ["2026-03", "2026-02"]


def test_the_buffer_holds_raw_captures_until_the_flush(make: Make) -> None:
    """Nothing is written on the request path: no file exists until the flush."""
    app, logs = make()
    app.test_client().get("/hello")
    folder = Path(app.instance_path) / "requests"
    assert not folder.exists()
    with app.app_context():
        assert logs.stats()["pending"] == 1
        logs.flush()
    assert (folder / "requests_2026-03.db").exists()


def test_busy_timeouts_are_counted_in_the_stats(make: Make, clock: ManualClock) -> None:
    app, logs = make(sqlite_busy_timeout=0.05)
    app.test_client().get("/hello")
    with app.app_context():
        logs.flush()
        path = logs.store().files.path_for("2026-03")
    clock.advance(timedelta(minutes=1))
    app.test_client().get("/hello")
    with sqlite3.connect(path, isolation_level=None) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        with app.app_context():
            logs.stop()  # logs the failure, keeps the entry, does not raise
            assert logs.stats()["pending"] == 1
        blocker.execute("ROLLBACK")
    with app.app_context():
        assert logs.flush() == 1
