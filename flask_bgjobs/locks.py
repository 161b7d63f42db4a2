"""Named in-process write locks for SQLite databases.

SQLite allows one writer per database file at a time. Threads of one process that write to the
same file should take turns in Python rather than race for SQLite's lock, which fails fast with
"database is locked" when two deferred transactions both try to upgrade to writing. The engine of
this package serialises its own writes with these locks; app code can do the same::

    from flask_bgjobs.locks import db_lock, bind_lock

    with db_lock("app"):
        ...

    with bind_lock(db):            # the lock of a Flask-SQLAlchemy bind's SQLite file
        db.session.add(row)
        db.session.commit()
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy


class NamedLock:
    """A re-entrant lock known by name; the same name always gives the same lock object."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.RLock()

    def acquire(self, timeout: float = -1) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds (forever when negative)."""
        return self._lock.acquire(timeout=timeout)

    def release(self) -> None:
        """Give the lock back."""
        self._lock.release()

    def __enter__(self) -> NamedLock:
        self._lock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()

    def __repr__(self) -> str:
        return f"<NamedLock {self.name!r}>"

    def _reset(self) -> None:
        # A lock held by another thread at fork time would never be released in the child.
        self._lock = threading.RLock()


_registry: weakref.WeakValueDictionary[str, NamedLock] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def db_lock(name: str) -> NamedLock:
    """Return the process-wide write lock called ``name``, creating it on first use."""
    with _registry_lock:
        lock = _registry.get(name)
        if lock is None:
            lock = _registry[name] = NamedLock(name)
        return lock


def sqlite_file_lock(path: str | os.PathLike[str]) -> NamedLock:
    """Return the write lock of the SQLite file at ``path`` (one lock per absolute path)."""
    return db_lock(f"sqlite:{Path(path).resolve()}")


def bind_lock(db: SQLAlchemy, bind_key: str | None = None) -> NamedLock:
    """Return the write lock of a Flask-SQLAlchemy bind's SQLite file.

    Call it inside an app context. Raises :class:`ValueError` for a bind that is not an on-disk
    SQLite database, where an in-process lock would not be the right tool.
    """
    url = db.engines[bind_key].url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise ValueError(
            f"bind {bind_key!r} is {url.render_as_string(hide_password=True)!r}, not an on-disk "
            "SQLite file; only SQLite binds need an in-process write lock"
        )
    return sqlite_file_lock(url.database)


def _reset_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for lock in list(_registry.values()):
        lock._reset()


os.register_at_fork(after_in_child=_reset_after_fork)
