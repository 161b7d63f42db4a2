"""The scheduler loop of a runner: fires recurring tasks when they are due.

Any number of processes may run it on one ``jobs.db``: firing is one transaction keyed by
(task, due time) (see :mod:`flask_bgjobs.tasks`). The loop sleeps until the earliest due time,
at most ``MAX_SLEEP`` seconds so that tasks registered by other processes are seen, and wakes
at once when a task is registered or run in this process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import Clock
from .options import JobOptions
from .tasks import CATCH_UP, Fired, JobFactory, Task, TaskStore

logger = logging.getLogger("flask_bgjobs")

MAX_SLEEP = 1.0  # seconds the loop sleeps at most between two looks at the tasks
ERROR_PAUSE = 1.0


@dataclass
class TaskSpec:
    """A recurring task as registered in code (``jobs.recurring_command`` and friends)."""

    name: str
    request_type: str
    command: str
    schedule: Any  # Schedule
    request: str | None
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: str = "one"
    overlap: bool = False

    def to_task(self, now: datetime) -> Task:
        stamp = now.timestamp()
        return Task(
            name=self.name, request_type=self.request_type, command=self.command,
            schedule=self.schedule, request=self.request, options=self.options,
            catch_up=self.catch_up, overlap=self.overlap, enabled=True,
            next_run_at=self.schedule.next_after(now).timestamp(), last_run_at=None,
            last_job_id=None, skipped=0, last_skipped_at=None, last_skip_reason=None,
            created_at=stamp, updated_at=stamp,
        )  # fmt: skip


def check_policies(catch_up: str, overlap: Any) -> None:
    from .errors import InvalidJobError

    if catch_up not in CATCH_UP:
        raise InvalidJobError(f"catch_up must be one of {', '.join(CATCH_UP)}, not {catch_up!r}")
    if not isinstance(overlap, bool):
        raise InvalidJobError(f"overlap must be True or False, not {overlap!r}")


def task_options(options: dict[str, Any]) -> JobOptions:
    """The job options of a task; options that make no sense for a recurring job are refused."""
    from .errors import InvalidJobError

    for name in ("ref_id", "depends_on", "run_after", "on_conflict"):
        if name in options:
            raise InvalidJobError(f"a recurring task cannot set {name}: each run is a new job")
    return JobOptions(**options)


class Scheduler:
    """Fires the due tasks of one app, in a thread of the runner."""

    def __init__(
        self,
        tasks: TaskStore,
        make_job: JobFactory,
        clock: Clock,
        grace: float,
        on_fired: Callable[[list[Fired]], None],
    ) -> None:
        self.tasks = tasks
        self.make_job = make_job
        self.clock = clock
        self.grace = grace
        self.on_fired = on_fired
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime) -> list[Fired]:
        """Fire what is due at ``now``."""
        fired = self.tasks.fire_due(now, self.make_job, self.grace)
        for item in fired:
            if item.skipped:
                logger.info("flask_bgjobs skipped task %r due %s: %s", item.task,
                            item.due.isoformat(), item.skipped)  # fmt: skip
        if fired:
            self.on_fired(fired)
        return fired

    def sleep_for(self, now: datetime) -> float:
        """Seconds until the earliest due time, at most ``MAX_SLEEP``."""
        due = self.tasks.next_due()
        if due is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.0, due - now.timestamp()))

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bgjobs-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick(self.clock())
                wait = self.sleep_for(self.clock())
            except Exception:  # never let the scheduler die: log, pause, go on
                logger.exception("flask_bgjobs scheduler failed; trying again")
                wait = ERROR_PAUSE
            self._wake.wait(wait)
            self._wake.clear()
