"""Retries, timeouts, cancellation, requeueing and recovery of jobs whose process died."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from flask_bgjobs import (
    JobCancelled,
    JobNotFoundError,
    JobState,
    JobStateError,
    ManualClock,
    current_job,
)
from flask_bgjobs.store import JobStore

from .conftest import wait_until


def test_retries_back_off_then_fail_with_every_attempt_recorded(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock, retry_backoff=60, retry_limit=5)
    attempts: list[int] = []

    @jobs.command(retry_limit=2)
    def flaky() -> None:
        attempts.append(current_job.attempt)
        raise ConnectionError(f"attempt {current_job.attempt} failed")

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("flaky")
        wait_until(lambda: jobs.get_job(ref.id).queued.error_type == "ConnectionError")
        first_retry = jobs.get_job(ref.id).queued
        # The retry waits for its backoff: 30-60 s for the first one (base 60, jitter).
        assert 30 <= first_retry.run_after - clock().timestamp() <= 60
        assert attempts == [1]
        clock.advance(seconds=61)
        wait_until(
            lambda: (
                len(attempts) == 2
                and jobs.get_job(ref.id).queued.state is JobState.QUEUED
                and jobs.get_job(ref.id).queued.attempts == 2
            )
        )
        # The second backoff doubles: 60-120 s.
        second_wait = jobs.get_job(ref.id).queued.run_after - clock().timestamp()
        assert 60 <= second_wait <= 120
        clock.advance(seconds=121)
        result = jobs.wait_for(ref.id)
    assert attempts == [1, 2, 3]  # retry_limit=2: three attempts in all
    failed = result.failed
    assert result.state is JobState.FAILED and failed is not None
    assert failed.attempts == 3 and failed.error_message == "attempt 3 failed"
    assert "ConnectionError: attempt 3 failed" in (failed.error_traceback or "")
    assert [(a.number, a.error_message) for a in failed.history] == [
        (1, "attempt 1 failed"),
        (2, "attempt 2 failed"),
    ]
    assert result.summary.state is JobState.FAILED and result.summary.attempts == 3


def test_retry_limit_zero_means_one_attempt(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=3)
    calls: list[int] = []

    @jobs.command
    def once() -> None:
        calls.append(1)
        raise ValueError("no")

    with app.app_context():
        jobs.start()
        result = jobs.wait_for(jobs.enqueue_command("once", retry_limit=0).id)
    assert result.state is JobState.FAILED and calls == [1]


def test_async_command_is_cancelled_for_real_at_its_timeout(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0)
    seen: list[str] = []

    @jobs.command(timeout=0.2)
    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with app.app_context():
        jobs.start()
        started = time.monotonic()
        result = jobs.wait_for(jobs.enqueue_command("slow").id)
    assert time.monotonic() - started < 5
    assert seen == ["cancelled"]
    assert result.state is JobState.FAILED and result.failed.error_type == "JobTimeout"
    assert "timeout of 0.2 s" in result.failed.error_message


def test_sync_command_sees_cancelled_at_its_timeout(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0)
    loops: list[int] = []

    @jobs.command(timeout=0.2)
    def polite() -> None:
        while True:
            loops.append(1)
            current_job.raise_if_cancelled()
            time.sleep(0.01)

    with app.app_context():
        jobs.start()
        result = jobs.wait_for(jobs.enqueue_command("polite").id)
    assert result.failed.error_type == "JobTimeout" and loops


def test_sync_command_ignoring_cancellation_is_interrupted(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0, cancel_grace=0.2)
    caught: list[str] = []

    @jobs.command(timeout=0.2)
    def stubborn() -> None:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # never looks at current_job.cancelled
                sum(range(100))
        except JobCancelled as error:
            caught.append(type(error).__name__)
            raise

    with app.app_context():
        jobs.start()
        started = time.monotonic()
        result = jobs.wait_for(jobs.enqueue_command("stubborn").id)
    assert time.monotonic() - started < 5
    assert caught == ["JobTimeout"]
    assert result.failed.error_type == "JobTimeout"


def test_a_stuck_thread_is_abandoned_and_its_named_worker_goes_on(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0, cancel_grace=0.1)
    release = threading.Event()
    stuck_threads: list[threading.Thread] = []
    after: list[str] = []

    @jobs.command(worker="solo", timeout=0.2)
    def stuck() -> None:
        stuck_threads.append(threading.current_thread())
        release.wait(30)  # blocked in C: a raised exception waits until this returns

    @jobs.command(worker="solo")
    def next_one() -> None:
        after.append(threading.current_thread().name)

    try:
        with app.app_context():
            jobs.start()
            first = jobs.enqueue_command("stuck")
            second = jobs.enqueue_command("next_one")
            assert jobs.wait_for(first.id).failed.error_type == "JobTimeout"
            assert jobs.wait_for(second.id).state is JobState.COMPLETED
            assert "abandoned" in jobs.get_job(first.id).failed.error_traceback
    finally:
        release.set()
        for thread in stuck_threads:
            thread.join(5)
    assert after and stuck_threads and not stuck_threads[0].is_alive()


def test_cancelled_queued_job_never_starts(make_app: Any) -> None:
    app, jobs = make_app()
    ran: list[int] = []
    jobs.command(lambda: ran.append(1), name="never")
    with app.app_context():
        ref = jobs.enqueue_command("never")
        assert jobs.cancel_job(ref.id) is True
        jobs.start()
        result = jobs.wait_for(ref.id)
        assert jobs.cancel_job(ref.id) is False  # already final
        assert jobs.cancel_job(999_999) is False
        # Give the runner a real chance to (wrongly) pick it up.
        probe = jobs.enqueue_command("never")
        jobs.wait_for(probe.id)
    assert ran == [1]
    assert result.state is JobState.CANCELLED
    assert result.failed is not None and result.failed.state is JobState.CANCELLED
    assert "before it started" in result.failed.error_message


def test_cancelling_a_running_job(make_app: Any) -> None:
    app, jobs = make_app()
    started = threading.Event()

    @jobs.command
    def long_one() -> None:
        started.set()
        while True:
            current_job.raise_if_cancelled()
            time.sleep(0.01)

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("long_one")
        assert started.wait(5)
        assert jobs.cancel_job(ref.id) is True
        result = jobs.wait_for(ref.id)
    assert result.state is JobState.CANCELLED and result.summary.state is JobState.CANCELLED
    assert result.failed.error_type == "JobCancelled"


def test_requeue_a_failed_job_under_the_same_id(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0)
    fail = [True]

    @jobs.command
    def sometimes() -> str:
        if fail[0]:
            raise RuntimeError("first series fails")
        return "fine"

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("sometimes", ref_id="again")
        assert jobs.wait_for(ref.id).state is JobState.FAILED
        fail[0] = False
        assert jobs.requeue_job(ref.id) == ref
        result = jobs.wait_for(ref.id)
        with pytest.raises(JobStateError, match="only failed or cancelled"):
            jobs.requeue_job(ref.id)
        with pytest.raises(JobNotFoundError):
            jobs.requeue_job(424242)
        failed_rows = _count(jobs.store(), result.summary.month, "failed_job")
    assert result.state is JobState.COMPLETED and result.result == "fine"
    assert result.completed.attempts == 1  # a new attempt series
    assert [a.error_message for a in result.completed.history] == ["first series fails"]
    assert failed_rows == 0  # shown once, as completed


def test_wait_for_times_out_with_the_state(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="idle")
    with app.app_context():
        ref = jobs.enqueue_command("idle")
        with pytest.raises(TimeoutError, match="it is queued"):
            jobs.wait_for(ref.id, timeout=0.05)
        with pytest.raises(JobNotFoundError):
            jobs.wait_for(123456, timeout=0.05)


def test_a_dead_process_job_is_recovered_after_its_lease(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    runs: list[int] = []

    @jobs.command
    def work() -> str:
        runs.append(current_job.attempt)
        return "done"

    with app.app_context():
        store = jobs.store()
        ref = jobs.enqueue_command("work")
        # A process that claimed the job and died: nobody renews its lease.
        claimed = store.claim("dead-host:1:x", {None: 10}, clock().timestamp(), 30)
        assert [j.id for j in claimed.jobs[None]] == [ref.id]
        jobs.start()
        runner = app.extensions["bgjobs"]._state().runner
        assert runner.recover_orphans(clock().timestamp()) == 0  # lease still valid
        clock.advance(seconds=31)
        assert runner.recover_orphans(clock().timestamp()) == 1
        assert jobs.get_job(ref.id).state is JobState.QUEUED  # the retry backs off, as any
        clock.advance(seconds=1)
        result = jobs.wait_for(ref.id)
    assert runs == [2] and result.completed.attempts == 2
    lost = result.completed.history[0]
    assert lost.error_type == "WorkerLostError" and lost.worker_process == "dead-host:1:x"


def test_a_lost_job_past_its_retry_limit_fails_as_lost(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    jobs.command(lambda: None, name="work")
    with app.app_context():
        store = jobs.store()
        ref = jobs.enqueue_command("work", retry_limit=0)
        store.claim("dead-host:2:y", {None: 10}, clock().timestamp(), 30)
        jobs.start()
        clock.advance(seconds=31)
        runner = jobs._state().runner
        runner.recover_orphans(clock().timestamp())
        result = jobs.wait_for(ref.id)
    assert result.state is JobState.FAILED and result.failed.error_type == "WorkerLostError"
    assert "stopped answering" in result.failed.error_message


def test_a_crash_between_the_two_writes_of_the_move_neither_loses_nor_repeats(
    make_app: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    runs: list[int] = []

    @jobs.command
    def once_only() -> int:
        runs.append(1)
        return 7

    with app.app_context():
        store = jobs.store()
        ref = jobs.enqueue_command("once_only")
        # The process dies right after the month's row is written, before jobs.db is updated.
        crash = RuntimeError("process died here")

        def write_history_then_die(self: JobStore, month: str, outcomes: Any) -> None:
            original(self, month, outcomes)
            raise crash

        original = JobStore._write_history
        monkeypatch.setattr(JobStore, "_write_history", write_history_then_die)
        runner = jobs._runner(app, start=False)
        job = store.claim(runner.owner, {None: 1}, clock().timestamp(), 30).jobs[None][0]
        execution = jobs.execution_for(app, job)
        execution.run()
        with pytest.raises(RuntimeError, match="process died here"):
            runner.complete_once([execution])
        monkeypatch.setattr(JobStore, "_write_history", original)
        month = store.history.current_month()
        # In the window: jobs.db still shows it started, the month has its row; get_job shows
        # it once, as started.
        assert jobs.get_job(ref.id).state is JobState.STARTED
        assert _count(store, month, "completed_job") == 1

        # Another process recovers it once the lease lapses: the move completes, no second run.
        other = jobs.worker_runner(app, threads=1, workers=None, pool=True)
        clock.advance(seconds=31)
        assert other.recover_orphans(clock().timestamp()) == 1
        result = jobs.get_job(ref.id)
    assert runs == [1]
    assert result.state is JobState.COMPLETED and result.result == 7
    assert result.queued is None and _count(store, month, "completed_job") == 1


def test_stop_hands_running_jobs_back(make_app: Any) -> None:
    app, jobs = make_app()
    started = threading.Event()
    release = threading.Event()
    threads: list[threading.Thread] = []

    @jobs.command
    def unstoppable() -> None:
        threads.append(threading.current_thread())
        started.set()
        release.wait(30)

    try:
        with app.app_context():
            jobs.start()
            ref = jobs.enqueue_command("unstoppable")
            assert started.wait(5)
            jobs.stop(timeout=0.1)
            job = jobs.get_job(ref.id)
            assert job.state is JobState.QUEUED and job.queued.attempts == 0
    finally:
        release.set()
        for thread in threads:
            thread.join(5)


def _count(store: JobStore, month: str | None, table: str) -> int:
    database = store.history.existing(month) if month else None
    if database is None:
        return 0
    with database.read() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def test_clock_is_used_for_created_and_run_after(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)
    ran = threading.Event()
    jobs.command(lambda: ran.set(), name="later")
    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("later", run_after=clock() + timedelta(minutes=5))
        assert not ran.wait(0.2)
        clock.advance(minutes=5)
        assert jobs.wait_for(ref.id).state is JobState.COMPLETED


def test_the_dispatcher_outlives_a_database_error(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    app, jobs = make_app()
    jobs.command(lambda: "ran", name="noop")
    with app.app_context():
        store = jobs.store()
        real_watch = store.watch
        failures = [sqlite3.OperationalError("disk I/O error")]

        def flaky_watch() -> Any:
            # A transient failure of the poll (injected: a real one needs a broken disk).
            watcher = real_watch()
            real_changed = watcher.changed

            def changed() -> bool:
                if failures:
                    raise failures.pop()
                return real_changed()

            watcher.changed = changed  # type: ignore[method-assign]
            return watcher

        monkeypatch.setattr(store, "watch", flaky_watch)
        jobs.start()
        wait_until(lambda: not failures)
        result = jobs.wait_for(jobs.enqueue_command("noop").id, timeout=5)
    assert result.result == "ran"
    assert "could not claim jobs" in caplog.text
