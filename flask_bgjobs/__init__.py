"""Durable background jobs and scheduled tasks for Flask, on SQLite files only."""

from .callbacks import ReplyToError as ReplyToError
from .callbacks import send_json_callback as send_json_callback
from .clock import ManualClock as ManualClock
from .context import current_job as current_job
from .errors import ApiJobError as ApiJobError
from .errors import BgJobsError as BgJobsError
from .errors import DatabaseBusyError as DatabaseBusyError
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
from .extension import BackgroundJobs as BackgroundJobs
from .models import BackgroundJob as BackgroundJob
from .models import CompletedJob as CompletedJob
from .models import FailedJob as FailedJob
from .models import JobRef as JobRef
from .models import JobResult as JobResult
from .models import JobState as JobState
from .models import JobSummary as JobSummary
from .schedule import Schedule as Schedule

__version__ = "0.1.0.dev0"
