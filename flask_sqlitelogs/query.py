"""Queries over the monthly files: filters, the months a query needs, and paging across them."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from typing import Any

from flask_bgjobs.clock import as_utc
from flask_bgjobs.sqlite import check_month, month_of

from .models import SORTABLE, STATUS_CLASSES, LogEntry, Page
from .store import RequestLogStore, sort_key

#: The most rows one page may hold.
MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Filters:
    """What rows must match; ``None`` matches everything. Times are epoch seconds (UTC)."""

    since: float | None = None
    until: float | None = None
    method: str | None = None
    status: int | None = None
    status_class: str | None = None
    path_contains: str | None = None
    endpoint: str | None = None
    user_id: str | None = None
    ip: str | None = None
    trace_id: str | None = None
    min_duration_ms: float | None = None
    has_error: bool | None = None
    text: str | None = None


def make_filters(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    method: str | None = None,
    status: int | None = None,
    status_class: str | None = None,
    path_contains: str | None = None,
    endpoint: str | None = None,
    user_id: Any = None,
    ip: str | None = None,
    trace_id: str | None = None,
    min_duration_ms: float | None = None,
    has_error: bool | None = None,
    text: str | None = None,
) -> Filters:
    """Check the arguments of ``query`` and turn them into :class:`Filters`.

    Raises :class:`ValueError` (or :class:`TypeError`) with what is expected.
    """
    for name, value in (("since", since), ("until", until)):
        if value is not None and not isinstance(value, datetime):
            raise TypeError(f"{name} must be a datetime, not {value!r}")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ValueError(f"status must be an HTTP status code (100-599), not {status!r}")
    if status_class is not None and status_class not in STATUS_CLASSES:
        raise ValueError(
            f"status_class must be one of {', '.join(STATUS_CLASSES)}, not {status_class!r}"
        )
    if min_duration_ms is not None and (
        isinstance(min_duration_ms, bool)
        or not isinstance(min_duration_ms, (int, float))
        or min_duration_ms < 0
    ):
        raise ValueError(f"min_duration_ms must be a number >= 0, not {min_duration_ms!r}")
    if has_error is not None and not isinstance(has_error, bool):
        raise TypeError(f"has_error must be True, False or None, not {has_error!r}")
    texts: dict[str, object] = {
        "method": method,
        "path_contains": path_contains,
        "endpoint": endpoint,
        "ip": ip,
        "trace_id": trace_id,
        "text": text,
    }
    for name, given in texts.items():
        if given is not None and not isinstance(given, str):
            raise TypeError(f"{name} must be a string, not {given!r}")
    return Filters(
        since=as_utc(since).timestamp() if since is not None else None,
        until=as_utc(until).timestamp() if until is not None else None,
        method=method.upper() if method else None,
        status=status,
        status_class=status_class,
        path_contains=path_contains or None,
        endpoint=endpoint or None,
        user_id=None if user_id is None or user_id == "" else str(user_id),
        ip=ip or None,
        trace_id=trace_id or None,
        min_duration_ms=None if min_duration_ms is None else float(min_duration_ms),
        has_error=has_error,
        text=text or None,
    )


def check_order(order_by: str) -> str:
    """Return ``order_by`` if it names a sortable column (``-`` for descending)."""
    if (
        not isinstance(order_by, str)
        or order_by.lstrip("-") not in SORTABLE
        or (order_by.startswith("--"))
    ):
        raise ValueError(
            f"order_by must be one of {', '.join(SORTABLE)} (with '-' in front for descending), "
            f"not {order_by!r}"
        )
    return order_by


def months_for(store: RequestLogStore, month: str | None, filters: Filters) -> list[str]:
    """The months a query reads, newest first.

    ``month`` alone: that month. No month: the months ``since``/``until`` span that have a file
    (up to now when ``until`` is absent), or the current month when neither is given.
    """
    if month is not None:
        return [check_month(month)]
    if filters.since is None and filters.until is None:
        return [store.current_month()]
    existing = store.months()
    if not existing:
        return []
    newest = (
        month_of(datetime.fromtimestamp(filters.until - 1e-6, timezone.utc))
        if filters.until
        else None
    )
    oldest = (
        month_of(datetime.fromtimestamp(filters.since, timezone.utc)) if filters.since else None
    )
    return [
        m for m in existing if (newest is None or m <= newest) and (oldest is None or m >= oldest)
    ]


def run_query(
    store: RequestLogStore,
    month: str | None,
    filters: Filters,
    order_by: str,
    limit: int,
    offset: int,
) -> Page:
    """One page of the entries matching ``filters`` over the months the query needs."""
    check_order(order_by)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, not {offset!r}")
    months = months_for(store, month, filters)
    counts = {m: store.count(m, filters) for m in months}
    total = sum(counts.values())
    column = order_by.lstrip("-")
    if len(months) <= 1:
        items = [
            entry
            for m in months
            for entry in store.fetch(m, filters, order_by, limit, offset, counts[m])
        ]
    elif column == "timestamp":
        items = _in_month_order(store, months, counts, filters, order_by, limit, offset)
    else:
        items = _merged(store, months, counts, filters, order_by, limit, offset)
    return Page(items, total, limit, offset, order_by, tuple(months))


def _in_month_order(
    store: RequestLogStore,
    months: list[str],
    counts: dict[str, int],
    filters: Filters,
    order_by: str,
    limit: int,
    offset: int,
) -> list[LogEntry]:
    """Months hold disjoint times: walk them in order, skipping whole months by their count."""
    ordered = months if order_by.startswith("-") else list(reversed(months))
    items: list[LogEntry] = []
    for m in ordered:
        if len(items) >= limit:
            break
        if offset >= counts[m]:
            offset -= counts[m]
            continue
        items.extend(store.fetch(m, filters, order_by, limit - len(items), offset, counts[m]))
        offset = 0
    return items


def _merged(
    store: RequestLogStore,
    months: list[str],
    counts: dict[str, int],
    filters: Filters,
    order_by: str,
    limit: int,
    offset: int,
) -> list[LogEntry]:
    """Merge the first ``offset + limit`` rows of every month, then cut the page out."""
    wanted = offset + limit
    fields = sort_key(order_by)
    descending = order_by.startswith("-")

    def key(entry: LogEntry) -> tuple[Any, ...]:
        # SQLite sorts NULL before any value; (0,) < (1, v) does the same.
        return (
            *((0,) if v is None else (1, v) for v in map(entry.__getattribute__, fields)),
            entry.month,
        )

    runs: list[Iterator[LogEntry]] = [
        iter(store.fetch(m, filters, order_by, wanted, 0, counts[m])) for m in months if counts[m]
    ]
    merged = heapq.merge(*runs, key=key, reverse=descending)
    return list(islice(merged, offset, wanted))
