"""The ``BackgroundJobs`` extension: commands, enqueueing, queries and the runner's lifecycle."""

from __future__ import annotations

import atexit
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, overload

from flask import Flask, current_app

from .api import call_view, check_endpoint
from .clock import Clock, utcnow
from .config import Settings, check_option
from .errors import DuplicateRefIdError, JobNotFoundError, UnknownCommandError
from .execution import Execution, Target
from .models import BackgroundJob, JobRef, JobResult, JobState, JobSummary, RequestType
from .notify import REPLY_TO_COMMAND, send_reply
from .options import JobOptions, check_retry_limit, check_timeout, is_name
from .outcomes import cancelled, record
from .records import NewJob, Outcome
from .recurring import RecurringMixin
from .registry import Command, CommandFunc, CommandRegistry, check_signature
from .runner import Runner
from .serialization import to_json
from .signals import job_enqueued, job_started
from .store import JobStore
from .tasks import TaskStore

F = TypeVar("F", bound=CommandFunc)


class _AppState:
    """What one app's use of the extension holds: settings, storage, and this process's runner."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.tasks = TaskStore(store.queue)
        self.runner: Runner | None = None
        self.eager_runner: Runner | None = None
        self.lock = threading.Lock()
        self.finished = threading.Condition()


class BackgroundJobs(RecurringMixin):
    """Durable background jobs for a Flask app, stored in SQLite files.

    ``BackgroundJobs(app)``, or ``jobs = BackgroundJobs()`` then ``jobs.init_app(app)``.
    Keywords (``max_threads=8``, ``eager=True``, ...) override the ``BGJOBS_*`` config keys;
    ``clock=`` injects the time source (tests); ``authorize=`` decides who may see the admin pages.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        clock: Clock | None = None,
        authorize: Callable[[], object] | None = None,
        **options: Any,
    ):
        self.registry = CommandRegistry()
        self._recurring = {}
        self.registry.add(Command(REPLY_TO_COMMAND, send_reply))
        self.clock: Clock = clock or utcnow
        self.authorize = authorize
        self._options = options
        self._user_loader: Callable[[str], Any] | None = None
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the config of ``app``, open its job storage, add the ``flask jobs`` commands."""
        settings = Settings.from_app(app, self._options)
        store = JobStore(settings.database_dir, settings.sqlite, self.clock)
        self._states[app] = _AppState(settings, store)
        app.extensions["bgjobs"] = self
        for spec in self._recurring.values():  # tasks registered before this app
            self._sync_task(app, spec)
        from .cli import jobs_cli

        app.cli.add_command(jobs_cli)
        if settings.autostart and not settings.eager:

            @app.before_request
            def autostart() -> None:
                self._runner(app, start=True)

        from .admin import register_admin

        register_admin(self, app, settings)

    # -- registration ----------------------------------------------------------------------------

    @overload
    def command(self, func: F) -> F: ...

    @overload
    def command(
        self,
        *,
        name: str | None = None,
        worker: str | None = None,
        retry_limit: int | None = None,
        timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def command(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        worker: str | None = None,
        retry_limit: int | None = None,
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function (plain or async, zero or one argument) as a command."""

        def register(func: F) -> F:
            check_signature(func)
            check_retry_limit(retry_limit)
            check_timeout(timeout)
            check_option(worker, "worker", is_name, "a non-empty string")
            self.registry.add(Command(name or func.__name__, func, worker, retry_limit, timeout))
            return func

        return register(func) if func is not None else register

    def user_loader(self, func: Callable[[str], Any]) -> Callable[[str], Any]:
        """Register ``loader(user_id) -> user``, which gives ``current_job.user``."""
        self._user_loader = func
        return func

    def load_user(self, user_id: str | None) -> Any:
        if user_id is None:
            return None
        if self._user_loader is None:
            raise RuntimeError(
                "current_job.user needs a user loader: decorate a function with "
                "@jobs.user_loader that takes a user id and returns the user"
            )
        return self._user_loader(user_id)

    # -- enqueueing ------------------------------------------------------------------------------

    def enqueue_command(
        self,
        command: str,
        request: Any = None,
        *,
        worker: str | None = None,
        callback: str | None = None,
        depends_on: int | None = None,
        user_id: Any = None,
        run_after: datetime | None = None,
        retry_limit: int | None = None,
        timeout: float | None = None,
        ref_id: str | None = None,
        tag: str | None = None,
        created_by: str | None = None,
        batch_id: str | None = None,
        reply_to: str | None = None,
        args: dict[str, str] | None = None,
        parent_id: int | None = None,
        on_conflict: str = "raise",
    ) -> JobRef:
        """Persist a job that runs ``command`` with ``request``; return its :class:`JobRef`.

        The job is in ``jobs.db`` when this returns. Raises :class:`UnknownCommandError` for an
        unregistered command and :class:`InvalidJobError` for a request or option that cannot be
        stored. With ``on_conflict="return_existing"``, a ``ref_id`` that exists already gives
        the existing job's reference instead of :class:`DuplicateRefIdError`.
        """
        registered = self.registry.get(command)
        if registered.request_class is not None:
            registered.build_request(request)  # a request that does not fit fails here, not later
        options = JobOptions(
            worker=worker, callback=callback, depends_on=depends_on, user_id=user_id,
            run_after=run_after, retry_limit=retry_limit, timeout=timeout, ref_id=ref_id,
            tag=tag, created_by=created_by, batch_id=batch_id, reply_to=reply_to, args=args,
            parent_id=parent_id, on_conflict=on_conflict,
        )  # fmt: skip
        options.check(self.registry)
        state = self._state()
        job = options.new_job(command, RequestType.COMMAND.value, to_json(request,
                              "request"), state.settings, self.now(), registered)  # fmt: skip
        return self._enqueue(job, options.on_conflict)

    def enqueue_api(
        self,
        endpoint: str,
        request: Any = None,
        method: str = "POST",
        view_args: dict[str, Any] | None = None,
        **options: Any,
    ) -> JobRef:
        """Persist a job that calls the view ``endpoint`` through the app's request pipeline.

        The request context is built from the job (URL from the endpoint and ``view_args``,
        ``method``, ``request`` as JSON body, or query string for GET/HEAD/DELETE). A 2xx
        answer's JSON (or text) is the result; a 4xx/5xx fails the job with the status and body.
        Takes the options of :meth:`enqueue_command`.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        method = str(method).upper()
        check_option(view_args, "view_args", lambda v: isinstance(v, dict), "a dict")
        check_endpoint(app, endpoint, method, view_args or {})
        checked = JobOptions(**options)
        checked.check(self.registry)
        extra = {"method": method, "view_args": view_args or None}
        job = checked.new_job(endpoint, RequestType.API.value, to_json(request, "request"),
                              self._state(app).settings, self.now(), extra=extra)  # fmt: skip
        return self._enqueue(job, checked.on_conflict)

    def _enqueue(self, job: NewJob, on_conflict: str = "raise") -> JobRef:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        try:
            ref = state.store.enqueue(job)
        except DuplicateRefIdError:
            existing = state.store.summary_by_ref_id(job.ref_id or "")
            if on_conflict != "return_existing" or existing is None:
                raise
            return JobRef(existing.id, existing.ref_id)
        job_enqueued.send(app, ref=ref, command=job.command)
        if state.settings.eager:
            self._run_eagerly(app, state, ref)
        elif state.settings.autostart:
            self._runner(app, start=True).wake()
        elif state.runner is not None:
            state.runner.wake()
        return ref

    def _run_eagerly(self, app: Flask, state: _AppState, ref: JobRef) -> None:
        """Run the job (and its retries) now, then every job that became ready meanwhile:
        its callbacks, notifications and dependents."""
        runner = self._eager_runner(app, state)
        lease = state.settings.lease_seconds
        while True:
            job = state.store.claim_id(ref.id, runner.owner, self.now(), lease)
            if job is None:
                break
            self._run_inline(app, runner, job)
        while True:
            claimed = state.store.claim(runner.owner, {None: 100}, self.now(), lease,
                                        all_workers=True)  # fmt: skip
            ready = sorted((job for jobs in claimed.jobs.values() for job in jobs),
                           key=lambda job: job.id)  # fmt: skip
            if not ready:
                return
            for job in ready:
                self._run_inline(app, runner, job)

    def _run_inline(self, app: Flask, runner: Runner, job: BackgroundJob) -> None:
        execution = self.execution_for(app, job)
        job_started.send(app, job=job)
        execution.run()
        runner.complete_once([execution])

    def _eager_runner(self, app: Flask, state: _AppState) -> Runner:
        with state.lock:
            if state.eager_runner is None:
                state.eager_runner = Runner(self, app, state.settings, state.store, pool=False)
            return state.eager_runner

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's runner for the current app (idempotent)."""
        self._runner(current_app._get_current_object(), start=True)  # type: ignore[attr-defined]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the runner: no new claims; running jobs finish within ``timeout`` or go back."""
        state = self._state()
        with state.lock:
            runner, state.runner = state.runner, None
        if runner is not None and runner.started and runner.in_this_process:
            runner.stop(timeout)

    def worker_runner(
        self,
        app: Flask,
        *,
        threads: int | None,
        workers: set[str] | None,
        pool: bool,
        scheduler: bool | None = None,
    ) -> Runner:
        """Make the runner of a ``flask jobs worker`` process its app's runner."""
        state = self._state(app)
        with state.lock:
            if state.runner is not None and state.runner.started:
                raise RuntimeError("this process already runs jobs for the app")
            state.runner = Runner(self, app, state.settings, state.store, threads=threads,
                                  workers=workers, pool=pool, scheduler=scheduler)  # fmt: skip
            return state.runner

    def _runner(self, app: Flask, start: bool) -> Runner:
        state = self._state(app)
        runner = state.runner
        if runner is None or runner.process["pid"] != os.getpid():
            with state.lock:
                runner = state.runner
                if runner is None or runner.process["pid"] != os.getpid():
                    # First use in this process (or the first after a fork): a runner of its own.
                    runner = state.runner = Runner(self, app, state.settings, state.store)
        if start and not runner.started:
            runner.start()
            atexit.register(_stop_at_exit, weakref.ref(runner))
        return runner

    def execution_for(self, app: Flask, job: BackgroundJob) -> Execution:
        """Prepare the run of ``job``: what it calls, with its live state."""
        settings = self._state(app).settings
        target: Target
        if job.request_type == RequestType.API.value:
            target = partial(call_view, self, app)
        else:
            try:
                command = self.registry.get(job.command)
                target = _command_target(command)
            except UnknownCommandError as error:
                target = _failing_target(error)
        return Execution(self, app, job, target, self.now, settings.max_log_bytes)

    def follow_ups(self, app: Flask, outcome: Outcome) -> list[NewJob]:
        """The jobs a completed job leads to: its callback, and its reply_to notification."""
        job = outcome.job
        settings = self._state(app).settings
        made = []
        if job.callback is not None:
            options = JobOptions(parent_id=job.id, user_id=job.user_id, tag=job.tag,
                                 batch_id=job.batch_id, created_by=job.created_by)  # fmt: skip
            command = self.registry.get(job.callback)
            made.append(options.new_job(job.callback, RequestType.COMMAND.value, outcome.result,
                                        settings, outcome.ended_at, command,
                                        extra={"callback_of": job.id}))  # fmt: skip
        if job.reply_to is not None and settings.notify_reply_to:
            # The notification reads the URL from this job when it runs: its secrets are not
            # copied into another record.
            options = JobOptions(parent_id=job.id, tag=job.tag, batch_id=job.batch_id)
            request = to_json({"job_id": job.id}, "request")
            notifier = self.registry.get(REPLY_TO_COMMAND)
            made.append(options.new_job(REPLY_TO_COMMAND, RequestType.COMMAND.value, request,
                                        settings, outcome.ended_at, notifier))  # fmt: skip
        return made

    def now(self) -> float:
        """The injected clock's time, as epoch seconds."""
        return self.clock().timestamp()

    def clock_now(self) -> datetime:
        """The injected clock's time, as an aware UTC datetime."""
        return self.clock()

    def _apps(self) -> list[Flask]:
        return list(self._states.keys())

    def run_command(
        self, command: str, request: Any = None, *, worker: str | None = None
    ) -> BackgroundJob:
        """Run ``command`` now on a worker thread without storing it; returns the live job.

        ``job.future.result(timeout)`` gives the result (or raises the command's error).
        """
        registered = self.registry.get(command)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        now = self.now()
        job = BackgroundJob(
            id=0,
            ref_id="",
            command=command,
            request_type=RequestType.COMMAND.value,
            state=JobState.STARTED,
            created_at=now,
            started_at=now,
            request=_plain(request),
            worker=worker if worker is not None else registered.worker,
            timeout=registered.timeout
            if registered.timeout is not None
            else state.settings.timeout,
            future=Future(),
        )
        execution = self.execution_for(app, job)
        if state.settings.eager:
            execution.run()
            execution.settle()
        else:
            self._runner(app, start=state.settings.autostart).run_transient(execution)
        return job

    async def run_command_async(
        self, command: str, request: Any = None, *, worker: str | None = None
    ) -> Any:
        """Like :meth:`run_command`, awaiting the command's result."""
        import asyncio

        job = self.run_command(command, request, worker=worker)
        assert job.future is not None
        return await asyncio.wrap_future(job.future)

    # -- querying and managing -------------------------------------------------------------------

    def get_job(self, job_id: int) -> JobResult | None:
        """Everything known about job ``job_id``, or ``None``."""
        return self._state().store.get(job_id=job_id)

    def get_job_by_ref_id(self, ref_id: str) -> JobResult | None:
        """Everything known about the job with ``ref_id``, or ``None``."""
        return self._state().store.get(ref_id=ref_id)

    def list_jobs(
        self,
        state: JobState | str | None = None,
        command: str | None = None,
        tag: str | None = None,
        limit: int = 50,
        *,
        batch_id: str | None = None,
        created_by: str | None = None,
        user_id: Any = None,
        parent_id: int | None = None,
        depends_on: int | None = None,
        args: dict[str, str] | None = None,
    ) -> list[JobSummary]:
        """Summaries of the newest jobs, filtered by any of the given values."""
        wanted = JobState(state) if state is not None else None
        return self._state().store.list_summaries(
            wanted, limit, args, command=command, tag=tag, batch_id=batch_id,
            created_by=created_by, user_id=None if user_id is None else str(user_id),
            parent_id=parent_id, depends_on=depends_on,
        )  # fmt: skip

    def progress_of(self, result: JobResult) -> float | None:
        """A job's progress from 0 to 1: its own report, else an estimate from past durations.

        The estimate is the time the job has run over its command's recent average duration,
        capped at 0.99 until the job completes.
        """
        if result.state is JobState.COMPLETED:
            return 1.0
        job = result.queued
        if job is None or job.state is not JobState.STARTED:
            return None
        if job.progress is not None or job.started_at is None:
            return job.progress
        average = self._state().store.average_duration(job.command)
        if not average:
            return None
        return min(0.99, max(0.0, (self.now() - job.started_at) / average))

    def wait_for(self, job_id: int, timeout: float | None = 10.0) -> JobResult:
        """Block until the job is completed, failed or cancelled; return its result.

        Raises :class:`TimeoutError` after ``timeout`` seconds and :class:`JobNotFoundError` for
        an unknown id. Works for jobs run by any process.
        """
        import time

        state = self._state()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = state.store.get(job_id=job_id)
            if result is None:
                raise JobNotFoundError(f"no job has id {job_id}")
            if result.state.is_final:
                return result
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"job {job_id} did not finish within {timeout:g} s (it is {result.state.value})"
                )
            with state.finished:
                state.finished.wait(0.05 if remaining is None else min(0.05, remaining))

    def notify_finished(self) -> None:
        """Wake :meth:`wait_for` callers of every app (a job of theirs may have finished)."""
        for state in list(self._states.values()):
            with state.finished:
                state.finished.notify_all()

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a queued job (it never starts) or ask a running one to stop.

        A running job stops within about half a second in whichever process runs it. Returns
        ``False`` if the job is not queued or running.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        owner = f"cancel:{os.getpid()}"
        taken = state.store.cancel(job_id, owner, self.now())
        if isinstance(taken, BackgroundJob):
            record(app, self, state.store, [cancelled(taken, self.now())], owner)
            return True
        if taken and state.runner is not None:
            state.runner.stop_job(job_id, "cancelled")
        return taken

    def requeue_job(self, job_id: int, dependents: bool = False) -> JobRef:
        """Put a failed or cancelled job back in the queue under the same id.

        The jobs that were cancelled because they depended on it stay cancelled, unless
        ``dependents=True``: then they are requeued too (recursively) and wait for it again.
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        ref = state.store.requeue(job_id, self.now())
        job_enqueued.send(app, ref=ref, command=None, requeued=True)
        if dependents:
            for child in state.store.list_summaries(JobState.CANCELLED, 1_000_000,
                                                    depends_on=job_id):  # fmt: skip
                self.requeue_job(child.id, dependents=True)
        if state.runner is not None:
            state.runner.wake()
        elif state.settings.eager:
            self._run_eagerly(app, state, ref)
        return ref

    def prune(self, keep_months: int) -> list[str]:
        """Delete the monthly job files older than the last ``keep_months`` months."""
        return self._state().store.history.prune(keep_months)

    def store(self, app: Flask | None = None) -> JobStore:
        """The storage of ``app`` (default: the current app)."""
        return self._state(app).store

    def settings(self, app: Flask | None = None) -> Settings:
        return self._state(app).settings

    def _state(self, app: Flask | None = None) -> _AppState:
        if app is None:
            try:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            except RuntimeError:
                raise RuntimeError(
                    "Working outside of application context: flask_bgjobs needs the app. "
                    "Use `with app.app_context():`."
                ) from None
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                "This app is not set up for background jobs. Did you forget `jobs.init_app(app)`?"
            )
        return state


def _command_target(command: Command) -> Target:
    return lambda job: command.call(job.request)


def _failing_target(error: Exception) -> Target:
    def fail(job: BackgroundJob) -> Any:
        raise error

    return fail


def _stop_at_exit(ref: weakref.ref[Runner]) -> None:
    runner = ref()
    if runner is not None and runner.started and runner.in_this_process:
        runner.stop(timeout=0)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
