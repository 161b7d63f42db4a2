"""What a logged request is (:class:`LogEntry`) and what a query returns (:class:`Page`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any


@dataclass(slots=True)
class LogEntry:
    """One request and its response, as stored (secrets already redacted).

    ``timestamp`` is when the request started (epoch seconds, UTC; :attr:`when` gives a
    datetime); ``duration_ms`` runs from then to the end of the response. Header dicts keep the
    names as sent. ``request_body`` and ``response_body`` are ``None`` when body tracking is off,
    the body is not text, or the response was streamed; ``*_body_size`` is the original length in
    bytes when known, whether or not the body was kept. ``id`` and ``month`` are set once stored.
    """

    timestamp: float
    trace_id: str
    method: str
    url: str
    path: str
    query_string: str
    endpoint: str | None
    status_code: int
    duration_ms: float
    ip: str | None
    forwarded_for: str | None
    referer: str | None
    user_agent: str | None
    user_id: str | None
    error_type: str | None = None
    error_message: str | None = None
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: str | None = None
    request_body_size: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None
    response_body_size: int | None = None
    error_traceback: str | None = None
    id: int | None = None
    month: str | None = None

    @property
    def when(self) -> datetime:
        """:attr:`timestamp` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, timezone.utc)

    @property
    def status_class(self) -> str:
        """``2xx``, ``4xx``... of :attr:`status_code`."""
        return f"{self.status_code // 100}xx"

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-ready values (``timestamp`` also as ISO 8601 ``time``)."""
        data = {name: getattr(self, name) for name in FIELD_NAMES}
        data["time"] = self.when.isoformat()
        return data


#: Field names in storage order (``id`` and ``month`` come from where an entry is stored).
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LogEntry))
STORED_FIELDS: tuple[str, ...] = FIELD_NAMES[:-2]

#: Columns that ``order_by`` accepts (``-`` in front for descending).
SORTABLE: tuple[str, ...] = (
    "id",
    "timestamp",
    "method",
    "path",
    "url",
    "endpoint",
    "status_code",
    "duration_ms",
    "ip",
    "user_id",
    "trace_id",
    "user_agent",
    "referer",
    "error_type",
)

#: Status classes that ``status_class`` accepts.
STATUS_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True)
class Page:
    """One page of a query: ``items`` and the number of rows matching the filters (``total``).

    ``months`` lists the monthly files that were searched, newest first.
    """

    items: list[LogEntry]
    total: int
    limit: int
    offset: int
    order_by: str
    months: tuple[str, ...]

    @property
    def page(self) -> int:
        """The 1-based number of this page."""
        return self.offset // self.limit + 1

    @property
    def pages(self) -> int:
        """How many pages the results fill (at least 1)."""
        return max(1, -(-self.total // self.limit))

    @property
    def has_next(self) -> bool:
        return self.offset + self.limit < self.total

    @property
    def has_previous(self) -> bool:
        return self.offset > 0
