"""Every SQL statement of the request logs: the schema, the flush insert, and the grid's queries.

One table, ``request_log``, in each monthly file ``requests_YYYY-MM.db``. The small columns the
grid filters and sorts on come first and the bulky ones (headers, bodies, traceback) last, so that
a scan touches as little of each row as SQLite allows.

Indexes serve the grid: time; status, path, method, ip and user, each with time (newest first
within a filter); endpoint with status and time; duration; trace id; and errors. The page query
picks its plan from the count it has just made: when many rows match, walking the sort column's
index and skipping the misses beats collecting every match and sorting them, so the filters' own
indexes are turned off for that query (``+ 0`` / ``|| ''`` keep SQLite from using them).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    Index,
    Integer,
    MetaData,
    Select,
    Table,
    Text,
    and_,
    func,
    literal,
    or_,
    select,
    text,
)

from flask_bgjobs.clock import Clock, utcnow
from flask_bgjobs.sqlite import MonthlyDatabase, Schema, SqliteOptions
from flask_bgjobs.text import utf8_safe_rows

from .models import STORED_FIELDS, LogEntry

if TYPE_CHECKING:
    from .query import Filters

metadata = MetaData()

request_log = Table(
    "request_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("timestamp", Float, nullable=False),
    Column("trace_id", Text, nullable=False),
    Column("method", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("query_string", Text, nullable=False),
    Column("endpoint", Text),
    Column("status_code", Integer, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("ip", Text),
    Column("forwarded_for", Text),
    Column("referer", Text),
    Column("user_agent", Text),
    Column("user_id", Text),
    Column("error_type", Text),
    Column("error_message", Text),
    Column("request_headers", Text, nullable=False),
    Column("request_body", Text),
    Column("request_body_size", Integer),
    Column("response_headers", Text, nullable=False),
    Column("response_body", Text),
    Column("response_body_size", Integer),
    Column("error_traceback", Text),
)
_c = request_log.c
Index("ix_request_log_timestamp", _c.timestamp)
Index("ix_request_log_status", _c.status_code, _c.timestamp)
Index("ix_request_log_path", _c.path, _c.timestamp)
Index("ix_request_log_endpoint", _c.endpoint, _c.status_code, _c.timestamp)
Index("ix_request_log_method", _c.method, _c.timestamp)
Index("ix_request_log_ip", _c.ip, _c.timestamp)
Index("ix_request_log_user", _c.user_id, _c.timestamp, sqlite_where=_c.user_id.isnot(None))
Index("ix_request_log_duration", _c.duration_ms)
Index("ix_request_log_trace", _c.trace_id)
Index("ix_request_log_errors", _c.timestamp, sqlite_where=_c.error_type.isnot(None))

SCHEMA = Schema(metadata, version=1)

INSERT = (
    f"INSERT INTO request_log ({', '.join(STORED_FIELDS)}) "
    f"VALUES ({', '.join('?' for _ in STORED_FIELDS)})"
)
_JSON_FIELDS = frozenset({"request_headers", "response_headers"})

#: The columns that follow the sort column in ORDER BY: those its index already holds.
_TIEBREAK: dict[str, tuple[str, ...]] = {
    "id": (),
    "timestamp": ("id",),
    "duration_ms": ("id",),
    "trace_id": ("id",),
    "endpoint": ("status_code", "timestamp", "id"),
}
#: Sort columns with an index that yields rows in that order.
_ORDERED_INDEXES = frozenset(
    {
        "id",
        "timestamp",
        "status_code",
        "path",
        "method",
        "endpoint",
        "ip",
        "duration_ms",
        "trace_id",
    }
)
#: Rows one INSERT statement of a flush carries (23 values each; SQLite allows 32,766).
CHUNK = 256
#: The writer's page cache (KiB): a flush touches a page of every index per row.
_WRITER_CACHE_KIB = 32 * 1024


class RequestLogStore:
    """The monthly request-log files of one app: ``<directory>/requests_YYYY-MM.db``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        options: SqliteOptions | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.files = MonthlyDatabase(directory, "requests", SCHEMA, options, clock)

    @property
    def directory(self) -> Path:
        return self.files.directory

    def months(self) -> list[str]:
        """The months that have a file, newest first."""
        return self.files.months()

    def current_month(self) -> str:
        return self.files.current_month()

    # -- writing ---------------------------------------------------------------------------------

    def write(self, month: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert ``rows`` into the file of ``month`` in one ``BEGIN IMMEDIATE`` transaction.

        One executemany of a statement that inserts :data:`CHUNK` rows at a time, then one insert
        of the rest. The driver releases the GIL around each statement it runs: a statement per
        row would hand the GIL back and forth with the request threads once per row, while a
        statement per chunk lets SQLite work on another core as the app goes on.

        Text SQLite refuses (a lone surrogate in an exception message, a user id, or a value an
        entry filter set) costs nothing until it appears: the refused transaction is rolled back
        and the rows are written again with such characters replaced by U+FFFD.
        """
        try:
            self._insert(month, rows)
        except UnicodeEncodeError:
            self._insert(month, utf8_safe_rows(rows))

    def _insert(self, month: str, rows: Sequence[tuple[Any, ...]]) -> None:
        full = len(rows) - len(rows) % CHUNK
        with self.files.write(month) as tx:
            tx.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
            if full:
                tx.executemany(
                    _insert_rows(CHUNK),
                    (_flat(rows[start : start + CHUNK]) for start in range(0, full, CHUNK)),
                )
            if full < len(rows):
                tx.execute(_insert_rows(len(rows) - full), _flat(rows[full:]))

    def prune(
        self, keep_months: int, archive_dir: str | os.PathLike[str] | None = None
    ) -> list[str]:
        """Delete (or move to ``archive_dir``) the files older than the last ``keep_months``."""
        return self.files.prune(keep_months, archive_dir)

    def dispose(self) -> None:
        self.files.dispose()

    # -- reading ---------------------------------------------------------------------------------

    def count(self, month: str, filters: Filters) -> int:
        """The number of rows of ``month`` that match ``filters``."""
        database = self.files.existing(month)
        if database is None:
            return 0
        query = select(func.count()).select_from(request_log).where(*_conditions(filters, False))
        with database.read() as conn:
            return int(conn.execute(query).scalar_one())

    def fetch(
        self,
        month: str,
        filters: Filters,
        order_by: str,
        limit: int,
        offset: int,
        matching: int,
    ) -> list[LogEntry]:
        """One page of ``month``'s rows matching ``filters``, sorted by ``order_by``.

        ``matching`` is the count of those rows, which decides the plan (see the module's doc).
        """
        database = self.files.existing(month)
        if database is None or limit <= 0 or offset >= matching:
            return []
        column = order_by.lstrip("-")
        total = self._table_rows(month) if column in _ORDERED_INDEXES else 0
        walk_index = matching * matching > (offset + limit) * total
        query = (
            select(request_log)
            .where(*_conditions(filters, walk_index))
            .order_by(*_ordering(order_by))
            .limit(limit)
            .offset(offset)
        )
        with database.read() as conn:
            return [_entry(row, month) for row in conn.execute(query)]

    def get(self, month: str, entry_id: int) -> LogEntry | None:
        """The entry ``entry_id`` of ``month``, or ``None``."""
        database = self.files.existing(month)
        if database is None:
            return None
        query = select(request_log).where(_c.id == entry_id)
        with database.read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _entry(row, month)

    def hourly_counts(self, month: str, filters: Filters) -> list[tuple[int, int]]:
        """``(hour as epoch seconds, requests)`` for every hour of ``month`` with a match."""
        hour = func.cast(_c.timestamp / 3600, Integer)
        query = (
            select(hour, func.count())
            .where(*_conditions(filters, False))
            .group_by(hour)
            .order_by(hour)
        )
        return [(int(h) * 3600, int(n)) for h, n in self._rows(month, query)]

    def status_counts(self, month: str, filters: Filters) -> dict[int, int]:
        """Requests per status class (``2`` for 2xx...) of ``month``'s matches."""
        klass = func.cast(_c.status_code / 100, Integer)
        query = select(klass, func.count()).where(*_conditions(filters, False)).group_by(klass)
        return {int(k): int(n) for k, n in self._rows(month, query)}

    def durations(self, month: str, filters: Filters, limit: int) -> list[tuple[str | None, float]]:
        """``(endpoint, duration_ms)`` of the newest ``limit`` matches of ``month``."""
        query = (
            select(_c.endpoint, _c.duration_ms)
            .where(*_conditions(filters, False))
            .order_by(_c.timestamp.desc())
            .limit(limit)
        )
        return [(endpoint, float(ms)) for endpoint, ms in self._rows(month, query)]

    def month_stats(self, month: str) -> dict[str, Any]:
        """Rows, errors, first and last request, and bytes on disk of one month's file."""
        database = self.files.existing(month)
        path = self.files.path_for(month)
        size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
        stats: dict[str, Any] = {
            "month": month,
            "rows": 0,
            "errors": 0,
            "first": None,
            "last": None,
            "bytes": size,
        }
        if database is None:
            return stats
        with database.read() as conn:
            rows, first, last = conn.execute(
                select(func.count(), func.min(_c.timestamp), func.max(_c.timestamp))
            ).one()
            errors = conn.execute(
                select(func.count()).where(_c.error_type.isnot(None))
            ).scalar_one()
        stats.update(rows=int(rows), errors=int(errors), first=_when(first), last=_when(last))
        return stats

    def _table_rows(self, month: str) -> int:
        """About how many rows the month holds: rows are only ever appended, so the last id."""
        database = self.files.existing(month)
        if database is None:
            return 0
        with database.read() as conn:
            return int(conn.execute(text("SELECT max(id) FROM request_log")).scalar() or 0)

    def _rows(self, month: str, query: Select[Any]) -> Iterable[Any]:
        database = self.files.existing(month)
        if database is None:
            return []
        with database.read() as conn:
            return list(conn.execute(query))


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [value for row in rows for value in row]


@functools.lru_cache(maxsize=64)
def _insert_rows(count: int) -> str:
    """An INSERT of ``count`` rows in one statement."""
    values = f"({', '.join('?' for _ in STORED_FIELDS)})"
    return (
        f"INSERT INTO request_log ({', '.join(STORED_FIELDS)}) VALUES {', '.join([values] * count)}"
    )


def _conditions(filters: Filters, walk_index: bool) -> list[ColumnElement[bool]]:
    """The WHERE terms of ``filters``; with ``walk_index`` none of them may use an index."""

    def col(name: str) -> Any:
        column = _c[name]
        if not walk_index:
            return column
        # A term on an expression rather than the bare column cannot use the column's index.
        return column + 0 if isinstance(column.type, (Integer, Float)) else column.concat("")

    terms: list[ColumnElement[bool]] = []
    if filters.since is not None:
        terms.append(col("timestamp") >= filters.since)
    if filters.until is not None:
        terms.append(col("timestamp") < filters.until)
    if filters.method is not None:
        terms.append(_c.method == filters.method)
    if filters.status is not None:
        terms.append(col("status_code") == filters.status)
    if filters.status_class is not None:
        low = int(filters.status_class[0]) * 100
        terms.append(and_(col("status_code") >= low, col("status_code") < low + 100))
    if filters.path_contains is not None:
        terms.append(func.instr(col("path"), filters.path_contains) > 0)
    for name in ("endpoint", "user_id", "ip", "trace_id"):
        value = getattr(filters, name)
        if value is not None:
            terms.append(col(name) == value)
    if filters.min_duration_ms is not None:
        terms.append(col("duration_ms") >= filters.min_duration_ms)
    if filters.has_error is True:
        terms.append(_c.error_type.isnot(None))
    elif filters.has_error is False:
        terms.append(_c.error_type.is_(None))
    if filters.text is not None:
        needle = filters.text
        terms.append(
            or_(
                *(
                    _c[name].contains(needle, autoescape=True)
                    for name in (
                        "url",
                        "endpoint",
                        "user_agent",
                        "referer",
                        "trace_id",
                        "user_id",
                        "ip",
                        "error_type",
                        "error_message",
                    )
                )
            )
        )
    return terms or [literal(True)]


def _ordering(order_by: str) -> list[Any]:
    column = order_by.lstrip("-")
    descending = order_by.startswith("-")
    names = (column, *_TIEBREAK.get(column, ("timestamp", "id")))
    return [_c[name].desc() if descending else _c[name].asc() for name in names]


def sort_key(order_by: str) -> tuple[str, ...]:
    """The fields an ``order_by`` really sorts on, in order (to merge pages of several months)."""
    column = order_by.lstrip("-")
    return (column, *_TIEBREAK.get(column, ("timestamp", "id")))


def _entry(row: Any, month: str) -> LogEntry:
    values = row._mapping
    data = {name: values[name] for name in STORED_FIELDS}
    for name in _JSON_FIELDS:
        try:
            data[name] = json.loads(data[name] or "{}")
        except ValueError:
            data[name] = {}
    return LogEntry(**data, id=values["id"], month=month)


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)
