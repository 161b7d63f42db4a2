"""Real ``flask jobs worker`` processes sharing one ``jobs.db``: signals, crashes and leases.

Each test starts workers of ``tests.apps.queue_app`` with :class:`Workers` and enqueues jobs from
this process through the same app factory and instance folder. Every process is stopped and
waited for in the fixture's teardown, whatever the test did.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from flask import Flask

from flask_bgjobs import JobState

from .apps.queue_app import create_app, jobs
from .conftest import wait_until
from .workers import Workers

pytestmark = pytest.mark.slow


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def app(workers: Workers) -> Iterator[Flask]:
    """The same app the workers run, in this process (it only enqueues and reads)."""
    made = create_app(workers.instance)
    with made.app_context():
        yield made
        jobs.store().dispose()


def count_in_state(state: JobState) -> int:
    return len(jobs.list_jobs(state=state, limit=1_000_000))


# -- many workers, many jobs -------------------------------------------------------------------


def test_three_workers_run_each_of_2000_jobs_exactly_once(workers: Workers, app: Flask) -> None:
    started = [workers.start() for _ in range(3)]
    for worker in started:
        worker.wait_ready()

    ids = [jobs.enqueue_command("record").id for _ in range(2000)]
    assert len(set(ids)) == 2000

    wait_until(lambda: count_in_state(JobState.COMPLETED) == 2000, timeout=40, interval=0.1)

    runs = workers.run_lines()
    ran = Counter(job_id for job_id, _ in runs)
    duplicates = {job_id: n for job_id, n in ran.items() if n > 1}
    assert not duplicates, f"jobs run more than once: {duplicates}"
    assert set(ran) == set(ids)
    assert len(runs) == 2000
    pids = {pid for _, pid in runs}
    assert pids <= {worker.pid for worker in started}  # the workers ran them, not this process
    assert len(pids) >= 2, f"one worker ran everything: {Counter(pid for _, pid in runs)}"

    for job_id in ids:
        result = jobs.get_job(job_id)
        assert result is not None
        assert result.state is JobState.COMPLETED, (job_id, result.summary)
        assert result.completed is not None
        assert result.completed.attempts == 1
        assert result.queued is None
    assert count_in_state(JobState.QUEUED) == count_in_state(JobState.STARTED) == 0

    for worker in started:
        assert worker.terminate() == 0, worker.output()
        assert "received SIGTERM: stopping" in worker.output()
        assert f"worker {worker.owner()} stopped" in worker.output()


def test_named_worker_keeps_enqueue_order_across_processes(workers: Workers, app: Flask) -> None:
    started = [workers.start() for _ in range(2)]
    for worker in started:
        worker.wait_ready()
    ids = [jobs.enqueue_command("record_serial").id for _ in range(150)]
    wait_until(lambda: count_in_state(JobState.COMPLETED) == 150, timeout=40, interval=0.1)
    runs = workers.run_lines()
    assert [job_id for job_id, _ in runs] == ids  # one at a time, in order, whoever ran it
    for worker in started:
        assert worker.terminate() == 0, worker.output()


def test_a_worker_restricted_to_named_workers_leaves_pool_jobs(
    workers: Workers, app: Flask
) -> None:
    serial_only = workers.start("--worker", "serial")
    serial_only.wait_ready()
    pool_job = jobs.enqueue_command("record").id
    serial_job = jobs.enqueue_command("record_serial").id
    wait_until(lambda: jobs.get_job(serial_job).state is JobState.COMPLETED, timeout=20)
    assert jobs.get_job(pool_job).state is JobState.QUEUED
    pool = workers.start("--threads", "1")
    pool.wait_ready()
    wait_until(lambda: jobs.get_job(pool_job).state is JobState.COMPLETED, timeout=20)
    assert {job_id: pid for job_id, pid in workers.run_lines()} == {
        serial_job: serial_only.pid,
        pool_job: pool.pid,
    }
    for worker in (serial_only, pool):
        assert worker.terminate() == 0, worker.output()


def test_a_delayed_job_starts_on_time_in_another_process(workers: Workers, app: Flask) -> None:
    from datetime import timedelta

    from flask_bgjobs.clock import utcnow

    # It notices the new job at its next poll (0.5 s), then sleeps until the job is due rather
    # than to its next poll: it starts on time, not up to half a second late.
    worker = workers.start(poll_interval=0.5)
    worker.wait_ready()
    due = utcnow() + timedelta(seconds=1)
    ref = jobs.enqueue_command("record", run_after=due)
    result = jobs.wait_for(ref.id, timeout=15)
    started = result.completed.started_at
    assert result.state is JobState.COMPLETED
    assert due.timestamp() <= started < due.timestamp() + 0.2
    assert worker.terminate() == 0, worker.output()


def test_three_schedulers_fire_each_due_time_once(workers: Workers, app: Flask) -> None:
    from datetime import datetime

    started = [workers.start(test_tick=1) for _ in range(3)]
    for worker in started:
        worker.wait_ready()
    time.sleep(10)  # the task fires every second: let three schedulers race for ten seconds
    for worker in started:
        assert worker.terminate() == 0, worker.output()
    fired = jobs.list_jobs(args={"scheduled_task": "tick"}, limit=1000)
    dues = sorted(datetime.fromisoformat(jobs.get_job(s.id).job.options["due"]) for s in fired)
    assert len(dues) == len(set(dues)) >= 8  # each due time once
    gaps = [(b - a).total_seconds() for a, b in pairwise(dues)]
    assert max(gaps) <= 2.0, gaps  # none missed by more than one interval
    for summary in fired:  # fired on time: created within a second of its due time
        result = jobs.get_job(summary.id)
        due = datetime.fromisoformat(result.job.options["due"])
        assert 0 <= result.summary.created_at - due.timestamp() < 1.0
    runs = Counter(job_id for job_id, _ in workers.run_lines())
    completed = [s.id for s in fired if s.state is JobState.COMPLETED]
    assert all(runs[job_id] == 1 for job_id in completed)


def test_worker_killed_during_a_drain_loses_no_job(workers: Workers, app: Flask) -> None:
    started = [workers.start(lease_seconds=1) for _ in range(3)]
    for worker in started:
        worker.wait_ready()
    victim, survivors = started[0], started[1:]
    ids = [jobs.enqueue_command("record").id for _ in range(2000)]
    wait_until(lambda: len(workers.run_lines()) >= 300, timeout=20)
    victim.process.kill()
    victim.process.wait(timeout=10)

    wait_until(lambda: count_in_state(JobState.COMPLETED) == 2000, timeout=30, interval=0.1)
    assert count_in_state(JobState.QUEUED) == count_in_state(JobState.STARTED) == 0

    runs = workers.run_lines()
    assert {job_id for job_id, _ in runs} == set(ids)
    ran = Counter(job_id for job_id, _ in runs)
    recovered = set()
    for job_id in ids:
        result = jobs.get_job(job_id)
        assert result is not None and result.completed is not None, (job_id, result)
        if result.completed.history:  # it was claimed by the victim when it died
            [lost] = result.completed.history
            assert lost.error_type == "WorkerLostError"
            assert lost.worker_process == victim.owner()
            assert result.completed.attempts == 2
            assert result.completed.worker_process != victim.owner()
            recovered.add(job_id)
        else:
            assert result.completed.attempts == 1
    # At least once: a job runs twice only if the victim ran it and died before recording it,
    # and then its first run is the victim's.
    for job_id, count in ran.items():
        if count > 1:
            assert count == 2 and job_id in recovered, job_id
            assert next(pid for one, pid in runs if one == job_id) == victim.pid
    for worker in survivors:
        assert worker.terminate() == 0, worker.output()


# -- a worker killed mid-job -------------------------------------------------------------------


def test_killed_worker_job_is_recovered_and_completes_on_attempt_2(
    workers: Workers, app: Flask
) -> None:
    marker, release = workers.tmp_path / "blocked", workers.tmp_path / "never"
    job_id = jobs.enqueue_command(
        "block_first_attempt", {"marker": str(marker), "release": str(release)}
    ).id
    first = workers.start(lease_seconds=1)
    first.wait_for_file(marker)
    assert marker.read_text() == str(first.pid)
    first_owner = first.owner()

    # Alive, the first worker keeps renewing its 1 s lease while the job blocks.
    claimed = jobs.get_job(job_id)
    assert claimed is not None and claimed.queued is not None
    assert claimed.queued.started_at is not None
    first_started = claimed.queued.started_at

    def lease_renewed() -> bool:
        result = jobs.get_job(job_id)
        assert result is not None and result.queued is not None
        assert result.queued.state is JobState.STARTED
        assert result.queued.attempts == 1
        assert result.queued.lease_owner == first_owner
        return (result.queued.lease_expires_at or 0) > first_started + 2

    wait_until(lease_renewed, timeout=10)

    first.process.kill()
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    second = workers.start(lease_seconds=1)
    result = jobs.wait_for(job_id, timeout=20)

    assert result.state is JobState.COMPLETED, result.summary
    assert result.completed is not None
    assert result.completed.attempts == 2
    assert result.summary.attempts == 2
    assert result.result == {"attempt": 2, "pid": second.pid}
    assert result.completed.worker_process == second.owner()

    [lost] = result.completed.history
    assert lost.number == 1
    assert lost.error_type == "WorkerLostError"
    assert "lease expired" in (lost.error_message or "")
    assert lost.worker_process == first_owner  # the process that died, not the one recovering
    assert lost.started_at == first_started
    assert lost.ended_at is not None and lost.ended_at >= first_started + 2

    assert second.terminate() == 0, second.output()
    assert "recovered 1 job(s) of lost worker processes" in second.output()


# -- SIGTERM while a job runs ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(
    workers: Workers, app: Flask, sig: signal.Signals
) -> None:
    marker = workers.tmp_path / "slow-started"
    slow_id = jobs.enqueue_command("slow", {"marker": str(marker), "seconds": 1.0}).id
    worker = workers.start("--threads", "1")
    worker.wait_for_file(marker)
    assert marker.read_text() == str(worker.pid)

    # The only thread is busy: these wait in the queue behind the slow job.
    waiting = [jobs.enqueue_command("record").id for _ in range(5)]
    sent_at = time.time()
    assert worker.terminate(sig=sig) == 0, worker.output()
    output = worker.output()
    assert f"received {sig.name}: stopping" in output
    assert "handed" not in output  # the slow job was not given back to the queue

    result = jobs.get_job(slow_id)
    assert result is not None
    assert result.state is JobState.COMPLETED, result.summary
    assert result.completed is not None
    assert result.completed.attempts == 1
    assert result.completed.history == []
    assert result.result == {"slept": 1.0, "pid": worker.pid}
    assert result.completed.completed_at is not None
    assert result.completed.completed_at > sent_at  # it ran on after the signal

    # Nothing was claimed after the signal, though the thread was free again.
    assert workers.run_lines() == []
    for job_id in waiting:
        queued = jobs.get_job(job_id)
        assert queued is not None and queued.queued is not None
        assert queued.state is JobState.QUEUED
        assert queued.queued.attempts == 0
        assert queued.queued.lease_owner is None

    # And they are still runnable: the next worker runs each of them once.
    after = workers.start()
    wait_until(lambda: len(workers.run_lines()) == len(waiting), timeout=15)
    assert sorted(job_id for job_id, _ in workers.run_lines()) == waiting
    for job_id in waiting:
        assert jobs.wait_for(job_id, timeout=10).state is JobState.COMPLETED
    assert after.terminate() == 0, after.output()


# -- stopping jobs that run in another process ---------------------------------------------------


def test_cancel_from_another_process_stops_the_running_job(workers: Workers, app: Flask) -> None:
    marker, release = workers.tmp_path / "blocked", workers.tmp_path / "never"
    job_id = jobs.enqueue_command(
        "block_first_attempt", {"marker": str(marker), "release": str(release)}
    ).id
    worker = workers.start()
    worker.wait_for_file(marker)

    cancelled = app.test_cli_runner().invoke(args=["jobs", "cancel", str(job_id)])
    assert cancelled.exit_code == 0, cancelled.output
    result = jobs.wait_for(job_id, timeout=10)  # the worker sees the request and stops the job

    assert result.state is JobState.CANCELLED, result.summary
    assert result.failed is not None
    assert result.failed.error_type == "JobCancelled"
    assert result.failed.attempts == 1
    assert result.failed.worker_process == worker.owner()
    assert worker.process.poll() is None  # the worker lives on and still runs jobs
    ran = jobs.enqueue_command("record").id
    assert jobs.wait_for(ran, timeout=10).state is JobState.COMPLETED
    assert workers.run_lines() == [(ran, worker.pid)]
    assert worker.terminate() == 0, worker.output()


@pytest.mark.parametrize("cooperative", [True, False], ids=["cooperative", "uncooperative"])
def test_sigterm_with_no_stop_timeout_hands_the_running_job_back(
    workers: Workers, app: Flask, cooperative: bool
) -> None:
    marker = workers.tmp_path / "started"
    if cooperative:  # watches current_job.cancelled: it ends when asked
        request = {"marker": str(marker), "release": str(workers.tmp_path / "never")}
        job_id = jobs.enqueue_command("block_first_attempt", request).id
    else:  # sleeps on: its thread is given up on after the grace period
        job_id = jobs.enqueue_command("slow", {"marker": str(marker), "seconds": 60}).id
    worker = workers.start("--stop-timeout", "0")
    worker.wait_for_file(marker)

    assert worker.terminate(timeout=15) == 0, worker.output()
    result = jobs.get_job(job_id)
    assert result is not None and result.queued is not None
    assert result.state is JobState.QUEUED, worker.output()
    assert result.queued.attempts == 0  # a handed-back run does not count as an attempt
    assert result.queued.history == []
    assert result.queued.lease_owner is None
    assert result.queued.started_at is None
    if not cooperative:
        assert "handed 1 running job(s) back to the queue" in worker.output()
