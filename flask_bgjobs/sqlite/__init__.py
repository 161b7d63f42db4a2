"""The rolling-monthly SQLite engine shared by flask_bgjobs and flask_sqlitelogs.

Free of Flask: files, engines, pragmas, transactions, schema versions and retention.
"""

from .database import SYNCHRONOUS_LEVELS as SYNCHRONOUS_LEVELS
from .database import Database as Database
from .database import SqliteOptions as SqliteOptions
from .database import WriteTx as WriteTx
from .monthly import MonthlyDatabase as MonthlyDatabase
from .monthly import check_month as check_month
from .monthly import month_of as month_of
from .monthly import months_before as months_before
from .schema import Migration as Migration
from .schema import Schema as Schema
