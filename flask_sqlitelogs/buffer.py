"""The bounded in-memory buffer, the flush that empties it, and the timer thread that runs it.

Requests only :meth:`LogBuffer.append`: a list append behind a lock, refused (and counted) once
the buffer holds ``capacity`` entries, so a stuck disk never blocks or bloats the app. A flush
turns the buffered captures into rows and writes each month's rows in one transaction. Rows
whose write failed (a lock held too long, a full disk) stay in a backlog that counts against the
capacity and goes first at the next flush: nothing is lost while capacity allows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

logger = logging.getLogger("flask_sqlitelogs")

#: Captured requests converted between two chances for other threads to take the GIL.
_YIELD_EVERY = 128
#: Rows of one month ready to be written: ``(month, rows)``.
MonthRows = tuple[str, list[tuple[Any, ...]]]


class LogBuffer:
    """A bounded list of captured requests, shared by the request threads and the flush."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.high_water = max(1, capacity // 2)
        self.dropped = 0
        self.backlog = 0  # rows taken out but not written yet; they still count
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: Any) -> bool:
        """Add ``item``; return ``True`` once the buffer is half full (time to flush early).

        When full, the item is dropped and counted instead. Never blocks for long.
        """
        with self._lock:
            size = len(self._items) + self.backlog
            if size >= self.capacity:
                self.dropped += 1
                return True
            self._items.append(item)
            return size + 1 >= self.high_water

    def take(self) -> list[Any]:
        """Everything buffered, oldest first; the buffer is left empty.

        The items still count against the capacity (as backlog) until the flush that took them
        sets :attr:`backlog` to what it could not write: a flush waiting on a locked file must
        not let the buffer fill up a second time.
        """
        with self._lock:
            items, self._items = self._items, []
            self.backlog += len(items)
            return items

    def forget(self) -> None:
        """In a forked child: start empty, with a lock of its own (a thread of the parent may
        have held the old one at the fork, and no thread of the child will release it)."""
        self._lock = threading.Lock()
        self._items = []
        self.backlog = 0


class Pipeline:
    """Flushes one app's buffer: convert, filter, group by month, write, keep what failed.

    ``convert`` turns a captured request into a row, or ``None`` to leave it out; ``month_of``
    gives a row's month; ``write(month, rows)`` stores rows (one transaction).
    """

    def __init__(
        self,
        buffer: LogBuffer,
        convert: Callable[[Any], tuple[Any, ...] | None],
        write: Callable[[str, Sequence[tuple[Any, ...]]], None],
        on_new_month: Callable[[str], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.convert = convert
        self.write = write
        self.on_new_month = on_new_month
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self._backlog: dict[str, list[tuple[Any, ...]]] = {}
        self._lock = threading.Lock()
        self._months_seen: set[str] = set()
        self._dropped_reported = 0

    def flush(self) -> int:
        """Write everything buffered; return the rows written.

        Raises the storage error of a failed write after keeping its rows for the next flush.
        """
        with self._lock:
            self._report_drops()
            try:
                pending = self._backlog
                self._convert(self.buffer.take(), pending)
                self._backlog = {}
                written, failed = 0, None
                for month in sorted(pending):
                    rows = pending[month]
                    try:
                        self._write(month, rows)
                    except Exception as error:
                        self._backlog[month] = rows
                        failed = failed or error
                    else:
                        written += len(rows)
            finally:
                # What is still unwritten; until now the taken entries counted as backlog.
                self.buffer.backlog = sum(len(rows) for rows in self._backlog.values())
            self.written += written
            if failed is not None:
                self.failures += 1
                self.last_error = f"{type(failed).__name__}: {failed}"
                raise failed
            self.last_error = None
            return written

    def _convert(self, items: list[Any], pending: dict[str, list[tuple[Any, ...]]]) -> None:
        """Add the rows of ``items`` to ``pending``, by month."""
        month_of = _MonthOf()
        for index, item in enumerate(items):
            if index % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Offer the GIL to request threads between batches of conversions.
                time.sleep(0)
            try:
                row = self.convert(item)
            except Exception:
                logger.exception("flask_sqlitelogs: an entry could not be prepared; skipped")
                continue
            if row is not None:
                pending.setdefault(month_of(row[0]), []).append(row)

    def discard(self) -> None:
        """Forget everything unwritten (after a fork: the parent writes its own entries)."""
        self.buffer.forget()
        self._backlog = {}
        self._lock = threading.Lock()

    def _write(self, month: str, rows: list[tuple[Any, ...]]) -> None:
        self.write(month, rows)
        if month not in self._months_seen:
            self._months_seen.add(month)
            if self.on_new_month is not None:
                try:
                    self.on_new_month(month)
                except Exception:
                    logger.exception("flask_sqlitelogs: pruning old months failed")

    def _report_drops(self) -> None:
        dropped = self.buffer.dropped
        if dropped > self._dropped_reported:
            logger.warning(
                "flask_sqlitelogs dropped %d request log entries: the buffer was full "
                "(%d entries). Raise SQLITELOGS_CAPACITY or flush more often.",
                dropped - self._dropped_reported,
                self.buffer.capacity,
            )
            self._dropped_reported = dropped


class Flusher:
    """A daemon thread that runs ``flush`` every ``interval`` seconds, one per process.

    :meth:`ensure_started` is cheap enough for every request: it starts the thread on the first
    call in each process (so pre-fork servers and the reloader each get their own). :meth:`wake`
    asks for a flush before the interval is up (the buffer is filling fast).
    """

    def __init__(self, flush: Callable[[], Any], interval: float, name: str) -> None:
        self.flush = flush
        self.interval = interval
        self.name = name
        self._pid: int | None = None
        self._started = False  # in this process (a forked child calls forget())
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()

    def ensure_started(self) -> None:
        if self._started or self.interval <= 0:
            return
        with self._lock:
            if self._pid == os.getpid():
                return  # another request thread got here first
            self._stopping = False
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()  # should it fail, the next request tries again
            self._pid = os.getpid()
            self._started = True

    def wake(self) -> None:
        """Flush now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after its current flush) and wait for it."""
        with self._lock:
            thread, self._thread = self._thread, None
            mine = self._pid == os.getpid()
            self._pid = None
            self._started = False
            self._stopping = True
            self._wake.set()
        if thread is not None and mine and thread is not threading.current_thread():
            thread.join(timeout)

    def forget(self) -> None:
        """In a forked child: the parent's thread is not ours; the next request starts one."""
        self._started = False
        self._pid = None
        self._thread = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait(self.interval)
            wake.clear()
            if self._stopping:
                return
            try:
                self.flush()
            except Exception as error:  # kept in the backlog; the next tick retries
                logger.warning("flask_sqlitelogs flush failed, will retry: %s", error)


class _MonthOf:
    """``YYYY-MM`` (UTC) of an epoch time; remembers the last month's bounds, so that rows of
    one month (nearly all of a flush) cost a comparison each."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.month = ""

    def __call__(self, timestamp: float) -> str:
        if self.start <= timestamp < self.end:
            return self.month
        moment = datetime.fromtimestamp(timestamp, timezone.utc)
        first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (first + timedelta(days=32)).replace(day=1)
        self.start, self.end = first.timestamp(), following.timestamp()
        self.month = first.strftime("%Y-%m")
        return self.month
