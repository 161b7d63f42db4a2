"""Running one job on a thread, and the lanes of threads that run them.

A lane is the pool of unnamed jobs (``size`` threads) or one named worker (one thread, jobs in
order). Stopping a job is cooperative first (``current_job.cancelled``; a real cancellation for
async commands), then forced: :class:`~flask_bgjobs.JobCancelled` is raised in the job's thread,
and a thread that still does not return is abandoned and replaced, so that no lane stays blocked.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .context import JobContext, _current
from .errors import JobCancelled, JobTimeout
from .models import JobState
from .serialization import to_json

if TYPE_CHECKING:
    from flask import Flask

    from .extension import BackgroundJobs
    from .models import BackgroundJob

logger = logging.getLogger("flask_bgjobs")

#: What a job runs: called with the job, inside the app context, returns the result or a
#: coroutine whose result is the result.
Target = Callable[["BackgroundJob"], Any]

#: Jobs that usually run for less than this many seconds are claimed ahead of free threads.
SHORT_JOB = 0.05


class Execution:
    """One run of one job: its thread, its live state, and how it ended."""

    def __init__(
        self,
        extension: BackgroundJobs,
        app: Flask,
        job: BackgroundJob,
        target: Target,
        clock: Callable[[], float],
        max_log_bytes: int = 256 * 1024,
    ) -> None:
        self.extension = extension
        self.app = app
        self.job = job
        self.target = target
        self.clock = clock
        self.max_log_bytes = max_log_bytes
        self.stop_requested = threading.Event()
        self.stop_reason: str | None = None
        self.stop_requested_at: float | None = None  # monotonic
        self.forced = False
        self.abandoned = False
        self.started_mono: float | None = None
        self.ended_mono: float | None = None
        self.ended_at: float | None = None
        self.result: Any = None
        self.result_json: str | None = None
        self.error: BaseException | None = None
        self.error_traceback: str | None = None
        self.progress: float | None = job.progress
        self.status: str | None = job.status
        self._log_parts: list[str] = [job.logs] if job.logs else []
        self._log_size = len(job.logs)
        self.dirty = False
        self._lock = threading.Lock()
        self._returned = False
        self._thread_ident: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        return f"<Execution job={self.job.id} {self.job.command!r} attempt={self.job.attempts}>"

    @property
    def job_id(self) -> int | None:
        return self.job.id

    @property
    def command_name(self) -> str:
        return self.job.command

    @property
    def deadline(self) -> float | None:
        """When (monotonic) the job's timeout runs out, if it has one and has started."""
        if self.job.timeout is None or self.started_mono is None:
            return None
        return self.started_mono + self.job.timeout

    @property
    def run_seconds(self) -> float | None:
        """How long the run took (monotonic), once it ended."""
        if self.started_mono is None or self.ended_mono is None:
            return None
        return self.ended_mono - self.started_mono

    @property
    def logs(self) -> str:
        with self._lock:
            return "".join(self._log_parts)

    # -- running ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the job on the current thread; record its result or error. Never raises."""
        self._thread_ident = threading.get_ident()
        self.started_mono = time.monotonic()
        self.job.started_at = self.clock()  # the claim may have waited in the lane's backlog
        try:
            try:
                with self.app.app_context():
                    self.result = self._call()
                    self.result_json = to_json(self.result, f"the result of {self.job.command}")
            finally:
                self._mark_returned()
        except BaseException as error:  # the job's failure, recorded as its outcome
            self._record_error(error)
        finally:
            self._mark_returned()
            self.ended_at = self.clock()
            self.ended_mono = time.monotonic()

    def _call(self) -> Any:
        context = JobContext(self, self.job.request)
        token = _current.set(context)
        try:
            if self.stop_requested.is_set():
                raise self.stop_exception()
            value = self.target(self.job)
            if asyncio.iscoroutine(value):
                value = self._run_coroutine(value)
            return value
        finally:
            _current.reset(token)

    def _run_coroutine(self, coroutine: Any) -> Any:
        # A fresh event loop for each job: tasks a job leaves behind are cancelled with it and
        # can never run during (and as) the next job of the thread.
        loop = asyncio.new_event_loop()
        try:
            task = loop.create_task(coroutine)
            with self._lock:
                self._loop, self._task = loop, task
            if self.stop_requested.is_set():
                task.cancel()
            try:
                return loop.run_until_complete(task)
            except asyncio.CancelledError:
                raise self.stop_exception() from None
        finally:
            with self._lock:
                self._loop = self._task = None
            _close_loop(loop)

    def _record_error(self, error: BaseException) -> None:
        if self.stop_reason and isinstance(error, (JobCancelled, asyncio.CancelledError)):
            error = self.stop_exception()  # name the real reason: timeout, cancel or shutdown
        self.error = error
        self.error_traceback = "".join(
            traceback.format_exception(type(error), error, error.__traceback__)
        )

    def _mark_returned(self) -> None:
        # A forced stop may arrive as the call returns; absorb it until the flag is set.
        while True:
            try:
                with self._lock:
                    self._returned = True
                return
            except JobCancelled:
                continue

    def settle(self) -> None:
        """Resolve a transient job's future with how it ended (``run_command``)."""
        job, future = self.job, self.job.future
        if future is None:
            return
        job.progress, job.status, job.logs = self.progress, self.status, self.logs
        if self.error is None:
            job.state = JobState.COMPLETED
            future.set_result(self.result)
        else:
            job.state = JobState.CANCELLED if self.stop_reason else JobState.FAILED
            job.error_type = type(self.error).__name__
            job.error_message = str(self.error)
            future.set_exception(self.error)

    # -- live state --------------------------------------------------------------------------------

    def append_log(self, level: str, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        line = f"{stamp} {level} {text}\n"
        with self._lock:
            self._log_parts.append(line)
            self._log_size += len(line)
            if self._log_size > self.max_log_bytes:
                self._trim_log()
            self.dirty = True
            if self.job.future is not None:  # a transient job's record is its live view
                self.job.logs = "".join(self._log_parts)

    def _trim_log(self) -> None:
        text = "".join(self._log_parts)
        keep = text[-(self.max_log_bytes // 2) :]
        keep = "[... earlier lines dropped: the log is capped ...]\n" + keep[keep.find("\n") + 1 :]
        self._log_parts = [keep]
        self._log_size = len(keep)

    def set_status(self, progress: float | None, status: str | None) -> None:
        with self._lock:
            if progress is not None:
                self.progress = progress
            if status is not None:
                self.status = status
            self.dirty = True
            if self.job.future is not None:
                self.job.progress, self.job.status = self.progress, self.status

    def take_live(self) -> tuple[float | None, str | None, str] | None:
        """The live state if it changed since the last call, for the periodic flush."""
        with self._lock:
            if not self.dirty:
                return None
            self.dirty = False
            return self.progress, self.status, "".join(self._log_parts)

    def live(self) -> dict[str, Any]:
        with self._lock:
            return {
                "progress": self.progress,
                "status": self.status,
                "logs": "".join(self._log_parts),
            }

    # -- stopping ----------------------------------------------------------------------------------

    def stop_exception(self) -> JobCancelled:
        if self.stop_reason == "timeout":
            return JobTimeout(f"job {self.job.id} ran past its timeout of {self.job.timeout:g} s")
        if self.stop_reason == "shutdown":
            return JobCancelled(f"job {self.job.id} was stopped: the worker is shutting down")
        return JobCancelled(f"job {self.job.id} was cancelled")

    def request_stop(self, reason: str) -> None:
        """Ask the job to stop: sets ``current_job.cancelled``; cancels an async command's task."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_requested_at = time.monotonic()
            self.stop_requested.set()
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)

    def force_stop(self) -> bool:
        """Raise the stop exception inside the job's thread, unless the job already returned."""
        with self._lock:
            if self._returned or self._thread_ident is None or self.forced:
                return False
            self.forced = True
            exception = JobTimeout if self.stop_reason == "timeout" else JobCancelled
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_ident), ctypes.py_object(exception)
            )
            return True

    @property
    def returned(self) -> bool:
        with self._lock:
            return self._returned


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on ``loop``, let it unwind, and close the loop."""
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class Lane:
    """Threads that run the jobs of one lane: the pool (``name=None``) or one named worker."""

    def __init__(
        self,
        name: str | None,
        size: int,
        on_done: Callable[[Execution], None],
        prefetch: int = 0,
    ) -> None:
        self.name = name
        self.size = size
        self.prefetch = prefetch
        self._average_run: float | None = None
        self._on_done = on_done
        self._queue: queue.SimpleQueue[Execution | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._inflight: set[Execution] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def __repr__(self) -> str:
        return f"<Lane {self.name or 'pool'} {len(self._inflight)}/{self.size}>"

    @property
    def free(self) -> int:
        with self._lock:
            if self._stopping:
                return 0
            return self.size + self._backlog() - len(self._inflight)

    def _backlog(self) -> int:
        # Short jobs are claimed ahead of free threads, so that claims come in batches. Long ones
        # are not: a job waiting here would show as started, and no other process could take it.
        average = self._average_run
        return self.prefetch if average is not None and average < SHORT_JOB else 0

    def running(self) -> list[Execution]:
        with self._lock:
            return list(self._inflight)

    def submit(self, execution: Execution) -> None:
        with self._lock:
            self._inflight.add(execution)
            if len(self._threads) < self.size:
                self._spawn()
        self._queue.put(execution)

    def abandon(self, execution: Execution) -> bool:
        """Give up on a job whose thread does not return; a new thread takes its place."""
        with self._lock:
            if execution not in self._inflight or execution.returned:
                return False
            execution.abandoned = True
            self._inflight.discard(execution)
            self._threads = [t for t in self._threads if t.ident != execution._thread_ident]
            if not self._stopping:
                self._spawn()
        return True

    def stop(self) -> None:
        """Let the threads end once the queued executions ran."""
        with self._lock:
            self._stopping = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)

    def _spawn(self) -> None:
        label = f"bgjobs-{self.name or 'pool'}-{len(self._threads) + 1}"
        thread = threading.Thread(target=self._main, name=label, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _main(self) -> None:
        execution: Execution | None = None
        while True:
            try:
                execution = self._queue.get()
                if execution is None:
                    return
                execution.run()
                if execution.abandoned:
                    return  # a replacement thread took this one's place
                self._report(execution)
            except JobCancelled:
                # A forced stop that landed just after its job returned: report the job anyway.
                if execution is not None and not execution.abandoned:
                    self._report(execution)
            except Exception:  # keep the lane alive whatever a callback does
                logger.exception("flask_bgjobs lane %s failed to report a job", self.name)

    def _report(self, execution: Execution) -> None:
        with self._lock:
            if execution not in self._inflight:
                return
            self._inflight.discard(execution)
            ran = execution.run_seconds
            if ran is not None:
                average = self._average_run
                self._average_run = ran if average is None else 0.8 * average + 0.2 * ran
        self._on_done(execution)
