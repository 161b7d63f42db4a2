"""The log pages: the grid, one entry, the charts, CSV/JSON-lines export, and a flush button.

Every page is rendered on the server from the query string, so a URL is a bookmark and nothing
needs JavaScript (a small script only adds copy-to-clipboard and auto-submitting pickers).
Parameters go through ``flask_bgjobs.adminkit``: a malformed one answers 400, never 500.
"""

from __future__ import annotations

import csv
import io
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Blueprint, abort, redirect, request
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.wrappers import Response

from flask_bgjobs import BgJobsError, StorageError, adminkit

from ..models import SORTABLE, STATUS_CLASSES, STORED_FIELDS, LogEntry, Page
from ..query import Filters, make_filters, months_for, run_query
from ..redact import REDACTED
from . import charts as chart_data

if TYPE_CHECKING:
    from ..config import Settings
    from ..extension import SqliteRequestLogger

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PER_PAGE = ("25", "50", "100", "200")
#: Columns of the grid: (sort key, heading); the first click sorts these descending.
COLUMNS = (
    ("timestamp", "Time (UTC)"),
    ("method", "Method"),
    ("status_code", "Status"),
    ("path", "Path"),
    ("endpoint", "Endpoint"),
    ("duration_ms", "Duration ms"),
    ("user_id", "User"),
    ("ip", "IP"),
)
_DESCENDING_FIRST = frozenset({"timestamp", "status_code", "duration_ms"})
_CURL_SKIPPED = frozenset({"host", "content-length", "connection", "accept-encoding"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Selection:
    """What the query string asks for."""

    month: str | None
    filters: Filters
    order_by: str
    page: int
    per_page: int


def create_blueprint(extension: SqliteRequestLogger, settings: Settings) -> Blueprint:
    """The blueprint of one app's log pages, guarded by ``settings.authorize``."""
    blueprint = Blueprint(
        "sqlitelogs",
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    adminkit.AdminGuard(settings.authorize, name="sqlitelogs").protect(blueprint)

    @blueprint.errorhandler(StorageError)
    def storage_error(error: StorageError) -> Response:
        # A month's file damaged or unreadable: a clear 503 (the grid shows it in the page).
        unavailable = ServiceUnavailable(f"A request-log file could not be read: {error}")
        return unavailable.get_response()

    @blueprint.get("/")
    def grid() -> str:
        selection = _selection()
        store = extension.store()
        damaged = None
        try:
            page = run_query(
                store,
                selection.month,
                selection.filters,
                selection.order_by,
                selection.per_page,
                (selection.page - 1) * selection.per_page,
            )
        except ValueError as error:
            abort(400, description=str(error))
        except StorageError as error:  # a month's file damaged or unreadable: say so, no 500
            damaged = str(error)
            page = Page([], 0, selection.per_page, 0, selection.order_by, ())
        state = extension.state()
        return adminkit.render(
            "sqlitelogs/grid.html",
            page=page,
            selection=selection,
            months=_month_choices(store.months(), store.current_month()),
            columns=COLUMNS,
            methods=METHODS,
            status_classes=STATUS_CLASSES,
            per_page_choices=PER_PAGE,
            sort_link=lambda column: _sort_link(column, selection.order_by),
            page_link=_page_link,
            dropped=state.buffer.dropped,
            pending=len(state.buffer) + state.buffer.backlog,
            last_error=state.pipeline.last_error,
            damaged=damaged,
            flushed=adminkit.int_arg("flushed", None, minimum=0, maximum=10**9),
            args=adminkit.args_without(),
        )

    @blueprint.get("/<int(max=9223372036854775807):entry_id>")
    def detail(entry_id: int) -> str:
        store = extension.store()
        month = adminkit.month_arg("month") or store.current_month()
        entry = store.get(month, entry_id)
        if entry is None:
            abort(404, description=f"No request {entry_id} in {month}.")
        return adminkit.render(
            "sqlitelogs/detail.html",
            entry=entry,
            request_body=_pretty(entry.request_body),
            response_body=_pretty(entry.response_body),
            curl=curl_command(entry),
            redacted=REDACTED,
        )

    @blueprint.get("/charts")
    def charts() -> str:
        selection = _selection()
        store = extension.store()
        months = months_for(store, selection.month, selection.filters)
        return adminkit.render(
            "sqlitelogs/charts.html",
            charts=chart_data.build(store, months, selection.filters),
            months=months,
            width=chart_data.WIDTH,
            height=chart_data.HEIGHT,
            sample_limit=chart_data.DURATION_SAMPLE,
            args=adminkit.args_without(),
        )

    @blueprint.get("/export.<any(csv, jsonl):kind>")
    def export(kind: str) -> Response:
        selection = _selection()
        store = extension.store()
        months = months_for(store, selection.month, selection.filters)
        entries = _export_entries(
            extension, months, selection.filters, selection.order_by, settings.export_limit
        )
        body = _csv(entries) if kind == "csv" else _jsonl(entries)
        span = sorted({months[-1], months[0]}) if months else ["none"]
        name = f"requests-{'_'.join(span)}.{kind}"
        mimetype = "text/csv" if kind == "csv" else "application/x-ndjson"
        response = Response(body, mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @blueprint.post("/flush")
    def flush() -> Response:
        try:
            written = extension.flush()
        except BgJobsError as error:  # the entries are kept; the timer retries them
            abort(503, description=f"The flush failed and will be retried: {error}")
        args = {**adminkit.args_without("flushed"), "flushed": written}
        return redirect(adminkit.url_with(".grid", args), code=303)

    return blueprint


# -- parameters ------------------------------------------------------------------------------------


def _selection() -> Selection:
    until = adminkit.datetime_arg("until")
    raw_until = (request.args.get("until") or "").strip()
    if until is not None and len(raw_until) == 10:
        until += timedelta(days=1)  # a date alone means "through the end of that day"
    try:
        filters = make_filters(
            since=adminkit.datetime_arg("since"),
            until=until,
            method=adminkit.choice_arg("method", METHODS),
            status=adminkit.int_arg("status", None, minimum=100, maximum=599),
            status_class=adminkit.choice_arg("status_class", STATUS_CLASSES),
            path_contains=adminkit.text_arg("path"),
            endpoint=adminkit.text_arg("endpoint"),
            user_id=adminkit.text_arg("user"),
            ip=adminkit.text_arg("ip", max_length=100),
            trace_id=adminkit.text_arg("trace_id", max_length=128),
            min_duration_ms=adminkit.float_arg("min_ms", maximum=1e9),
            has_error=adminkit.bool_arg("errors"),
            text=adminkit.text_arg("q"),
        )
    except (TypeError, ValueError) as error:
        abort(400, description=str(error))
    return Selection(
        month=adminkit.month_arg("month"),
        filters=filters,
        order_by=adminkit.sort_arg("sort", SORTABLE, "-timestamp"),
        page=adminkit.int_arg("page", 1, minimum=1, maximum=1_000_000) or 1,
        per_page=int(adminkit.choice_arg("per_page", PER_PAGE, "50") or 50),
    )


def _month_choices(existing: list[str], current: str) -> list[str]:
    return sorted({*existing, current}, reverse=True)


def _sort_link(column: str, current: str) -> str:
    if current == f"-{column}":
        order = column
    elif current == column:
        order = f"-{column}"
    else:
        order = f"-{column}" if column in _DESCENDING_FIRST else column
    args = {**adminkit.args_without("sort", "page", "flushed"), "sort": order}
    return adminkit.url_with(".grid", args)


def _page_link(number: int) -> str:
    return adminkit.url_with(".grid", {**adminkit.args_without("page", "flushed"), "page": number})


# -- detail ----------------------------------------------------------------------------------------


def _pretty(body: str | None) -> str | None:
    """JSON bodies indented; anything else as it is."""
    if not body or body[:1] not in "[{":
        return body
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):  # not JSON (or cut short), or nested too deep to indent
        return body


def curl_command(entry: LogEntry) -> str:
    """A ``curl`` command repeating the request; redacted values stay ``[REDACTED]``."""
    parts = ["curl"]
    if entry.method != "GET":
        parts += ["-X", entry.method]
    parts.append(entry.url)
    for name, value in entry.request_headers.items():
        if name.lower() not in _CURL_SKIPPED:
            parts += ["-H", f"{name}: {value}"]
    if entry.request_body:
        parts += ["--data-raw", entry.request_body]
    return " ".join(shlex.quote(part) for part in parts)


# -- export ----------------------------------------------------------------------------------------


def _export_entries(
    extension: SqliteRequestLogger, months: list[str], filters: Filters, order_by: str, limit: int
) -> Iterator[LogEntry]:
    """Up to ``limit`` matching entries, month after month (newest month first), 1,000 at a time.

    The store is taken now: the body is produced after the view returned, outside the request.
    """
    store = extension.store()

    def entries() -> Iterator[LogEntry]:
        left = limit
        for month in months:
            matching = store.count(month, filters)
            offset = 0
            while left > 0 and offset < matching:
                chunk = store.fetch(month, filters, order_by, min(1000, left), offset, matching)
                if not chunk:
                    break
                yield from chunk
                offset += len(chunk)
                left -= len(chunk)

    return entries()


def _csv(entries: Iterator[LogEntry]) -> Iterator[str]:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["month", "id", *STORED_FIELDS])
    yield _drain(out)
    for entry in entries:
        values: list[Any] = [entry.month, entry.id]
        for name in STORED_FIELDS:
            value = getattr(entry, name)
            if isinstance(value, dict):
                value = json.dumps(value, ensure_ascii=False)
            values.append(_cell(value))
        writer.writerow(values)
        yield _drain(out)


def _cell(value: Any) -> Any:
    # A spreadsheet runs a cell starting with '=' (and friends) as a formula: never let a logged
    # value do that.
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _jsonl(entries: Iterator[LogEntry]) -> Iterator[str]:
    for entry in entries:
        yield json.dumps(entry.to_dict(), ensure_ascii=False) + "\n"


def _drain(out: io.StringIO) -> str:
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text
