"""Faults (issue #8): killed and stopped workers, a locked or full disk, damaged files, clock jumps.

Real ``flask jobs worker`` processes, real SQLite files, a real tmpfs for the full disk; fault
points that timing alone cannot hit are armed in the worker processes by the test app
``tests.apps.chaos_app`` (never by the library). Every process and thread a test starts is
stopped and waited for in a ``finally`` or a fixture's teardown. The figures each test prints
(``-s`` shows them) are those of ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_bgjobs import JobState

from .apps.chaos_app import EXECUTIONS_SCHEMA
from .apps.queue_app import jobs
from .conftest import wait_until
from .workers import Worker, Workers

pytestmark = pytest.mark.chaos

CHAOS_APP = "tests.apps.chaos_app:create_app"


# -- worker processes ------------------------------------------------------------------------------


class Fleet:
    """Worker processes of ``tests.apps.chaos_app`` on one instance folder.

    :meth:`close` kills and reaps whatever still runs; the fixture calls it whatever happened.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.instance = tmp_path / "instance"
        self.executions = tmp_path / "executions.db"
        self.deaths = tmp_path / "deaths.txt"
        self.workers = Workers(
            tmp_path,
            CHAOS_APP,
            {
                "CHAOS_EXECUTIONS": str(self.executions),
                "CHAOS_DEATHS": str(self.deaths),
            },
        )
        conn = sqlite3.connect(self.executions, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(EXECUTIONS_SCHEMA)
        conn.close()

    @property
    def procs(self) -> list[Worker]:
        return self.workers.started

    def start(self, *args: str, die_at: str | None = None, **settings: Any) -> Worker:
        return self.workers.start(*args, die_at=die_at, **settings)

    def close(self) -> None:
        self.workers.close()

    def runs(self) -> dict[int, list[tuple[int, int, str]]]:
        """``job id -> [(attempt, pid, phase), ...]`` of every ``chaos`` run, in order."""
        conn = sqlite3.connect(self.executions, timeout=30)
        try:
            rows = conn.execute(
                "SELECT job_id, attempt, pid, phase FROM execution ORDER BY rowid"
            ).fetchall()
        finally:
            conn.close()
        found: dict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for job_id, attempt, pid, phase in rows:
            found[job_id].append((attempt, pid, phase))
        return found

    def death_notes(self) -> list[tuple[str, int, list[int]]]:
        """``(point, pid, job ids)`` of each process a fault hook killed."""
        if not self.deaths.exists():
            return []
        notes = []
        for line in self.deaths.read_text().splitlines():
            point, pid, *ids = line.split()
            notes.append((point, int(pid), [int(job_id) for job_id in ids]))
        return notes


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def app(fleet: Fleet) -> Iterator[Flask]:
    """The workers' app in this process: it enqueues, reads and serves the admin pages."""
    from .apps.chaos_app import create_app

    made = create_app(fleet.instance)
    made.config["TESTING"] = True  # the admin pages answer in testing mode
    with made.app_context():
        yield made
        jobs.store().dispose()


def pid_of(owner: str | None) -> int:
    """The pid in a runner's process id ``host:pid:uuid``."""
    assert owner is not None
    return int(owner.split(":")[1])


def admin_ids(app: Flask, kind: str = "completed") -> list[int]:
    """Every job id the admin list of ``kind`` shows, over every month and page (its JSON).

    Each page is checked to show a job once; pages read while jobs finish may overlap.
    """
    client = app.test_client()
    months = client.get("/admin/jobs/api/months").get_json()["months"]
    ids: list[int] = []
    for month in months:
        page = 1
        while True:
            answer = client.get(
                f"/admin/jobs/api/{kind}", query_string={"month": month, "per_page": 200,
                                                         "page": page}
            )  # fmt: skip
            assert answer.status_code == 200, answer.get_data(as_text=True)
            body = answer.get_json()
            shown = [row["id"] for row in body["jobs"]]
            assert len(shown) == len(set(shown)), shown
            ids += shown
            if page >= body["pages"]:
                break
            page += 1
    return ids


def stuck_report(fleet: Fleet) -> str:
    """The jobs not completed yet, with their leases, and the tail of each live worker's log."""
    lines = []
    now = time.time()
    for summary in jobs.list_jobs(limit=1_000_000):
        if summary.state is JobState.COMPLETED:
            continue
        result = jobs.get_job(summary.id)
        queued = result.queued if result else None
        lines.append(
            f"job {summary.id}: {summary.state.value} attempts={summary.attempts} "
            + (f"owner={queued.lease_owner} lease_in={(queued.lease_expires_at or now) - now:.1f}"
               f" run_after_in={(queued.run_after or now) - now:.1f}" if queued else "")
        )  # fmt: skip
    for proc in fleet.procs:
        if proc.process.poll() is None:
            lines.append(f"--- worker {proc.pid} ({proc.die_at}):\n{proc.output()[-3000:]}")
    return "\n".join(lines)


# -- 1. SIGKILL at random points of a 2,000-job run -----------------------------------------------

CHAOS_JOBS = 2000
CHAOS_SEED = 8
#: Fault points of the hook, and the range of "the n-th time" each kills at.
HOOKED = {"claim-tx": (1, 12), "claim": (1, 12), "run": (1, 40), "move": (1, 8), "lease": (1, 6)}


@pytest.mark.slow
def test_sigkill_at_random_points_of_a_2000_job_run_loses_no_job_and_repeats_only_lost_runs(
    fleet: Fleet, app: Flask
) -> None:
    rng = random.Random(CHAOS_SEED)
    settings = {"lease_seconds": 1, "retry_limit": 50, "retry_backoff": 0.01}
    slots = 3
    plan = [*HOOKED, None]  # None: no hook; the test's own SIGKILL at a random moment
    kills: Counter[str] = Counter()
    killed_pids: set[int] = set()
    move_windows_seen = 0
    began = time.monotonic()

    def start(slot_plan: str | None) -> Worker:
        die_at = None
        if slot_plan is not None:
            low, high = HOOKED[slot_plan]
            die_at = f"{slot_plan}:{rng.randint(low, high)}"
        return fleet.start(die_at=die_at, **settings)

    workers = [start(plan[i % len(plan)]) for i in range(slots)]
    ids: list[int] = []
    next_kill = time.monotonic() + rng.uniform(0.5, 1.5)
    seen_notes = 0
    turn = slots

    def completed() -> int:
        return len(jobs.list_jobs(state=JobState.COMPLETED, limit=1_000_000))

    # Enqueue in bursts while workers die and come back, until the kills stop at ~90 %.
    while True:
        if len(ids) < CHAOS_JOBS:
            burst = min(100, CHAOS_JOBS - len(ids))
            ids += [jobs.enqueue_command("chaos", {"ms": rng.randint(5, 90)}, retry_limit=50).id
                    for _ in range(burst)]  # fmt: skip
        done = completed()
        chaos_on = done < CHAOS_JOBS * 0.9 and time.monotonic() - began < 90
        for index, proc in enumerate(workers):
            if proc.process.poll() is None:
                continue
            # Died: by its hook (SIGKILL from itself) or by us.
            assert proc.process.returncode == -signal.SIGKILL, proc.output()
            killed_pids.add(proc.pid)
            if proc.die_at is not None and proc.pid in {pid for _, pid, _ in
                                                         fleet.death_notes()}:  # fmt: skip
                kills[proc.die_at.split(":")[0]] += 1
            turn += 1
            workers[index] = start(plan[turn % len(plan)] if chaos_on else None)
        if chaos_on and time.monotonic() >= next_kill:
            victim = rng.choice([p for p in workers if p.process.poll() is None] or workers)
            if victim.process.poll() is None and time.monotonic() - victim.started > 0.3:
                victim.process.kill()
                victim.process.wait(timeout=10)
                kills["random moment"] += 1
                victim.die_at = None  # counted as ours, whatever its hook
            next_kill = time.monotonic() + rng.uniform(0.4, 1.2)
        notes = fleet.death_notes()
        for point, _pid, job_ids in notes[seen_notes:]:
            if point == "move":
                # In the window of a cut move: each job is shown once, as running or completed
                # (once recovered), and the month's list never shows one still running.
                move_windows_seen += 1
                listed = set(admin_ids(app))
                for job_id in job_ids:
                    result = jobs.get_job(job_id)
                    assert result is not None
                    assert result.state in (JobState.STARTED, JobState.COMPLETED), result
                    if result.state is JobState.STARTED:
                        assert job_id not in listed
        seen_notes = len(notes)
        if len(ids) == CHAOS_JOBS and done == CHAOS_JOBS:
            break
        if time.monotonic() - began > 150:
            pytest.fail(f"stuck at {done} of {CHAOS_JOBS} completed:\n{stuck_report(fleet)}")
        time.sleep(0.1 if chaos_on else 0.3)
    elapsed = time.monotonic() - began

    for proc in workers:  # the survivors stop cleanly
        proc.process.send_signal(signal.SIGTERM)
    for proc in workers:
        assert proc.process.wait(timeout=60) == 0, proc.output()

    # -- nothing lost, nothing shown twice ---------------------------------------------------
    summaries = jobs.list_jobs(limit=1_000_000)
    assert Counter(s.id for s in summaries) == Counter(ids)
    assert {s.state for s in summaries} == {JobState.COMPLETED}
    listed = admin_ids(app)
    assert sorted(listed) == sorted(ids)  # each once in the month's list
    assert admin_ids(app, "failed") == []
    page = app.test_client().get("/admin/jobs/completed")
    assert page.status_code == 200 and "2,000 jobs" in page.get_data(as_text=True)

    # -- each job ran to the end once, or again after a run its dead process lost ------------
    runs = fleet.runs()
    notes = fleet.death_notes()
    dead = killed_pids | {pid for _, pid, _ in notes}
    rerun = lost_attempts = 0
    for job_id in ids:
        result = jobs.get_job(job_id)
        assert result is not None and result.state is JobState.COMPLETED
        assert result.queued is None and result.failed is None
        record = result.completed
        assert record is not None
        final_pid = pid_of(record.worker_process)
        mine = runs[job_id]
        ends = [(attempt, pid) for attempt, pid, phase in mine if phase == "end"]
        assert (record.attempts, final_pid) in ends, (job_id, mine, record)
        for attempt, pid, _phase in mine:
            if (attempt, pid) != (record.attempts, final_pid):
                assert pid in dead and attempt < record.attempts, (job_id, mine, record)
        assert len(ends) == len(set(ends))
        rerun += len(ends) > 1
        lost_attempts += len(record.history)
        # Every earlier attempt was lost with a process that died.
        assert record.attempts == len(record.history) + 1
        for lost in record.history:
            assert lost.error_type == "WorkerLostError", (job_id, lost)
            assert pid_of(lost.worker_process) in dead

    # What each hook cut short was dealt with as its point requires.
    for point, pid, job_ids in notes:
        for job_id in job_ids:
            result = jobs.get_job(job_id)
            assert result is not None and result.completed is not None
            lost_by = {pid_of(a.worker_process) for a in result.completed.history}
            ran_by = {p for _, p, _ in runs[job_id]}
            if point == "move":  # its run was recorded in the month: completed, never rerun
                assert len([r for r in runs[job_id] if r[2] == "end"]) == 1, runs[job_id]
                assert pid_of(result.completed.worker_process) == pid
            elif point == "claim-tx":  # the claim rolled back: no attempt of the dead process
                assert pid not in lost_by
            elif point == "claim":  # claimed, never started there, recovered as lost
                assert pid not in ran_by and lost_by and lost_by <= dead, (job_id, lost_by)
                # (as lost by that process, or by one that died while taking it over)
    assert all(kills[point] >= 1 for point in HOOKED), kills
    total = sum(kills.values())
    print(
        f"\nSIGKILL chaos: {CHAOS_JOBS} jobs completed in {elapsed:.1f} s through {total} kills "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(kills.items()))}); "
        f"{len(fleet.procs)} worker processes started; {rerun} jobs ran again after their "
        f"process died; {lost_attempts} attempts recovered as lost; {move_windows_seen} cut "
        "moves checked mid-run"
    )


# -- 2. SIGTERM in the middle of a drain ---------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_drain_finishes_or_hands_back_running_jobs_claims_nothing_and_loses_nothing(
    fleet: Fleet, app: Flask
) -> None:
    # tests/test_processes.py stops a worker running one job; here it drains many on several
    # threads: one job finishes within the stop timeout, one is handed back at its end, short
    # ones finish, nothing more is claimed, and the next worker runs each remaining job once.
    hold_release = fleet.tmp_path / "hold-release"
    long_release = fleet.tmp_path / "long-release"
    long_id = jobs.enqueue_command("chaos", {"release": str(long_release), "cooperative": True}).id
    hold_id = jobs.enqueue_command("chaos", {"release": str(hold_release)}).id
    drain = [jobs.enqueue_command("chaos", {"ms": 20, "cooperative": True}).id
             for _ in range(300)]  # fmt: skip
    first = fleet.start("--threads", "3", "--stop-timeout", "2", "--no-scheduler")

    def ended(pid: int) -> set[int]:
        return {job_id for job_id, rows in fleet.runs().items()
                if any(p == pid and phase == "end" for _, p, phase in rows)}  # fmt: skip

    def started_both() -> bool:
        if first.process.poll() is not None:
            pytest.fail(first.output())
        runs = fleet.runs()
        return bool(runs.get(long_id) and runs.get(hold_id)) and len(ended(first.pid)) >= 40

    wait_until(started_both, timeout=30, interval=0.05)
    sent_at = time.time()
    first.process.send_signal(signal.SIGTERM)
    hold_release.touch()  # the held job can end now: within the stop timeout
    assert first.process.wait(timeout=30) == 0, first.output()
    stopped_at = time.time()
    output = first.output()
    assert "received SIGTERM: stopping" in output and " stopped" in output
    assert stopped_at - sent_at < 2 + 0.5 + 3  # the stop timeout, one grace, some slack

    runs = fleet.runs()
    by_first = {job_id for job_id, rows in runs.items() if any(p == first.pid for _, p, _ in rows)}
    finished_first = ended(first.pid)
    # The held job finished in the stop window, recorded by the stopping worker.
    held = jobs.get_job(hold_id)
    assert held is not None and held.state is JobState.COMPLETED, held
    assert held.completed is not None and pid_of(held.completed.worker_process) == first.pid
    # The long one was asked to stop at the timeout and handed back: not an attempt.
    handed = jobs.get_job(long_id)
    assert handed is not None and handed.queued is not None, handed
    assert handed.state is JobState.QUEUED and handed.queued.attempts == 0
    assert handed.queued.history == [] and handed.queued.lease_owner is None
    assert long_id not in finished_first
    # Every other run of the stopping worker ended and was recorded by it.
    for job_id in by_first - {long_id}:
        result = jobs.get_job(job_id)
        assert result is not None and result.state is JobState.COMPLETED, (job_id, result)
        assert job_id in finished_first
    # No claim after the signal (the dispatcher may have been inside one claim then).
    conn = sqlite3.connect(fleet.executions)
    try:
        starts = conn.execute(
            "SELECT count(*) FROM execution WHERE pid = ? AND phase = 'start' AND at > ?",
            (first.pid, sent_at + 0.5),
        ).fetchone()[0]
    finally:
        conn.close()
    assert starts == 0
    left = [job_id for job_id in drain if job_id not in by_first]
    assert left, "the worker drained everything before the signal: nothing to check"
    for job_id in left:
        result = jobs.get_job(job_id)
        assert result is not None and result.state is JobState.QUEUED, result
        assert result.queued is not None and result.queued.attempts == 0

    # The next worker runs what is left, each job once; nothing was lost.
    long_release.touch()
    second = fleet.start("--threads", "3", "--no-scheduler")
    everything = [long_id, hold_id, *drain]
    wait_until(
        lambda: len(jobs.list_jobs(state=JobState.COMPLETED, limit=10_000)) == len(everything),
        timeout=60,
        interval=0.1,
    )
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=30) == 0, second.output()
    runs = fleet.runs()
    for job_id in everything:
        ends = [(a, p) for a, p, phase in runs[job_id] if phase == "end"]
        assert len(ends) == 1, (job_id, runs[job_id])
    finished = jobs.get_job(long_id)
    assert finished is not None and finished.completed is not None
    assert finished.completed.attempts == 1 and finished.completed.history == []
    assert pid_of(finished.completed.worker_process) == second.pid
    print(
        f"\nSIGTERM mid-drain: {len(finished_first)} jobs finished by the stopping worker "
        f"(1 of them released after the signal), 1 handed back, {len(left)} left queued and "
        f"run once by the next worker; exit code 0 after {stopped_at - sent_at:.2f} s"
    )


# -- 3. jobs.db locked by another process for 10 s -------------------------------------------------

LOCK_SECONDS = 10.0
ENQUEUE_BOUND = 2.0  # BGJOBS_SQLITE_BUSY_TIMEOUT of the enqueuing app: shorter than the lock

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
print("released", flush=True)
"""


@pytest.mark.slow
def test_jobs_db_locked_for_10_s_enqueue_raises_after_its_bound_and_workers_catch_up(
    fleet: Fleet, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_bgjobs import DatabaseBusyError

    from .apps.chaos_app import create_app

    settings = {"lease_seconds": 2, "retry_backoff": 0.01}
    workers = [fleet.start("--no-scheduler", **settings) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    before = [jobs.enqueue_command("chaos", {"ms": 60}).id for _ in range(200)]
    wait_until(lambda: len(fleet.runs()) >= 20, timeout=30)

    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(fleet.instance / "jobs" / "jobs.db"),
         str(LOCK_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        workers.append(fleet.start("--no-scheduler", **settings))  # one starts in the lock
        # An app in this process with a 2 s bound, as a web process would enqueue.
        monkeypatch.setenv("BGJOBS_SQLITE_BUSY_TIMEOUT", str(ENQUEUE_BOUND))
        web = create_app(fleet.instance)
        with web.app_context():
            # Reading never waits for the lock, even in a process that never wrote the file.
            known = len(jobs.list_jobs(limit=10_000))
            assert known == len(before)
            waits = []
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(DatabaseBusyError, match="stayed locked") as raised:
                    jobs.enqueue_command("chaos", {"ms": 1})
                waits.append(time.monotonic() - started)
            assert "nothing was written" in str(raised.value)
            assert all(ENQUEUE_BOUND <= wait < ENQUEUE_BOUND + 1.5 for wait in waits), waits
            assert len(jobs.list_jobs(limit=10_000)) == known  # a refused job left no trace
            assert time.monotonic() - locked_at < LOCK_SECONDS  # all of it within the lock
            workers[-1].wait_ready()
            assert locker.wait(timeout=LOCK_SECONDS + 10) == 0
            for worker in workers:
                assert worker.process.poll() is None, worker.output()
            released_at = time.monotonic()
            after = [jobs.enqueue_command("chaos", {"ms": 1}).id for _ in range(20)]
            jobs.store().dispose()
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait(timeout=10)

    everything = before + after
    wait_until(
        lambda: len(jobs.list_jobs(state=JobState.COMPLETED, limit=10_000)) == len(everything),
        timeout=60,
        interval=0.1,
    )
    caught_up = time.monotonic() - released_at
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.process.wait(timeout=30) == 0, worker.output()
    logs = "".join(worker.output() for worker in workers)
    assert "DatabaseBusyError" in logs  # they met the lock, and went on
    assert len({pid for rows in fleet.runs().values() for _, pid, _ in rows}) == 3  # all ran
    runs = fleet.runs()
    repeated = {job_id: runs[job_id] for job_id in everything
                if [phase for _, _, phase in runs[job_id]].count("end") != 1}  # fmt: skip
    assert not repeated, repeated
    for job_id in everything:
        result = jobs.get_job(job_id)
        assert result is not None and result.completed is not None
        assert result.completed.history == [], (job_id, result.completed.history)
    print(
        f"\njobs.db locked {LOCK_SECONDS:g} s: enqueue refused after {min(waits):.2f}-"
        f"{max(waits):.2f} s (bound {ENQUEUE_BOUND:g} s); 3 workers (one started in the lock) "
        f"caught up with "
        f"{len(everything)} jobs {caught_up:.1f} s after the lock went, each run once"
    )


class HeldJob:
    """One ``hold`` job running on a runner of this process (``mine``), driven by hand; the job
    runs until :attr:`release` is set. :meth:`finish` records it and returns its result."""

    def __init__(self, app: Flask, bg: Any, now: Any = time.time) -> None:
        import threading

        self.bg = bg
        self.now = now  # the app's clock, as epoch seconds
        self.release = threading.Event()
        self.runs: list[int] = []

        @bg.command
        def hold() -> str:
            self.runs.append(1)
            self.release.wait(30)
            return "ran once"

        self.store = bg.store()
        self.mine = self.runner(app)
        self.ref = bg.enqueue_command("hold")
        self.mine.dispatch_once(self.now())
        wait_until(lambda: self.runs)

    def runner(self, app: Flask) -> Any:
        """Another runner on the same ``jobs.db``: another process, as far as leases go."""
        from flask_bgjobs.runner import Runner

        return Runner(self.bg, app, self.bg.settings(), self.store, threads=1, scheduler=False)

    def queued(self) -> Any:
        return self.bg.get_job(self.ref.id).queued

    def finish(self) -> Any:
        self.release.set()
        self.mine.complete_once([self.mine._completions.get(timeout=10)])
        return self.bg.wait_for(self.ref.id)

    def close(self) -> None:
        self.release.set()
        for lane in self.mine.lanes.values():
            lane.stop()
            lane.join(5)

    def check_ran_once(self, result: Any) -> None:
        assert self.runs == [1] and result.result == "ran once"
        assert result.completed.attempts == 1 and result.completed.history == []


def test_leases_that_lapsed_while_jobs_db_was_locked_are_not_taken_from_the_living(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lock outlasts the lease: no process could renew. The first to get the database back
    # must not take the jobs of the others (alive, renewing as soon as they can) for lost.
    import threading

    from flask_bgjobs.sqlite import SqliteOptions

    app, bg = make_app(lease_seconds=1.0, sqlite_busy_timeout=0.1)
    with app.app_context():
        held = HeldJob(app, bg)
        store, mine, ref = held.store, held.mine, held.ref
        # Two processes' runners, driven by hand so that the order is the worst one.
        other = held.runner(app)
        try:
            for runner in (mine, other):
                runner.supervise_once(time.time())
            locker = sqlite3.connect(store.queue.path, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            try:
                until = time.monotonic() + 1.6
                while time.monotonic() < until:  # both try to renew their leases, and cannot
                    for runner in (mine, other):
                        runner.supervise_once(time.time())
                    time.sleep(0.05)
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            lapsed = bg.get_job(ref.id).queued
            assert lapsed.lease_expires_at < time.time() and lapsed.lease_owner == mine.owner
            other.supervise_once(time.time())  # the other one gets the database back first
            assert bg.get_job(ref.id).queued.lease_owner == mine.owner
            until = time.monotonic() + 1.5
            while time.monotonic() < until:  # past the hold, the owner renewing meanwhile
                mine.supervise_once(time.time())
                other.supervise_once(time.time())
                assert bg.get_job(ref.id).queued.lease_owner == mine.owner
                time.sleep(0.05)

            # No error this time: both supervisors were held up (waiting in other writes for
            # the database, say) for longer than a lease. The first back waits as well.
            time.sleep(1.3)
            assert bg.get_job(ref.id).queued.lease_expires_at < time.time()
            other.supervise_once(time.time())
            assert bg.get_job(ref.id).queued.lease_owner == mine.owner
            mine.supervise_once(time.time())
            assert bg.get_job(ref.id).queued.lease_expires_at > time.time()

            # A heartbeat that waited longer than a lease for the lock writes leases counted
            # from after the wait, not ones that lapsed already.
            monkeypatch.setattr(store.queue, "options", SqliteOptions(busy_timeout=5.0))
            locker = sqlite3.connect(store.queue.path, isolation_level=None,
                                     check_same_thread=False)  # fmt: skip
            locker.execute("BEGIN IMMEDIATE")
            unlock = threading.Timer(1.5, lambda: locker.execute("ROLLBACK"))
            unlock.start()
            try:
                mine.heartbeat(time.time())
            finally:
                unlock.join()
                locker.close()
            assert bg.get_job(ref.id).queued.lease_expires_at > time.time()
            result = held.finish()
        finally:
            held.close()
    held.check_ran_once(result)


def test_a_process_started_just_after_leases_lapsed_takes_nothing_from_the_living(
    make_app: Any, clock: Any
) -> None:
    # A new worker has not seen the others renew: the lease of a live job that lapsed just
    # before (its supervisor held up) is not taken at the newcomer's first looks.
    app, bg = make_app(clock=clock, lease_seconds=1.0)

    def now() -> float:
        return float(clock().timestamp())

    with app.app_context():
        held = HeldJob(app, bg, now)
        newcomer = held.runner(app)
        try:
            held.mine.supervise_once(now())
            clock.advance(seconds=1.2)  # mine is held up: its lease lapses while it lives
            assert held.queued().lease_expires_at < now()
            newcomer.start()
            for _ in range(3):  # its first looks (its supervisor thread looks as well)
                newcomer.supervise_once(now())
                assert held.queued().lease_owner == held.mine.owner
            held.mine.supervise_once(now())  # back: it renews
            assert held.queued().lease_expires_at > now()
            result = held.finish()
        finally:
            newcomer.stop(timeout=5)
            held.close()
    held.check_ran_once(result)


# -- 4. disk full ---------------------------------------------------------------------------------


class FullDisk:
    """A small tmpfs the test fills and frees (``tmpfs``), or, where mounting is not permitted,
    SQLite's "database or disk is full" raised at the engine's write path (``injected``)."""

    def __init__(self, root: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.kind = kind
        self.filler = root / "filler"
        self.full = False
        self.mounted = False
        root.mkdir(parents=True, exist_ok=True)
        if kind == "tmpfs":
            mount = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(root)],
                capture_output=True,
                text=True,
            )
            if mount.returncode != 0:
                pytest.skip(
                    "cannot mount a tmpfs here (needs root, or CAP_SYS_ADMIN): "
                    f"{mount.stderr.strip()}; the 'injected' case fails the writes instead"
                )
            self.mounted = True
        else:
            from flask_bgjobs.sqlite import WriteTx

            def refuse(original: Any) -> Any:
                def write(tx: WriteTx, *args: Any) -> Any:
                    if self.full:
                        raise sqlite3.OperationalError("database or disk is full")
                    return original(tx, *args)

                return write

            monkeypatch.setattr(WriteTx, "execute", refuse(WriteTx.execute))
            monkeypatch.setattr(WriteTx, "executemany", refuse(WriteTx.executemany))

    def fill(self) -> None:
        self.full = True
        if self.kind != "tmpfs":
            return
        with self.filler.open("wb", buffering=0) as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
            except OSError:
                pass
        with self.filler.open("ab", buffering=0) as out:  # the last few blocks too
            try:
                while True:
                    out.write(b"\0" * 512)
            except OSError:
                pass
        assert os.statvfs(self.root).f_bavail == 0

    def free(self) -> None:
        self.full = False
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            result = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if result.returncode != 0:  # something still open: detach it anyway
                subprocess.run(["umount", "-l", str(self.root)], check=True)
            self.mounted = False


@pytest.fixture(params=["tmpfs", "injected"])
def full_disk(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FullDisk]:
    disk = FullDisk(tmp_path / "disk", request.param, monkeypatch)
    try:
        yield disk
    finally:
        disk.unmount()


def test_disk_full_enqueue_raises_the_logger_keeps_its_buffer_and_both_recover(
    full_disk: FullDisk, clock: Any
) -> None:
    import threading

    from flask_bgjobs import BackgroundJobs, StorageError

    from .apps.logs_app import create_app as create_logs_app

    app = Flask("full", instance_path=str(full_disk.root / "jobs-app"))
    app.config.update(TESTING=True, BGJOBS_AUTOSTART=False, BGJOBS_POLL_INTERVAL=0.01,
                      BGJOBS_RETRY_BACKOFF=0.01)  # fmt: skip
    bg = BackgroundJobs(app)
    release = threading.Event()
    bg.command(lambda n: n, name="echo")

    @bg.command
    def held() -> str:
        release.wait(30)
        return "recorded after all"

    logs_app, logs = create_logs_app(full_disk.root / "logs-app", clock=clock, flush_interval=0.05)
    client = logs_app.test_client()

    def log_stats() -> dict[str, Any]:
        with logs_app.app_context():
            return logs.stats()

    try:
        with app.app_context():
            bg.start()
            assert bg.wait_for(bg.enqueue_command("echo", 0).id).result == 0
            waiting = bg.enqueue_command("held").id
            for number in range(20):
                assert client.get(f"/items/{number}").status_code == 200
            wait_until(lambda: log_stats()["written"] == 20)

            full_disk.fill()
            # Enqueue: each call stores its job or raises a clear error, never a silent loss.
            stored, refused = [], []
            for n in range(1, 200):
                try:
                    stored.append(bg.enqueue_command("echo", n))
                except StorageError as error:
                    refused.append(error)
                    if len(refused) == 3:
                        break
            assert len(refused) == 3, "the full disk never refused an enqueue"
            assert all("disk is full" in str(error) for error in refused), refused
            assert "nothing was written" in str(refused[0])
            release.set()  # it ends now; its outcome cannot be written yet
            # The logged app keeps serving; its entries wait in the buffer.
            for number in range(50):
                assert client.get(f"/items/{number}").status_code == 200
            with logs_app.app_context(), pytest.raises(StorageError, match="disk is full"):
                logs.flush()
            wait_until(lambda: log_stats()["failures"] >= 3)  # the timer retries
            assert log_stats()["pending"] == 50 and log_stats()["dropped"] == 0
            assert bg.get_job(waiting).state is JobState.STARTED  # not recorded: kept, retried

            full_disk.free()
            wait_until(lambda: log_stats()["pending"] == 0, timeout=10)
            with logs_app.app_context():
                assert logs.query(limit=1).total == 70
            assert bg.wait_for(waiting, timeout=10).result == "recorded after all"
            for ref in stored:
                assert bg.wait_for(ref.id).state is JobState.COMPLETED
            after = bg.enqueue_command("echo", 999)
            assert bg.wait_for(after.id).result == 999
            summaries = bg.list_jobs(limit=1000)
            assert len(summaries) == 2 + len(stored) + 1  # the refused ones left no trace
            print(
                f"\ndisk full ({full_disk.kind}): {len(stored)} enqueues stored before the first "
                f"refusal, 3 refused with StorageError; 50 requests kept through "
                f"{log_stats()['failures']} failed flushes, all written once space returned"
            )
    finally:
        release.set()
        with app.app_context():
            bg.stop(timeout=5)
            bg.store().dispose()
        with logs_app.app_context():
            logs.stop()
            logs.store().dispose()


# -- 5. a month's file deleted or overwritten while the app runs -----------------------------------


def _garble(path: Path) -> None:
    """Overwrite ``path`` in place with random bytes, as a disk or a stray process might."""
    size = max(path.stat().st_size, 8192)
    with path.open("r+b") as file:
        file.write(random.Random(path.name).randbytes(size))


def test_a_jobs_month_file_deleted_or_garbled_is_recreated_and_the_admin_reports_the_damage(
    make_app: Any, clock: Any
) -> None:
    app, bg = make_app(clock=clock)
    bg.command(lambda n: n, name="echo")
    client = app.test_client()
    with app.app_context():
        bg.start()
        month = bg.store().history.current_month()
        path = bg.store().history.path_for(month)
        first = [bg.wait_for(bg.enqueue_command("echo", n).id).completed for n in range(5)]
        assert path.exists() and all(record is not None for record in first)

        # Deleted while in use (its -wal and -shm stay, as after `rm jobs_2026-03.db`).
        path.unlink()
        assert client.get("/admin/jobs/").status_code == 200
        page = client.get(f"/admin/jobs/completed?month={month}")
        assert page.status_code == 200 and "it has no file" in page.get_data(as_text=True)
        gone = bg.get_job(first[0].id)
        assert gone is not None and gone.state is JobState.COMPLETED and gone.completed is None
        second = [bg.wait_for(bg.enqueue_command("echo", n).id) for n in range(5)]
        assert path.exists()  # the next write created the month anew
        assert all(r.completed is not None and r.result == n for n, r in enumerate(second))
        assert sorted(admin_ids(app)) == sorted(r.summary.id for r in second)

        # Overwritten with garbage while in use.
        _garble(path)
        for url in (f"/admin/jobs/completed?month={month}", "/admin/jobs/"):
            page = client.get(url)
            text = page.get_data(as_text=True)
            assert page.status_code == 200 and 'id="damaged"' in text, text
            assert "is damaged" in text
        api = client.get(f"/admin/jobs/api/completed?month={month}").get_json()
        assert "is damaged" in api["damaged"] and api["jobs"] == []
        detail = client.get(f"/admin/jobs/job/{second[0].summary.id}")
        assert detail.status_code == 503 and "is damaged" in detail.get_data(as_text=True)
        assert client.get("/admin/jobs/queue").status_code == 200  # jobs.db is fine
        third = [bg.wait_for(bg.enqueue_command("echo", n).id) for n in range(5)]
        assert all(r.completed is not None and r.result == n for n, r in enumerate(third))
        aside = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
        assert [p.name for p in aside if not p.name.endswith(("-wal", "-shm"))], aside
        assert sorted(admin_ids(app)) == sorted(r.summary.id for r in third)
        page = client.get(f"/admin/jobs/completed?month={month}")
        assert page.status_code == 200 and 'id="damaged"' not in page.get_data(as_text=True)
        assert bg.store().history.months() == [month]  # the set-aside file is not a month


def test_a_damaged_month_found_at_opening_is_set_aside_but_a_plain_database_never(
    tmp_path: Path, clock: Any
) -> None:
    from flask_bgjobs import DatabaseDamagedError
    from flask_bgjobs.sqlite import Database, MonthlyDatabase

    from ._procs import SCHEMA

    def insert(tx: Any) -> None:
        tx.execute("INSERT INTO row (writer, seq) VALUES ('t', 1)")

    def rows(database: Database) -> int:
        with database.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM row").scalar_one())

    # A month garbled while no connection had it open (as a new process finds it).
    months = MonthlyDatabase(tmp_path / "m", "m", SCHEMA, clock=clock)
    with months.write() as tx:
        insert(tx)
    month = months.current_month()
    months.dispose()
    _garble(months.path_for(month))
    fresh = MonthlyDatabase(tmp_path / "m", "m", SCHEMA, clock=clock)
    try:
        damaged = fresh.existing(month)
        assert damaged is not None
        with pytest.raises(DatabaseDamagedError, match="the next write moves it aside"):
            rows(damaged)
        assert not list((tmp_path / "m").glob("*.corrupt-*"))  # a read moves nothing
        with fresh.write() as tx:
            insert(tx)
        assert rows(damaged) == 1 and fresh.months() == [month]
        assert len(list((tmp_path / "m").glob("m_*.db.corrupt-*"))) == 1
    finally:
        fresh.dispose()

    # jobs.db and other plain databases are never moved: every write says what to do.
    plain = Database(tmp_path / "plain.db", SCHEMA)
    try:
        with plain.write() as tx:
            insert(tx)
        _garble(plain.path)
        for _ in range(2):
            with pytest.raises(DatabaseDamagedError, match="restore it from a backup"):
                with plain.write() as tx:
                    insert(tx)
        with pytest.raises(DatabaseDamagedError):
            rows(plain)
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("plain")) == [
            "plain.db", "plain.db-shm", "plain.db-wal"
        ]  # fmt: skip
    finally:
        plain.dispose()


def test_a_request_log_month_deleted_or_garbled_is_recreated_and_the_grid_reports_it(
    make_logs: Any,
) -> None:
    app, logs = make_logs()
    client = app.test_client()
    with app.app_context():
        for number in range(10):
            assert client.get(f"/items/{number}").status_code == 200
        assert logs.flush() == 10
        store = logs.store()
        path = store.files.path_for(store.current_month())

        path.unlink()
        for number in range(5):
            assert client.get(f"/items/{number}").status_code == 200  # the app keeps serving
        assert client.get("/admin/requests/").status_code == 200
        assert logs.flush() == 5
        assert path.exists() and logs.query(limit=100).total == 5

        _garble(path)
        for number in range(7):
            assert client.get(f"/items/{number}").status_code == 200
        grid = client.get("/admin/requests/")
        text = grid.get_data(as_text=True)
        assert grid.status_code == 200 and 'id="damaged"' in text and "is damaged" in text
        assert logs.flush() == 7  # moved aside, started anew, written
        assert logs.query(limit=100).total == 7
        assert list(path.parent.glob(f"{path.name}.corrupt-*"))
        grid = client.get("/admin/requests/")
        assert grid.status_code == 200 and 'id="damaged"' not in grid.get_data(as_text=True)


# -- 6. clock jumps --------------------------------------------------------------------------------


def test_clock_jumps_fire_each_due_time_once_and_lose_none_beyond_the_misfire_policy(
    make_app: Any, clock: Any, tmp_path: Path
) -> None:
    from datetime import datetime, timedelta

    from flask_bgjobs import BackgroundJobs, ManualClock, Schedule

    app, bg = make_app(clock=clock)
    bg.command(lambda: None, name="work")
    tasks = {
        "minute-one": dict(schedule=Schedule.interval(timedelta(minutes=1))),
        "five-all": dict(schedule=Schedule.cron("*/5 * * * *"), catch_up="all"),
        "hour-skip": dict(schedule=Schedule.hourly, catch_up="skip"),
    }
    for name, spec in tasks.items():  # overlap: no runner runs the jobs, they stay queued
        bg.recurring_command("work", spec.pop("schedule"), name=name, overlap=True, **spec)
    # A second scheduler on the same jobs.db whose clock is an hour behind.
    behind = ManualClock(clock() - timedelta(hours=1))
    other_app = Flask("other", instance_path=app.instance_path)
    other_app.config.update(TESTING=True, BGJOBS_AUTOSTART=False)
    other = BackgroundJobs(other_app, clock=behind)
    other.command(lambda: None, name="work")

    def tick_both() -> None:
        with other_app.app_context():
            assert other.tick(behind()) == []  # its clock is behind: nothing is due for it
        with app.app_context():
            bg.tick(clock())

    def dues(name: str) -> list[datetime]:
        with app.app_context():
            made = bg.list_jobs(args={"scheduled_task": name}, limit=10_000)
            results = [bg.get_job(s.id) for s in made]
            return sorted(datetime.fromisoformat(r.job.options["due"]) for r in results if r)

    try:
        start = clock()
        for _ in range(10):  # ten minutes of normal time
            clock.advance(minutes=1)
            behind.advance(minutes=1)
            tick_both()
        assert len(dues("minute-one")) == 10 and len(dues("five-all")) == 2
        before_jump = {name: dues(name) for name in tasks}

        clock.advance(days=1)  # forward a day: 1,440 minute due times missed, 288 five-minute
        tick_both()
        tick_both()  # the same time again fires nothing more
        jumped = clock()
        minute = dues("minute-one")
        assert minute[:10] == before_jump["minute-one"] and minute[10:] == [jumped]  # "one"
        five = dues("five-all")[2:]
        assert len(five) == 50  # "all", bounded: the first 49 missed and the latest
        assert five[:49] == [start + timedelta(minutes=15 + 5 * n) for n in range(49)]
        assert five[-1] == jumped
        assert dues("hour-skip") == before_jump["hour-skip"] == []  # "skip": missed ones dropped
        with app.app_context():
            skip = next(t for t in bg.recurring_tasks() if t.name == "hour-skip")
        assert skip.skipped == 1 and skip.last_skip_reason == "missed"

        clock.set(clock() - timedelta(hours=1))  # back an hour
        for _ in range(70):  # the hour again, then ten minutes past the jump
            clock.advance(minutes=1)
            tick_both()
        for name in tasks:
            found = dues(name)
            assert len(found) == len(set(found)), name  # never twice for one due time
        minute = dues("minute-one")
        assert minute[11:] == [jumped + timedelta(minutes=n) for n in range(1, 11)]  # none lost
        assert dues("five-all")[52:] == [
            jumped + timedelta(minutes=5),
            jumped + timedelta(minutes=10),
        ]
        fired = sum(len(dues(name)) for name in tasks)
        print(f"\nclock jumps: {fired} scheduled jobs, each due time once (2 schedulers)")
    finally:
        with other_app.app_context():
            other.store().dispose()


def test_clock_jumps_neither_take_a_live_lease_nor_strand_a_dead_one(
    make_app: Any, clock: Any
) -> None:
    import threading
    from datetime import timedelta

    from flask_bgjobs import current_job
    from flask_bgjobs.runner import Runner

    lease = 4.0
    app, bg = make_app(clock=clock, lease_seconds=lease)
    release = threading.Event()
    holding: list[int] = []

    @bg.command
    def hold() -> int:
        holding.append(current_job.id)
        release.wait(30)
        return current_job.attempt

    bg.command(lambda: "done", name="work")

    def job(job_id: int) -> Any:
        result = bg.get_job(job_id)
        assert result is not None
        return result

    try:
        with app.app_context():
            store = bg.store()
            dead = bg.enqueue_command("work").id
            # A process that claimed it and died: nobody renews its lease.
            assert store.claim("dead-host:1:a", {None: 1}, clock().timestamp(), lease).jobs
            bg.start()
            mine = bg._state().runner
            live = bg.enqueue_command("hold").id
            wait_until(lambda: live in holding)
            # Another process's runner, driven by hand (never started): the worst order of all.
            other = Runner(bg, app, bg.settings(), store, threads=1, scheduler=False)
            other.supervise_once(clock().timestamp())

            # Forward a day: every lease looks lapsed at once, the live one too.
            clock.advance(days=1)
            other.supervise_once(clock().timestamp())  # before this process renewed its lease
            assert job(live).queued.lease_owner == mine.owner
            wait_until(lambda: job(live).queued.lease_expires_at > clock().timestamp())
            assert job(dead).queued.lease_owner == "dead-host:1:a"  # recovery waits a moment

            def dead_recovered(job_id: int) -> bool:
                other.supervise_once(clock().timestamp())
                return job(job_id).queued is None or job(job_id).queued.lease_owner is None

            wait_until(lambda: dead_recovered(dead), timeout=10, interval=0.1)
            assert job(live).queued.lease_owner == mine.owner  # never taken from the living
            clock.advance(seconds=1)  # its retry is due (before the clock goes back: a retry
            results = {dead: bg.wait_for(dead)}  # due after the jump back waits the hour)

            # Back an hour: leases keep being renewed from the new time on, a job claimed
            # after the jump included, and a runner that starts now takes none of them.
            clock.set(clock() - timedelta(hours=1))
            later = bg.enqueue_command("hold").id
            wait_until(lambda: later in holding)
            dead_again = bg.enqueue_command("work", run_after=clock() + timedelta(seconds=10)).id
            claimed = store.claim("dead-host:2:b", {None: 1}, clock().timestamp() + 10, lease)
            assert [j.id for j in claimed.jobs[None]] == [dead_again]
            newcomer = Runner(bg, app, bg.settings(), store, threads=1, scheduler=False)
            for _ in range(int(lease * 4)):
                clock.advance(seconds=1)
                now = clock().timestamp()
                wait_until(
                    lambda: all(
                        job(j).queued.lease_expires_at >= clock().timestamp() + lease - 2
                        for j in (live, later)
                    ),
                    timeout=5,
                )
                newcomer.supervise_once(now)
                other.supervise_once(now)
                for job_id in (live, later):
                    assert job(job_id).queued.lease_owner == mine.owner, job(job_id).queued
            # Its lease lapsed in the new time: recovered (by whichever runner looked first).
            wait_until(lambda: dead_recovered(dead_again), timeout=10, interval=0.1)

            release.set()
            clock.advance(seconds=1)  # the lost jobs' retries are due
            results |= {job_id: bg.wait_for(job_id) for job_id in (live, later, dead_again)}
    finally:
        release.set()
    for job_id in (live, later):
        record = results[job_id].completed
        assert record.attempts == 1 and record.history == [] and record.result == 1
    for job_id in (dead, dead_again):
        record = results[job_id].completed
        assert record is not None and record.attempts == 2  # recovered once
        [lost] = record.history
        assert lost.error_type == "WorkerLostError" and lost.worker_process.startswith("dead-host")
    assert sorted(holding) == [live, later]  # each held job ran once
