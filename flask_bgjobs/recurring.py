"""Recurring tasks on :class:`~flask_bgjobs.BackgroundJobs`: registration and management.

A mixin: the methods live here to keep the extension module small; they use its registry,
clock and per-app state.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from .api import check_endpoint
from .errors import InvalidJobError, JobNotFoundError
from .models import JobRef, RequestType
from .options import check_text
from .records import NewJob
from .schedule import Schedule
from .scheduler import Scheduler, TaskSpec, check_policies, task_options
from .serialization import to_json
from .tasks import Fired, Task

if TYPE_CHECKING:
    from .extension import _AppState
    from .registry import CommandRegistry
    from .runner import Runner

#: The key, in a scheduled job's ``args``, that names the task that created it.
TASK_ARG = "scheduled_task"


class RecurringMixin:
    """``recurring_command``, ``recurring_api``, ``remove_recurring``, ``run_now``, ..."""

    registry: CommandRegistry
    _recurring: dict[str, TaskSpec]

    def _state(self, app: Flask | None = None) -> _AppState:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def _apps(self) -> list[Flask]:
        raise NotImplementedError

    def recurring_command(
        self,
        command: str,
        schedule: Schedule,
        request: Any = None,
        *,
        name: str | None = None,
        catch_up: str = "one",
        overlap: bool = False,
        **options: Any,
    ) -> str:
        """Run ``command`` on ``schedule``; returns the task's name (the command's by default).

        Registering a name again updates its schedule, request and options and keeps its last
        run. ``catch_up`` after downtime: ``"one"`` run now, ``"all"`` missed runs (bounded),
        ``"skip"``. With ``overlap=False`` a due time is skipped while the previous run is still
        queued or running. ``options`` are those of ``enqueue_command``, applied to every run.
        """
        registered = self.registry.get(command)
        if registered.request_class is not None:
            registered.build_request(request)
        spec = self._spec(RequestType.COMMAND.value, command, schedule, request, name,
                          catch_up, overlap, options, {})  # fmt: skip
        return self._register(spec)

    def recurring_api(
        self,
        endpoint: str,
        schedule: Schedule,
        request: Any = None,
        *,
        name: str | None = None,
        method: str = "POST",
        view_args: dict[str, Any] | None = None,
        catch_up: str = "one",
        overlap: bool = False,
        **options: Any,
    ) -> str:
        """Call the view ``endpoint`` on ``schedule`` (see :meth:`recurring_command`)."""
        method = str(method).upper()
        api: dict[str, Any] = {"method": method, "view_args": view_args or None}
        spec = self._spec(RequestType.API.value, endpoint, schedule, request, name, catch_up,
                          overlap, options, api)  # fmt: skip
        for app in self._apps():
            check_endpoint(app, endpoint, method, view_args or {})
        return self._register(spec)

    def _spec(
        self, request_type: str, target: str, schedule: Schedule, request: Any,
        name: str | None, catch_up: str, overlap: bool, options: dict[str, Any],
        api: dict[str, Any],
    ) -> TaskSpec:  # fmt: skip
        if not isinstance(schedule, Schedule):
            raise InvalidJobError(
                f"schedule must be a Schedule (Schedule.cron(...), Schedule.interval(...)), "
                f"not {schedule!r}"
            )
        check_policies(catch_up, overlap)
        check_text(name, "name")  # the admin's run-now and enable buttons take 200 characters
        task_options(options).check(self.registry)
        return TaskSpec(name or target, request_type, target, schedule,
                        to_json(request, "request"), {**options, **api}, catch_up,
                        overlap)  # fmt: skip

    def _register(self, spec: TaskSpec) -> str:
        self._recurring[spec.name] = spec
        for app in self._apps():
            self._sync_task(app, spec)
        return spec.name

    def _sync_task(self, app: Flask, spec: TaskSpec) -> None:
        state = self._state(app)
        state.tasks.upsert(spec.to_task(self.clock_now()))
        runner = state.runner
        if runner is not None and runner.scheduler is not None:
            runner.scheduler.wake()

    def remove_recurring(self, name: str) -> bool:
        """Forget task ``name`` in code and in the current app's database."""
        self._recurring.pop(name, None)
        return self._state().tasks.remove(name)

    def enable_recurring(self, name: str, enabled: bool = True) -> None:
        """Turn task ``name`` on (or off with ``enabled=False``)."""
        if not self._state().tasks.set_enabled(name, enabled, self.now()):
            raise JobNotFoundError(f"no recurring task is named {name!r}")

    def run_now(self, name: str) -> JobRef:
        """Fire task ``name`` now, outside its schedule."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        job_id = state.tasks.run_now(name, self.clock_now(), self._task_job_factory(app))
        if job_id is None:
            raise JobNotFoundError(f"no recurring task is named {name!r}")
        if state.runner is not None:
            state.runner.wake()
        found = state.store.summary(job_id)
        assert found is not None
        return JobRef(job_id, found.ref_id)

    def recurring_tasks(self) -> list[Task]:
        """Every task of the current app, with its last and next runs."""
        return self._state().tasks.tasks()

    def prune_recurring(self) -> list[str]:
        """Remove the stored tasks that this process did not register."""
        tasks = self._state().tasks
        gone = [task.name for task in tasks.tasks() if task.name not in self._recurring]
        for name in gone:
            tasks.remove(name)
        return gone

    def tick(self, now: datetime | None = None) -> list[Fired]:
        """Fire the tasks due at ``now`` (default: the clock's time), as the scheduler loop does.

        For tests and for apps that drive scheduling themselves (``BGJOBS_SCHEDULER = False``).
        """
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._state(app)
        fired = state.tasks.fire_due(now or self.clock_now(), self._task_job_factory(app),
                                     state.settings.misfire_grace)  # fmt: skip
        if state.runner is not None and fired:
            state.runner.wake()
        return fired

    def clock_now(self) -> datetime:
        raise NotImplementedError

    def make_scheduler(self, app: Flask, runner: Runner) -> Scheduler:
        """The scheduler of ``runner``: it fires tasks and wakes the runner."""
        state = self._state(app)

        def fired(items: list[Fired]) -> None:
            if any(item.job_id is not None for item in items):
                runner.wake()

        return Scheduler(state.tasks, self._task_job_factory(app), self.clock_now,
                         state.settings.misfire_grace, fired)  # fmt: skip

    def _task_job_factory(self, app: Flask) -> Any:
        settings = self._state(app).settings

        def make_job(task: Task, due: datetime) -> NewJob:
            api_keys = ("method", "view_args")
            options = task_options({k: v for k, v in task.options.items() if k not in api_keys})
            options.args = {**(options.args or {}), TASK_ARG: task.name}
            if options.created_by is None:
                options.created_by = "scheduler"
            extra = {k: task.options[k] for k in api_keys if task.options.get(k) is not None}
            if task.request_type == RequestType.API.value:
                extra.setdefault("method", "POST")
                defaults = None
            else:
                defaults = self.registry.get(task.command)
            extra["due"] = due.isoformat()
            return options.new_job(task.command, task.request_type, task.request, settings,
                                   self.now(), defaults, extra=extra)  # fmt: skip

        return make_job
