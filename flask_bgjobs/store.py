"""All SQL of the job queue: ``jobs.db`` (queue, summaries, processes, stats) and the months.

State changes are verbs: :meth:`JobStore.enqueue`, :meth:`~JobStore.claim`,
:meth:`~JobStore.finish` (complete, fail, cancel or retry a batch), :meth:`~JobStore.mark_cancel`,
:meth:`~JobStore.requeue`, :meth:`~JobStore.release`, :meth:`~JobStore.take_over`.

A finished job moves from ``jobs.db`` to the file of the month it finished in, in two
transactions: first the month's row is written (``INSERT OR REPLACE``, so writing it twice is
harmless), then the queue row is deleted and the summary updated. A crash between the two leaves a
started job whose lease lapses; the recovery then finds the month's row
(:meth:`~JobStore.find_finished`) and completes the move instead of running the job again.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from .clock import Clock
from .errors import DuplicateRefIdError, InvalidJobError, JobNotFoundError, JobStateError
from .models import (
    Attempt,
    BackgroundJob,
    CompletedJob,
    FailedJob,
    JobRef,
    JobResult,
    JobState,
    JobSummary,
)
from .records import (
    HISTORY_FIELDS,
    QUEUE_FIELDS,
    LiveState,
    NewJob,
    Outcome,
    attempt_of,
    history_json,
    history_row,
    month_of_epoch,
    new_job_from,
    short,
    summary_of,
    to_record,
)
from .sqlite import Database, MonthlyDatabase, SqliteOptions, WriteTx, months_before
from .tables import HISTORY_SCHEMA, QUEUE_SCHEMA, background_job, job_summary

_QUEUE_COLS = ", ".join(QUEUE_FIELDS)
_FILTERABLE = ("command", "tag", "batch_id", "created_by", "user_id", "parent_id", "depends_on")
_HISTORY_COLS = ", ".join(HISTORY_FIELDS)
# Writes about a run apply only while the run still holds its job: same attempt, same owner.
_FENCE = "id = ? AND attempts = ? AND lease_owner IS ?"
_CANCEL_LEASE = 60.0  # seconds a cancelling process holds a job it took from the queue
# Dependents that will never run (their parent failed or was cancelled), taken to be cancelled.
_TAKE_DOOMED = (
    "UPDATE background_job SET state = 'started', lease_owner = :owner, "
    "lease_expires_at = :expires, started_at = NULL, cancel_requested = :reason "
    "WHERE state = 'waiting' AND {which} RETURNING " + _QUEUE_COLS
)
_TAKE_FOR_CANCEL = (
    "UPDATE background_job SET state = 'started', lease_owner = :owner, "
    "lease_expires_at = :expires, started_at = NULL, cancel_requested = 'cancelled' "
    "WHERE state = 'queued' AND {which} RETURNING " + _QUEUE_COLS
)
_HISTORY_INSERT = {
    table: f"INSERT OR REPLACE INTO {table} ({', '.join(HISTORY_FIELDS)}) "
    f"VALUES ({', '.join('?' * len(HISTORY_FIELDS))})"
    for table in ("completed_job", "failed_job")
}
_SUMMARY_INSERT_FIELDS = (
    "ref_id", "command", "request_type", "created_at", "worker", "tag", "batch_id", "parent_id",
    "depends_on", "created_by", "user_id", "args",
)  # fmt: skip
_QUEUE_INSERT_FIELDS = (
    "id", "ref_id", "parent_id", "worker", "tag", "batch_id", "callback", "depends_on",
    "run_after", "created_at", "created_by", "request_type", "command", "request", "user_id",
    "reply_to", "args", "options", "retry_limit", "timeout", "history",
)  # fmt: skip
_ENQUEUE_SUMMARY = (
    f"INSERT INTO job_summary ({', '.join(_SUMMARY_INSERT_FIELDS)}, state) "
    f"VALUES ({', '.join(':' + f for f in _SUMMARY_INSERT_FIELDS)}, 'queued')"
)
_ENQUEUE_QUEUE = (
    f"INSERT INTO background_job ({', '.join(_QUEUE_INSERT_FIELDS)}, state, attempts) "
    f"VALUES ({', '.join(':' + f for f in _QUEUE_INSERT_FIELDS)}, :state, 0)"
)
_CLAIM_STARTED = (
    "state = 'started', attempts = attempts + 1, started_at = :now, lease_owner = :owner, "
    "lease_expires_at = :expires, progress = NULL, status = NULL, logs = NULL"
)
_CLAIM_POOL = (
    f"UPDATE background_job SET {_CLAIM_STARTED} WHERE id IN (SELECT id FROM background_job "
    "WHERE worker IS NULL AND state = 'queued' AND +run_after <= :now "
    "AND cancel_requested IS NULL ORDER BY id LIMIT :limit) "
    f"RETURNING {_QUEUE_COLS}"
)
# A named worker runs strictly in enqueue order: only its oldest queued job may start, and only
# while no other job of that worker is running in any process.
_NAMED_WAITING = (
    "SELECT DISTINCT worker FROM background_job WHERE worker IS NOT NULL AND +state = 'queued'"
)
_CLAIM_NAMED = (
    f"UPDATE background_job SET {_CLAIM_STARTED} WHERE id = (SELECT id FROM background_job "
    "WHERE worker = :worker AND state = 'queued' ORDER BY id LIMIT 1) AND run_after <= :now "
    "AND cancel_requested IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM background_job WHERE worker = :worker AND state = 'started') "
    f"RETURNING {_QUEUE_COLS}"
)


class JobStore:
    """The job queue's storage: one ``jobs.db`` and the monthly history files beside it."""

    def __init__(self, directory: str | os.PathLike[str], options: SqliteOptions, clock: Clock):
        self.directory = Path(directory)
        self.clock = clock
        self.queue = Database(self.directory / "jobs.db", QUEUE_SCHEMA, options)
        self.history = MonthlyDatabase(self.directory, "jobs", HISTORY_SCHEMA, options, clock)

    def dispose(self) -> None:
        """Close every connection to every file."""
        self.queue.dispose()
        self.history.dispose()

    # -- enqueue and claim ---------------------------------------------------------------------

    def enqueue(self, job: NewJob) -> JobRef:
        """Persist ``job`` (summary and queue row in one transaction) and return its reference.

        A job with ``depends_on`` waits until its parent completes; a parent that does not
        exist is refused with :class:`InvalidJobError`.
        """
        with self.queue.write() as tx:
            return insert_job(tx, job)

    def claim(
        self,
        owner: str,
        lanes: Mapping[str | None, int],
        now: float,
        lease: float,
        *,
        all_workers: bool = False,
    ) -> Claimed:
        """Start ready jobs for ``owner``, leased until ``now + lease``, in one transaction.

        ``lanes`` maps each lane (``None``: the pool of unnamed jobs; else a named worker) to how
        many jobs it can take. A named worker gets at most one job, and only while none of its
        jobs runs anywhere. With ``all_workers``, named workers not in ``lanes`` that have queued
        jobs are claimed for too. The answer also tells the earliest future ``run_after`` among
        the lanes' queued jobs, for the runner to wake up in time.
        """
        params = {"now": now, "owner": owner, "expires": now + lease}
        wanted = {name: limit for name, limit in lanes.items() if limit > 0}
        claimed: dict[str | None, list[BackgroundJob]] = {}
        with self.queue.write() as tx:
            if all_workers:
                for (name,) in tx.execute(_NAMED_WAITING).fetchall():
                    wanted.setdefault(name, 0 if name in lanes else 1)
            for name, limit in wanted.items():
                if limit <= 0:
                    continue
                if name is None:
                    rows = tx.execute(_CLAIM_POOL, {**params, "limit": limit}).fetchall()
                else:
                    rows = tx.execute(_CLAIM_NAMED, {**params, "worker": name}).fetchall()
                if rows:
                    jobs = [to_record(BackgroundJob, QUEUE_FIELDS, row) for row in rows]
                    claimed[name] = sorted(jobs, key=lambda job: job.id)
            due = None
            if any(len(claimed.get(name, ())) < limit for name, limit in wanted.items()):
                # Some lane found fewer ready jobs than it could take: maybe later ones exist.
                query = _next_due_query(None if all_workers else list(lanes), now)
                due = tx.execute(*query).fetchone()[0]
        return Claimed(claimed, None if due is None else float(due))

    def claim_id(self, job_id: int, owner: str, now: float, lease: float) -> BackgroundJob | None:
        """Start one given queued job (eager mode runs jobs at enqueue this way)."""
        with self.queue.write() as tx:
            row = tx.execute(
                f"UPDATE background_job SET {_CLAIM_STARTED} WHERE id = :id AND state = 'queued' "
                f"AND cancel_requested IS NULL RETURNING {_QUEUE_COLS}",
                {"now": now, "owner": owner, "expires": now + lease, "id": job_id},
            ).fetchone()
        return None if row is None else to_record(BackgroundJob, QUEUE_FIELDS, row)

    def watch(self) -> ChangeWatcher:
        """A cheap way for one thread to notice commits to ``jobs.db`` by other connections."""
        return ChangeWatcher(self.queue)

    # -- finishing runs --------------------------------------------------------------------------

    def finish(self, outcomes: Sequence[Outcome], owner: str, now: float) -> Finished:
        """Record how a batch of runs ended.

        Final outcomes move to their month's file, then leave the queue; retries go back to the
        queue. An outcome whose job was meanwhile taken over by another process (its lease owner
        or attempt changed) is ignored. In the same transaction as the queue changes: the jobs
        waiting for a completed job become ready, follow-up jobs (callbacks) are enqueued, and
        the jobs waiting for a job that failed for good or was cancelled (or for the failed
        attempt that enqueued them) are taken by ``owner``, for the caller to cancel.
        """
        finals = self._still_held([o for o in outcomes if o.state is not JobState.QUEUED])
        by_month: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in finals:
            by_month[month_of_epoch(outcome.ended_at)].append(outcome)
        for month, group in sorted(by_month.items()):
            self._write_history(month, group)
        kept = {id(outcome) for outcome in finals}
        doomed: list[tuple[BackgroundJob, str]] = []
        take = {"owner": owner, "expires": now + _CANCEL_LEASE}
        with self.queue.write() as tx:
            applied = [
                outcome for outcome in outcomes
                if (outcome.state is JobState.QUEUED or id(outcome) in kept)
                and self._apply(tx, outcome)
            ]  # fmt: skip
            for outcome in applied:
                job = outcome.job
                if outcome.state is JobState.COMPLETED:
                    tx.execute(
                        "UPDATE background_job SET state = 'queued' "
                        "WHERE state = 'waiting' AND depends_on = ?",
                        (job.id,),
                    )
                    for follow_up in outcome.follow_ups:
                        insert_job(tx, follow_up)
                    continue
                if outcome.state is JobState.QUEUED:
                    which = (
                        "depends_on = :parent AND json_extract(options, '$.parent_attempt') = :n"
                    )
                    reason = f"attempt {job.attempts} of job {job.id}, which enqueued it, failed"
                else:
                    which = "depends_on = :parent"
                    reason = f"job {job.id}, which it depends on, {outcome.state.value}"
                rows = tx.execute(
                    _TAKE_DOOMED.format(which=which),
                    {**take, "parent": job.id, "n": job.attempts, "reason": reason},
                ).fetchall()
                doomed += [(to_record(BackgroundJob, QUEUE_FIELDS, r), reason) for r in rows]
            _update_stats(tx, applied)
        return Finished(applied, doomed)

    def settle_waiting(self, owner: str, now: float) -> list[tuple[BackgroundJob, str]]:
        """Release waiting jobs whose parent completed; take those whose parent failed for good
        or was cancelled, for the caller to cancel. A sweep after anything that went wrong."""
        with self.queue.write() as tx:
            # From the (few) waiting jobs to their parents' summaries, never the other way.
            tx.execute(
                "UPDATE background_job SET state = 'queued' WHERE state = 'waiting' AND EXISTS "
                "(SELECT 1 FROM job_summary s WHERE s.id = background_job.depends_on "
                "AND s.state = 'completed')"
            )
            rows = tx.execute(
                _TAKE_DOOMED.format(which=(
                    "EXISTS (SELECT 1 FROM job_summary s WHERE s.id = background_job.depends_on "
                    "AND s.state IN ('failed', 'cancelled'))"
                )),
                {"owner": owner, "expires": now + _CANCEL_LEASE,
                 "reason": "the job it depends on failed or was cancelled"},
            ).fetchall()  # fmt: skip
        reason = "the job it depends on failed or was cancelled"
        return [(to_record(BackgroundJob, QUEUE_FIELDS, row), reason) for row in rows]

    def _still_held(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes whose run still holds its job: a process that lost its lease (it was
        paused, and another process took the job over) must not write a month's row."""
        if not outcomes:
            return outcomes
        with self.queue.read() as conn:
            held = set(conn.exec_driver_sql(
                "SELECT id, attempts, lease_owner FROM background_job WHERE id IN "
                f"({', '.join('?' * len(outcomes))})",
                tuple(outcome.job.id for outcome in outcomes),
            ).all())  # fmt: skip
        return [o for o in outcomes if (o.job.id, o.job.attempts, o.job.lease_owner) in held]

    def _write_history(self, month: str, outcomes: Sequence[Outcome]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {"completed_job": [], "failed_job": []}
        for outcome in outcomes:
            table = "completed_job" if outcome.state is JobState.COMPLETED else "failed_job"
            rows[table].append(history_row(outcome))
        with self.history.write(month) as tx:
            for table, values in rows.items():
                if values:
                    tx.executemany(_HISTORY_INSERT[table], values)
                    # A job is in one table of a month: a later run's row replaces the other.
                    other = "failed_job" if table == "completed_job" else "completed_job"
                    tx.executemany(f"DELETE FROM {other} WHERE id = ?", [(v[0],) for v in values])

    def _apply(self, tx: WriteTx, outcome: Outcome) -> bool:
        job = outcome.job
        fence = (job.id, job.attempts, job.lease_owner)
        if outcome.state is JobState.QUEUED:
            job.history = [*job.history, attempt_of(outcome)]
            cursor = tx.execute(
                "UPDATE background_job SET state = 'queued', run_after = ?, lease_owner = NULL, "
                "lease_expires_at = NULL, history = ?, error_type = ?, error_message = ?, "
                "error_traceback = ?, progress = NULL, status = ?, logs = ? "
                f"WHERE {_FENCE}",
                (outcome.run_after, history_json(job.history), outcome.error_type,
                 outcome.error_message, outcome.error_traceback, outcome.live.get("status"),
                 outcome.live.get("logs"), *fence),
            )  # fmt: skip
            return bool(cursor.rowcount)
        if not tx.execute(f"DELETE FROM background_job WHERE {_FENCE}", fence).rowcount:
            return False
        tx.execute(
            "UPDATE job_summary SET state = ?, attempts = ?, started_at = ?, completed_at = ?, "
            "duration = ?, month = ?, error_type = ?, error_message = ? WHERE id = ?",
            (outcome.state.value, job.attempts, job.started_at, outcome.ended_at,
             outcome.duration, month_of_epoch(outcome.ended_at), outcome.error_type,
             short(outcome.error_message), job.id),
        )  # fmt: skip
        return True

    # -- live state, leases, processes -------------------------------------------------------------

    def save_live(self, owner: str, updates: Sequence[LiveState]) -> None:
        """Write the logs, progress and status of ``owner``'s running jobs."""
        with self.queue.write() as tx:
            tx.executemany(
                "UPDATE background_job SET progress = ?, status = ?, logs = ? "
                "WHERE id = ? AND attempts = ? AND lease_owner = ?",
                [(u.progress, u.status, u.logs, u.job_id, u.attempt, owner) for u in updates],
            )

    def heartbeat(self, process: dict[str, Any], running: Sequence[int], until: float) -> None:
        """Record that ``process`` lives; extend the leases of the jobs it is running."""
        with self.queue.write() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO worker_process (id, host, pid, started_at, heartbeat_at, "
                "threads, workers, scheduler, stopped_at) VALUES (:id, :host, :pid, :started_at, "
                ":heartbeat_at, :threads, :workers, :scheduler, :stopped_at)",
                process,
            )
            tx.executemany(
                "UPDATE background_job SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?",
                [(until, job_id, process["id"]) for job_id in running],
            )

    def cancel_requests(self, owner: str) -> list[tuple[int, str]]:
        """``(id, reason)`` of ``owner``'s running jobs that another process asked to stop."""
        with self.queue.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, cancel_requested FROM background_job WHERE lease_owner = ? "
                "AND state = 'started' AND cancel_requested IS NOT NULL",
                (owner,),
            ).all()
        return [(int(job_id), str(reason)) for job_id, reason in rows]

    def release(self, jobs: Sequence[BackgroundJob]) -> None:
        """Hand started jobs back to the queue, their attempt not counted."""
        with self.queue.write() as tx:
            tx.executemany(
                "UPDATE background_job SET state = 'queued', attempts = attempts - 1, "
                f"lease_owner = NULL, lease_expires_at = NULL, started_at = NULL WHERE {_FENCE}",
                [(job.id, job.attempts, job.lease_owner) for job in jobs],
            )

    def expired(self, now: float) -> list[BackgroundJob]:
        """Started jobs whose lease lapsed before ``now``: their process is gone."""
        with self.queue.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT {_QUEUE_COLS} FROM background_job "
                "WHERE state = 'started' AND lease_expires_at < ?",
                (now,),
            ).all()
        return [to_record(BackgroundJob, QUEUE_FIELDS, row) for row in rows]

    def take_over(self, job: BackgroundJob, owner: str, now: float, lease: float) -> bool:
        """Move an expired job's lease to ``owner``, if nobody did first.

        From then on the old owner's outcome for the job is ignored (:meth:`finish` is fenced
        by the lease owner), should that process come back to life.
        """
        with self.queue.write() as tx:
            cursor = tx.execute(
                "UPDATE background_job SET lease_owner = ?, lease_expires_at = ? "
                f"WHERE {_FENCE} AND lease_expires_at < ?",
                (owner, now + lease, job.id, job.attempts, job.lease_owner, now),
            )
        if cursor.rowcount:
            job.lease_owner = owner
        return bool(cursor.rowcount)

    def find_finished(self, job: BackgroundJob) -> CompletedJob | FailedJob | None:
        """The month's record of ``job``'s current run if one was written (a move cut short)."""
        if job.started_at is None:
            return None
        first = month_of_epoch(job.started_at)
        month = self.history.current_month()
        while month >= first:
            for state in (JobState.COMPLETED, JobState.FAILED):
                found = self._history_record(month, job.id, state)
                # Only a row of this very run counts, not one of an earlier series.
                if (found is not None and found.attempts == job.attempts
                        and (found.completed_at or 0) >= job.started_at):  # fmt: skip
                    return found
            month = months_before(month, 1)
        return None

    def complete_move(self, job: BackgroundJob, record: CompletedJob | FailedJob) -> bool:
        """Finish a move whose month's row exists: drop the queue row, update the summary."""
        assert record.completed_at is not None
        outcome = Outcome(
            job, record.state, record.completed_at, error_type=record.error_type,
            error_message=record.error_message,
        )  # fmt: skip
        with self.queue.write() as tx:
            return self._apply(tx, outcome)

    # -- cancel and requeue ----------------------------------------------------------------------

    def cancel(self, job_id: int, owner: str, now: float) -> BackgroundJob | bool:
        """Cancel job ``job_id``, in one transaction.

        A queued job is taken by ``owner`` (returned, for the caller to finish as cancelled): it
        can no longer start. A running job is flagged (``True``): the process running it stops
        it. ``False`` if the job is neither queued nor running.
        """
        with self.queue.write() as tx:
            row = tx.execute(_TAKE_FOR_CANCEL.format(which="id = :id"), {
                "owner": owner, "expires": now + _CANCEL_LEASE, "id": job_id,
            }).fetchone()  # fmt: skip
            if row is not None:
                return to_record(BackgroundJob, QUEUE_FIELDS, row)
            flagged = tx.execute(
                "UPDATE background_job SET cancel_requested = 'cancelled' "
                "WHERE id = ? AND state = 'started'",
                (job_id,),
            ).rowcount
        return bool(flagged)

    def take_cancelled(self, owner: str, now: float) -> list[BackgroundJob]:
        """Take queued jobs that were asked to stop (e.g. handed back or retried meanwhile)."""
        with self.queue.write() as tx:
            rows = tx.execute(_TAKE_FOR_CANCEL.format(which="cancel_requested IS NOT NULL"), {
                "owner": owner, "expires": now + _CANCEL_LEASE,
            }).fetchall()  # fmt: skip
        return [to_record(BackgroundJob, QUEUE_FIELDS, row) for row in rows]

    def fail_completed(self, job_id: int, error_type: str | None, message: str) -> FailedJob | None:
        """Turn a completed job into a failed one (its callback failed for good)."""
        summary = self.summary(job_id)
        if summary is None or summary.state is not JobState.COMPLETED or not summary.month:
            return None
        with self.history.write(summary.month) as tx:
            tx.execute(
                f"INSERT OR REPLACE INTO failed_job ({_HISTORY_COLS}) "
                f"SELECT {_HISTORY_COLS} FROM completed_job WHERE id = ?",
                (job_id,),
            )
            tx.execute(
                "UPDATE failed_job SET state = 'failed', error_type = ?, error_message = ? "
                "WHERE id = ?",
                (error_type, message, job_id),
            )
            tx.execute("DELETE FROM completed_job WHERE id = ?", (job_id,))
        with self.queue.write() as tx:
            tx.execute(
                "UPDATE job_summary SET state = 'failed', error_type = ?, error_message = ? "
                "WHERE id = ?",
                (error_type, short(message), job_id),
            )
        found = self._history_record(summary.month, job_id, JobState.FAILED)
        return found if isinstance(found, FailedJob) else None

    def requeue(self, job_id: int, now: float) -> JobRef:
        """Put a failed or cancelled job back in the queue under the same id and summary."""
        summary = self.summary(job_id)
        if summary is None:
            raise JobNotFoundError(f"no job has id {job_id}")
        record = None
        if summary.state in (JobState.FAILED, JobState.CANCELLED) and summary.month:
            record = self._history_record(summary.month, job_id, JobState.FAILED)
        if not isinstance(record, FailedJob):
            raise JobStateError(
                f"job {job_id} is {summary.state.value}; only failed or cancelled jobs can be "
                "requeued"
            )
        history = list(record.history)
        if record.started_at is not None:  # it ran: its last attempt joins the history
            history.append(Attempt(
                record.attempts, record.started_at, record.completed_at, record.error_type,
                record.error_message, record.error_traceback, record.worker_process,
            ))  # fmt: skip
        again = new_job_from(record, run_after=now)
        try:
            with self.queue.write() as tx:
                row = {**vars(again), "id": job_id, "history": history_json(history)}
                row["state"] = _initial_state(tx, again.depends_on)
                tx.execute(_ENQUEUE_QUEUE, row)
                tx.execute(
                    "UPDATE job_summary SET state = 'queued', attempts = 0, started_at = NULL, "
                    "completed_at = NULL, duration = NULL, month = NULL, error_type = NULL, "
                    "error_message = NULL WHERE id = ?",
                    (job_id,),
                )
        except sqlite3.IntegrityError:
            raise JobStateError(f"job {job_id} was requeued already") from None
        # The old series' row goes; fenced by its end time, so a newer row of the job stays.
        with self.history.write(summary.month) as tx:
            tx.execute(
                "DELETE FROM failed_job WHERE id = ? AND completed_at = ?",
                (job_id, record.completed_at),
            )
        return JobRef(job_id, record.ref_id)

    # -- reading -----------------------------------------------------------------------------------

    def summary_by_ref_id(self, ref_id: str) -> JobSummary | None:
        with self.queue.read() as conn:
            row = conn.execute(select(job_summary).where(job_summary.c.ref_id == ref_id)).first()
        return None if row is None else summary_of(row)

    def summary(self, job_id: int) -> JobSummary | None:
        with self.queue.read() as conn:
            row = conn.execute(select(job_summary).where(job_summary.c.id == job_id)).first()
        return None if row is None else summary_of(row)

    def get(self, job_id: int | None = None, ref_id: str | None = None) -> JobResult | None:
        """Everything known about one job, by id or by ref_id."""
        column = job_summary.c.id if job_id is not None else job_summary.c.ref_id
        key = job_id if job_id is not None else ref_id
        with self.queue.read() as conn:  # one snapshot: summary and queue row agree
            row = conn.execute(select(job_summary).where(column == key)).first()
            if row is None:
                return None
            summary = summary_of(row)
            queued = None
            if not summary.state.is_final:
                found = conn.exec_driver_sql(
                    f"SELECT {_QUEUE_COLS} FROM background_job WHERE id = ?", (summary.id,)
                ).first()
                queued = None if found is None else to_record(BackgroundJob, QUEUE_FIELDS, found)
        result = JobResult(summary, queued=queued)
        if summary.state.is_final and summary.month is not None:
            record = self._history_record(summary.month, summary.id, summary.state)
            if isinstance(record, FailedJob):
                result.failed = record
            elif record is not None:
                result.completed = record
        return result

    def list_summaries(
        self,
        state: JobState | None = None,
        limit: int = 50,
        args: dict[str, str] | None = None,
        **equal: Any,
    ) -> list[JobSummary]:
        """Summaries, newest first, their state taken from the queue while the job is in it.

        ``equal`` filters on summary columns (``command``, ``tag``, ``batch_id``, ``created_by``,
        ``user_id``, ``parent_id``, ``depends_on``); ``args`` keeps jobs whose args include
        every given key and value.
        """
        live_state = background_job.c.state
        query = (
            select(
                job_summary,
                live_state.label("live_state"),
                background_job.c.attempts.label("live_attempts"),
                background_job.c.started_at.label("live_started_at"),
            )
            .outerjoin(background_job, background_job.c.id == job_summary.c.id)
            .order_by(job_summary.c.id.desc())
            .limit(limit)
        )
        if state in (JobState.QUEUED, JobState.STARTED, JobState.WAITING):
            query = query.where(live_state == state.value)
        elif state is not None:
            query = query.where(job_summary.c.state == state.value)
        for name, value in equal.items():
            if name not in _FILTERABLE:
                raise ValueError(f"cannot filter jobs by {name!r}; by: {', '.join(_FILTERABLE)}")
            if value is not None:
                query = query.where(job_summary.c[name] == value)
        for key, value in (args or {}).items():
            query = query.where(func.json_extract(job_summary.c.args, f'$."{key}"') == value)
        with self.queue.read() as conn:
            rows = conn.execute(query).all()
        summaries = []
        for row in rows:
            summary = summary_of(row)
            if row.live_state is not None:
                summary.state = JobState(row.live_state)
                summary.attempts = row.live_attempts
                summary.started_at = row.live_started_at
            summaries.append(summary)
        return summaries

    def _history_record(
        self, month: str, job_id: int, state: JobState | None = None
    ) -> CompletedJob | FailedJob | None:
        """A job's row in a month's file: the table of ``state`` first, if given."""
        database = self.history.existing(month)
        if database is None:
            return None
        tables = [("completed_job", CompletedJob), ("failed_job", FailedJob)]
        if state is not None and state is not JobState.COMPLETED:
            tables.reverse()
        with database.read() as conn:
            for table, kind in tables:
                row = conn.exec_driver_sql(
                    f"SELECT {_HISTORY_COLS} FROM {table} WHERE id = ?", (job_id,)
                ).first()
                if row is not None:
                    return to_record(kind, HISTORY_FIELDS, row)
        return None

    def average_duration(self, command: str) -> float | None:
        """The recent average duration of ``command``'s completed runs, if any completed."""
        with self.queue.read() as conn:
            value = conn.exec_driver_sql(
                "SELECT avg_duration FROM command_stats WHERE command = ?", (command,)
            ).scalar()
        return None if value is None else float(value)


def insert_job(tx: WriteTx, job: NewJob) -> JobRef:
    """Insert the summary and queue rows of a new job (in the caller's transaction)."""
    ref_id = job.ref_id or uuid.uuid4().hex
    row = {**vars(job), "ref_id": ref_id, "history": None}
    row["state"] = _initial_state(tx, job.depends_on)
    try:
        row["id"] = tx.execute(_ENQUEUE_SUMMARY, row).lastrowid
    except sqlite3.IntegrityError as error:
        if "ref_id" in str(error):
            raise DuplicateRefIdError(f"a job with ref_id {ref_id!r} already exists") from None
        raise
    tx.execute(_ENQUEUE_QUEUE, row)
    return JobRef(row["id"], ref_id)


def _initial_state(tx: WriteTx, parent: int | None) -> str:
    """``queued``, or ``waiting`` while the job's parent has not completed."""
    if parent is None:
        return "queued"
    found = tx.execute("SELECT state FROM job_summary WHERE id = ?", (parent,)).fetchone()
    if found is None:
        raise InvalidJobError(f"depends_on={parent}: no job has this id")
    return "queued" if found[0] == "completed" else "waiting"


@dataclass
class Finished:
    """What :meth:`JobStore.finish` did: the outcomes applied, the dependents to cancel."""

    applied: list[Outcome]
    doomed: list[tuple[BackgroundJob, str]]


@dataclass
class Claimed:
    """What :meth:`JobStore.claim` started, by lane, and when to look again."""

    jobs: dict[str | None, list[BackgroundJob]]
    next_due: float | None


def _next_due_query(lanes: Iterable[str | None] | None, now: float) -> tuple[str, tuple[Any, ...]]:
    """The earliest future ``run_after`` among queued jobs of ``lanes`` (``None``: of all)."""
    sql = "SELECT MIN(run_after) FROM background_job WHERE state = 'queued' AND run_after > ?"
    if lanes is None:
        return sql, (now,)
    named = [name for name in lanes if name is not None]
    clauses = [f"worker IN ({', '.join('?' * len(named))})"] if named else []
    if None in lanes:
        clauses.append("worker IS NULL")
    if not clauses:
        return sql + " AND 0", (now,)
    return f"{sql} AND ({' OR '.join(clauses)})", (now, *named)


class ChangeWatcher:
    """Tells whether ``jobs.db`` changed since the last look, via ``PRAGMA data_version``.

    The pragma's value changes whenever another connection commits; asking costs microseconds,
    which is what lets idle processes poll often.
    """

    def __init__(self, database: Database) -> None:
        self._conn = database.engine.raw_connection()
        self._version: int | None = None

    def changed(self) -> bool:
        version = self._conn.cursor().execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._version
        self._version = int(version)
        return bool(changed)

    def close(self) -> None:
        self._conn.close()


def _update_stats(tx: Any, outcomes: Iterable[Outcome]) -> None:
    totals: dict[str, list[float]] = {}
    failures: dict[str, int] = defaultdict(int)
    for outcome in outcomes:
        if outcome.state is JobState.COMPLETED and outcome.duration is not None:
            totals.setdefault(outcome.job.command, []).append(outcome.duration)
        elif outcome.state is JobState.FAILED:
            failures[outcome.job.command] += 1
    now = max((o.ended_at for o in outcomes), default=0.0)
    rows = []
    for command in set(totals) | set(failures):
        durations = totals.get(command, [])
        average = sum(durations) / len(durations) if durations else None
        rows.append(
            (
                command,
                len(durations),
                failures[command],
                sum(durations),
                average,
                max(durations, default=None),
                durations[-1] if durations else None,
                now,
            )
        )
    if rows:
        # The average is a moving one, weighted toward recent runs, for progress estimates.
        tx.executemany(
            "INSERT INTO command_stats (command, completed, failed, total_duration, "
            "avg_duration, max_duration, last_duration, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (command) DO UPDATE SET completed = completed + excluded.completed, "
            "failed = failed + excluded.failed, "
            "total_duration = total_duration + excluded.total_duration, "
            "avg_duration = CASE WHEN excluded.avg_duration IS NULL THEN avg_duration "
            "WHEN avg_duration IS NULL THEN excluded.avg_duration "
            "ELSE 0.8 * avg_duration + 0.2 * excluded.avg_duration END, "
            "max_duration = max(coalesce(max_duration, 0), coalesce(excluded.max_duration, 0)), "
            "last_duration = coalesce(excluded.last_duration, last_duration), "
            "updated_at = excluded.updated_at",
            rows,
        )
