"""Rolling monthly database files: ``<dir>/<name>_YYYY-MM.db``, one per calendar month (UTC)."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from ..clock import Clock, as_utc, utcnow
from .database import Database, SqliteOptions, WriteTx
from .schema import Schema

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_of(moment: datetime) -> str:
    """Return the ``YYYY-MM`` month (UTC) that ``moment`` falls in."""
    return as_utc(moment).strftime("%Y-%m")


def check_month(month: str) -> str:
    """Return ``month`` if it is a valid ``YYYY-MM`` string, else raise :class:`ValueError`."""
    if not isinstance(month, str) or not _MONTH.match(month):
        raise ValueError(f"a month is written YYYY-MM (e.g. 2026-03), not {month!r}")
    return month


def months_before(month: str, count: int) -> str:
    """Return the month ``count`` calendar months before ``month``."""
    year, number = (int(part) for part in check_month(month).split("-"))
    index = year * 12 + (number - 1) - count
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


class MonthlyDatabase:
    """The monthly files of one kind, e.g. ``requests_2026-11.db``, ``requests_2026-12.db``.

    A month's file is created with its schema at the first write that falls in that month; reads
    of a month that has no file find nothing rather than creating one. A month's file deleted
    while in use is created anew at the next write; a damaged one is moved aside
    (``<name>_YYYY-MM.db.corrupt-<UTC time>``) and started anew (see :class:`Database`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        name: str,
        schema: Schema,
        options: SqliteOptions | None = None,
        clock: Clock = utcnow,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"a database name is letters, digits, '_', '.', '-'; not {name!r}")
        self.directory = Path(directory).resolve()
        self.name = name
        self.schema = schema
        self.options = options or SqliteOptions()
        self.clock = clock
        self._pattern = re.compile(rf"^{re.escape(name)}_(\d{{4}}-\d{{2}})\.db$")
        self._databases: dict[str, Database] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<MonthlyDatabase {str(self.directory / self.name)!r}_YYYY-MM.db>"

    def current_month(self) -> str:
        """The month the clock is in now."""
        return month_of(self.clock())

    def path_for(self, month: str) -> Path:
        """The file that holds ``month``, whether it exists or not."""
        return self.directory / f"{self.name}_{check_month(month)}.db"

    def database(self, month: str | None = None) -> Database:
        """The :class:`Database` of ``month`` (default: the current month), existing or not."""
        month = check_month(month) if month is not None else self.current_month()
        with self._lock:
            database = self._databases.get(month)
            if database is None:
                database = Database(
                    self.path_for(month), self.schema, self.options, recreate_damaged=True
                )
                self._databases[month] = database
            return database

    def existing(self, month: str) -> Database | None:
        """The :class:`Database` of ``month`` if its file exists, else ``None``."""
        if not self.path_for(month).exists():
            return None
        return self.database(month)

    @contextmanager
    def write(self, month: str | None = None) -> Iterator[WriteTx]:
        """A write transaction on the file of ``month`` (default: now), created if needed."""
        with self.database(month).write() as tx:
            yield tx

    def months(self) -> list[str]:
        """The months that have a file, newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for entry in os.listdir(self.directory):
            match = self._pattern.match(entry)
            if match and _MONTH.match(match.group(1)):
                found.append(match.group(1))
        return sorted(found, reverse=True)

    def prune(
        self, keep_months: int, archive_dir: str | os.PathLike[str] | None = None
    ) -> list[str]:
        """Remove the files of months older than the last ``keep_months`` calendar months.

        ``keep_months=1`` keeps only the current month. With ``archive_dir`` the files are moved
        there instead of deleted. Returns the months removed, newest first.
        """
        if isinstance(keep_months, bool) or not isinstance(keep_months, int) or keep_months < 1:
            raise ValueError(
                f"keep_months must be a whole number of at least 1, not {keep_months!r}"
            )
        oldest_kept = months_before(self.current_month(), keep_months - 1)
        removed = [month for month in self.months() if month < oldest_kept]
        target = Path(archive_dir).resolve() if archive_dir is not None else None
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)
        for month in removed:
            self._remove(month, target)
        return removed

    def dispose(self) -> None:
        """Close the connections of every month's file."""
        with self._lock:
            databases = list(self._databases.values())
        for database in databases:
            database.dispose()

    def _remove(self, month: str, archive_dir: Path | None) -> None:
        with self._lock:
            database = self._databases.pop(month, None)
        if database is not None:
            # Closing the last connection checkpoints the WAL into the main file.
            database.dispose()
        path = self.path_for(month)
        if archive_dir is not None:
            shutil.move(str(path), str(archive_dir / path.name))
        else:
            path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
