"""The request path: what each request leaves in the buffer, as cheaply as it can.

A thin WSGI middleware around ``app.wsgi_app`` notes the start time and trace id, sees the status
and headers go out (adding ``X-Request-ID``), and appends one record to the buffer when the
response ends: at once for a body Werkzeug holds (it has a Content-Length), when the server
closes it for a body the view streams (never read here). Nothing is parsed, redacted, encoded or
written on the request path; :mod:`.records` does that at flush time.

Errors come from ``got_request_exception`` (sent before an exception propagates, too) and a
wrapper of ``app.handle_user_exception``, which sees exceptions an ``@app.errorhandler`` turned
into a response and that Flask signals nowhere else; both run inside the request context, where
the endpoint and user of a request whose view raised are still known. An exception that escapes
Flask itself is described by the middleware. ``app.process_response`` is wrapped only when
response bodies are tracked; the user id is read when the status goes out.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from io import BytesIO
from time import perf_counter
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, got_request_exception, request
from werkzeug.exceptions import HTTPException

from .buffer import LogBuffer
from .config import Settings
from .redact import Redactor, is_textual, mimetype_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("flask_sqlitelogs")

ENVIRON_KEY = "flask_sqlitelogs.captured"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
#: Request bodies up to this size are read ahead when body tracking is on (then cut to the cap).
READ_AHEAD_BYTES = 1024 * 1024
_MAX_ERROR_MESSAGE = 4000
_MAX_TRACEBACK = 64 * 1024
_BODILESS = frozenset({"204", "304"})

ErrorInfo = tuple[str, "str | None", "str | None"]


class Captured:
    """What a request in progress has shown so far; it becomes a :data:`Record` when it ends.

    Only what every request sets is set per instance; the rest are class defaults, overridden
    by the few requests that have them (errors, bodies, streamed responses).
    """

    status = "500 INTERNAL SERVER ERROR"  # until a response says otherwise
    headers: Sequence[tuple[str, str]] = ()
    endpoint: str | None = None
    request: Any = None  # for skip_logging predicates, until the entry is finished
    finished = False
    request_body: bytes | str | None = None
    response_body: bytes | str | None = None
    response_mimetype = ""
    error: ErrorInfo | None = None
    user_id: str | None = None
    streamed = False

    def __init__(self, start: float, timestamp: float, trace_id: str) -> None:
        self.start = start
        self.timestamp = timestamp
        self.trace_id = trace_id


#: What the buffer holds for one request: ``(timestamp, trace_id, environ, status, headers,
#: endpoint, duration_ms, request_body, response_body, response_mimetype, error, user_id)``. A
#: plain tuple of plain values: the garbage collector soon stops tracking it, where thousands of
#: buffered objects would slow down every collection of the app.
Record = tuple[
    float,
    str,
    dict[str, Any],
    str,
    tuple[tuple[str, str], ...],
    "str | None",
    float,
    "bytes | str | None",
    "bytes | str | None",
    str,
    "ErrorInfo | None",
    "str | None",
]


class Capture:
    """The request hooks of one app; appends a :data:`Record` per request to ``buffer``."""

    def __init__(
        self,
        settings: Settings,
        buffer: LogBuffer,
        now: Callable[[], float],
        skip: Sequence[Callable[[Any], object]],
        on_append: Callable[[bool], None],
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.now = now
        self.skip = skip
        self.on_append = on_append
        self.redactor = Redactor(settings.redact_headers, settings.redact_fields)
        self.header_name = settings.request_id_header
        self._header_lower = self.header_name.lower()
        self.id_key = "HTTP_" + self.header_name.upper().replace("-", "_")
        exact, prefixes = [], []
        for path in settings.exclude_paths:
            if path.endswith("/"):
                prefixes.append(path)
            else:
                exact.append(path)
                prefixes.append(path + "/")
        self.excluded_exact = frozenset(exact)
        self.excluded_prefixes = tuple(prefixes)
        self.app: WSGIApplication | None = None
        self.flask_app: Flask | None = None
        # Whether to ask for the user: decided at the first request (when Flask-Login, if the
        # app uses it, has been set up), then for good.
        self.wants_user: bool | None = None if settings.user_id is None else True
        self.read_bodies = settings.enable_request_body_tracking
        self._ids = TraceIds()

    def install(self, app: Flask) -> None:
        """Wrap ``app.wsgi_app`` and register the Flask hooks."""
        self.app = app.wsgi_app
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        self.flask_app = app
        if self.settings.enable_response_tracking:
            # A wrapper rather than an after_request hook: it sees the response every hook and
            # the session made, and costs one call (Flask inspects each hook at every request).
            process = app.process_response

            def process_response(response: Response) -> Response:
                response = process(response)
                self.after(response)
                return response

            app.process_response = process_response  # type: ignore[method-assign]
        got_request_exception.connect(self.on_exception, app, weak=False)
        handle = app.handle_user_exception

        def handle_user_exception(error: Exception) -> Any:
            if not isinstance(error, HTTPException):
                self.on_exception(app, error)
            return handle(error)

        app.handle_user_exception = handle_user_exception  # type: ignore[method-assign, assignment]

    # -- WSGI (the request path: keep it cheap) --------------------------------------------------

    def middleware(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        assert self.app is not None
        path = environ.get("PATH_INFO", "")
        if path in self.excluded_exact or path.startswith(self.excluded_prefixes):
            return self.app(environ, start_response)
        timestamp = self.now()
        trace_id: str = environ.get(self.id_key) or ""
        if not _VALID_ID.match(trace_id):
            trace_id = self._ids.new(timestamp)
        captured = Captured(perf_counter(), timestamp, trace_id)
        environ[ENVIRON_KEY] = captured
        if self.read_bodies:
            self._read_request_body(environ, captured)
        echo = (self.header_name, trace_id)
        lower = self._header_lower

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # Still inside the request context: Flask forgets the request when it pops it.
            werkzeug_request = environ.get("werkzeug.request")
            if werkzeug_request is not None:
                rule = werkzeug_request.url_rule
                if rule is not None:
                    captured.endpoint = rule.endpoint
                if self.skip:
                    captured.request = werkzeug_request
                if self.wants_user is not False and captured.user_id is None:
                    captured.user_id = self.user_id()
            captured.status = status
            sized = echoed = False
            for name, _value in headers:
                folded = name.lower()
                if folded == "content-length":
                    sized = True
                elif folded == lower:
                    echoed = True
            if not echoed:
                headers.append(echo)
            # A body of unknown length is streamed by the view (a generator): the entry ends
            # when the server closes it. Werkzeug gives every body it holds a Content-Length.
            if not sized and status[:3] not in _BODILESS:
                captured.streamed = True
            captured.headers = headers
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start)
        except BaseException as error:
            if captured.error is None:
                captured.error = self.describe(error)
            self._finish(captured, environ)
            raise
        if captured.streamed:
            return _Closing(result, lambda: self._finish(captured, environ))
        self._finish(captured, environ)
        return result

    def _finish(self, captured: Captured, environ: WSGIEnvironment) -> None:
        if captured.finished:
            return  # finished already (closed, then collected)
        captured.finished = True
        duration_ms = (perf_counter() - captured.start) * 1000.0
        if self.skip:
            werkzeug_request, captured.request = captured.request, None
            if not self._wanted(werkzeug_request):
                return
        self.on_append(
            self.buffer.append(
                (
                    captured.timestamp,
                    captured.trace_id,
                    # Strings only: servers put live objects in the environ (sockets, streams,
                    # callables) that the buffer must neither keep alive nor make the garbage
                    # collector walk.
                    {key: value for key, value in environ.items() if value.__class__ is str},
                    captured.status,
                    tuple(captured.headers),
                    captured.endpoint,
                    duration_ms,
                    captured.request_body,
                    captured.response_body,
                    captured.response_mimetype,
                    captured.error,
                    captured.user_id,
                )
            )
        )

    def _wanted(self, werkzeug_request: Any) -> bool:
        try:
            return not any(predicate(werkzeug_request) for predicate in self.skip)
        except Exception:
            logger.exception("flask_sqlitelogs: a skip_logging predicate failed; request logged")
            return True

    def _read_request_body(self, environ: WSGIEnvironment, captured: Captured) -> None:
        mimetype = mimetype_of(environ.get("CONTENT_TYPE"))
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return
        if is_textual(mimetype) and 0 < length <= READ_AHEAD_BYTES:
            data = environ["wsgi.input"].read(length)
            environ["wsgi.input"] = BytesIO(data)  # the app reads the same bytes
            captured.request_body = self.keep(data, mimetype)

    # -- Flask hooks -----------------------------------------------------------------------------

    def after(self, response: Response) -> None:
        """Keep the response body (called only when response tracking is on)."""
        captured: Captured | None = request.environ.get(ENVIRON_KEY)
        if captured is not None and not response.is_streamed:
            mimetype = response.mimetype or ""
            if is_textual(mimetype):
                captured.response_mimetype = mimetype
                captured.response_body = self.keep(response.get_data(), mimetype)

    def on_exception(self, sender: Any, exception: BaseException, **extra: Any) -> None:
        """Note the error, and what only the request context knows (a raising view never gets
        to ``start_response`` while the request is still there)."""
        try:
            captured: Captured | None = request.environ.get(ENVIRON_KEY)
            if captured is None:
                return
            if captured.error is None:
                captured.error = self.describe(exception)
            rule = request.url_rule
            if rule is not None:
                captured.endpoint = rule.endpoint
            if self.skip:
                captured.request = request._get_current_object()  # type: ignore[attr-defined]
            if self.wants_user is not False and captured.user_id is None:
                captured.user_id = self.user_id()
        except Exception:  # a signal receiver must not change how the app answers
            logger.exception("flask_sqlitelogs could not record the error of a request")

    # -- helpers ---------------------------------------------------------------------------------

    def keep(self, data: bytes, mimetype: str) -> bytes | str:
        """Bytes up to the cap as they are (redacted at the flush); beyond, redacted and cut now."""
        cap = self.settings.max_body_bytes
        if len(data) <= cap:
            return data
        return self.redactor.capped_body(data, mimetype, cap)

    def describe(self, error: BaseException) -> ErrorInfo:
        """The type, message and traceback of ``error`` (just the type with tracking off)."""
        kind = type(error)
        if kind.__module__ == "builtins":
            name = kind.__qualname__
        else:
            name = f"{kind.__module__}.{kind.__qualname__}"
        if not self.settings.enable_error_tracking:
            return name, None, None
        trace = "".join(traceback.format_exception(kind, error, error.__traceback__))
        return name, str(error)[:_MAX_ERROR_MESSAGE], trace[-_MAX_TRACEBACK:]

    def user_id(self) -> str | None:
        """The configured callable's answer, else Flask-Login's user if the request loaded it."""
        getter = self.settings.user_id
        try:
            if getter is not None:
                value = getter()
            elif self.wants_user is None and getattr(self.flask_app, "login_manager", None) is None:
                self.wants_user = False  # for good: no user to read in this app
                return None
            else:
                self.wants_user = True
                # Only a user the request already loaded: never a database query from here.
                user = g.get("_login_user")
                value = user.get_id() if getattr(user, "is_authenticated", False) else None
        except Exception:
            logger.exception("flask_sqlitelogs: the user_id callable failed")
            return None
        return None if value is None else str(value)[:200]


class TraceIds:
    """New trace ids: 24 hex digits, the time in milliseconds then a random prefix drawn once
    per process (again after a fork) and a counter, so that ids sort by time and never repeat
    across the processes of a server."""

    def __init__(self) -> None:
        self._prefix = ""
        self._counter = itertools.count()
        _trace_ids.add(self)
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(2), "big"))

    def new(self, timestamp: float) -> str:
        return f"{int(timestamp * 1000):012x}{self._prefix}{next(self._counter) & 0xFFFF:04x}"


_trace_ids: weakref.WeakSet[TraceIds] = weakref.WeakSet()


def _reseed_after_fork() -> None:
    for ids in list(_trace_ids):
        ids.reseed()


os.register_at_fork(after_in_child=_reseed_after_fork)


class _Closing:
    """A streamed body passed through untouched; its entry is finished when the server closes it
    (or, should a server never call ``close``, when the body is garbage collected)."""

    __slots__ = ("__weakref__", "_finish", "_iterable")

    def __init__(self, iterable: Iterable[bytes], finish: Callable[[], None]) -> None:
        self._iterable = iterable
        self._finish = finish
        weakref.finalize(self, finish)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._iterable)

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()
