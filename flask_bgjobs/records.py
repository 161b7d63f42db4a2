"""Jobs as rows and rows as jobs: what the store reads and writes, in Python terms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from .models import Attempt, BackgroundJob, JobRecord, JobState, JobSummary, to_datetime
from .serialization import from_json, to_json
from .sqlite import month_of
from .tables import RECORD_FIELDS, job_summary
from .text import utf8_safe

QUEUE_FIELDS = (*RECORD_FIELDS, "lease_owner", "lease_expires_at", "cancel_requested")
HISTORY_FIELDS = (*RECORD_FIELDS, "result", "completed_at", "duration", "worker_process")
SUMMARY_FIELDS = tuple(column.name for column in job_summary.columns)
_JSON_FIELDS = frozenset({"request", "args", "options", "result"})


R = TypeVar("R", bound=JobRecord)


@dataclass
class NewJob:
    """A job about to be enqueued, its options resolved and its JSON already encoded."""

    command: str
    request_type: str
    request: str | None
    created_at: float
    run_after: float
    retry_limit: int
    timeout: float | None
    ref_id: str | None = None
    parent_id: int | None = None
    worker: str | None = None
    tag: str | None = None
    batch_id: str | None = None
    callback: str | None = None
    depends_on: int | None = None
    created_by: str | None = None
    user_id: str | None = None
    reply_to: str | None = None
    args: str | None = None
    options: str | None = None


@dataclass
class Outcome:
    """How one run of a claimed job ended, for :meth:`JobStore.finish`.

    ``state`` is final (completed, failed, cancelled) or ``QUEUED`` for a retry at ``run_after``.
    """

    job: BackgroundJob
    state: JobState
    ended_at: float
    result: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    run_after: float | None = None
    worker_process: str | None = None
    live: dict[str, Any] = field(default_factory=dict)  # progress, status, logs at the end
    follow_ups: list[NewJob] = field(default_factory=list)  # enqueued if the job completed

    def __post_init__(self) -> None:
        # Error text comes from the command's exception: SQLite stores UTF-8 only.
        self.error_type = utf8_safe(self.error_type)
        self.error_message = utf8_safe(self.error_message)
        self.error_traceback = utf8_safe(self.error_traceback)
        if self.live:
            self.live = {k: utf8_safe(v) if isinstance(v, str) else v for k, v in self.live.items()}

    @property
    def duration(self) -> float | None:
        started = self.job.started_at
        return None if started is None else max(0.0, self.ended_at - started)


@dataclass
class LiveState:
    """What a running job reported last: written to the queue row about twice a second."""

    job_id: int
    attempt: int
    progress: float | None
    status: str | None
    logs: str

    def __post_init__(self) -> None:
        # Status and log lines are the command's own text: SQLite stores UTF-8 only.
        self.status = utf8_safe(self.status)
        self.logs = utf8_safe(self.logs) or ""


def new_job_from(record: JobRecord, run_after: float) -> NewJob:
    """The job to enqueue again for ``record`` (a requeue), its JSON fields encoded."""
    return NewJob(
        command=record.command, request_type=record.request_type,
        request=to_json(record.request, "request"), created_at=record.created_at,
        run_after=run_after, retry_limit=record.retry_limit or 0, timeout=record.timeout,
        ref_id=record.ref_id, parent_id=record.parent_id, worker=record.worker, tag=record.tag,
        batch_id=record.batch_id, callback=record.callback, depends_on=record.depends_on,
        created_by=record.created_by, user_id=record.user_id, reply_to=record.reply_to,
        args=to_json(record.args or None, "args"), options=to_json(record.options or None,
                                                                   "options"),
    )  # fmt: skip


def month_of_epoch(moment: float) -> str:
    """The ``YYYY-MM`` month (UTC) of an epoch timestamp."""
    # Months begin on whole hours: the hour number is a key that never straddles two months.
    return _month_of_hour(int(moment // 3600))


@lru_cache(maxsize=64)
def _month_of_hour(hour: int) -> str:
    value = to_datetime(hour * 3600.0)
    assert value is not None
    return month_of(value)


def to_record(cls: type[R], fields: Sequence[str], row: Sequence[Any]) -> R:
    """Build a record from a row of ``fields``, decoding its JSON columns."""
    values = dict(zip(fields, row, strict=True))
    stored = {name: values[name] for name in _JSON_FIELDS.intersection(values)}
    for name, text in stored.items():
        values[name] = from_json(text)
    values["args"] = values["args"] or {}
    values["options"] = values["options"] or {}
    values["logs"] = values["logs"] or ""
    values["history"] = [Attempt(**item) for item in from_json(values["history"]) or []]
    values["state"] = JobState(values["state"])
    job = cls(**values)
    # The JSON as stored: moving the job to its month writes it back without encoding it again.
    job.__dict__["_stored_json"] = stored
    return job


def summary_of(row: Any) -> JobSummary:
    values = {name: getattr(row, name) for name in SUMMARY_FIELDS}
    values["state"] = JobState(values["state"])
    values["args"] = from_json(values["args"]) or {}
    return JobSummary(**values)


def history_json(history: Sequence[Attempt]) -> str | None:
    return to_json([attempt.to_json() for attempt in history], "history") if history else None


def attempt_of(outcome: Outcome) -> Attempt:
    return Attempt(
        outcome.job.attempts,
        outcome.job.started_at,
        outcome.ended_at,
        outcome.error_type,
        outcome.error_message,
        outcome.error_traceback,
        outcome.worker_process,
    )


def history_row(outcome: Outcome) -> tuple[Any, ...]:
    """The row of a finished job in its month's ``completed_job`` or ``failed_job`` table."""
    job = outcome.job
    live = outcome.live
    stored = job.__dict__.get("_stored_json") or {}
    values: dict[str, Any] = {
        **{name: getattr(job, name) for name in RECORD_FIELDS},
        "request": stored["request"] if "request" in stored else to_json(job.request, "request"),
        "args": stored["args"] if "args" in stored else to_json(job.args or None, "args"),
        "options": stored.get("options")
        if "options" in stored
        else to_json(job.options or None, "options"),
        "history": history_json(job.history),
        "state": outcome.state.value,
        "progress": live.get("progress", job.progress),
        "status": live.get("status", job.status),
        "logs": live.get("logs", job.logs) or None,
        "error_type": outcome.error_type,
        "error_message": outcome.error_message,
        "error_traceback": outcome.error_traceback,
        "result": outcome.result,
        "completed_at": outcome.ended_at,
        "duration": outcome.duration,
        "worker_process": outcome.worker_process,
    }
    return tuple(values[name] for name in HISTORY_FIELDS)


def short(message: str | None, limit: int = 500) -> str | None:
    return message if message is None or len(message) <= limit else message[: limit - 1] + "…"
