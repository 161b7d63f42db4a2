"""``query``: every filter, the sort whitelist, paging, and ranges that span monthly files.

The data are real requests made through the test client while a ManualClock moves, across
February, March and April 2026; every result is checked against the same selection made in
Python over all the entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_bgjobs import ManualClock
from flask_sqlitelogs import SORTABLE, LogEntry, SqliteRequestLogger

from .apps.logs_app import create_app

UTC = timezone.utc
START = datetime(2026, 2, 27, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, SqliteRequestLogger]]:
    """An app with 150 requests spread over Feb 27 - Apr 1 2026 (every 5 h 20 min)."""
    clock = ManualClock(START)
    app, logs = create_app(
        tmp_path_factory.mktemp("query"), clock=clock, user_id=lambda: request.headers.get("X-User")
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    for number in range(150):
        path = ("/items/7", "/items/42", "/hello", "/missing", "/forbidden", "/boom", "/handled")[
            number % 7
        ]
        method = "POST" if path == "/hello" and number % 2 else "GET"
        client.open(
            path if method == "GET" else "/echo",
            method=method,
            headers={"X-User": f"u{number % 4}"} if number % 3 else {},
            environ_base={"REMOTE_ADDR": f"10.0.0.{number % 5}"},
        )
        clock.advance(hours=5, minutes=20)
    with app.app_context():
        logs.flush()
    yield app, logs
    with app.app_context():
        logs.stop()
        logs.store().dispose()


Query = Callable[..., Any]


@pytest.fixture
def query(logged: tuple[Flask, SqliteRequestLogger]) -> Iterator[Query]:
    app, logs = logged
    with app.app_context():
        yield logs.query


@pytest.fixture
def everything(query: Query) -> list[LogEntry]:
    """All entries, through a range wide enough for every month."""
    page = query(since=START - timedelta(days=1), until=START + timedelta(days=60), limit=1000)
    assert page.total == 150 and len(page.items) == 150
    return page.items


def sorted_like_sqlite(entries: list[LogEntry], order_by: str) -> list[tuple[str, int]]:
    column = order_by.lstrip("-")
    tiebreak = {
        "timestamp": ("id",),
        "duration_ms": ("id",),
        "trace_id": ("id",),
        "endpoint": ("status_code", "timestamp", "id"),
    }.get(column, ("timestamp", "id"))
    fields = (column, *tiebreak) if column != "id" else ("id",)

    def key(entry: LogEntry) -> tuple[Any, ...]:
        values = (getattr(entry, name) for name in fields)
        return (*((0,) if v is None else (1, v) for v in values), entry.month)

    ordered = sorted(entries, key=key, reverse=order_by.startswith("-"))
    return [(e.month or "", e.id or 0) for e in ordered]


def ids(entries: list[LogEntry]) -> list[tuple[str, int]]:
    return [(e.month or "", e.id or 0) for e in entries]


def test_the_data_spans_three_monthly_files(logged: tuple[Flask, SqliteRequestLogger]) -> None:
    app, logs = logged
    with app.app_context():
        assert logs.months() == ["2026-04", "2026-03", "2026-02"]


def test_default_is_the_current_month_newest_first(query: Query, everything: list) -> None:
    page = query()
    april = [e for e in everything if e.month == "2026-04"]
    assert page.total == len(april) > 0
    assert page.months == ("2026-04",)
    assert [e.timestamp for e in page.items] == sorted((e.timestamp for e in april), reverse=True)


@pytest.mark.parametrize(
    ("filters", "check"),
    [
        ({"method": "post"}, lambda e: e.method == "POST"),
        ({"status": 404}, lambda e: e.status_code == 404),
        ({"status_class": "4xx"}, lambda e: 400 <= e.status_code < 500),
        ({"status_class": "5xx"}, lambda e: e.status_code >= 500),
        ({"path_contains": "items/4"}, lambda e: "items/4" in e.path),
        ({"endpoint": "item"}, lambda e: e.endpoint == "item"),
        ({"user_id": "u2"}, lambda e: e.user_id == "u2"),
        ({"user_id": 1}, lambda e: e.user_id == "1"),
        ({"ip": "10.0.0.3"}, lambda e: e.ip == "10.0.0.3"),
        ({"has_error": True}, lambda e: e.error_type is not None),
        ({"has_error": False}, lambda e: e.error_type is None),
        ({"text": "TEAPOT"}, lambda e: "teapot" in (e.error_type or "").lower()),
        ({"text": "100%"}, lambda e: False),
        ({"min_duration_ms": 0.0}, lambda e: True),
        ({"status": 200, "ip": "10.0.0.1"}, lambda e: e.status_code == 200 and e.ip == "10.0.0.1"),
    ],
)
def test_each_filter_matches_exactly_what_it_should(
    query: Query, everything: list[LogEntry], filters: dict[str, Any], check: Callable[..., bool]
) -> None:
    wide = {"since": START - timedelta(days=1), "until": START + timedelta(days=60)}
    page = query(**wide, **filters, limit=1000)
    expected = [e for e in everything if check(e)]
    empty_on_purpose = filters in ({"user_id": 1}, {"text": "100%"})
    assert bool(expected) != empty_on_purpose, "a filter test must select something"
    assert page.total == len(expected)
    assert sorted(ids(page.items)) == sorted(ids(expected))


def test_min_duration_and_trace_id(query: Query, everything: list[LogEntry]) -> None:
    wide = {"since": START - timedelta(days=1), "until": START + timedelta(days=60)}
    median = sorted(e.duration_ms for e in everything)[75]
    slow = query(**wide, min_duration_ms=median, limit=1000)
    assert sorted(ids(slow.items)) == sorted(
        ids([e for e in everything if e.duration_ms >= median])
    )
    target = everything[37]
    found = query(**wide, trace_id=target.trace_id)
    assert ids(found.items) == ids([target])


def test_since_and_until_within_one_month(query: Query, everything: list[LogEntry]) -> None:
    since = datetime(2026, 3, 10, tzinfo=UTC)
    until = datetime(2026, 3, 12, 6, tzinfo=UTC)
    page = query(since=since, until=until, limit=1000)
    expected = [e for e in everything if since.timestamp() <= e.timestamp < until.timestamp()]
    assert page.months == ("2026-03",)
    assert ids(page.items) == sorted_like_sqlite(expected, "-timestamp")
    naive = query(since=since.replace(tzinfo=None), until=until.replace(tzinfo=None), limit=1000)
    assert ids(naive.items) == ids(page.items)  # naive datetimes are UTC


@pytest.mark.parametrize("order_by", [*SORTABLE, *(f"-{c}" for c in SORTABLE)])
def test_every_sort_over_every_month_matches_python(
    query: Query, everything: list[LogEntry], order_by: str
) -> None:
    wide = {"since": START - timedelta(days=1), "until": START + timedelta(days=60)}
    expected = sorted_like_sqlite(everything, order_by)
    assert ids(query(**wide, order_by=order_by, limit=1000).items) == expected
    # And page by page, across the month boundaries.
    pages = [query(**wide, order_by=order_by, limit=17, offset=o).items for o in range(0, 150, 17)]
    assert [key for page in pages for key in ids(page)] == expected


@pytest.mark.parametrize(
    "order_by", ["-timestamp", "timestamp", "-duration_ms", "path", "-status_code"]
)
def test_paging_inside_one_month(query: Query, everything: list[LogEntry], order_by: str) -> None:
    march = [e for e in everything if e.month == "2026-03"]
    expected = sorted_like_sqlite(march, order_by)
    collected: list[tuple[str, int]] = []
    offset = 0
    while True:
        page = query("2026-03", order_by=order_by, limit=10, offset=offset)
        assert page.total == len(march)
        assert page.pages == -(-len(march) // 10)
        collected += ids(page.items)
        if not page.has_next:
            break
        offset += 10
    assert collected == expected


def test_both_query_plans_give_the_same_rows(query: Query, everything: list[LogEntry]) -> None:
    """Many matches walk the sort index, few matches collect and sort: same answers."""
    march = [e for e in everything if e.month == "2026-03"]
    common = query("2026-03", status_class="2xx", order_by="-timestamp", limit=5, offset=3)
    rare = query("2026-03", status=500, order_by="-timestamp", limit=5)
    expected_common = [e for e in march if 200 <= e.status_code < 300]
    expected_rare = [e for e in march if e.status_code == 500]
    assert ids(common.items) == sorted_like_sqlite(expected_common, "-timestamp")[3:8]
    assert ids(rare.items) == sorted_like_sqlite(expected_rare, "-timestamp")[:5]


def test_unknown_sorts_and_bad_arguments_raise(query: Query) -> None:
    for order_by in ("password", "--timestamp", "timestamp; DROP TABLE request_log", ""):
        with pytest.raises(ValueError, match="order_by must be one of"):
            query(order_by=order_by)
    with pytest.raises(ValueError, match="status_class"):
        query(status_class="6xx")
    with pytest.raises(ValueError, match="status must be"):
        query(status=99)
    with pytest.raises(ValueError, match="limit"):
        query(limit=0)
    with pytest.raises(ValueError, match="offset"):
        query(offset=-1)
    with pytest.raises(ValueError, match="YYYY-MM"):
        query("2026-3")
    with pytest.raises(TypeError, match="since must be a datetime"):
        query(since="2026-03-01")


def test_a_month_without_a_file_is_empty_and_creates_nothing(
    query: Query, logged: tuple[Flask, SqliteRequestLogger]
) -> None:
    page = query("2025-01")
    assert (page.total, page.items, page.pages) == (0, [], 1)
    assert not Path(logged[0].instance_path, "requests", "requests_2025-01.db").exists()
    assert query(since=datetime(2020, 1, 1), until=datetime(2020, 2, 1)).months == ()


def test_get_one_entry(
    logged: tuple[Flask, SqliteRequestLogger], everything: list[LogEntry]
) -> None:
    app, logs = logged
    target = everything[5]
    with app.app_context():
        assert target.id is not None
        found = logs.get(target.id, target.month)
        assert found == target
        assert logs.get(10_000, "2026-03") is None
        assert logs.get(1, "2024-01") is None
