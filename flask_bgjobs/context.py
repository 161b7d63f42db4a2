"""``current_job``: what a running command knows about its job, and how it reports back."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from werkzeug.local import LocalProxy

if TYPE_CHECKING:
    from .execution import Execution
    from .models import JobResult

_current: ContextVar[JobContext] = ContextVar("flask_bgjobs.current_job")


class JobLog:
    """A logger for one job: each line goes to Python logging and to the job's live log."""

    def __init__(self, execution: Execution) -> None:
        self._execution = execution
        self._logger = logging.getLogger(f"flask_bgjobs.job.{execution.command_name}")

    def log(self, level: int, msg: str, *args: Any, exc_info: Any = None) -> None:
        """Log ``msg % args`` at ``level``."""
        extra = {"job_id": self._execution.job_id}
        self._logger.log(level, msg, *args, exc_info=exc_info, extra=extra)
        text = msg % args if args else str(msg)
        self._execution.append_log(logging.getLevelName(level), text)

    def debug(self, msg: str, *args: Any) -> None:
        self.log(logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: Any) -> None:
        self.log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any) -> None:
        self.log(logging.ERROR, msg, *args)

    def exception(self, msg: str, *args: Any) -> None:
        """Log at ERROR level with the exception being handled."""
        self.log(logging.ERROR, msg, *args, exc_info=True)


class JobContext:
    """The job a command is running for; reached as ``flask_bgjobs.current_job``."""

    def __init__(self, execution: Execution, request: Any) -> None:
        self._execution = execution
        job = execution.job
        self.id: int | None = job.id
        self.ref_id: str | None = job.ref_id
        self.parent_id = job.parent_id
        self.reply_to = job.reply_to
        self.args = dict(job.args)
        self.tag = job.tag
        self.batch_id = job.batch_id
        self.user_id = job.user_id
        self.attempt = job.attempts
        self.command = job.command
        self.request = request
        self.log = JobLog(execution)

    def __repr__(self) -> str:
        return f"<current_job {self.id} {self.command!r} attempt {self.attempt}>"

    @property
    def parent(self) -> JobResult | None:
        """The parent job's :class:`~flask_bgjobs.models.JobResult`, if the job has a parent."""
        if self.parent_id is None:
            return None
        return self._execution.extension.get_job(self.parent_id)

    @property
    def user(self) -> Any:
        """The job's user, loaded with the ``@jobs.user_loader`` function."""
        return self._execution.extension.load_user(self.user_id)

    def update_status(self, progress: float | None = None, status: str | None = None) -> None:
        """Report progress (0.0 to 1.0) and/or a status line; shown live in the admin pages."""
        if progress is not None:
            if not 0.0 <= float(progress) <= 1.0:
                raise ValueError(f"progress is a fraction from 0.0 to 1.0, not {progress!r}")
            progress = float(progress)
        self._execution.set_status(progress, status)

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (cancelled, timed out, or shutting down)."""
        return self._execution.stop_requested.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~flask_bgjobs.JobCancelled` if the job was asked to stop."""
        if self.cancelled:
            raise self._execution.stop_exception()


def _get_current() -> JobContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "Working outside of a job: current_job is only set while a command of "
            "flask_bgjobs runs."
        ) from None


current_job = cast(JobContext, LocalProxy(_get_current))
