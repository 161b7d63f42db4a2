"""The flush side of capture: a buffered :class:`Record` becomes a redacted row (or LogEntry).

This runs on the flush thread, so the request path never pays for it; it still runs in the app's
process, so it is kept lean: header names and secrecy decisions are cached, and a
:class:`LogEntry` is only built when an entry filter wants one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring as _quote
from typing import Any

from .capture import Record
from .models import STORED_FIELDS, LogEntry
from .redact import Redactor, mimetype_of

EntryFilter = Callable[[LogEntry], "LogEntry | None"]

_CONTENT = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}
_MAX_NAMES = 4096
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))


class RowBuilder:
    """Turns captured requests into rows in :data:`~.store.INSERT` order."""

    def __init__(self, redactor: Redactor, filters: Sequence[EntryFilter]) -> None:
        self.redactor = redactor
        self.filters = filters
        self._names: dict[str, tuple[str, bool] | tuple[()]] = {}

    def row(self, captured: Record) -> tuple[Any, ...] | None:
        """The row of ``captured``, or ``None`` when an entry filter dropped it."""
        values = self.values(captured)
        if self.filters:
            entry: LogEntry | None = LogEntry(*values)
            for entry_filter in self.filters:
                if entry is None:
                    return None
                entry = entry_filter(entry)
            if entry is None:
                return None
            values = [getattr(entry, name) for name in _STORED]
        # Headers are str to str unless a filter changed them: then the general encoder.
        encode = _JSON.encode if self.filters else _headers_json
        values[_REQUEST_HEADERS] = encode(values[_REQUEST_HEADERS])
        values[_RESPONSE_HEADERS] = encode(values[_RESPONSE_HEADERS])
        return tuple(values)

    def entry(self, captured: Record) -> LogEntry:
        """The :class:`LogEntry` of ``captured`` (before any entry filter)."""
        return LogEntry(*self.values(captured))

    def values(self, captured: Record) -> list[Any]:
        """The stored fields of ``captured``, redacted; header fields still dicts."""
        (
            timestamp,
            trace_id,
            environ,
            status,
            headers,
            endpoint,
            duration_ms,
            request_body,
            response_body,
            response_mimetype,
            error,
            user_id,
        ) = captured
        redactor = self.redactor
        request_headers = self._request_headers(environ)
        query = redactor.query(_decode(environ.get("QUERY_STRING", "")))
        path = _decode(environ.get("SCRIPT_NAME", "")) + _decode(environ.get("PATH_INFO", ""))
        host = environ.get("HTTP_HOST") or (
            f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        )
        url = f"{environ.get('wsgi.url_scheme', 'http')}://{host}{path}"
        response_headers = redactor.headers(headers)
        error_type, error_message, error_traceback = error or (None, None, None)
        return [
            timestamp,
            trace_id,
            environ.get("REQUEST_METHOD", "GET"),
            f"{url}?{query}" if query else url,
            path,
            query,
            endpoint,
            _status(status),
            round(duration_ms, 3),
            environ.get("REMOTE_ADDR"),
            environ.get("HTTP_X_FORWARDED_FOR"),
            request_headers.get("Referer"),
            environ.get("HTTP_USER_AGENT"),
            user_id,
            error_type,
            error_message,
            request_headers,
            self._body(request_body, mimetype_of(environ.get("CONTENT_TYPE"))),
            _int(environ.get("CONTENT_LENGTH")),
            response_headers,
            self._body(response_body, response_mimetype),
            _int(response_headers.get("Content-Length")),
            error_traceback,
        ]

    def _request_headers(self, environ: dict[str, Any]) -> dict[str, str]:
        """The request's headers from the environ, secrets redacted, in one pass."""
        names = self._names
        headers: dict[str, str] = {}
        plain: list[tuple[str, str]] = []
        for key, value in environ.items():
            known = names.get(key)
            if known is None:
                known = self._name_of(key)
            if known and value:
                if known[1]:
                    plain.append((known[0], value))  # secret or a URL: the redactor decides
                else:
                    headers[known[0]] = value
        if plain:
            headers.update(self.redactor.headers(plain))
        return headers

    def _name_of(self, key: str) -> tuple[str, bool] | tuple[()]:
        """``(header name, needs the redactor)`` for an environ key; ``()`` if not a header."""
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
        elif key in _CONTENT:
            name = _CONTENT[key]
        else:
            name = ""
        known: tuple[str, bool] | tuple[()] = ()
        if name:
            known = (name, self.redactor.needs_redaction(name))
        if len(self._names) < _MAX_NAMES:
            self._names[key] = known
        return known

    def _body(self, body: bytes | str | None, mimetype: str) -> str | None:
        if body is None or isinstance(body, str):
            return body  # a str was redacted and cut when captured
        return self.redactor.body(body, mimetype)


def _headers_json(headers: dict[str, str]) -> str:
    """``json.dumps(headers, ensure_ascii=False)`` for a dict of str, in half the time."""
    return (
        "{"
        + ", ".join([f"{_quote(name)}: {_quote(value)}" for name, value in headers.items()])
        + "}"
    )


def _decode(wsgi_text: str) -> str:
    """A WSGI string (bytes as latin-1) as the UTF-8 text the client sent."""
    if wsgi_text.isascii():
        return wsgi_text
    try:
        return wsgi_text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return wsgi_text


def _status(status: str) -> int:
    try:
        return int(status[:3])
    except ValueError:
        return 500


def _int(value: Any) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


_STORED = STORED_FIELDS  # the order of the list that values() builds
_REQUEST_HEADERS = _STORED.index("request_headers")
_RESPONSE_HEADERS = _STORED.index("response_headers")
