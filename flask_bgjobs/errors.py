"""The exceptions of flask_bgjobs and flask_sqlitelogs, under one base class."""

from __future__ import annotations


class BgJobsError(Exception):
    """Base class of every error this distribution raises on purpose."""


class StorageError(BgJobsError):
    """A SQLite database could not be read or written (disk full, I/O error, corruption)."""


class DatabaseBusyError(StorageError):
    """Another connection held the write lock of a database for longer than the wait bound."""


class SchemaVersionError(StorageError):
    """A database file was written by a newer release, whose schema this one does not know."""
