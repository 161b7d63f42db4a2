"""The ``BGJOBS_*`` configuration keys: defaults, validation, and the settings object."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from flask import Flask

from .errors import InvalidJobError
from .sqlite import SqliteOptions

#: Every key with its default; ``init_app`` puts them into ``app.config`` with ``setdefault``.
DEFAULTS: dict[str, Any] = {
    "BGJOBS_DATABASE_DIR": "jobs",
    "BGJOBS_MAX_THREADS": 4,
    "BGJOBS_POLL_INTERVAL": 0.02,
    "BGJOBS_LEASE_SECONDS": 30.0,
    "BGJOBS_RETRY_LIMIT": 2,
    "BGJOBS_RETRY_BACKOFF": 1.0,
    "BGJOBS_RETRY_BACKOFF_MAX": 300.0,
    "BGJOBS_TIMEOUT": 3600.0,
    "BGJOBS_CANCEL_GRACE": 5.0,
    "BGJOBS_EAGER": False,
    "BGJOBS_AUTOSTART": True,
    "BGJOBS_MAX_LOG_BYTES": 256 * 1024,
    "BGJOBS_NOTIFY_REPLY_TO": False,
    "BGJOBS_SCHEDULER": True,
    "BGJOBS_MISFIRE_GRACE": 60.0,
    "BGJOBS_SQLITE_SYNCHRONOUS": "NORMAL",
    "BGJOBS_SQLITE_BUSY_TIMEOUT": 5.0,
    "BGJOBS_ADMIN_URL_PREFIX": "/admin/jobs",
    "BGJOBS_ADMIN_AUTHORIZE": None,
}


@dataclass(frozen=True)
class Settings:
    """The validated ``BGJOBS_*`` settings of one app."""

    database_dir: Path
    max_threads: int
    poll_interval: float
    lease_seconds: float
    retry_limit: int
    retry_backoff: float
    retry_backoff_max: float
    timeout: float | None
    cancel_grace: float
    eager: bool
    autostart: bool
    max_log_bytes: int
    notify_reply_to: bool
    scheduler: bool
    misfire_grace: float
    sqlite: SqliteOptions
    admin_url_prefix: str | None = "/admin/jobs"
    admin_authorize: Callable[[], object] | None = None

    @classmethod
    def from_app(cls, app: Flask, overrides: Mapping[str, Any]) -> Settings:
        """Read the settings of ``app``, constructor keywords (``max_threads=``...) winning."""
        for key, default in DEFAULTS.items():
            app.config.setdefault(key, default)
        known = {f.name for f in fields(cls)} - {"sqlite"} | {
            "sqlite_synchronous",
            "sqlite_busy_timeout",
        }
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(
                f"unknown BackgroundJobs option(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )

        def value(name: str) -> Any:
            return overrides[name] if name in overrides else app.config[f"BGJOBS_{name.upper()}"]

        folder = Path(value("database_dir"))
        try:
            sqlite = SqliteOptions(
                synchronous=value("sqlite_synchronous"),
                busy_timeout=number_setting(
                    value("sqlite_busy_timeout"), "BGJOBS_SQLITE_BUSY_TIMEOUT"
                ),
            )
        except ValueError as error:
            raise ValueError(f"BGJOBS_SQLITE_*: {error}") from None
        return cls(
            database_dir=folder if folder.is_absolute() else Path(app.instance_path) / folder,
            max_threads=integer_setting(value("max_threads"), "BGJOBS_MAX_THREADS", minimum=1),
            poll_interval=number_setting(value("poll_interval"), "BGJOBS_POLL_INTERVAL"),
            lease_seconds=number_setting(value("lease_seconds"), "BGJOBS_LEASE_SECONDS"),
            retry_limit=integer_setting(value("retry_limit"), "BGJOBS_RETRY_LIMIT", minimum=0),
            retry_backoff=number_setting(
                value("retry_backoff"), "BGJOBS_RETRY_BACKOFF", allow_zero=True
            ),
            retry_backoff_max=number_setting(
                value("retry_backoff_max"), "BGJOBS_RETRY_BACKOFF_MAX", allow_zero=True
            ),
            timeout=_optional(value("timeout"), "BGJOBS_TIMEOUT"),
            cancel_grace=number_setting(value("cancel_grace"), "BGJOBS_CANCEL_GRACE"),
            eager=bool(value("eager")),
            autostart=bool(value("autostart")),
            max_log_bytes=integer_setting(
                value("max_log_bytes"), "BGJOBS_MAX_LOG_BYTES", minimum=1024
            ),
            notify_reply_to=bool(value("notify_reply_to")),
            scheduler=bool(value("scheduler")),
            misfire_grace=number_setting(
                value("misfire_grace"), "BGJOBS_MISFIRE_GRACE", allow_zero=True
            ),
            sqlite=sqlite,
            admin_url_prefix=value("admin_url_prefix"),
            admin_authorize=value("admin_authorize"),
        )


def number_setting(raw: Any, key: str, *, allow_zero: bool = False) -> float:
    """The config value ``key`` as a positive (or non-negative) number of seconds."""
    try:
        number = float(raw)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(raw, bool) or not (number >= 0 if allow_zero else number > 0):
        raise ValueError(
            f"{key} must be a {'non-negative' if allow_zero else 'positive'} "
            f"number of seconds, not {raw!r}"
        )
    return number


def _optional(raw: Any, key: str) -> float | None:
    return None if raw is None else number_setting(raw, key)


def integer_setting(raw: Any, key: str, *, minimum: int) -> int:
    """The config value ``key`` as a whole number of at least ``minimum``."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise ValueError(f"{key} must be a whole number of at least {minimum}, not {raw!r}")
    return raw


def check_option(value: Any, name: str, check: Callable[[Any], bool], expected: str) -> Any:
    """Return ``value`` if ``check(value)``, else raise the package's error for a bad option."""
    if value is not None and not check(value):
        raise InvalidJobError(f"{name} must be {expected}, not {value!r}")
    return value


def host_pid() -> tuple[str, int]:
    import socket

    return socket.gethostname(), os.getpid()
