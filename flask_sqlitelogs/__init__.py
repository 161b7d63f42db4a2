"""Every request and response of a Flask app, logged to rolling monthly SQLite databases."""

from .extension import SqliteRequestLogger as SqliteRequestLogger
from .models import SORTABLE as SORTABLE
from .models import STATUS_CLASSES as STATUS_CLASSES
from .models import LogEntry as LogEntry
from .models import Page as Page
from .redact import REDACTED as REDACTED
