"""The tables of ``jobs.db`` and of the monthly ``jobs_YYYY-MM.db`` files (SQLAlchemy Core).

Times are stored as UNIX epoch seconds (REAL) and JSON values as text.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, Table, Text, text

from .sqlite import Schema


def _record_columns() -> list[Column[object]]:
    """The columns of a full job record, shared by the queue and the monthly tables."""
    return [
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("ref_id", Text, nullable=False),
        Column("parent_id", Integer),
        Column("worker", Text),
        Column("tag", Text),
        Column("batch_id", Text),
        Column("callback", Text),
        Column("depends_on", Integer),
        Column("run_after", Float),
        Column("created_at", Float, nullable=False),
        Column("created_by", Text),
        Column("request_type", Text, nullable=False),
        Column("command", Text, nullable=False),
        Column("request", Text),
        Column("user_id", Text),
        Column("reply_to", Text),
        Column("args", Text),
        Column("options", Text),
        Column("state", Text, nullable=False),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("retry_limit", Integer),
        Column("timeout", Float),
        Column("progress", Float),
        Column("status", Text),
        Column("logs", Text),
        Column("history", Text),
        Column("started_at", Float),
        Column("error_type", Text),
        Column("error_message", Text),
        Column("error_traceback", Text),
    ]


RECORD_FIELDS = tuple(column.name for column in _record_columns())

queue_metadata = MetaData()

background_job = Table(
    "background_job",
    queue_metadata,
    *_record_columns(),
    Column("lease_owner", Text),
    Column("lease_expires_at", Float),
    Column("cancel_requested", Text),
)
# Claims look for the oldest ready jobs of one worker lane.
Index(
    "ix_background_job_claim", background_job.c.worker, background_job.c.state, background_job.c.id
)
# Partial indexes (WHERE ... IS NOT NULL) cost nothing to jobs that leave the column empty:
# most jobs have no tag, batch, parent or lease when enqueued, and enqueueing stays cheap.
Index("ix_background_job_lease", background_job.c.lease_owner,
      sqlite_where=background_job.c.lease_owner.is_not(None))  # fmt: skip
Index("ix_background_job_depends_on", background_job.c.depends_on,
      sqlite_where=background_job.c.depends_on.is_not(None))  # fmt: skip
# When the next delayed job is due. Claims must keep to the claim index: they write
# `+run_after` so that the planner cannot pick this one and sort.
Index("ix_background_job_due", background_job.c.state, background_job.c.run_after)

job_summary = Table(
    "job_summary",
    queue_metadata,
    # AUTOINCREMENT: a job id is never reused, even after its queue row is gone.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ref_id", Text, nullable=False, unique=True),
    Column("command", Text, nullable=False),
    Column("request_type", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("worker", Text),
    Column("tag", Text),
    Column("batch_id", Text),
    Column("parent_id", Integer),
    Column("depends_on", Integer),
    Column("created_by", Text),
    Column("user_id", Text),
    Column("args", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("started_at", Float),
    Column("completed_at", Float),
    Column("duration", Float),
    Column("month", Text),
    Column("error_type", Text),
    Column("error_message", Text),
    sqlite_autoincrement=True,
)
Index("ix_job_summary_state", job_summary.c.state, job_summary.c.id)
Index("ix_job_summary_command", job_summary.c.command, job_summary.c.id)
for _column in ("tag", "batch_id", "parent_id", "depends_on", "created_by", "user_id"):
    Index(f"ix_job_summary_{_column}", job_summary.c[_column],
          sqlite_where=job_summary.c[_column].is_not(None))  # fmt: skip

worker_process = Table(
    "worker_process",
    queue_metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("threads", Integer, nullable=False),
    Column("workers", Text),
    Column("scheduler", Integer, nullable=False, server_default=text("0")),
    Column("stopped_at", Float),
)

command_stats = Table(
    "command_stats",
    queue_metadata,
    Column("command", Text, primary_key=True),
    Column("completed", Integer, nullable=False, server_default=text("0")),
    Column("failed", Integer, nullable=False, server_default=text("0")),
    Column("total_duration", Float, nullable=False, server_default=text("0")),
    Column("avg_duration", Float),
    Column("max_duration", Float),
    Column("last_duration", Float),
    Column("updated_at", Float),
)

scheduled_task = Table(
    "scheduled_task",
    queue_metadata,
    Column("name", Text, primary_key=True),
    Column("request_type", Text, nullable=False),
    Column("command", Text, nullable=False),
    Column("schedule", Text, nullable=False),
    Column("request", Text),
    Column("options", Text),
    Column("catch_up", Text, nullable=False, server_default=text("'one'")),
    Column("overlap", Integer, nullable=False, server_default=text("0")),
    Column("enabled", Integer, nullable=False, server_default=text("1")),
    Column("next_run_at", Float),
    Column("last_run_at", Float),
    Column("last_job_id", Integer),
    Column("skipped", Integer, nullable=False, server_default=text("0")),
    Column("last_skipped_at", Float),
    Column("last_skip_reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row per due time that fired (or was skipped): the key makes "once per due time" a rule
# of the database, however many schedulers run.
scheduled_run = Table(
    "scheduled_run",
    queue_metadata,
    Column("task", Text, primary_key=True),
    Column("due_at", Float, primary_key=True),
    Column("job_id", Integer),
    Column("fired_at", Float, nullable=False),
    Column("skipped", Text),
)

QUEUE_SCHEMA = Schema(queue_metadata, version=1)

history_metadata = MetaData()


def _history_table(name: str) -> Table:
    table = Table(
        name,
        history_metadata,
        *_record_columns(),
        Column("result", Text),
        Column("completed_at", Float, nullable=False),
        Column("duration", Float),
        Column("worker_process", Text),
    )
    Index(f"ix_{name}_completed_at", table.c.completed_at)
    Index(f"ix_{name}_command", table.c.command, table.c.completed_at)
    return table


completed_job = _history_table("completed_job")
failed_job = _history_table("failed_job")

HISTORY_SCHEMA = Schema(history_metadata, version=1)
