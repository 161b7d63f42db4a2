"""Races and misbehaving code around the runner: nothing is lost, run twice or stuck."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

from flask_bgjobs import JobState, JobStateError, JobTimeout, ManualClock
from flask_bgjobs.records import Outcome
from flask_bgjobs.signals import job_cancelled, job_started


def test_cancelling_one_queued_job_leaves_the_others(make_app: Any) -> None:
    app, jobs = make_app()
    ran: list[int] = []

    @jobs.command
    def work(n: int) -> None:
        ran.append(n)

    with app.app_context():
        refs = [jobs.enqueue_command("work", n) for n in range(5)]
        assert jobs.cancel_job(refs[2].id) is True
        jobs.start()
        states = [jobs.wait_for(ref.id).state for ref in refs]
    assert states == [JobState.COMPLETED] * 2 + [JobState.CANCELLED] + [JobState.COMPLETED] * 2
    assert sorted(ran) == [0, 1, 3, 4]


def test_a_forked_child_exiting_leaves_its_parents_jobs_alone(make_app: Any) -> None:
    import atexit

    app, jobs = make_app()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @jobs.command
    def hold() -> None:
        runs.append(1)
        started.set()
        release.wait(10)

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("hold")
        assert started.wait(5)
        pid = os.fork()
        if pid == 0:  # the child, as a pre-fork server's worker that exits
            try:
                with app.app_context():
                    jobs.stop(timeout=0)
                atexit._run_exitfuncs()
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert jobs.get_job(ref.id).state is JobState.STARTED  # not handed back by the child
        release.set()
        assert jobs.wait_for(ref.id).state is JobState.COMPLETED
    assert runs == [1]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def test_an_exception_that_cannot_be_printed_is_recorded_and_the_runner_goes_on(
    make_app: Any,
) -> None:
    app, jobs = make_app(retry_limit=0)

    @jobs.command
    def odd() -> None:
        raise Unprintable

    jobs.command(lambda: "fine", name="fine")
    with app.app_context():
        jobs.start()
        bad = jobs.wait_for(jobs.enqueue_command("odd").id)
        good = jobs.wait_for(jobs.enqueue_command("fine").id)
    assert (
        bad.failed.error_type == "Unprintable" and "could not be read" in bad.failed.error_message
    )
    assert good.result == "fine"


def test_a_failing_signal_receiver_does_not_strand_claimed_jobs(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda n: n, name="echo")

    def broken(sender: Any, **extra: Any) -> None:
        raise RuntimeError("receiver bug")

    job_started.connect(broken, app)
    try:
        with app.app_context():
            jobs.start()
            refs = [jobs.enqueue_command("echo", n) for n in range(6)]
            results = [jobs.wait_for(ref.id).result for ref in refs]
    finally:
        job_started.disconnect(broken)
    assert results == list(range(6))


def test_tasks_left_by_an_async_job_never_run_in_the_next_one(make_app: Any) -> None:
    app, jobs = make_app(max_threads=1)
    seen: list[tuple[str, Any]] = []

    @jobs.command
    async def leaves_a_task() -> None:
        from flask_bgjobs import current_job

        job_id = current_job.id

        async def later() -> None:
            try:
                await asyncio.sleep(0.05)
                seen.append(("leftover ran", job_id))
            except asyncio.CancelledError:
                seen.append(("leftover cancelled", job_id))
                raise

        asyncio.get_running_loop().create_task(later())

    @jobs.command
    async def next_job() -> None:
        await asyncio.sleep(0.2)
        seen.append(("next done", None))

    with app.app_context():
        jobs.start()
        first = jobs.enqueue_command("leaves_a_task")
        second = jobs.enqueue_command("next_job")
        jobs.wait_for(first.id)
        jobs.wait_for(second.id)
    assert seen == [("leftover cancelled", first.id), ("next done", None)]


def test_an_abandoned_job_is_not_retried_while_its_thread_may_still_run(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=3, cancel_grace=0.1)
    release = threading.Event()
    threads: list[threading.Thread] = []

    @jobs.command(timeout=0.2)
    def stuck() -> None:
        threads.append(threading.current_thread())
        release.wait(30)

    try:
        with app.app_context():
            jobs.start()
            result = jobs.wait_for(jobs.enqueue_command("stuck").id)
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
    assert result.state is JobState.FAILED and result.failed.attempts == 1
    assert len(threads) == 1


def test_requeueing_twice_at_once_is_refused(make_app: Any) -> None:
    app, jobs = make_app(eager=True, retry_limit=0)
    fail = [True]

    @jobs.command
    def maybe() -> None:
        if fail[0]:
            raise ValueError("no")

    with app.app_context():
        ref = jobs.enqueue_command("maybe")
        store = jobs.store()
        store.requeue(ref.id, jobs.now())  # as another process would, at the same moment
        with pytest.raises(JobStateError):
            store.requeue(ref.id, jobs.now())
        assert jobs.get_job(ref.id).state is JobState.QUEUED


def test_a_stale_owner_cannot_finish_a_job_taken_over(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    jobs.command(lambda: "second run", name="work")
    with app.app_context():
        store = jobs.store()
        ref = jobs.enqueue_command("work")
        stale = store.claim("paused:1:a", {None: 1}, clock().timestamp(), 30).jobs[None][0]
        clock.advance(seconds=31)
        jobs.start()
        runner = jobs._state().runner
        assert runner.recover_orphans(clock().timestamp()) == 1
        clock.advance(seconds=5)
        result = jobs.wait_for(ref.id)
        # The paused process wakes up and reports its (old) run: ignored.
        late = Outcome(stale, JobState.FAILED, clock().timestamp(), error_type="Late",
                       error_message="too late")  # fmt: skip
        assert store.finish([late], "paused:1:a", clock().timestamp()).applied == []
        again = jobs.get_job(ref.id)
    assert result.state is JobState.COMPLETED and result.result == "second run"
    assert again.state is JobState.COMPLETED and again.result == "second run"
    assert again.failed is None


def test_run_command_has_a_timeout_too(make_app: Any) -> None:
    app, jobs = make_app(autostart=True)

    @jobs.command(timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(30)

    with app.app_context():
        job = jobs.run_command("slow")
        assert job.future is not None
        started = time.monotonic()
        with pytest.raises(JobTimeout):
            job.future.result(timeout=10)
    assert time.monotonic() - started < 5 and job.state is JobState.CANCELLED


def test_the_cancelled_signal_and_cross_process_style_cancel(make_app: Any) -> None:
    app, jobs = make_app()
    got: list[tuple[int, str]] = []

    def receive(sender: Any, job: Any, reason: str, **extra: Any) -> None:
        got.append((job.id, reason))

    started = threading.Event()

    @jobs.command
    def loop() -> None:
        from flask_bgjobs import current_job

        started.set()
        while not current_job.cancelled:
            time.sleep(0.01)
        current_job.raise_if_cancelled()

    job_cancelled.connect(receive, app)
    try:
        with app.app_context():
            jobs.start()
            ref = jobs.enqueue_command("loop")
            assert started.wait(5)
            # As another process does it: only the flag in jobs.db, no in-memory shortcut.
            assert jobs.store().cancel(ref.id, "elsewhere", jobs.now()) is True
            result = jobs.wait_for(ref.id)
    finally:
        job_cancelled.disconnect(receive)
    assert result.state is JobState.CANCELLED
    assert got == [(ref.id, f"job {ref.id} was cancelled")]


def test_heartbeat_renews_only_jobs_that_really_run(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    jobs.command(lambda: None, name="work")
    with app.app_context():
        store = jobs.store()
        runner = jobs._runner(app, start=False)
        ref = jobs.enqueue_command("work")
        # Claimed under this process's name but never handed to a thread (a lost claim).
        store.claim(runner.owner, {None: 1}, clock().timestamp(), 30)
        clock.advance(seconds=20)
        runner.heartbeat(clock().timestamp())
        clock.advance(seconds=11)
        assert [job.id for job in store.expired(clock().timestamp())] == [ref.id]


def test_a_late_heartbeat_does_not_make_a_running_job_an_orphan(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock, lease_seconds=30)
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    @jobs.command
    def long_one() -> None:
        runs.append(1)
        started.set()
        release.wait(10)

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("long_one")
        assert started.wait(5)
        clock.advance(seconds=31)  # the lease lapsed before this process renewed it
        runner = jobs._state().runner
        assert runner.recover_orphans(clock().timestamp()) == 0
        release.set()
        assert jobs.wait_for(ref.id).state is JobState.COMPLETED
    assert runs == [1]
