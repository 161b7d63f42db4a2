"""All SQL of recurring tasks: ``scheduled_task`` and ``scheduled_run`` in ``jobs.db``.

Firing a due time is one transaction: the run is recorded under its unique (task, due time) key,
its job enqueued, and the task's next due time moved on. A second scheduler that reaches the same
due time finds the key taken and fires nothing: once per due time is the database's rule.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .models import to_datetime
from .records import NewJob
from .schedule import Schedule
from .sqlite import Database, WriteTx
from .store import insert_job

#: Builds the job of one due time of a task: ``(task, due) -> NewJob``.
JobFactory = Callable[["Task", datetime], NewJob]

CATCH_UP = ("one", "all", "skip")
MAX_CATCH_UP = 50  # due times run at most after downtime with catch_up="all"
RUN_HISTORY_SECONDS = 86400.0  # how long fired due times are kept (their keys guard re-firing)

_TASK_FIELDS = (
    "name", "request_type", "command", "schedule", "request", "options", "catch_up", "overlap",
    "enabled", "next_run_at", "last_run_at", "last_job_id", "skipped", "last_skipped_at",
    "last_skip_reason", "created_at", "updated_at",
)  # fmt: skip
_TASK_COLS = ", ".join(_TASK_FIELDS)


@dataclass
class Task:
    """A recurring task as stored, with its last outcome."""

    name: str
    request_type: str
    command: str
    schedule: Schedule
    request: str | None
    options: dict[str, Any]
    catch_up: str
    overlap: bool
    enabled: bool
    next_run_at: float | None
    last_run_at: float | None
    last_job_id: int | None
    skipped: int
    last_skipped_at: float | None
    last_skip_reason: str | None
    created_at: float
    updated_at: float
    last_state: str | None = None  # of its last job

    @property
    def next_run(self) -> datetime | None:
        return to_datetime(self.next_run_at)

    @property
    def last_run(self) -> datetime | None:
        return to_datetime(self.last_run_at)


@dataclass
class Fired:
    """One due time a tick dealt with: the job it enqueued, or why it was skipped."""

    task: str
    due: datetime
    job_id: int | None = None
    skipped: str | None = None


class TaskStore:
    """Recurring tasks in ``jobs.db``."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def upsert(self, task: Task) -> None:
        """Create or update a task by name; its last run, and whether it is enabled, are kept.

        A changed schedule starts again from ``task.next_run_at``.
        """
        values = _row(task)
        with self.database.write() as tx:
            tx.execute(
                f"INSERT INTO scheduled_task ({_TASK_COLS}) VALUES "
                f"({', '.join(':' + f for f in _TASK_FIELDS)}) ON CONFLICT (name) DO UPDATE SET "
                "request_type = excluded.request_type, command = excluded.command, "
                "request = excluded.request, options = excluded.options, "
                "catch_up = excluded.catch_up, overlap = excluded.overlap, "
                "updated_at = excluded.updated_at, "
                "next_run_at = CASE WHEN schedule = excluded.schedule THEN next_run_at "
                "ELSE excluded.next_run_at END, schedule = excluded.schedule",
                values,
            )

    def remove(self, name: str) -> bool:
        with self.database.write() as tx:
            tx.execute("DELETE FROM scheduled_run WHERE task = ?", (name,))
            return bool(tx.execute("DELETE FROM scheduled_task WHERE name = ?", (name,)).rowcount)

    def set_enabled(self, name: str, enabled: bool, now: float) -> bool:
        with self.database.write() as tx:
            return bool(tx.execute(
                "UPDATE scheduled_task SET enabled = ?, updated_at = ? WHERE name = ?",
                (int(enabled), now, name),
            ).rowcount)  # fmt: skip

    def tasks(self) -> list[Task]:
        """Every task, by name, with the state of its last job."""
        with self.database.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {', '.join('t.' + f for f in _TASK_FIELDS)}, "
                "coalesce(b.state, s.state) FROM scheduled_task t "
                "LEFT JOIN job_summary s ON s.id = t.last_job_id "
                "LEFT JOIN background_job b ON b.id = t.last_job_id ORDER BY t.name"
            ).all()
        return [_task(row) for row in rows]

    def get(self, name: str) -> Task | None:
        return next((task for task in self.tasks() if task.name == name), None)

    def next_due(self) -> float | None:
        """The earliest due time of the enabled tasks."""
        with self.database.read() as conn:
            value = conn.exec_driver_sql(
                "SELECT MIN(next_run_at) FROM scheduled_task WHERE enabled = 1"
            ).scalar()
        return None if value is None else float(value)

    def fire_due(self, now: datetime, make_job: JobFactory, grace: float) -> list[Fired]:
        """Fire what is due at ``now``, following each task's catch-up and overlap policies."""
        fired: list[Fired] = []
        stamp = now.timestamp()
        with self.database.write() as tx:
            rows = tx.execute(
                f"SELECT {_TASK_COLS}, NULL FROM scheduled_task "
                "WHERE enabled = 1 AND next_run_at <= ?",
                (stamp,),
            ).fetchall()
            for row in rows:
                fired += self._fire(tx, _task(row), now, make_job, grace)
            tx.execute("DELETE FROM scheduled_run WHERE due_at < ?", (stamp - RUN_HISTORY_SECONDS,))
        return fired

    def _fire(
        self, tx: WriteTx, task: Task, now: datetime, make_job: JobFactory, grace: float
    ) -> list[Fired]:
        assert task.next_run_at is not None
        first = to_datetime(task.next_run_at)
        assert first is not None
        limit = MAX_CATCH_UP if task.catch_up == "all" else 1
        dues, next_due = task.schedule.due_times(first, now, limit)
        late = (now - dues[-1]).total_seconds() if dues else 0.0
        # Later than the grace (at most half the gap to the next due time) is missed.
        gap = (next_due - dues[-1]).total_seconds() if dues else grace
        results: list[Fired] = []
        if task.catch_up == "skip" and late > min(grace, gap / 2):
            results = [Fired(task.name, dues[-1], skipped="missed")]
        elif not task.overlap and _still_running(tx, task.last_job_id):
            results = [Fired(task.name, dues[-1], skipped="overlap")]
        else:
            for due in dues:
                job_id = _fire_one(tx, task, due, now, make_job)
                if job_id is not None:
                    results.append(Fired(task.name, due, job_id))
        _record(tx, task, results, next_due, now)
        return results

    def run_now(self, name: str, now: datetime, make_job: JobFactory) -> int | None:
        """Fire a task at once, outside its schedule; returns the job id (``None``: no task)."""
        with self.database.write() as tx:
            row = tx.execute(
                f"SELECT {_TASK_COLS}, NULL FROM scheduled_task WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            task = _task(row)
            job_id = _fire_one(tx, task, now, now, make_job)
            if job_id is not None:
                tx.execute(
                    "UPDATE scheduled_task SET last_run_at = ?, last_job_id = ? WHERE name = ?",
                    (now.timestamp(), job_id, name),
                )
            return job_id


def _fire_one(
    tx: WriteTx, task: Task, due: datetime, now: datetime, make_job: JobFactory
) -> int | None:
    try:
        tx.execute(
            "INSERT INTO scheduled_run (task, due_at, fired_at) VALUES (?, ?, ?)",
            (task.name, due.timestamp(), now.timestamp()),
        )
    except sqlite3.IntegrityError:
        return None  # another scheduler fired this due time already
    ref = insert_job(tx, make_job(task, due))
    tx.execute(
        "UPDATE scheduled_run SET job_id = ? WHERE task = ? AND due_at = ?",
        (ref.id, task.name, due.timestamp()),
    )
    return ref.id


def _record(
    tx: WriteTx, task: Task, results: list[Fired], next_due: datetime, now: datetime
) -> None:
    ran = [f for f in results if f.job_id is not None]
    skipped = [f for f in results if f.skipped is not None]
    for skip in skipped:
        tx.execute(
            "INSERT OR IGNORE INTO scheduled_run (task, due_at, fired_at, skipped) "
            "VALUES (?, ?, ?, ?)",
            (task.name, skip.due.timestamp(), now.timestamp(), skip.skipped),
        )
    tx.execute(
        "UPDATE scheduled_task SET next_run_at = ?, "
        "last_run_at = coalesce(?, last_run_at), last_job_id = coalesce(?, last_job_id), "
        "skipped = skipped + ?, last_skipped_at = coalesce(?, last_skipped_at), "
        "last_skip_reason = coalesce(?, last_skip_reason) WHERE name = ?",
        (next_due.timestamp(),
         ran[-1].due.timestamp() if ran else None, ran[-1].job_id if ran else None,
         len(skipped), now.timestamp() if skipped else None,
         skipped[-1].skipped if skipped else None, task.name),
    )  # fmt: skip


def _still_running(tx: WriteTx, job_id: int | None) -> bool:
    if job_id is None:
        return False
    return tx.execute("SELECT 1 FROM background_job WHERE id = ?", (job_id,)).fetchone() is not None


def _row(task: Task) -> dict[str, Any]:
    values = {name: getattr(task, name) for name in _TASK_FIELDS}
    values["schedule"] = json.dumps(task.schedule.to_json(), sort_keys=True)
    values["options"] = json.dumps(task.options, sort_keys=True)
    values["overlap"] = int(task.overlap)
    values["enabled"] = int(task.enabled)
    return values


def _task(row: Any) -> Task:
    values = dict(zip(_TASK_FIELDS, row[: len(_TASK_FIELDS)], strict=True))
    values["schedule"] = Schedule.from_json(json.loads(values["schedule"]))
    values["options"] = json.loads(values["options"] or "{}")
    values["overlap"] = bool(values["overlap"])
    values["enabled"] = bool(values["enabled"])
    return Task(**values, last_state=row[len(_TASK_FIELDS)])
