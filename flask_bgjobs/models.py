"""What a job looks like to users: states, references and the records of each storage place."""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


class JobState(str, enum.Enum):
    """Every state a job can be in: queued → started → completed | failed | cancelled.

    ``waiting``: queued behind its parent (``depends_on``), not startable until it completes.
    """

    WAITING = "waiting"
    QUEUED = "queued"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for the states a job leaves only when requeued."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class RequestType(str, enum.Enum):
    """What a job runs: a registered command, or a Flask view through the app's pipeline."""

    COMMAND = "command"
    API = "api"


def to_datetime(value: float | None) -> datetime | None:
    """Turn a stored epoch timestamp into an aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


@dataclass(frozen=True)
class JobRef:
    """What enqueueing returns: the job's id and its unique ``ref_id``."""

    id: int
    ref_id: str


@dataclass
class Attempt:
    """One run of a job that did not complete it, kept in the job's history."""

    number: int
    started_at: float | None
    ended_at: float | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None = None
    worker_process: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class JobSummary:
    """The one row kept in ``jobs.db`` for every job ever enqueued."""

    id: int
    ref_id: str
    command: str
    request_type: str
    state: JobState
    created_at: float
    worker: str | None = None
    tag: str | None = None
    batch_id: str | None = None
    parent_id: int | None = None
    depends_on: int | None = None
    created_by: str | None = None
    user_id: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    duration: float | None = None
    month: str | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass
class JobRecord:
    """The fields every full job record has, wherever it is stored."""

    id: int
    ref_id: str
    command: str
    request_type: str
    state: JobState
    created_at: float
    request: Any = None
    parent_id: int | None = None
    worker: str | None = None
    tag: str | None = None
    batch_id: str | None = None
    callback: str | None = None
    depends_on: int | None = None
    run_after: float | None = None
    created_by: str | None = None
    user_id: str | None = None
    reply_to: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    retry_limit: int | None = None
    timeout: float | None = None
    progress: float | None = None
    status: str | None = None
    logs: str = ""
    history: list[Attempt] = field(default_factory=list)
    started_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None

    @property
    def created(self) -> datetime:
        """``created_at`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.created_at, timezone.utc)


@dataclass
class BackgroundJob(JobRecord):
    """A job in the queue (``jobs.db``), queued or started."""

    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: str | None = None
    #: For a transient job (``run_command``): resolves to its result, or raises its error.
    future: Future[Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class CompletedJob(JobRecord):
    """A job that completed, from the ``jobs_YYYY-MM.db`` of the month it completed in."""

    result: Any = None
    completed_at: float | None = None
    duration: float | None = None
    worker_process: str | None = None


@dataclass
class FailedJob(CompletedJob):
    """A job that failed for good or was cancelled, from its month's ``jobs_YYYY-MM.db``."""


@dataclass
class JobResult:
    """Everything known about one job: its summary and its full record wherever it is."""

    summary: JobSummary
    queued: BackgroundJob | None = None
    completed: CompletedJob | None = None
    failed: FailedJob | None = None

    @property
    def job(self) -> BackgroundJob | CompletedJob | FailedJob | None:
        """Whichever full record is present."""
        return self.queued or self.completed or self.failed

    @property
    def id(self) -> int:
        return self.summary.id

    @property
    def state(self) -> JobState:
        return self.queued.state if self.queued is not None else self.summary.state

    @property
    def result(self) -> Any:
        """The completed job's result (``None`` otherwise)."""
        return self.completed.result if self.completed is not None else None

    @property
    def request(self) -> Any:
        job = self.job
        return job.request if job is not None else None
