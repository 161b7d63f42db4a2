"""Every read-only SQL statement of the admin pages (SQLAlchemy Core, on the package's tables).

State changes never happen here: the pages change jobs through the extension's public methods
(``cancel_job``, ``requeue_job``, ``run_now``, ``enable_recurring``).

A finished job's row is written to its month's file before the job leaves the queue, so a crash
between the two writes leaves a job in both places for up to one lease. The month's lists hide
such rows (their summary in ``jobs.db`` is not final yet): every job is shown once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Select, Table, cast, column, func, literal, or_, select
from sqlalchemy.engine import Connection, Row

from ..store import JobStore
from ..tables import background_job, command_stats, completed_job, failed_job, job_summary
from ..tables import worker_process as worker_process_table

#: Tables of a month's file by list name.
HISTORY_TABLES: dict[str, Table] = {"completed": completed_job, "failed": failed_job}
#: Sort keys of the month's lists and the columns behind them.
SORT_COLUMNS = {"date": "completed_at", "duration": "duration", "id": "id"}
_NOT_FINAL = ("waiting", "queued", "started")
_DAY = 86400.0
_PREVIEW = 300  # characters of a request, result or error shown in a list

#: The columns of a queue row the lists need (never the log, request or history: they can be big).
QUEUE_LIST_COLUMNS = (
    "id", "ref_id", "command", "request_type", "state", "created_at", "worker", "tag",
    "batch_id", "depends_on", "parent_id", "run_after", "started_at", "attempts", "retry_limit",
    "timeout", "progress", "status", "lease_owner", "cancel_requested", "error_message",
    "created_by", "user_id",
)  # fmt: skip
_HISTORY_LIST_COLUMNS = (
    "id", "ref_id", "command", "request_type", "state", "created_at", "completed_at", "duration",
    "attempts", "worker", "tag", "batch_id", "created_by", "user_id", "parent_id", "error_type",
    "worker_process",
)  # fmt: skip


@dataclass(frozen=True)
class HistoryFilters:
    """What a month's list is narrowed to; ``None`` leaves a field out."""

    command: str | None = None
    tag: str | None = None
    batch_id: str | None = None
    created_by: str | None = None
    user_id: str | None = None
    state: str | None = None  # failed or cancelled, on the failed list
    text: str | None = None  # searched in the request, result and error

    def as_args(self) -> dict[str, str]:
        """The filters as query parameters (the names the pages use)."""
        names = {"text": "q"}
        return {names.get(k, k): v for k, v in self.__dict__.items() if v is not None}


@dataclass
class HistoryPage:
    """One page of a month's completed or failed jobs."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    exists: bool = False


# -- the queue -------------------------------------------------------------------------------------


def queue_counts(store: JobStore, now: float) -> dict[str, int]:
    """Jobs in the queue by state, plus ``delayed`` (queued, not due yet) and ``retrying``."""
    q = background_job.c
    delayed = func.sum(cast((q.state == "queued") & (q.run_after > now), Integer))
    retrying = func.sum(cast((q.state == "queued") & (q.attempts > 0), Integer))
    by_state = select(q.state, func.count().label("n")).group_by(q.state)
    with store.queue.read() as conn:
        counts = Counter({row.state: row.n for row in conn.execute(by_state)})
        extra = conn.execute(select(delayed, retrying)).one()
    return {
        "waiting": counts["waiting"],
        "queued": counts["queued"],
        "started": counts["started"],
        "delayed": int(extra[0] or 0),
        "retrying": int(extra[1] or 0),
    }


def queue_rows(store: JobStore, limit: int) -> list[dict[str, Any]]:
    """Running jobs first (oldest start first), then queued and waiting jobs by id.

    Two indexed reads rather than one sort of the whole queue: a queue can be long.
    """
    q = background_job.c
    columns = [q[name] for name in QUEUE_LIST_COLUMNS]
    running = select(*columns).where(q.state == "started").order_by(q.started_at, q.id)
    waiting = select(*columns).where(q.state != "started").order_by(q.id)
    with store.queue.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(running.limit(limit))]
        if len(rows) < limit:
            rows += [dict(row._mapping) for row in conn.execute(waiting.limit(limit - len(rows)))]
    return rows


def running_by_owner(store: JobStore) -> dict[str, list[dict[str, Any]]]:
    """The running jobs of each worker process (by lease owner)."""
    q = background_job.c
    query = (
        select(q.id, q.command, q.lease_owner, q.started_at, q.worker)
        .where(q.state == "started")
        .order_by(q.id)
    )
    found: dict[str, list[dict[str, Any]]] = {}
    with store.queue.read() as conn:
        for row in conn.execute(query):
            found.setdefault(row.lease_owner or "", []).append(dict(row._mapping))
    return found


# -- the months ------------------------------------------------------------------------------------


def month_counts(store: JobStore, month: str, since: float | None = None) -> dict[str, int]:
    """Completed, failed and cancelled jobs of a month (those that ended at ``since`` or later)."""
    database = store.history.existing(month)
    counts = {"completed": 0, "failed": 0, "cancelled": 0}
    if database is None:
        return counts
    with database.read() as conn:
        for table in (completed_job, failed_job):
            query = select(table.c.state, func.count().label("n")).group_by(table.c.state)
            if since is not None:
                query = query.where(table.c.completed_at >= since)
            for row in conn.execute(query):
                if row.state in counts:
                    counts[row.state] += row.n
    return counts


def per_day(store: JobStore, months: Iterable[str], since: float) -> dict[tuple[int, str], int]:
    """Jobs that ended at ``since`` or later, by (UTC day number, outcome)."""
    found: Counter[tuple[int, str]] = Counter()
    for month in months:
        database = store.history.existing(month)
        if database is None:
            continue
        with database.read() as conn:
            for table in (completed_job, failed_job):
                day = cast(table.c.completed_at / _DAY, Integer).label("day")
                query = (
                    select(day, table.c.state, func.count().label("n"))
                    .where(table.c.completed_at >= since)
                    .group_by(day, table.c.state)
                )
                for row in conn.execute(query):
                    found[(int(row.day), str(row.state))] += int(row.n)
    return dict(found)


def command_rankings(store: JobStore, limit: int) -> tuple[list[dict[str, Any]], ...]:
    """The slowest commands (by recent average duration) and those that fail most."""
    s = command_stats.c
    columns = (s.command, s.completed, s.failed, s.avg_duration, s.max_duration)
    slowest = (
        select(*columns).where(s.avg_duration.is_not(None))
        .order_by(s.avg_duration.desc(), s.command).limit(limit)
    )  # fmt: skip
    failing = select(*columns).where(s.failed > 0).order_by(s.failed.desc(), s.command).limit(limit)
    with store.queue.read() as conn:
        return (
            [dict(row._mapping) for row in conn.execute(slowest)],
            [dict(row._mapping) for row in conn.execute(failing)],
        )


def known_commands(store: JobStore) -> list[str]:
    """Commands that ran at least once (for the filter's suggestions)."""
    with store.queue.read() as conn:
        query = select(command_stats.c.command).order_by(command_stats.c.command)
        return [str(name) for name in conn.execute(query).scalars()]


def history_page(
    store: JobStore,
    kind: str,
    month: str,
    filters: HistoryFilters,
    order_by: str,
    limit: int,
    offset: int,
) -> HistoryPage:
    """A page of the month's ``kind`` ("completed" or "failed") jobs matching ``filters``."""
    database = store.history.existing(month)
    if database is None:
        return HistoryPage()
    table = HISTORY_TABLES[kind]
    with database.read() as conn:
        where = _history_where(conn, store, table, filters)
        total = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
        key = table.c[SORT_COLUMNS[order_by.lstrip("-")]]
        descending = order_by.startswith("-")
        order = (key.desc().nulls_last(), table.c.id.desc()) if descending else (
            key.asc().nulls_last(), table.c.id.asc())  # fmt: skip
        query = (
            select(
                *(table.c[name] for name in _HISTORY_LIST_COLUMNS),
                func.substr(table.c.request, 1, _PREVIEW).label("request"),
                func.substr(table.c.result, 1, _PREVIEW).label("result"),
                func.substr(table.c.error_message, 1, _PREVIEW).label("error_message"),
            )
            .where(*where)
            .order_by(*order)
            .limit(limit)
            .offset(offset)
        )
        rows = [dict(row._mapping) for row in conn.execute(query)]
    return HistoryPage(rows, int(total), True)


def history_ids(
    store: JobStore, kind: str, month: str, filters: HistoryFilters, limit: int
) -> list[int]:
    """The ids of the month's ``kind`` jobs matching ``filters``, oldest first (bulk actions)."""
    database = store.history.existing(month)
    if database is None:
        return []
    table = HISTORY_TABLES[kind]
    with database.read() as conn:
        where = _history_where(conn, store, table, filters)
        query = select(table.c.id).where(*where).order_by(table.c.id).limit(limit)
        return [int(job_id) for job_id in conn.execute(query).scalars()]


def _history_where(
    conn: Connection, store: JobStore, table: Table, filters: HistoryFilters
) -> list[Any]:
    c = table.c
    where: list[Any] = []
    for name in ("command", "tag", "batch_id", "created_by", "user_id", "state"):
        value = getattr(filters, name)
        if value is not None:
            where.append(c[name] == value)
    if filters.text is not None:
        pattern = "%" + _escape_like(filters.text) + "%"
        searched = [c.request, c.error_message, c.error_type]
        if table is completed_job:
            searched.append(c.result)
        where.append(or_(*(column.like(pattern, escape="\\") for column in searched)))
    hidden = _unfinished_ids(conn, store, table)
    if hidden:
        # One JSON parameter, however many ids: SQLite reads it with json_each.
        listed = func.json_each(literal(json.dumps(hidden)))
        ids: Select[Any] = select(column("value")).select_from(listed)
        where.append(c.id.not_in(ids))
    return where


def _unfinished_ids(conn: Connection, store: JobStore, table: Table) -> list[int]:
    """Ids of the month's rows whose job is back in (or still in) the queue."""
    low, high = conn.execute(select(func.min(table.c.id), func.max(table.c.id))).one()
    if low is None:
        return []
    s = job_summary.c
    query = select(s.id).where(s.state.in_(_NOT_FINAL), s.id.between(low, high))
    with store.queue.read() as queue:
        return [int(job_id) for job_id in queue.execute(query).scalars()]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- workers ---------------------------------------------------------------------------------------


def worker_processes(store: JobStore, stopped_since: float) -> list[Row[Any]]:
    """Processes that have not stopped, and those that stopped at ``stopped_since`` or later."""
    w = worker_process_table.c
    query = (
        select(worker_process_table)
        .where(or_(w.stopped_at.is_(None), w.stopped_at >= stopped_since))
        .order_by(w.stopped_at.is_not(None), w.started_at.desc())
    )
    with store.queue.read() as conn:
        return list(conn.execute(query))


def process_counts(store: JobStore, lost_before: float) -> dict[str, int]:
    """Processes that run (heartbeat at ``lost_before`` or later) and those that were lost."""
    w = worker_process_table.c
    lost = func.sum(cast(w.heartbeat_at < lost_before, Integer))
    with store.queue.read() as conn:
        total, missing = conn.execute(
            select(func.count(), lost).where(w.stopped_at.is_(None))
        ).one()
    return {"live": int(total or 0) - int(missing or 0), "lost": int(missing or 0)}


# -- one job ---------------------------------------------------------------------------------------


def summaries_where(store: JobStore, limit: int, **equal: Any) -> list[dict[str, Any]]:
    """Summaries (id, command, state, created_at) with the given column values, oldest first."""
    s = job_summary.c
    live = background_job.c.state
    query = (
        select(s.id, s.command, func.coalesce(live, s.state).label("state"), s.created_at)
        .outerjoin(background_job, background_job.c.id == s.id)
        .where(*(s[name] == value for name, value in equal.items()))
        .order_by(s.id)
        .limit(limit)
    )
    with store.queue.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def count_summaries(store: JobStore, **equal: Any) -> int:
    s = job_summary.c
    query = select(func.count()).where(*(s[name] == value for name, value in equal.items()))
    with store.queue.read() as conn:
        return int(conn.execute(query).scalar_one())


def day_numbers(start: float, days: int) -> Sequence[int]:
    """The UTC day numbers of ``days`` days from ``start``."""
    first = int(start // _DAY)
    return range(first, first + days)
