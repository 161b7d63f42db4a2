"""How a run ended, turned into what happens next: completed, retried later, failed, cancelled.

One place decides between a retry and a failure, for runs that raised and for runs lost with
their process; one place records outcomes and tells signals and waiters.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flask import Flask

from .config import Settings
from .errors import UnknownCommandError
from .models import BackgroundJob, JobState
from .records import Outcome
from .signals import job_cancelled, job_completed, job_failed, job_retrying

if TYPE_CHECKING:
    from .execution import Execution
    from .extension import BackgroundJobs
    from .store import JobStore

logger = logging.getLogger("flask_bgjobs")

#: Errors that a new attempt cannot fix.
FINAL_ERRORS: tuple[type[BaseException], ...] = (UnknownCommandError,)


def describe(error: BaseException) -> tuple[str, str]:
    """``(type name, message)`` of an error, even one whose ``__str__`` fails."""
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not stop the recording of the job
        message = f"<{type(error).__name__} whose message could not be read>"
    return type(error).__name__, message


def backoff(settings: Settings, attempt: int) -> float:
    """Seconds before the retry after ``attempt``: exponential from the base, capped, jittered."""
    delay = min(settings.retry_backoff * 2 ** (attempt - 1), settings.retry_backoff_max)
    return float(delay * random.uniform(0.5, 1.0))


def cancelled(job: BackgroundJob, now: float, why: str | None = None) -> Outcome:
    """A job cancelled without running to the end: asked to stop, or its parent failed."""
    message = why or f"job {job.id} was cancelled before it started"
    return Outcome(job, JobState.CANCELLED, now, error_type="JobCancelled", error_message=message)


def failed_attempt(
    settings: Settings,
    job: BackgroundJob,
    ended_at: float,
    *,
    retryable: bool = True,
    **details: Any,
) -> Outcome:
    """A failed attempt: a retry after the backoff while attempts remain, else a failure."""
    limit = job.retry_limit if job.retry_limit is not None else settings.retry_limit
    if retryable and job.attempts <= limit:
        # Eager mode (users' tests) retries at once rather than after a real backoff.
        run_after = ended_at + (0.0 if settings.eager else backoff(settings, job.attempts))
        return Outcome(job, JobState.QUEUED, ended_at, run_after=run_after, **details)
    return Outcome(job, JobState.FAILED, ended_at, **details)


def outcome_of(execution: Execution, settings: Settings, owner: str) -> Outcome:
    """What the run of ``execution`` leads to."""
    job = execution.job
    ended = execution.ended_at if execution.ended_at is not None else execution.clock()
    base: dict[str, Any] = {"worker_process": owner, "live": execution.live()}
    error = execution.error
    if error is None:
        return Outcome(job, JobState.COMPLETED, ended, result=execution.result_json, **base)
    error_type, message = describe(error)
    details = {**base, "error_type": error_type, "error_message": message,
               "error_traceback": execution.error_traceback}  # fmt: skip
    if execution.stop_reason == "cancelled":
        return Outcome(job, JobState.CANCELLED, ended, **details)
    # A job whose thread was abandoned may still be running: never start it a second time.
    retryable = not execution.abandoned and not isinstance(error, FINAL_ERRORS)
    return failed_attempt(settings, job, ended, retryable=retryable, **details)


def record(
    app: Flask,
    extension: BackgroundJobs,
    store: JobStore,
    outcomes: Sequence[Outcome],
    owner: str,
) -> list[Outcome]:
    """Store ``outcomes`` and what follows from them, then send signals and wake waiters.

    What follows: the jobs that waited for a job that failed for good or was cancelled are
    cancelled in turn (recursively); a callback that failed for good fails the job it was the
    callback of.
    """
    applied: list[Outcome] = []
    pending = list(outcomes)
    while pending:
        now = extension.now()
        finished = store.finish(pending, owner, now)
        applied += finished.applied
        for outcome in finished.applied:
            announce(app, outcome)
            if outcome.state is JobState.FAILED:
                _fail_callback_parent(app, store, outcome)
        pending = [cancelled(job, now, why) for job, why in finished.doomed]
    extension.notify_finished()
    return applied


def _fail_callback_parent(app: Flask, store: JobStore, outcome: Outcome) -> None:
    parent = outcome.job.options.get("callback_of")
    if not isinstance(parent, int):
        return
    message = f"its callback {outcome.job.command!r} (job {outcome.job.id}) failed: "
    failed = store.fail_completed(
        parent, outcome.error_type, message + (outcome.error_message or "")
    )
    if failed is not None:
        try:
            job_failed.send(app, job=failed, error=failed.error_message)
        except Exception:
            logger.exception("a receiver of a flask_bgjobs signal failed (job %s)", parent)


def announce(app: Flask, outcome: Outcome) -> None:
    """Send the signal of the state an outcome put its job in; a failing receiver is logged."""
    job = outcome.job
    try:
        if outcome.state is JobState.COMPLETED:
            job_completed.send(app, job=job, result=outcome.result)
        elif outcome.state is JobState.FAILED:
            job_failed.send(app, job=job, error=outcome.error_message)
        elif outcome.state is JobState.CANCELLED:
            job_cancelled.send(app, job=job, reason=outcome.error_message)
        else:
            job_retrying.send(
                app, job=job, error=outcome.error_message, run_after=outcome.run_after
            )
    except Exception:
        logger.exception("a receiver of a flask_bgjobs signal failed (job %s)", job.id)
