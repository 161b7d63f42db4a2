"""The runner of one process: claims jobs, runs them on lanes, records how they ended.

Three threads besides the lanes:

- the dispatcher claims ready jobs for lanes with free threads; an enqueue in this process wakes
  it at once, other processes' enqueues are noticed by polling ``PRAGMA data_version``;
- the completer writes finished runs in batches (one month write and one queue write for all the
  runs that ended meanwhile), so that draining many short jobs costs few transactions;
- the supervisor enforces timeouts and cancellations, flushes live logs and progress, renews the
  leases of running jobs and recovers the jobs of processes that died.

Each loop's work is a method (``dispatch_once``, ``complete_once``, ``supervise_once``,
``recover_orphans``) that tests call directly with a controlled clock.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Flask

from .config import Settings, host_pid
from .errors import BgJobsError, WorkerLostError
from .execution import Execution, Lane
from .models import BackgroundJob, JobState
from .outcomes import cancelled, describe, failed_attempt, outcome_of, record
from .records import LiveState, Outcome
from .signals import job_started
from .store import ChangeWatcher, JobStore

if TYPE_CHECKING:
    from .extension import BackgroundJobs

logger = logging.getLogger("flask_bgjobs")

SUPERVISE_EVERY = 0.1  # seconds between timeout checks
LIVE_FLUSH_EVERY = 0.5  # seconds between writes of running jobs' logs and progress
ERROR_PAUSE = 0.5  # seconds a loop waits after an unexpected error before trying again
BATCH_LIMIT = 1000  # finished runs recorded in one go at most
CLOCK_JUMP = 2.0  # seconds the clock may move apart from the monotonic time between two looks


class Runner:
    """Worker threads of one app in one process (the web process or ``flask jobs worker``)."""

    def __init__(
        self,
        extension: BackgroundJobs,
        app: Flask,
        settings: Settings,
        store: JobStore,
        *,
        threads: int | None = None,
        workers: set[str] | None = None,
        pool: bool = True,
        scheduler: bool | None = None,
    ) -> None:
        self.extension = extension
        self.app = app
        self.settings = settings
        self.store = store
        self.pool_size = threads or settings.max_threads
        self.only_workers = workers  # None: every named worker
        host, pid = host_pid()
        now = self._now()
        self.process = {
            "id": f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
            "host": host,
            "pid": pid,
            "started_at": now,
            "heartbeat_at": now,
            "threads": self.pool_size if pool else 0,
            "workers": json.dumps(sorted(workers)) if workers is not None else None,
            "scheduler": 0,
            "stopped_at": None,
        }
        run_scheduler = settings.scheduler if scheduler is None else scheduler
        self.scheduler = extension.make_scheduler(app, self) if run_scheduler else None
        self.process["scheduler"] = int(self.scheduler is not None)
        self._lock = threading.Lock()
        self.lanes: dict[str | None, Lane] = {}
        if pool:
            # Short jobs are claimed up to three times the threads ahead (see Lane).
            self.lanes[None] = Lane(None, self.pool_size, self._on_done, 3 * self.pool_size)
        for name in workers or ():
            self.lanes[name] = Lane(name, 1, self._on_done)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._completions: queue.SimpleQueue[Execution | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, Execution] = {}
        self._transient: set[Execution] = set()
        self._last_live = self._last_beat = self._last_recover = 0.0
        self._last_look: tuple[float, float] | None = None  # (clock, monotonic) at the last look
        self._recovery_held_until = 0.0  # monotonic time
        self._beat_failed = False
        self._renewed_at: float | None = None  # monotonic time of the last renewal
        self.started = False

    @property
    def owner(self) -> str:
        """The id of this process in ``worker_process`` and in the leases it holds."""
        return str(self.process["id"])

    @property
    def in_this_process(self) -> bool:
        """False in a process forked from the one that made the runner."""
        return self.process["pid"] == os.getpid()

    def _now(self) -> float:
        return self.extension.now()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads (idempotent)."""
        with self._lock:
            if self.started:
                return
            self.started = True
        now = self._now()
        self._last_look = (now, time.monotonic())  # a clock jump from here on is noticed
        # A process that starts has not seen the others renew: leases that lapsed just before
        # (a lock-out longer than a lease that others lived through) may belong to live
        # processes. Recovery waits as it does after a jump (half a lease, at most 5 s).
        self._hold_recovery()
        try:
            self.heartbeat(now)
            self._renewed_at = time.monotonic()
        except Exception:  # e.g. jobs.db locked by another process: start all the same
            logger.exception("flask_bgjobs could not record this process; trying again")
            self._beat_failed = True
            self._last_beat = float("-inf")  # the supervisor tries at its first look
        for name, target in (
            ("dispatcher", self._dispatch_loop),
            ("completer", self._complete_loop),
            ("supervisor", self._supervise_loop),
        ):
            thread = threading.Thread(target=target, name=f"bgjobs-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        if self.scheduler is not None:
            self.scheduler.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, let running jobs finish for ``timeout`` s, hand the rest back."""
        with self._lock:
            # A forked child inherits the runner object but none of its threads or jobs.
            if not self.started or self._stopping.is_set() or not self.in_this_process:
                return
            self._stopping.set()
        self._wake.set()
        if self.scheduler is not None:
            self.scheduler.stop()
        self._threads[0].join()  # the dispatcher: no new claims from here on
        self._wait_idle(timeout)
        for execution in self.running():
            execution.request_stop("shutdown")
        self._wait_idle(min(1.0, self.settings.cancel_grace))
        self._hand_back(self.running())
        for lane in self.lanes.values():
            lane.stop()
        for lane in self.lanes.values():
            lane.join(timeout=1.0)
        self._completions.put(None)
        for thread in self._threads[1:]:
            thread.join()
        self.process["stopped_at"] = self._now()
        try:
            self.store.heartbeat(self.process, [], self._now())
        except Exception:
            logger.exception("flask_bgjobs could not record that this process stopped")

    def _wait_idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _hand_back(self, executions: list[Execution]) -> None:
        """Give runs that did not end back to the queue; their threads' results are ignored."""
        given = []
        for execution in executions:
            lane = self.lanes.get(execution.job.worker)
            if lane is not None and lane.abandon(execution):
                given.append(execution.job)
                self._forget(execution)
        if given:
            self.store.release(given)
            logger.warning("flask_bgjobs handed %d running job(s) back to the queue", len(given))

    def wake(self) -> None:
        """Make the dispatcher look for work now."""
        self._wake.set()

    def running(self) -> list[Execution]:
        """The runs of stored jobs this process has claimed and not yet recorded."""
        with self._lock:
            return list(self._running.values())

    # -- dispatching -------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        watcher: ChangeWatcher | None = None
        next_due: float | None = 0.0
        while not self._stopping.is_set():
            woken = self._wake.is_set()
            self._wake.clear()
            now = self._now()
            try:
                if watcher is None:
                    watcher = self.store.watch()
                if woken or watcher.changed() or (next_due is not None and now >= next_due):
                    next_due = self.dispatch_once(now)
            except Exception:  # the loop must outlive any database error: log, pause, go on
                logger.exception("flask_bgjobs could not claim jobs; trying again")
                if watcher is not None:
                    watcher.close()
                    watcher = None
                next_due = 0.0
                self._stopping.wait(ERROR_PAUSE)
                continue
            wait = self.settings.poll_interval
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self._now()))
            self._wake.wait(wait)
        if watcher is not None:
            watcher.close()

    def dispatch_once(self, now: float) -> float | None:
        """Claim ready jobs for every lane with a free thread; return when to look again.

        The answer is the earliest future ``run_after`` among queued jobs, or ``None``.
        """
        with self._lock:
            free = {name: lane.free for name, lane in self.lanes.items()}
        claimed = self.store.claim(
            self.owner, free, now, self.settings.lease_seconds,
            all_workers=self.only_workers is None,
        )  # fmt: skip
        for name, jobs in claimed.jobs.items():
            lane = self._lane(name)
            for job in jobs:
                execution = self.extension.execution_for(self.app, job)
                with self._lock:
                    self._running[job.id] = execution
                lane.submit(execution)
        for jobs in claimed.jobs.values():
            for job in jobs:
                _send_safely(job_started, self.app, job)
        return claimed.next_due

    def _lane(self, name: str | None) -> Lane:
        with self._lock:
            lane = self.lanes.get(name)
            if lane is None:
                size = self.pool_size if name is None else 1
                lane = self.lanes[name] = Lane(name, size, self._on_done)
            return lane

    def _on_done(self, execution: Execution) -> None:
        if execution.job.future is not None:
            with self._lock:
                self._transient.discard(execution)
            execution.settle()  # transient: nothing to record
        else:
            self._completions.put(execution)

    def run_transient(self, execution: Execution) -> None:
        """Run a job that is not stored (``run_command``) on its lane, under supervision."""
        with self._lock:
            self._transient.add(execution)
        self._lane(execution.job.worker).submit(execution)

    # -- completing --------------------------------------------------------------------------------

    def _complete_loop(self) -> None:
        while True:
            first = self._completions.get()
            if first is None:
                return
            batch = [first]
            closing = False
            while len(batch) < BATCH_LIMIT:
                try:
                    item = self._completions.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            self._record_until_done(batch)
            if closing:
                return

    def _record_until_done(self, batch: list[Execution]) -> None:
        pause = 0.05
        while True:
            try:
                self.complete_once(batch)
                return
            except Exception:
                # The runs stay in memory and are written at the next try; if this process
                # dies meanwhile, their leases lapse and another process runs them again.
                logger.exception("flask_bgjobs could not record %d finished job(s); retrying",
                                 len(batch))  # fmt: skip
                if self._stopping.is_set() and pause > 1:
                    for execution in batch:
                        self._forget(execution)  # their leases lapse; another process recovers
                    return
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def complete_once(self, batch: list[Execution]) -> None:
        """Record how each execution of ``batch`` ended, then tell waiters and signals."""
        outcomes: list[Outcome] = []
        handed_back: list[BackgroundJob] = []
        for execution in batch:
            if execution.stop_reason == "shutdown" and execution.error is not None:
                handed_back.append(execution.job)  # stopped by our shutdown: not its fault
            else:
                outcomes.append(self._with_follow_ups(outcome_of(execution, self.settings,
                                                                 self.owner)))  # fmt: skip
        if handed_back:
            self.store.release(handed_back)
        record(self.app, self.extension, self.store, outcomes, self.owner)
        for execution in batch:
            self._forget(execution)
        self._wake.set()

    def _with_follow_ups(self, outcome: Outcome) -> Outcome:
        """Attach the jobs a completed job leads to (callback, reply_to notification)."""
        if outcome.state is not JobState.COMPLETED:
            return outcome
        try:
            outcome.follow_ups = self.extension.follow_ups(self.app, outcome)
        except BgJobsError as error:  # e.g. its callback command is no longer registered
            error_type, message = describe(error)
            return Outcome(outcome.job, JobState.FAILED, outcome.ended_at, error_type=error_type,
                           error_message=message, worker_process=self.owner,
                           live=outcome.live)  # fmt: skip
        return outcome

    def _forget(self, execution: Execution) -> None:
        with self._lock:
            if self._running.get(execution.job.id) is execution:
                del self._running[execution.job.id]

    # -- supervising -------------------------------------------------------------------------------

    def _supervise_loop(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY):
            self.supervise_once(self._now())

    def supervise_once(self, now: float) -> None:
        """Enforce stops; flush live state; heartbeat; settle cancellations; recover orphans.

        Each step runs even when another failed: a failing log flush must not let leases lapse.

        Leases are times of the clock, which may jump. After a jump (the clock moved more than
        :data:`CLOCK_JUMP` seconds apart from the monotonic time) the leases are renewed at
        once, from the new time; after a jump forward, which makes every lease look lapsed,
        recovery waits a moment (half a lease, at most 5 s) for the live processes, whose clocks
        jumped too, to renew theirs first: only the jobs of dead processes are recovered. It
        waits as long after this process could not renew its own leases for longer than a lease
        (the database locked, the disk full): the others probably could not either.
        """
        settings = self.settings
        mono = time.monotonic()
        jump = self._clock_jump(now, mono)
        if jump:
            logger.warning("flask_bgjobs: the clock jumped by %+.1f s; renewing leases", jump)
            if jump > 0:
                self._hold_recovery()
        steps: list[tuple[str, Callable[[], object]]] = [("timeouts", self.enforce_stops)]
        # The heartbeat comes first of the writes: when the database was locked, each of the
        # others may wait for it as long, and the leases must not lapse meanwhile. A clock that
        # went back (now < last) makes it due too, rather than for the jump's length: leases
        # claimed meanwhile would lapse while their process lives.
        if jump or not 0 <= now - self._last_beat < settings.lease_seconds / 3:
            self._last_beat = now
            steps.append(("heartbeat", lambda: self._beat(now)))
        if time.monotonic() - self._last_live >= LIVE_FLUSH_EVERY:
            self._last_live = time.monotonic()
            steps += [("live state", self.flush_live), ("cancellations", self.settle_cancelled)]
        if jump or not 0 <= now - self._last_recover < settings.lease_seconds / 2:
            steps.append(("recovery", lambda: self._recover_unless_held(now)))
        for name, step in steps:
            try:
                step()
            except Exception:
                logger.exception("flask_bgjobs supervisor: %s failed; trying again", name)

    def _beat(self, now: float) -> None:
        try:
            self.heartbeat(now)
        except Exception:
            self._beat_failed = True
            self._last_beat = float("-inf")  # try again at the next look
            raise
        renewed, self._renewed_at = self._renewed_at, time.monotonic()
        lease = self.settings.lease_seconds
        if self._beat_failed or (renewed is not None and self._renewed_at - renewed > lease):
            # This process could not renew its leases for a while (the database locked or the
            # disk full): probably the others could not either, and their leases lapsed while
            # they lived. Let them renew before judging theirs.
            self._beat_failed = False
            self._hold_recovery()

    def _hold_recovery(self) -> None:
        hold = min(self.settings.lease_seconds / 2, 5.0)
        self._recovery_held_until = max(self._recovery_held_until, time.monotonic() + hold)

    def _recover_unless_held(self, now: float) -> None:
        if self._beat_failed or time.monotonic() < self._recovery_held_until:
            return  # still due at the next look
        self._last_recover = now
        self.recover_orphans(now)

    def _clock_jump(self, now: float, mono: float) -> float:
        """How far the clock jumped since the last look (0.0 if it kept time)."""
        last, self._last_look = self._last_look, (now, mono)
        if last is None:
            return 0.0
        drift = (now - last[0]) - (mono - last[1])
        return drift if abs(drift) > CLOCK_JUMP else 0.0

    def enforce_stops(self) -> None:
        """Time out overdue jobs; force, then abandon, jobs that ignore a stop request."""
        grace = self.settings.cancel_grace
        mono = time.monotonic()
        with self._lock:
            executions = [*self._running.values(), *self._transient]
        for execution in executions:
            deadline = execution.deadline
            if execution.stop_reason is None and deadline is not None and mono >= deadline:
                execution.request_stop("timeout")
            asked = execution.stop_requested_at
            if asked is None or execution.returned:
                continue
            if mono >= asked + grace and not execution.forced:
                execution.force_stop()
            elif mono >= asked + 2 * grace and execution.forced:
                self._abandon(execution)

    def _abandon(self, execution: Execution) -> None:
        lane = self.lanes.get(execution.job.worker)
        if lane is None or not lane.abandon(execution):
            return
        logger.error("flask_bgjobs abandoned the thread of job %s: it ignored its stop request",
                     execution.job.id)  # fmt: skip
        error = execution.stop_exception()
        execution.error = error
        execution.error_traceback = (
            f"{type(error).__name__}: {error}; the thread did not return and was abandoned"
        )
        execution.ended_at = self._now()
        self._on_done(execution)

    def flush_live(self) -> None:
        """Write changed logs, progress and status of running jobs; pick up cancel requests."""
        running = self.running()
        if not running:
            return
        updates = []
        for execution in running:
            live = execution.take_live()
            if live is not None:
                updates.append(LiveState(execution.job.id, execution.job.attempts, *live))
        if updates:
            self.store.save_live(self.owner, updates)
        for job_id, reason in self.store.cancel_requests(self.owner):
            self.stop_job(job_id, reason)

    def settle_cancelled(self) -> list[Outcome]:
        """Cancel queued jobs that were asked to stop, and jobs whose parent will never complete;
        release the jobs whose parent completed (a sweep: each is normally done at once)."""
        now = self._now()
        outcomes = [cancelled(job, now) for job in self.store.take_cancelled(self.owner, now)]
        outcomes += [cancelled(job, now, why) for job, why in self.store.settle_waiting(
            self.owner, now)]  # fmt: skip
        return record(self.app, self.extension, self.store, outcomes, self.owner)

    def stop_job(self, job_id: int, reason: str = "cancelled") -> bool:
        """Ask the job to stop if it runs in this process."""
        with self._lock:
            execution = self._running.get(job_id)
        if execution is None:
            return False
        execution.request_stop(reason)
        return True

    def heartbeat(self, now: float) -> None:
        """Record that this process lives and extend the leases of the jobs it runs."""
        lease = self.settings.lease_seconds
        with self._lock:
            running = list(self._running)
        began = time.monotonic()
        self.process["heartbeat_at"] = now
        self.store.heartbeat(self.process, running, now + lease)
        if time.monotonic() - began > lease / 3:
            # It waited long for the database (locked by another process): the leases it wrote
            # count from before the wait, and may have lapsed already. Once more, from now.
            now = max(now, self._now())
            self.process["heartbeat_at"] = now
            self.store.heartbeat(self.process, running, now + lease)

    def recover_orphans(self, now: float) -> int:
        """Deal with started jobs whose lease lapsed; return how many were recovered."""
        outcomes: list[Outcome] = []
        moved = 0
        with self._lock:
            ours = set(self._running)
        for job in self.store.expired(now):
            if job.lease_owner == self.owner and job.id in ours:
                continue  # ours and running: late heartbeat; the next one renews the lease
            lost_owner = job.lease_owner
            if not self.store.take_over(job, self.owner, now, self.settings.lease_seconds):
                continue  # another process was first, or the owner renewed it meanwhile
            found = self.store.find_finished(job)
            if found is not None:
                moved += self.store.complete_move(job, found)
                continue
            outcomes.append(self._orphan_outcome(job, now, lost_owner))
        record(self.app, self.extension, self.store, outcomes, self.owner)
        recovered = moved + len(outcomes)
        if recovered:
            logger.warning("flask_bgjobs recovered %d job(s) of lost worker processes", recovered)
            self._wake.set()
        return recovered

    def _orphan_outcome(self, job: BackgroundJob, now: float, lost_owner: str | None) -> Outcome:
        if job.cancel_requested:
            return cancelled(job, now, f"job {job.id} was cancelled")
        error = WorkerLostError(
            f"the worker process running job {job.id} stopped answering (lease expired); "
            f"attempt {job.attempts} is counted as failed"
        )
        return failed_attempt(self.settings, job, now, error_type="WorkerLostError",
                              error_message=str(error), worker_process=lost_owner)  # fmt: skip


def _send_safely(signal: object, app: Flask, job: BackgroundJob) -> None:
    try:
        signal.send(app, job=job)  # type: ignore[attr-defined]
    except Exception:
        logger.exception("a receiver of a flask_bgjobs signal failed (job %s)", job.id)
