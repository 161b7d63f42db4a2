"""The ``SqliteRequestLogger`` extension: set-up, flushing, queries and the process lifecycle."""

from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import Flask, Request, current_app

from flask_bgjobs.clock import Clock, utcnow

from .buffer import Flusher, LogBuffer, Pipeline
from .capture import Capture
from .config import Settings
from .models import LogEntry, Page
from .query import make_filters, run_query
from .records import RowBuilder
from .redact import Redactor
from .store import RequestLogStore

logger = logging.getLogger("flask_sqlitelogs")

SkipPredicate = Callable[[Request], object]
EntryFilter = Callable[[LogEntry], "LogEntry | None"]
S = TypeVar("S", bound=SkipPredicate)
E = TypeVar("E", bound=EntryFilter)


class _AppLogs:
    """One app's request logging in this process: settings, files, buffer, flush and hooks."""

    def __init__(
        self,
        settings: Settings,
        store: RequestLogStore,
        capture: Capture | None,
        pipeline: Pipeline,
        flusher: Flusher,
    ) -> None:
        self.settings = settings
        self.store = store
        self.capture = capture
        self.pipeline = pipeline
        self.flusher = flusher

    @property
    def buffer(self) -> LogBuffer:
        return self.pipeline.buffer

    def shutdown(self) -> None:
        """Stop the timer and flush what is left; a failure is logged, never raised."""
        self.flusher.stop()
        try:
            self.pipeline.flush()
        except Exception as error:
            logger.error(
                "flask_sqlitelogs could not write %d request log entries at stop: %s",
                self.buffer.backlog + len(self.buffer),
                error,
            )


class SqliteRequestLogger:
    """Logs every request and response of a Flask app into monthly SQLite files.

    ``SqliteRequestLogger(app)``, or ``logs = SqliteRequestLogger()`` then ``logs.init_app(app)``.
    Keywords override the ``SQLITELOGS_*`` config keys (``capacity=20_000``,
    ``authorize=lambda: current_user.is_admin``...); ``clock=`` injects the time source (tests).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        enable_response_tracking: bool | None = None,
        enable_request_body_tracking: bool | None = None,
        enable_error_tracking: bool | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        tracking = {
            "enable_response_tracking": enable_response_tracking,
            "enable_request_body_tracking": enable_request_body_tracking,
            "enable_error_tracking": enable_error_tracking,
        }
        self._options = {**options, **{k: v for k, v in tracking.items() if v is not None}}
        self.clock: Clock = clock or utcnow
        self._now: Callable[[], float] = (
            time.time if clock is None else (lambda: self.clock().timestamp())
        )
        self._skip: list[SkipPredicate] = []
        self._filters: list[EntryFilter] = []
        self._states: weakref.WeakKeyDictionary[Flask, _AppLogs] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the config of ``app``, hook its requests, add the log pages and the CLI."""
        settings = Settings.from_app(app, self._options)
        store = RequestLogStore(settings.database_dir, settings.sqlite, self.clock)
        buffer = LogBuffer(settings.capacity)
        rows = RowBuilder(Redactor(settings.redact_headers, settings.redact_fields), self._filters)
        pipeline = Pipeline(buffer, rows.row, store.write, self._retention(store, settings))
        flusher = Flusher(pipeline.flush, settings.flush_interval, "sqlitelogs-flush")
        capture: Capture | None = None
        if settings.enabled:

            def appended(filling: bool) -> None:
                flusher.ensure_started()
                if filling:
                    flusher.wake()

            capture = Capture(settings, buffer, self._now, self._skip, appended)
            capture.install(app)
        state = _AppLogs(settings, store, capture, pipeline, flusher)
        self._states[app] = state
        _live.add(state)
        app.extensions["sqlitelogs"] = self
        from .cli import sqlitelogs_cli

        app.cli.add_command(sqlitelogs_cli)
        if settings.admin:
            from .admin import create_blueprint

            app.register_blueprint(
                create_blueprint(self, settings), url_prefix=settings.admin_prefix
            )

    # -- registration ----------------------------------------------------------------------------

    def skip_logging(self, predicate: S) -> S:
        """Register ``predicate(request)``: requests for which it returns true are not logged.

        Called with the request object once the response has ended (the request context is gone
        by then: use the argument, not ``flask.request``); usable as a decorator.
        """
        if not callable(predicate):
            raise TypeError(f"skip_logging takes a callable predicate(request), not {predicate!r}")
        self._skip.append(predicate)
        return predicate

    def entry_filter(self, func: E) -> E:
        """Register ``func(entry) -> entry | None`` to change entries, or drop them (``None``).

        Runs at flush time on the flush thread, on entries already redacted, in the order
        registered; an entry for which a filter raises is dropped (and the error logged).
        """
        if not callable(func):
            raise TypeError(f"entry_filter takes a callable func(entry), not {func!r}")
        self._filters.append(func)
        return func

    # -- flushing and lifecycle ------------------------------------------------------------------

    def flush(self) -> int:
        """Write every buffered entry now; return how many were written.

        Raises :class:`~flask_bgjobs.StorageError` (or :class:`~flask_bgjobs.DatabaseBusyError`)
        when the write failed; the entries are kept for the next flush.
        """
        return self._state().pipeline.flush()

    def start(self) -> None:
        """Start this process's flush timer now rather than at the first request."""
        self._state().flusher.ensure_started()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop this process's flush timer and flush what is buffered (a later request restarts
        the timer)."""
        state = self._state()
        state.flusher.stop(timeout)
        state.shutdown()  # flushes; a failure is logged and the entries kept

    # -- queries ---------------------------------------------------------------------------------

    def query(
        self,
        month: str | None = None,
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
        order_by: str = "-timestamp",
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """One page of logged requests, newest first by default.

        ``month`` (``YYYY-MM``) picks one monthly file; without it, ``since``/``until`` (UTC
        datetimes, ``until`` exclusive) read every month they span, and with neither the
        current month is read. ``order_by`` is a column of :data:`~flask_sqlitelogs.SORTABLE`,
        ``-`` in front for descending; anything else raises :class:`ValueError`.
        """
        filters = make_filters(
            since=since,
            until=until,
            method=method,
            status=status,
            status_class=status_class,
            path_contains=path_contains,
            endpoint=endpoint,
            user_id=user_id,
            ip=ip,
            trace_id=trace_id,
            min_duration_ms=min_duration_ms,
            has_error=has_error,
            text=text,
        )
        return run_query(self._state().store, month, filters, order_by, limit, offset)

    def get(self, entry_id: int, month: str | None = None) -> LogEntry | None:
        """The entry ``entry_id`` of ``month`` (default: the current month), or ``None``."""
        store = self._state().store
        return store.get(month or store.current_month(), entry_id)

    def months(self) -> list[str]:
        """The months that have a log file, newest first."""
        return self._state().store.months()

    def prune(self, keep_months: int | None = None, archive_dir: str | None = None) -> list[str]:
        """Delete (or move to ``archive_dir``) the monthly files older than ``keep_months``
        months (default ``SQLITELOGS_RETENTION_MONTHS``); return the months removed."""
        state = self._state()
        keep = keep_months if keep_months is not None else state.settings.retention_months
        if keep is None:
            raise ValueError(
                "prune needs keep_months, or SQLITELOGS_RETENTION_MONTHS set in the config"
            )
        return state.store.prune(keep, archive_dir)

    def stats(self) -> dict[str, Any]:
        """This process's buffer (pending, dropped, written, failures) and every month's file."""
        state = self._state()
        pipeline = state.pipeline
        return {
            "directory": str(state.store.directory),
            "pending": len(state.buffer) + state.buffer.backlog,
            "dropped": state.buffer.dropped,
            "written": pipeline.written,
            "failures": pipeline.failures,
            "last_error": pipeline.last_error,
            "timer_running": state.flusher.running,
            "months": [state.store.month_stats(m) for m in state.store.months()],
        }

    def settings(self, app: Flask | None = None) -> Settings:
        """The validated settings of ``app`` (default: the current app)."""
        return self._state(app).settings

    def store(self, app: Flask | None = None) -> RequestLogStore:
        """The monthly files of ``app`` (default: the current app)."""
        return self._state(app).store

    def state(self, app: Flask | None = None) -> _AppLogs:
        return self._state(app)

    # -- internals -------------------------------------------------------------------------------

    @staticmethod
    def _retention(store: RequestLogStore, settings: Settings) -> Callable[[str], None] | None:
        keep = settings.retention_months
        if keep is None:
            return None

        def prune(_month: str) -> None:
            removed = store.prune(keep)
            if removed:
                logger.info("flask_sqlitelogs removed the logs of %s", ", ".join(removed))

        return prune

    def _state(self, app: Flask | None = None) -> _AppLogs:
        if app is None:
            try:
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            except RuntimeError:
                raise RuntimeError(
                    "Working outside of application context: flask_sqlitelogs needs the app. "
                    "Use `with app.app_context():`."
                ) from None
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                "This app is not set up for request logs. Did you forget `logs.init_app(app)`?"
            )
        return state


_live: weakref.WeakSet[_AppLogs] = weakref.WeakSet()


def _flush_at_exit() -> None:
    for state in list(_live):
        if state.flusher.running or len(state.buffer) or state.buffer.backlog:
            state.shutdown()


def _forget_after_fork() -> None:
    # The parent still holds (and writes) what it buffered; a child starts empty.
    for state in list(_live):
        state.pipeline.discard()
        state.flusher.forget()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_forget_after_fork)
