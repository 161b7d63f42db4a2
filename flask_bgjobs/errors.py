"""The exceptions of flask_bgjobs and flask_sqlitelogs, under one base class."""

from __future__ import annotations


class BgJobsError(Exception):
    """Base class of every error this distribution raises on purpose."""


class StorageError(BgJobsError):
    """A SQLite database could not be read or written (disk full, I/O error, corruption)."""


class DatabaseBusyError(StorageError):
    """Another connection held the write lock of a database for longer than the wait bound."""


class DatabaseDamagedError(StorageError):
    """A database file is not a SQLite database any more, or SQLite found it malformed."""


class SchemaVersionError(StorageError):
    """A database file was written by a newer release, whose schema this one does not know."""


class UnknownCommandError(BgJobsError, LookupError):
    """A job names a command (or endpoint) that is not registered."""


class InvalidJobError(BgJobsError, ValueError):
    """A job's request or options cannot be stored: not JSON-serialisable, or out of range."""


class DuplicateRefIdError(InvalidJobError):
    """A job with the same ``ref_id`` was already enqueued."""


class JobNotFoundError(BgJobsError, LookupError):
    """No job has the given id or ref_id."""


class JobStateError(BgJobsError):
    """The job is not in a state that allows the operation (e.g. requeueing a running job)."""


class JobCancelled(BaseException):
    """Raised inside a command that was cancelled or timed out, to stop it.

    Like :class:`KeyboardInterrupt`, it derives from :class:`BaseException`, not from
    :class:`BgJobsError`: it is a stop request, not an error, and an ``except Exception:`` in
    the command must not swallow it.
    """


class JobTimeout(JobCancelled):
    """Raised inside a command that ran past its timeout."""


class WorkerLostError(BgJobsError):
    """The process running a job died; recorded as the job's error once its lease lapsed."""


class ApiJobError(BgJobsError):
    """An API job's view answered with an error status (4xx or 5xx)."""

    def __init__(self, endpoint: str, status: int, body: str) -> None:
        self.endpoint = endpoint
        self.status = status
        self.body = body
        shown = body if len(body) <= 500 else body[:499] + "…"
        super().__init__(f"{endpoint} answered {status}: {shown}")
