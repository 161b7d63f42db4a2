"""Durable background jobs and scheduled tasks for Flask, on SQLite files only."""

from .clock import ManualClock as ManualClock
from .errors import BgJobsError as BgJobsError
from .errors import DatabaseBusyError as DatabaseBusyError
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StorageError as StorageError

__version__ = "0.1.0.dev0"
