"""Durable background jobs and scheduled tasks for Flask, on SQLite files only.

The errors and the clock are imported at once; the rest (the extension, the runner, the
scheduler and what they need) on first use, so that importing the storage engine
(``flask_bgjobs.sqlite``), as ``flask_sqlitelogs`` does, stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .clock import ManualClock as ManualClock
from .errors import ApiJobError as ApiJobError
from .errors import BgJobsError as BgJobsError
from .errors import DatabaseBusyError as DatabaseBusyError
from .errors import DatabaseDamagedError as DatabaseDamagedError
from .errors import DuplicateRefIdError as DuplicateRefIdError
from .errors import InvalidJobError as InvalidJobError
from .errors import JobCancelled as JobCancelled
from .errors import JobNotFoundError as JobNotFoundError
from .errors import JobStateError as JobStateError
from .errors import JobTimeout as JobTimeout
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StorageError as StorageError
from .errors import UnknownCommandError as UnknownCommandError
from .errors import WorkerLostError as WorkerLostError

if TYPE_CHECKING:
    from .callbacks import ReplyToError as ReplyToError
    from .callbacks import send_json_callback as send_json_callback
    from .context import current_job as current_job
    from .extension import BackgroundJobs as BackgroundJobs
    from .models import BackgroundJob as BackgroundJob
    from .models import CompletedJob as CompletedJob
    from .models import FailedJob as FailedJob
    from .models import JobRef as JobRef
    from .models import JobResult as JobResult
    from .models import JobState as JobState
    from .models import JobSummary as JobSummary
    from .schedule import Schedule as Schedule

#: Public names imported on first use, and the module of each.
_LAZY = {
    "ReplyToError": "callbacks",
    "send_json_callback": "callbacks",
    "current_job": "context",
    "BackgroundJobs": "extension",
    "BackgroundJob": "models",
    "CompletedJob": "models",
    "FailedJob": "models",
    "JobRef": "models",
    "JobResult": "models",
    "JobState": "models",
    "JobSummary": "models",
    "Schedule": "schedule",
}

__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
