"""The runner of one process: claims jobs, runs them on lanes, records how they ended.

Three threads besides the lanes:

- the dispatcher claims ready jobs for lanes with free threads; an enqueue in this process wakes
  it at once, other processes' enqueues are noticed by polling ``PRAGMA data_version``;
- the completer writes finished runs in batches (one month write and one queue write for all the
  runs that ended meanwhile), so that draining many short jobs costs few transactions;
- the supervisor enforces timeouts and cancellations, flushes live logs and progress, renews the
  process's leases and recovers the jobs of processes that died.

Every loop has a ``*_once(now)`` method that tests call with a controlled clock.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask

from .config import Settings, host_pid
from .errors import BgJobsError, UnknownCommandError, WorkerLostError
from .execution import Execution, Lane
from .models import BackgroundJob, JobState
from .records import Outcome
from .signals import job_cancelled, job_completed, job_failed, job_retrying, job_started
from .store import ChangeWatcher, JobStore

if TYPE_CHECKING:
    from .extension import BackgroundJobs

logger = logging.getLogger("flask_bgjobs")

SUPERVISE_EVERY = 0.1  # seconds between timeout checks
LIVE_FLUSH_EVERY = 0.5  # seconds between writes of running jobs' logs and progress
ERROR_PAUSE = 0.5  # seconds a loop waits after an unexpected error before trying again


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
    ) -> None:
        self.extension = extension
        self.app = app
        self.settings = settings
        self.store = store
        self.pool_size = threads or settings.max_threads
        self.only_workers = workers  # None: every named worker
        self.serve_pool = pool
        host, pid = host_pid()
        self.process = {
            "id": f"{host}:{pid}:{uuid.uuid4().hex[:8]}",
            "host": host,
            "pid": pid,
            "started_at": self._now(),
            "heartbeat_at": self._now(),
            "threads": self.pool_size,
            "workers": json.dumps(sorted(workers)) if workers is not None else None,
            "scheduler": 0,
            "stopped_at": None,
        }
        self.lanes: dict[str | None, Lane] = {}
        if pool:
            self.lanes[None] = Lane(
                None, self.pool_size, self._on_done, prefetch=3 * self.pool_size
            )
        for name in workers or ():
            self.lanes[name] = Lane(name, 1, self._on_done)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._completions: queue.SimpleQueue[Execution | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running: dict[int, Execution] = {}
        self._last_live = self._last_beat = self._last_recover = 0.0
        self.started = False

    @property
    def owner(self) -> str:
        return str(self.process["id"])

    def _now(self) -> float:
        return self.extension.now()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads (idempotent)."""
        with self._lock:
            if self.started:
                return
            self.started = True
        self.store.heartbeat(self.process, self._now() + self.settings.lease_seconds)
        for name, target in (
            ("dispatcher", self._dispatch_loop),
            ("completer", self._complete_loop),
            ("supervisor", self._supervise_loop),
        ):
            thread = threading.Thread(target=target, name=f"bgjobs-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, let running jobs finish for ``timeout`` s, hand the rest back."""
        with self._lock:
            if not self.started or self._stopping.is_set():
                return
            self._stopping.set()
        self._wake.set()
        self._threads[0].join()  # the dispatcher: no new claims from here on
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.01)
        leftovers = self.running()
        for execution in leftovers:
            execution.request_stop("shutdown")
        grace = time.monotonic() + min(1.0, self.settings.cancel_grace)
        while self.running() and time.monotonic() < grace:
            time.sleep(0.01)
        handed_back = []
        for execution in self.running():
            lane = self.lanes.get(execution.job.worker)
            if lane is not None and lane.abandon(execution):
                handed_back.append((execution.job.id, execution.job.attempts))
                self._forget(execution)
        if handed_back:
            self.store.release(handed_back)
            logger.warning(
                "flask_bgjobs handed %d running job(s) back to the queue", len(handed_back)
            )
        for lane in self.lanes.values():
            lane.stop()
        for lane in self.lanes.values():
            lane.join(timeout=1.0)
        self._completions.put(None)
        for thread in self._threads[1:]:
            thread.join()
        self.process["stopped_at"] = self._now()
        try:
            self.store.heartbeat(self.process, self._now())
        except BgJobsError:
            logger.exception("flask_bgjobs could not record that this process stopped")

    def wake(self) -> None:
        """Make the dispatcher look for work now."""
        self._wake.set()

    def running(self) -> list[Execution]:
        with self._lock:
            return list(self._running.values())

    # -- dispatching -----------------------------------------------------------------------------

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
        free = {name: lane.free for name, lane in self.lanes.items()}
        claimed = self.store.claim(
            self.owner,
            free,
            now,
            self.settings.lease_seconds,
            all_workers=self.only_workers is None,
        )
        for name, jobs in claimed.jobs.items():
            lane = self.lanes.get(name)
            if lane is None:
                lane = self.lanes[name] = Lane(name, 1, self._on_done)
            for job in jobs:
                self._submit(lane, job)
        return claimed.next_due

    def _submit(self, lane: Lane, job: BackgroundJob) -> None:
        execution = self.extension.execution_for(self.app, job)
        with self._lock:
            self._running[job.id] = execution
        job_started.send(self.app, job=job)
        lane.submit(execution)

    def _on_done(self, execution: Execution) -> None:
        if execution.job.future is not None:
            execution.settle()  # transient: nothing to record
        else:
            self._completions.put(execution)

    def run_transient(self, execution: Execution) -> None:
        """Run a job that is not stored (``run_command``) on its lane."""
        name = execution.job.worker
        lane = self.lanes.get(name)
        if lane is None:
            size = self.pool_size if name is None else 1
            lane = self.lanes[name] = Lane(name, size, self._on_done)
        lane.submit(execution)

    # -- completing ------------------------------------------------------------------------------

    def _complete_loop(self) -> None:
        while True:
            first = self._completions.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 1000:
                try:
                    item = self._completions.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._record_until_done(batch)
                    return
                batch.append(item)
            self._record_until_done(batch)

    def _record_until_done(self, batch: list[Execution]) -> None:
        pause = 0.05
        while True:
            try:
                self.complete_once(batch)
                return
            except Exception:
                # The runs stay in memory and are written at the next try; if this process
                # dies meanwhile, their leases lapse and another process runs them again.
                logger.exception(
                    "flask_bgjobs could not record %d finished job(s); retrying", len(batch)
                )
                if self._stopping.is_set() and pause > 1:
                    return
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def complete_once(self, batch: list[Execution]) -> None:
        """Record how each execution of ``batch`` ended, then tell waiters and signals."""
        outcomes: list[Outcome] = []
        handed_back: list[tuple[int, int]] = []
        for execution in batch:
            if execution.stop_reason == "shutdown" and execution.error is not None:
                handed_back.append((execution.job.id, execution.job.attempts))
            else:
                outcomes.append(self.outcome_of(execution))
        if handed_back:
            self.store.release(handed_back)
        applied = self.store.finish(outcomes) if outcomes else []
        for execution in batch:
            self._forget(execution)
        for outcome in applied:
            announce(self.app, outcome)
        self.extension.notify_finished()
        self._wake.set()

    def outcome_of(self, execution: Execution) -> Outcome:
        job = execution.job
        ended = execution.ended_at if execution.ended_at is not None else self._now()
        base: dict[str, Any] = {
            "ended_at": ended,
            "worker_process": self.owner,
            "live": execution.live(),
        }
        error = execution.error
        if error is None:
            return Outcome(job, JobState.COMPLETED, result=execution.result_json, **base)
        details: dict[str, Any] = {
            "error_type": type(error).__name__,
            "error_message": str(error),
            "error_traceback": execution.error_traceback,
        }
        if execution.stop_reason == "cancelled":
            return Outcome(job, JobState.CANCELLED, **details, **base)
        retry_limit = job.retry_limit if job.retry_limit is not None else self.settings.retry_limit
        retryable = not isinstance(error, UnknownCommandError)
        if retryable and job.attempts <= retry_limit:
            run_after = ended + self.backoff(job.attempts)
            return Outcome(job, JobState.QUEUED, run_after=run_after, **details, **base)
        return Outcome(job, JobState.FAILED, **details, **base)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt + 1``: exponential from the base, capped, jittered."""
        settings = self.settings
        delay = min(settings.retry_backoff * 2 ** (attempt - 1), settings.retry_backoff_max)
        return float(delay * random.uniform(0.5, 1.0))

    def _forget(self, execution: Execution) -> None:
        with self._lock:
            if self._running.get(execution.job.id) is execution:
                del self._running[execution.job.id]

    # -- supervising -----------------------------------------------------------------------------

    def _supervise_loop(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY):
            try:
                self.supervise_once(self._now())
            except Exception:  # never let the supervisor die: timeouts and leases depend on it
                logger.exception("flask_bgjobs supervisor failed; trying again")

    def supervise_once(self, now: float) -> None:
        """Enforce timeouts and stops; flush live state; heartbeat; recover dead processes' jobs."""
        self.enforce_stops()
        settings = self.settings
        if time.monotonic() - self._last_live >= LIVE_FLUSH_EVERY:
            self._last_live = time.monotonic()
            self.flush_live()
        if now - self._last_beat >= settings.lease_seconds / 3:
            self._last_beat = now
            self.heartbeat(now)
        if now - self._last_recover >= settings.lease_seconds / 2:
            self._last_recover = now
            self.recover_orphans(now)

    def enforce_stops(self) -> None:
        """Time out overdue jobs; force, then abandon, jobs that ignore a stop request."""
        grace = self.settings.cancel_grace
        mono = time.monotonic()
        for execution in self.running():
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
        logger.error(
            "flask_bgjobs abandoned the thread of job %s: it ignored its stop request",
            execution.job.id,
        )
        execution.error = execution.stop_exception()
        execution.error_traceback = (
            f"{type(execution.error).__name__}: {execution.error}; the thread did not return and "
            "was abandoned"
        )
        execution.ended_at = self._now()
        self._completions.put(execution)

    def flush_live(self) -> None:
        """Write changed logs, progress and status of running jobs; pick up cancel requests."""
        running = self.running()
        if not running:
            return
        updates = []
        for execution in running:
            live = execution.take_live()
            if live is not None:
                updates.append((execution.job.id, execution.job.attempts, *live))
        if updates:
            self.store.save_live(updates)
        for job_id, reason in self.store.cancel_requests(self.owner):
            self.stop_job(job_id, reason)

    def stop_job(self, job_id: int, reason: str = "cancelled") -> bool:
        """Ask the job to stop if it runs in this process."""
        with self._lock:
            execution = self._running.get(job_id)
        if execution is None:
            return False
        execution.request_stop(reason)
        return True

    def heartbeat(self, now: float) -> None:
        self.process["heartbeat_at"] = now
        self.store.heartbeat(self.process, now + self.settings.lease_seconds)

    def recover_orphans(self, now: float) -> int:
        """Deal with started jobs whose lease lapsed; return how many were recovered."""
        recovered = 0
        for job in self.store.expired(now):
            if job.lease_owner == self.owner and job.id in self._running:
                continue  # ours and alive: the next heartbeat renews it
            lost_owner = job.lease_owner
            if not self.store.take_over(job, self.owner, now, self.settings.lease_seconds):
                continue
            recovered += 1
            record = self.store.find_finished(job)
            if record is not None:
                self.store.complete_move(job, record)
                continue
            outcome = self._orphan_outcome(job, now, lost_owner)
            for applied in self.store.finish([outcome]):
                announce(self.app, applied)
        if recovered:
            logger.warning("flask_bgjobs recovered %d job(s) of lost worker processes", recovered)
            self.extension.notify_finished()
            self._wake.set()
        return recovered

    def _orphan_outcome(self, job: BackgroundJob, now: float, lost_owner: str | None) -> Outcome:
        if job.cancel_requested:
            return Outcome(
                job,
                JobState.CANCELLED,
                now,
                error_type="JobCancelled",
                error_message=f"job {job.id} was cancelled",
            )
        error = WorkerLostError(
            f"the worker process running job {job.id} stopped answering (lease expired); "
            f"attempt {job.attempts} is counted as failed"
        )
        retry_limit = job.retry_limit if job.retry_limit is not None else self.settings.retry_limit
        state = JobState.QUEUED if job.attempts <= retry_limit else JobState.FAILED
        return Outcome(
            job,
            state,
            now,
            error_type="WorkerLostError",
            error_message=str(error),
            run_after=now if state is JobState.QUEUED else None,
            worker_process=lost_owner,
        )


def announce(app: Flask, outcome: Outcome) -> None:
    """Send the signal of the state an outcome put its job in."""
    job = outcome.job
    if outcome.state is JobState.COMPLETED:
        job_completed.send(app, job=job, result=outcome.result)
    elif outcome.state is JobState.FAILED:
        job_failed.send(app, job=job, error=outcome.error_message)
    elif outcome.state is JobState.CANCELLED:
        job_cancelled.send(app, job=job, reason=outcome.error_message)
    else:
        job_retrying.send(app, job=job, error=outcome.error_message, run_after=outcome.run_after)
