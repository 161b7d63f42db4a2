"""What each admin page shows, as plain JSON-ready dicts: the pages render them, the API sends them.

One builder per page keeps the two in step: everything a page shows is in its ``/api/`` twin.
Times are epoch seconds (UTC); durations and ages are seconds, measured with the extension's clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..callbacks import redact_reply_to
from ..errors import StorageError
from ..models import BackgroundJob, JobResult, JobState, JobSummary
from ..notify import REPLY_TO_COMMAND
from ..recurring import TASK_ARG
from ..sqlite import months_before
from ..tasks import Task
from . import queries
from .queries import HistoryFilters

if TYPE_CHECKING:
    from ..extension import BackgroundJobs
    from ..store import JobStore

DAY = 86400.0
CHART_DAYS = 30
RANKED_COMMANDS = 5
MONTHS_COUNTED = 24  # months of the dashboard's table, newest first
RELATED_LIMIT = 50  # dependents, children or batch siblings listed on a job's page
STOPPED_SHOWN = DAY  # stopped processes stay on the workers page this long
OUTCOMES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Selection:
    """What a month's list asks for (from the query string)."""

    month: str
    filters: HistoryFilters
    order_by: str
    page: int
    per_page: int


# -- dashboard -------------------------------------------------------------------------------------


def dashboard_counts(jobs: BackgroundJobs) -> dict[str, Any]:
    """The counts that change by the second: the queue, today, this month, the processes."""
    store = jobs.store()
    now = jobs.now()
    month = store.history.current_month()
    lease = jobs.settings().lease_seconds
    damaged: dict[str, str] = {}
    return {
        "now": now,
        "month": month,
        "queue": queries.queue_counts(store, now),
        "today": _month_counts(store, month, damaged, since=now - now % DAY),
        "this_month": _month_counts(store, month, damaged),
        "processes": queries.process_counts(store, now - lease),
        "damaged": damaged,
    }


def dashboard(jobs: BackgroundJobs) -> dict[str, Any]:
    """The counts, by month too, jobs per day, and the slowest and most failing commands."""
    store = jobs.store()
    counts = dashboard_counts(jobs)
    now = counts["now"]
    first_day = now - now % DAY - (CHART_DAYS - 1) * DAY
    damaged: dict[str, str] = counts["damaged"]
    by_day: dict[tuple[int, str], int] = {}
    for month in _months_from(_month(first_day), counts["month"]):
        try:
            by_day.update(queries.per_day(store, [month], first_day))
        except StorageError as error:  # a damaged month: the others are still shown
            damaged[month] = str(error)
    days = [
        {"day": _date(number * DAY), **{k: by_day.get((number, k), 0) for k in OUTCOMES}}
        for number in queries.day_numbers(first_day, CHART_DAYS)
    ]
    slowest, failing = queries.command_rankings(store, RANKED_COMMANDS)
    for row in failing:
        runs = row["completed"] + row["failed"]
        row["failure_rate"] = row["failed"] / runs if runs else None
    months = [
        {"month": name, **_month_counts(store, name, damaged)}
        for name in store.history.months()[:MONTHS_COUNTED]
    ]
    return {**counts, "months": months, "days": days, "slowest": slowest, "failing": failing}


# -- the queue -------------------------------------------------------------------------------------


def queue(jobs: BackgroundJobs, limit: int) -> dict[str, Any]:
    """Running jobs, then queued and waiting ones, with progress and elapsed time."""
    store = jobs.store()
    now = jobs.now()
    rows = [_queue_row(jobs, row, now) for row in queries.queue_rows(store, limit)]
    counts = queries.queue_counts(store, now)
    total = counts["waiting"] + counts["queued"] + counts["started"]
    return {"now": now, "counts": counts, "total": total, "limit": limit, "jobs": rows}


def _queue_row(jobs: BackgroundJobs, row: dict[str, Any], now: float) -> dict[str, Any]:
    progress, estimated = None, False
    if row["state"] == JobState.STARTED.value:
        job = BackgroundJob(**{**row, "state": JobState.STARTED})
        summary = JobSummary(row["id"], row["ref_id"], row["command"], row["request_type"],
                             JobState.STARTED, row["created_at"])  # fmt: skip
        progress = jobs.progress_of(JobResult(summary, queued=job))
        estimated = row["progress"] is None and progress is not None
    started = row["started_at"]
    return {
        **row,
        "progress": progress,
        "progress_estimated": estimated,
        "elapsed": None if started is None or row["state"] != "started" else max(0, now - started),
        "due_in": max(0.0, row["run_after"] - now) if row["run_after"] is not None else 0.0,
        "waited": max(0.0, now - row["created_at"]),
        "cancelling": row["cancel_requested"] is not None,
    }


# -- completed and failed ------------------------------------------------------------------------


def history(jobs: BackgroundJobs, kind: str, selection: Selection) -> dict[str, Any]:
    """A page of the month's completed or failed jobs, with the months that exist."""
    store = jobs.store()
    offset = (selection.page - 1) * selection.per_page
    damaged = None
    try:
        found = queries.history_page(store, kind, selection.month, selection.filters,
                                     selection.order_by, selection.per_page, offset)  # fmt: skip
    except StorageError as error:  # the month's file is damaged (or unreadable): say so
        found, damaged = queries.HistoryPage(exists=True), str(error)
    for row in found.rows:
        row["request"] = _preview(row["request"])
        row["result"] = _preview(row["result"])
    pages = max(1, -(-found.total // selection.per_page))
    return {
        "kind": kind,
        "month": selection.month,
        "months": month_choices(jobs),
        "exists": found.exists,
        "filters": selection.filters.as_args(),
        "sort": selection.order_by,
        "page": selection.page,
        "per_page": selection.per_page,
        "pages": pages,
        "total": found.total,
        "jobs": found.rows,
        "damaged": damaged,
    }


def month_choices(jobs: BackgroundJobs) -> list[str]:
    """The months that have a file, and the current month, newest first."""
    history = jobs.store().history
    return sorted({*history.months(), history.current_month()}, reverse=True)


# -- one job ---------------------------------------------------------------------------------------


def job(jobs: BackgroundJobs, job_id: int) -> dict[str, Any] | None:
    """Everything about one job: its record, attempts, live log, and the jobs it relates to."""
    result = jobs.get_job(job_id)
    if result is None:
        return None
    record = result.job
    summary = result.summary
    state = result.state
    fields: dict[str, Any] = dict(summary.__dict__)
    if record is not None:
        fields.update({k: v for k, v in record.__dict__.items() if not k.startswith("_")})
        fields.pop("future", None)
        fields["history"] = [attempt.to_json() for attempt in record.history]
    fields["state"] = state.value
    fields["args"] = dict(fields.get("args") or {})
    if fields.get("reply_to"):
        fields["reply_to"] = redact_reply_to(str(fields["reply_to"]))
    now = jobs.now()
    started = fields.get("started_at")
    progress = jobs.progress_of(result)
    # A running job that reports no progress of its own gets an estimate from past durations.
    estimated = bool(record is not None and record.progress is None and progress is not None)
    return {
        "now": now,
        "id": job_id,
        "state": state.value,
        "final": state.is_final,
        "where": "queue" if result.queued else "month" if record is not None else "summary",
        "job": fields,
        "progress": progress,
        "progress_estimated": estimated,
        "elapsed": max(0.0, now - started) if started and state is JobState.STARTED else None,
        "can_cancel": state in (JobState.WAITING, JobState.QUEUED, JobState.STARTED),
        "can_requeue": state in (JobState.FAILED, JobState.CANCELLED),
        "related": _related(jobs, fields),
    }


def _related(jobs: BackgroundJobs, fields: dict[str, Any]) -> dict[str, Any]:
    store = jobs.store()
    job_id = fields["id"]
    options = fields.get("options") or {}

    def one(other: Any) -> dict[str, Any] | None:
        if not isinstance(other, int):
            return None
        found = queries.summaries_where(store, 1, id=other)
        return found[0] if found else {"id": other, "command": None, "state": "unknown"}

    dependents = queries.summaries_where(store, RELATED_LIMIT, depends_on=job_id)
    shown = {row["id"] for row in dependents}
    children = [
        {**row, "role": _role(row["command"], fields.get("callback"))}
        for row in queries.summaries_where(store, RELATED_LIMIT, parent_id=job_id)
        if row["id"] not in shown
    ]
    batch_id = fields.get("batch_id")
    batch: list[dict[str, Any]] = []
    batch_total = 0
    if batch_id is not None:
        batch = [row for row in queries.summaries_where(store, RELATED_LIMIT + 1, batch_id=batch_id)
                 if row["id"] != job_id][:RELATED_LIMIT]  # fmt: skip
        batch_total = queries.count_summaries(store, batch_id=batch_id) - 1
    return {
        "parent": one(fields.get("parent_id")),
        "depends_on": one(fields.get("depends_on")),
        "callback_of": one(options.get("callback_of")),
        "dependents": dependents,
        "dependents_total": queries.count_summaries(store, depends_on=job_id),
        "children": children,
        "batch": batch,
        "batch_total": batch_total,
        "task": (fields.get("args") or {}).get(TASK_ARG),
    }


def _role(command: str, callback: str | None) -> str:
    if command == REPLY_TO_COMMAND:
        return "reply_to notification"
    return "callback" if command == callback else "child"


# -- scheduled tasks and workers -------------------------------------------------------------------


def tasks(jobs: BackgroundJobs) -> dict[str, Any]:
    """Every recurring task with its schedule in words, last run and next run."""
    return {"now": jobs.now(), "tasks": [task_row(task) for task in jobs.recurring_tasks()]}


def task_row(task: Task) -> dict[str, Any]:
    options = dict(task.options)
    if options.get("reply_to"):
        options["reply_to"] = redact_reply_to(str(options["reply_to"]))
    schedule = task.schedule
    return {
        "name": task.name,
        "command": task.command,
        "request_type": task.request_type,
        "schedule": schedule.describe(),
        "kind": schedule.kind,
        "expression": schedule.expression or None,
        "tz": schedule.tz if schedule.kind == "cron" else None,
        "interval": schedule.seconds if schedule.kind == "interval" else None,
        "request": None if task.request is None else json.loads(task.request),
        "options": options,
        "catch_up": task.catch_up,
        "overlap": task.overlap,
        "enabled": task.enabled,
        "next_run_at": task.next_run_at,
        "last_run_at": task.last_run_at,
        "last_job_id": task.last_job_id,
        "last_state": task.last_state,
        "skipped": task.skipped,
        "last_skipped_at": task.last_skipped_at,
        "last_skip_reason": task.last_skip_reason,
    }


def workers(jobs: BackgroundJobs) -> dict[str, Any]:
    """Worker processes with their heartbeats and current jobs; lost ones flagged."""
    store = jobs.store()
    now = jobs.now()
    lease = jobs.settings().lease_seconds
    running = queries.running_by_owner(store)
    processes = []
    for row in queries.worker_processes(store, now - STOPPED_SHOWN):
        age = max(0.0, now - row.heartbeat_at)
        status = "stopped" if row.stopped_at is not None else "lost" if age > lease else "live"
        processes.append({
            "id": row.id, "host": row.host, "pid": row.pid, "started_at": row.started_at,
            "heartbeat_at": row.heartbeat_at, "heartbeat_age": age, "threads": row.threads,
            "workers": None if row.workers is None else json.loads(row.workers),
            "scheduler": bool(row.scheduler), "stopped_at": row.stopped_at, "status": status,
            "jobs": running.get(row.id, []) if status != "stopped" else [],
        })  # fmt: skip
    return {"now": now, "lease_seconds": lease, "processes": processes}


# -- helpers ---------------------------------------------------------------------------------------


def _month_counts(
    store: JobStore, month: str, damaged: dict[str, str], since: float | None = None
) -> dict[str, int]:
    """A month's counts; a damaged file counts nothing and is listed in ``damaged``."""
    try:
        return queries.month_counts(store, month, since)
    except StorageError as error:
        damaged[month] = str(error)
        return {"completed": 0, "failed": 0, "cancelled": 0}


def _month(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m")


def _months_from(first: str, last: str) -> list[str]:
    """The months from ``first`` to ``last``, newest first."""
    months = [last]
    while months[-1] > first:
        months.append(months_before(months[-1], 1))
    return months


def _date(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d")


def _preview(text: str | None) -> str | None:
    """A list's one-line view of stored JSON (already cut short by the query)."""
    if text is None:
        return None
    return " ".join(text.split())
