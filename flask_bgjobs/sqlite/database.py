"""One SQLite database file: its engine, pragmas, schema and transactions.

Writes go through one long-lived connection per file and process, behind the file's in-process
write lock, in transactions that begin with ``BEGIN IMMEDIATE``: SQLite then takes its write lock
up front, so a transaction never fails half-way because another writer got there first. Waiting
for another process's lock is bounded, and that wait lives in :meth:`Database.write` only.
Reads use pooled connections in ordinary deferred transactions, which WAL never blocks.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc

from ..errors import DatabaseBusyError, SchemaVersionError, StorageError
from ..locks import sqlite_file_lock
from .schema import Schema

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class SqliteOptions:
    """Connection settings shared by every file of one extension.

    ``synchronous``: SQLite's durability setting. ``NORMAL`` (the default, with WAL) survives a
    crash of the process; ``FULL`` also survives a power loss, at several times the cost per write.
    ``busy_timeout``: seconds a write waits for another connection's write lock before
    :class:`DatabaseBusyError` is raised.
    """

    synchronous: str = "NORMAL"
    busy_timeout: float = 5.0

    def __post_init__(self) -> None:
        level = str(self.synchronous).upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, "
                f"not {self.synchronous!r}"
            )
        object.__setattr__(self, "synchronous", level)
        if not self.busy_timeout > 0:
            raise ValueError(
                f"busy_timeout must be a positive number of seconds, not {self.busy_timeout!r}"
            )


class WriteTx:
    """An open write transaction.

    ``raw`` is the driver's ``sqlite3.Connection``, for the hot paths' plain SQL; ``conn`` is the
    SQLAlchemy connection on the same transaction, for Core statements.
    """

    __slots__ = ("conn", "raw")

    def __init__(self, conn: Connection, raw: sqlite3.Connection) -> None:
        self.conn = conn
        self.raw = raw

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run one statement of driver-level SQL in this transaction."""
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        """Run one statement of driver-level SQL for every row of ``rows``."""
        return self.raw.executemany(sql, rows)


class Database:
    """A SQLite file with its schema, created on the first write."""

    def __init__(
        self, path: str | os.PathLike[str], schema: Schema, options: SqliteOptions | None = None
    ) -> None:
        self.path = Path(path).resolve()
        self.schema = schema
        self.options = options or SqliteOptions()
        self._lock = sqlite_file_lock(self.path)
        self._setup = threading.Lock()
        self._pid = os.getpid()
        self._engine: Engine | None = None
        self._writer: Connection | None = None
        self._writing: int | None = None  # ident of the thread inside write()
        self._ready = False

    def __repr__(self) -> str:
        return f"<Database {str(self.path)!r}>"

    def exists(self) -> bool:
        """Tell whether the file is on disk."""
        return self.path.exists()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this file (made on first use, and anew after a fork)."""
        if self._engine is None or self._pid != os.getpid():
            with self._setup:
                if self._engine is None or self._pid != os.getpid():
                    self._forget_connections()
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
        return self._engine

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """Open a ``BEGIN IMMEDIATE`` transaction, committed when the block ends without error.

        Raises :class:`DatabaseBusyError` when another connection keeps the write lock for longer
        than ``options.busy_timeout``, and :class:`StorageError` when the disk refuses the write;
        either way the transaction is rolled back and nothing is half-written.
        """
        me = threading.get_ident()
        if self._writing == me:
            raise RuntimeError(
                f"a write transaction on {self.path.name} is already open in this thread; "
                "do all the writes inside the outer `with database.write()` block"
            )
        with self._lock:
            self._writing = me
            try:
                conn = self._writer_connection()
                raw = conn.connection.driver_connection
                assert isinstance(raw, sqlite3.Connection)
                self._begin_immediate(raw)
                tx = WriteTx(conn, raw)
                preparing = not self._ready
                try:
                    if preparing:
                        self._prepare_schema(tx)
                    yield tx
                except BaseException as error:
                    _end(conn, raw, commit=False)
                    if _is_operational(error):
                        raise _translate(error, self.path) from error
                    raise
                try:
                    _end(conn, raw, commit=True)
                except (sqlite3.Error, exc.DBAPIError) as error:
                    _end(conn, raw, commit=False)
                    raise _translate(error, self.path) from error
                # Only a committed schema counts: a rolled-back first write created nothing.
                self._ready = self._ready or preparing
            finally:
                self._writing = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Open a deferred read transaction on a pooled connection (a snapshot under WAL)."""
        if not self._ready:
            with self.write():
                pass
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sqlite3.OperationalError, exc.OperationalError) as error:
            raise _translate(error, self.path, "reading") from error

    def dispose(self) -> None:
        """Close every connection to the file; the next use opens new ones."""
        with self._lock, self._setup:
            self._forget_connections()
            self._engine = None

    # -- internals -----------------------------------------------------------------------------

    def _create_engine(self) -> Engine:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False},
            pool_size=8,
            max_overflow=16,
        )
        busy_ms = int(self.options.busy_timeout * 1000)
        synchronous = self.options.synchronous

        @event.listens_for(engine, "connect")
        def _configure(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # The driver's own transaction handling would BEGIN lazily and never IMMEDIATE;
            # autocommit mode hands every BEGIN to us (and to the "begin" listener below).
            dbapi_conn.isolation_level = None
            dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            _use_wal(dbapi_conn, self.options.busy_timeout, self.path)
            dbapi_conn.execute(f"PRAGMA synchronous = {synchronous}")
            dbapi_conn.execute("PRAGMA foreign_keys = ON")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            raw = conn.connection.driver_connection
            # A write transaction already began IMMEDIATE on the driver connection.
            if isinstance(raw, sqlite3.Connection) and not raw.in_transaction:
                raw.execute("BEGIN")

        return engine

    def _writer_connection(self) -> Connection:
        if self._writer is None or self._pid != os.getpid():
            engine = self.engine
            self._writer = engine.connect()
        return self._writer

    def _forget_connections(self) -> None:
        if self._pid != os.getpid():
            # Connections inherited through fork belong to the parent: drop, never close them.
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._writer = None
            return
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._engine is not None:
            self._engine.dispose()

    def _begin_immediate(self, raw: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.options.busy_timeout
        pause = 0.001
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise _translate(error, self.path) from error
                if time.monotonic() >= deadline:
                    raise DatabaseBusyError(
                        f"{self.path} stayed locked by another connection for more than "
                        f"{self.options.busy_timeout:g} s; nothing was written. Keep write "
                        "transactions short, or raise the busy timeout."
                    ) from error
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _prepare_schema(self, tx: WriteTx) -> None:
        found = tx.raw.execute("PRAGMA user_version").fetchone()[0]
        wanted = self.schema.version
        if found > wanted:
            raise SchemaVersionError(
                f"{self.path} has schema version {found}, newer than the {wanted} this release "
                "of flask-bgjobs knows; upgrade flask-bgjobs to open it"
            )
        if found == 0:
            self.schema.metadata.create_all(tx.conn)
        else:
            for version in range(found + 1, wanted + 1):
                self.schema.migrations[version](tx.conn)
        if found != wanted:
            tx.raw.execute(f"PRAGMA user_version = {wanted}")


def _use_wal(conn: sqlite3.Connection, bound: float, path: Path) -> None:
    """Put the file in WAL mode, waiting (bounded) while another process holds it.

    Switching a new file to WAL needs a lock that SQLite's busy handler does not always wait
    for: two processes opening a new file at once would otherwise see "database is locked".
    """
    deadline = time.monotonic() + bound
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _end(conn: Connection, raw: sqlite3.Connection, *, commit: bool) -> None:
    """Commit or roll back the transaction, and the SQLAlchemy connection's record of it."""
    if conn.in_transaction():
        if commit:
            conn.commit()
        else:
            conn.rollback()
    elif raw.in_transaction:
        if commit:
            raw.commit()
        else:
            raw.rollback()


def _is_operational(error: BaseException) -> bool:
    """Tell a failure of the database itself (lock, disk, I/O) from a refused statement."""
    return isinstance(error, (sqlite3.OperationalError, exc.OperationalError))


def _is_busy(error: BaseException) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _translate(error: BaseException, path: Path, doing: str = "writing") -> StorageError:
    """Name a driver error in the package's terms; the original stays as ``__cause__``."""
    original = getattr(error, "orig", None) or error
    if _is_busy(original):
        return DatabaseBusyError(f"{path} is locked by another connection: {original}")
    return StorageError(f"{doing} {path} failed: {original}")
