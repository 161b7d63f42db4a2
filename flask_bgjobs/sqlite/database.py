"""One SQLite database file: its engine, pragmas, schema and transactions.

Writes go through one long-lived connection per file and process, behind the file's in-process
write lock, in transactions that begin with ``BEGIN IMMEDIATE``: SQLite then takes its write lock
up front, so a transaction never fails half-way because another writer got there first. Waiting
for another process's lock is bounded, and that wait lives in :meth:`Database.write` only.
Reads use pooled connections in ordinary deferred transactions, which WAL never blocks.

A file deleted, replaced or overwritten while in use is noticed at the next write: every write
first checks that the path still names the file the connections use and that the file still starts
with SQLite's header. A deleted or replaced file is reopened (a deleted one is created anew); a
damaged one is moved aside (``<name>.corrupt-<UTC time>``) and started anew when the database was
made with ``recreate_damaged=True`` (the monthly files), and refused with
:class:`DatabaseDamagedError` otherwise. Reads never move or create anything: they report the
damage with the same error.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, create_engine, event, exc

from ..errors import DatabaseBusyError, DatabaseDamagedError, SchemaVersionError, StorageError
from ..locks import sqlite_file_lock
from .schema import Schema

logger = logging.getLogger("flask_bgjobs.sqlite")

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


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
    """A SQLite file with its schema, created on the first write.

    ``recreate_damaged``: a write that finds the file damaged (not a SQLite database, or
    malformed) moves it aside as ``<name>.corrupt-<UTC time>`` and starts the file anew, rather
    than raising :class:`DatabaseDamagedError`. The monthly files do; ``jobs.db`` does not.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        options: SqliteOptions | None = None,
        *,
        recreate_damaged: bool = False,
    ) -> None:
        self.path = Path(path).resolve()
        self._where = str(self.path)  # for os.stat at every write: a str is cheaper than a Path
        self.schema = schema
        self.options = options or SqliteOptions()
        self.recreate_damaged = recreate_damaged
        self._lock = sqlite_file_lock(self.path)
        self._setup = threading.Lock()
        self._pid = os.getpid()
        self._engine: Engine | None = None
        self._writer: Connection | None = None
        self._writing: int | None = None  # ident of the thread inside write()
        self._ready = False
        self._file: _Probe | None = None  # the file the connections use (identity, header)
        self._suspect: str | None = None  # why SQLite said the file is damaged, if it did

    def __repr__(self) -> str:
        return f"<Database {str(self.path)!r}>"

    def exists(self) -> bool:
        """Tell whether the file is on disk."""
        return self.path.exists()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of this file (made on first use, and anew after a fork)."""
        engine = self._engine  # one look: a writer thread may drop it meanwhile
        if engine is None or self._pid != os.getpid():
            with self._setup:
                if self._engine is None or self._pid != os.getpid():
                    self._forget_connections()
                    self._engine = self._create_engine()
                    self._pid = os.getpid()
                engine = self._engine
        return engine

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """Open a ``BEGIN IMMEDIATE`` transaction, committed when the block ends without error.

        Raises :class:`DatabaseBusyError` when another connection keeps the write lock for longer
        than ``options.busy_timeout``, :class:`DatabaseDamagedError` when the file is damaged
        (and not recreated), and :class:`StorageError` when the disk refuses the write; either way
        the transaction is rolled back and nothing is half-written.
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
                conn, raw, preparing = self._begin_write()
                try:
                    yield WriteTx(conn, raw)
                except BaseException as error:
                    _end(conn, raw, commit=False)
                    self._raise_if_damage(error)
                    if _is_operational(error):
                        raise _translate(error, self.path) from error
                    raise
                try:
                    _end(conn, raw, commit=True)
                except (sqlite3.Error, exc.DBAPIError) as error:
                    _end(conn, raw, commit=False)
                    if _is_damage(error):
                        self._suspect = _original_text(error)
                    raise _translate(error, self.path) from error
                # Only a committed schema counts: a rolled-back first write created nothing.
                self._ready = self._ready or preparing
            finally:
                self._writing = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Open a deferred read transaction on a pooled connection (a snapshot under WAL).

        A file that was deleted or replaced is reopened; a damaged one raises
        :class:`DatabaseDamagedError` (the next write deals with it).
        """
        self._check_for_read()
        if not self._ready:
            self._prepare_for_read()
        try:
            with self.engine.connect() as conn:
                yield conn
        except (sqlite3.DatabaseError, exc.DBAPIError) as error:
            self._raise_if_damage(error)
            if not _is_operational(error):
                raise
            raise _translate(error, self.path, "reading") from error

    def dispose(self) -> None:
        """Close every connection to the file; the next use opens new ones."""
        with self._lock, self._setup:
            self._forget_connections()
            self._engine = None

    # -- internals -----------------------------------------------------------------------------

    def _begin_write(self) -> tuple[Connection, sqlite3.Connection, bool]:
        """Check the file, then begin the write transaction (and create the schema if needed).

        A damaged file found on the way is moved aside once, when ``recreate_damaged``.
        """
        for retry in (False, True):
            self._check_file(writing=True)
            conn: Connection | None = None
            raw: sqlite3.Connection | None = None
            try:
                conn = self._writer_connection()
                driver = conn.connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                raw = driver
                self._track()
                self._begin_immediate(raw)
                preparing = not self._ready
                if preparing:
                    self._prepare_schema(WriteTx(conn, raw))
                return conn, raw, preparing
            except BaseException as error:
                # Whatever failed (a refused BEGIN, a newer schema, a migration), the long-lived
                # writer connection must not stay inside its transaction.
                if conn is not None and raw is not None:
                    _end(conn, raw, commit=False)
                if not isinstance(error, (sqlite3.DatabaseError, exc.DBAPIError)):
                    raise
                if not _is_damage(error):
                    raise _translate(error, self.path) from error
                reason = _original_text(error)
                if retry or not self.recreate_damaged:
                    self._suspect = reason
                    raise self._damaged(reason, again=retry) from error
                self._set_aside(reason)
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_file(self, *, writing: bool) -> None:
        """Reopen a file deleted or replaced since it was opened; deal with a damaged one."""
        probe = self._file  # one look: a writer thread may drop it meanwhile
        if probe is None or self._pid != os.getpid():
            return
        identity = self._identity_now()
        if identity is None:
            self._reopen("was deleted while in use; it is created anew")
            if writing:
                self._start_anew()
            return
        if identity != probe.identity:
            self._reopen("was replaced while in use; the new file is used")
            return
        damage = probe.damage()
        reason = damage or self._suspect
        if reason is None:
            return
        if damage is None and writing:  # only SQLite's word so far: ask it to check the file
            reason = self._quick_check()
            if reason is None:
                self._suspect = None
                return
        if not writing or not self.recreate_damaged:
            raise self._damaged(reason, later=not writing)
        self._set_aside(reason)

    def _check_for_read(self) -> None:
        probe = self._file  # one look: a writer thread may drop it meanwhile
        if probe is None:
            return
        if self._identity_now() != probe.identity:
            with self._lock:
                self._check_file(writing=False)
            return
        reason = probe.damage()
        if reason is not None:
            raise self._damaged(reason, later=True)

    def _identity_now(self) -> tuple[int, int] | None:
        """``(device, inode)`` of the file the path names now; ``None`` when there is none."""
        try:
            found = os.stat(self._where)
        except FileNotFoundError:
            return None
        return (found.st_dev, found.st_ino)

    def _prepare_for_read(self) -> None:
        """Make sure the schema is there without writing when it is (a read must not wait for
        another process's write lock): write only to create or upgrade it."""
        if self.path.exists():
            try:
                with self.engine.connect() as conn:
                    found = conn.exec_driver_sql("PRAGMA user_version").scalar()
            except (sqlite3.DatabaseError, exc.DBAPIError) as error:
                self._raise_if_damage(error)
                raise _translate(error, self.path, "reading") from error
            if found == self.schema.version:
                self._track()
                self._ready = True
                return
        with self.write():
            pass

    def _track(self) -> None:
        """Remember which file the connections use (its identity, and a handle for its header)."""
        if self._file is not None:
            return
        with self._setup:
            if self._file is None:
                self._file = _Probe.open(self.path)

    def _reopen(self, what: str) -> None:
        """Drop the connections to a file that is gone; the next use opens the path again."""
        logger.warning("flask_bgjobs: %s %s", self.path, what)
        with self._setup:
            self._forget_connections()
            self._engine = None

    def _start_anew(self) -> None:
        """Create the deleted file, empty, after moving aside the ``-wal`` and ``-shm`` it left
        (other processes may still hold them open): SQLite would pair them with the new file.
        Under the directory lock, so that of several processes only the first does it."""
        with _directory_lock(self.path.parent):
            if os.path.exists(self._where):
                return  # another process started it anew
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            left = [Path(f"{self._where}{suffix}") for suffix in ("-wal", "-shm")]
            self._move([(f, f.with_name(f"{f.name}.orphan-{stamp}")) for f in left], "starting")
            try:
                # A new inode nobody has locked: opening and closing it drops no SQLite lock.
                os.close(os.open(self._where, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            except OSError as error:
                raise StorageError(f"creating {self.path} anew failed: {error}") from error

    def _set_aside(self, reason: str) -> None:
        """Move a damaged file (and its -wal, -shm) to ``<name>.corrupt-<UTC time>``."""
        with _directory_lock(self.path.parent), self._setup:
            known = self._file.identity if self._file is not None else None
            self._forget_connections()
            self._engine = None
            try:
                found = os.stat(self._where)
            except FileNotFoundError:
                return  # moved aside by another process already
            if known is not None and (found.st_dev, found.st_ino) != known:
                return  # another process moved it aside and started a new file
            if known is None and _opens_cleanly(self.path):
                return  # not the file that failed to open: another process started it anew
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            number = 1
            while target.exists():
                number += 1
                target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
            # The companions first: a process opening the path meanwhile finds none to pair.
            companions = [(Path(f"{self.path}{x}"), Path(f"{target}{x}")) for x in ("-wal", "-shm")]
            self._move([*companions, (self.path, target)], "moving aside")
        logger.error("flask_bgjobs: %s is damaged (%s); moved aside to %s and started anew",
                     self.path, reason, target.name)  # fmt: skip

    def _move(self, moves: list[tuple[Path, Path]], doing: str) -> None:
        """Rename each ``(source, target)`` whose source exists; a refusal (permissions, a
        read-only directory) is a :class:`StorageError`."""
        try:
            for source, target in moves:
                if source.exists():
                    os.replace(source, target)
        except OSError as error:
            raise StorageError(f"{doing} {self.path} failed: {error}") from error

    def _quick_check(self) -> str | None:
        """SQLite's own verdict on the file: ``None`` when it is sound.

        Only damage counts: any other failure (busy, I/O, no descriptor left) is raised as such,
        so that a sound file is never moved aside for it.
        """
        try:
            conn = self._writer_connection()
            raw = conn.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            rows = raw.execute("PRAGMA quick_check(1)").fetchall()
        except (sqlite3.DatabaseError, exc.DBAPIError) as error:
            if _is_damage(error):
                return _original_text(error)
            raise _translate(error, self.path) from error
        verdict = str(rows[0][0]) if rows else "no answer"
        return None if verdict == "ok" else verdict

    def _raise_if_damage(self, error: BaseException) -> None:
        """If SQLite met a damaged page, remember it (the next write checks the file) and raise
        :class:`DatabaseDamagedError`; otherwise return."""
        if _is_damage(error):
            self._suspect = _original_text(error)
            raise self._damaged(self._suspect, later=True) from error

    def _damaged(
        self, reason: str, *, later: bool = False, again: bool = False
    ) -> DatabaseDamagedError:
        """The error for a damaged file; ``later``: the next write deals with it."""
        if not self.recreate_damaged:
            then = "restore it from a backup, or move it aside to start anew"
        elif again:
            then = "it was moved aside, and the new file is damaged too"
        else:
            then = "the next write moves it aside and starts the file anew"
        assert later or again or not self.recreate_damaged
        return DatabaseDamagedError(f"{self.path} is damaged ({reason}); {then}")

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
        probe, self._file = self._file, None
        self._ready = False
        self._suspect = None
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
        if probe is not None:
            probe.release()  # after the connections: closing it may drop this process's locks


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


def _original_text(error: BaseException) -> str:
    return str(getattr(error, "orig", None) or error)


def _is_damage(error: BaseException) -> bool:
    """Tell whether SQLite found the file not to be a database, or malformed."""
    original = getattr(error, "orig", None) or error
    if not isinstance(original, sqlite3.DatabaseError) or isinstance(
        original, sqlite3.IntegrityError
    ):
        return False
    name = str(getattr(original, "sqlite_errorname", ""))
    if name:
        return name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT"))
    if isinstance(original, sqlite3.OperationalError):
        return False  # busy, I/O, full disk, a bad statement ("malformed JSON"): not damage
    text = str(original).lower()
    return text.startswith(
        ("file is not a database", "database disk image is malformed", "malformed database schema")
    )


def _is_full(error: BaseException) -> bool:
    original = getattr(error, "orig", None) or error
    name = str(getattr(original, "sqlite_errorname", ""))
    return name.startswith("SQLITE_FULL") or "disk is full" in str(original).lower()


def _translate(error: BaseException, path: Path, doing: str = "writing") -> StorageError:
    """Name a driver error in the package's terms; the original stays as ``__cause__``."""
    original = getattr(error, "orig", None) or error
    if _is_busy(original):
        return DatabaseBusyError(f"{path} is locked by another connection: {original}")
    if _is_damage(original):
        return DatabaseDamagedError(f"{path} is damaged ({original})")
    if _is_full(original):
        return StorageError(
            f"{doing} {path} failed: the disk is full ({original}); nothing was written. "
            "Free some space: the next write succeeds without further ado."
        )
    return StorageError(f"{doing} {path} failed: {original}")


def _opens_cleanly(path: Path) -> bool:
    """Tell whether SQLite opens ``path`` and reads its schema (through a connection of its
    own, which SQLite closes without dropping other connections' locks)."""
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as error:
        return not _is_damage(error)
    finally:
        conn.close()
    return True


class _Probe:
    """An open handle on a database file: its identity, and a cheap look at its header.

    Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    included. So one handle per file and process is shared by every :class:`Database` on that
    file, and closed only when the last of them let go of it (after closing its connections).
    """

    _open: ClassVar[dict[tuple[int, int], _Probe]] = {}
    _guard = threading.Lock()

    def __init__(self, fd: int, identity: tuple[int, int]) -> None:
        self.fd = fd
        self.spares: list[int] = []  # more descriptors of the file, closed with the last user
        self.identity = identity
        self.users = 1
        self.pid = os.getpid()

    @classmethod
    def open(cls, path: Path) -> _Probe | None:
        """The handle of the file at ``path`` (``None`` if there is none)."""
        try:
            found = os.stat(path)
        except FileNotFoundError:
            return None
        with cls._guard:  # held while opening: a second descriptor would have to be closed
            probe = cls._open.get((found.st_dev, found.st_ino))
            if probe is not None and probe.pid == os.getpid():
                probe.users += 1  # no second descriptor: closing it would drop the locks
                return probe
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                return None
            found = os.fstat(fd)  # the file opened, should the path have changed meanwhile
            identity = (found.st_dev, found.st_ino)
            probe = cls._open.get(identity)
            if probe is not None and probe.pid == os.getpid():
                # The path changed under us to a file this process has open already: keep the
                # descriptor (closing it would drop the locks) among that probe's spares.
                probe.users += 1
                probe.spares.append(fd)
                return probe
            probe = cls._open[identity] = cls(fd, identity)
            return probe

    def damage(self) -> str | None:
        """Why the file is not a SQLite database, or ``None`` while its header is right."""
        try:
            head = os.pread(self.fd, len(SQLITE_HEADER), 0)
        except OSError as error:
            if error.errno == errno.EBADF:
                return None  # released by a writer thread meanwhile: that thread checks again
            return f"its header cannot be read: {error}"
        if not head or head == SQLITE_HEADER:
            return None  # a new, empty file, or a database
        return "file is not a database: it does not start with the SQLite header"

    def release(self) -> None:
        with self._guard:
            if self.pid != os.getpid():
                return
            self.users -= 1
            if self.users > 0:
                return
            if self._open.get(self.identity) is self:
                del self._open[self.identity]
        for fd in (self.fd, *self.spares):
            os.close(fd)


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """A lock between processes on ``directory`` (flock: apart from SQLite's POSIX locks)."""
    if sys.platform == "win32":  # pragma: no cover
        yield  # no flock: a damaged file is moved aside without it
        return
    import fcntl

    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)  # a forked child must not keep it
    try:
        deadline = time.monotonic() + _DIRECTORY_LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseBusyError(
                        f"another process kept {directory} locked for more than "
                        f"{_DIRECTORY_LOCK_WAIT:g} s while moving a damaged file aside"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


#: How long a process waits for another to finish moving a damaged file aside.
_DIRECTORY_LOCK_WAIT = 10.0
