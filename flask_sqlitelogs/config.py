"""The ``SQLITELOGS_*`` configuration keys: defaults, validation, and the settings object."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from flask_bgjobs.config import integer_setting, number_setting
from flask_bgjobs.redaction import SECRET_WORDS
from flask_bgjobs.sqlite import SqliteOptions

#: Every key with its default; ``init_app`` puts them into ``app.config`` with ``setdefault``.
#: ``SQLITELOGS_EXCLUDE_PATHS`` defaults to the static folder and the log pages (set per app).
DEFAULTS: dict[str, Any] = {
    "SQLITELOGS_ENABLED": True,
    "SQLITELOGS_DATABASE_DIR": "requests",
    "SQLITELOGS_FLUSH_INTERVAL": 3.0,
    "SQLITELOGS_CAPACITY": 10_000,
    "SQLITELOGS_ENABLE_RESPONSE_TRACKING": False,
    "SQLITELOGS_ENABLE_REQUEST_BODY_TRACKING": False,
    "SQLITELOGS_ENABLE_ERROR_TRACKING": True,
    "SQLITELOGS_MAX_BODY_BYTES": 64 * 1024,
    "SQLITELOGS_REDACT_HEADERS": ["X-Auth-Token", "X-CSRF-Token", "X-XSRF-Token", "*-Secret"],
    "SQLITELOGS_REDACT_FIELDS": list(SECRET_WORDS),
    "SQLITELOGS_REQUEST_ID_HEADER": "X-Request-ID",
    "SQLITELOGS_USER_ID": None,
    "SQLITELOGS_RETENTION_MONTHS": None,
    "SQLITELOGS_ADMIN": True,
    "SQLITELOGS_ADMIN_PREFIX": "/admin/requests",
    "SQLITELOGS_AUTHORIZE": None,
    "SQLITELOGS_EXPORT_LIMIT": 100_000,
    "SQLITELOGS_SQLITE_SYNCHRONOUS": "NORMAL",
    "SQLITELOGS_SQLITE_BUSY_TIMEOUT": 5.0,
}

_OPTIONS = {key.removeprefix("SQLITELOGS_").lower() for key in DEFAULTS} | {"exclude_paths"}


@dataclass(frozen=True)
class Settings:
    """The validated ``SQLITELOGS_*`` settings of one app."""

    enabled: bool
    database_dir: Path
    flush_interval: float
    capacity: int
    enable_response_tracking: bool
    enable_request_body_tracking: bool
    enable_error_tracking: bool
    max_body_bytes: int
    redact_headers: tuple[str, ...]
    redact_fields: tuple[str, ...]
    request_id_header: str
    user_id: Callable[[], Any] | None
    retention_months: int | None
    admin: bool
    admin_prefix: str
    authorize: Callable[[], object] | None
    export_limit: int
    exclude_paths: tuple[str, ...]
    sqlite: SqliteOptions

    @classmethod
    def from_app(cls, app: Flask, overrides: Mapping[str, Any]) -> Settings:
        """Read the settings of ``app``, constructor keywords (``capacity=``...) winning."""
        for key, default in DEFAULTS.items():
            app.config.setdefault(key, list(default) if isinstance(default, list) else default)
        unknown = set(overrides) - _OPTIONS
        if unknown:
            raise TypeError(
                f"unknown SqliteRequestLogger option(s): {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(_OPTIONS))}"
            )

        def value(name: str) -> Any:
            key = f"SQLITELOGS_{name.upper()}"
            return overrides[name] if name in overrides else app.config[key]

        prefix = _prefix(value("admin_prefix"))
        static = app.static_url_path if app.has_static_folder else None
        app.config.setdefault(
            "SQLITELOGS_EXCLUDE_PATHS", [p for p in (static and f"{static}/", prefix) if p]
        )
        folder = Path(value("database_dir"))
        try:
            sqlite = SqliteOptions(
                synchronous=value("sqlite_synchronous"),
                busy_timeout=number_setting(
                    value("sqlite_busy_timeout"), "SQLITELOGS_SQLITE_BUSY_TIMEOUT"
                ),
            )
        except ValueError as error:
            raise ValueError(f"SQLITELOGS_SQLITE_*: {error}") from None
        return cls(
            enabled=bool(value("enabled")),
            database_dir=folder if folder.is_absolute() else Path(app.instance_path) / folder,
            flush_interval=number_setting(
                value("flush_interval"), "SQLITELOGS_FLUSH_INTERVAL", allow_zero=True
            ),
            capacity=integer_setting(value("capacity"), "SQLITELOGS_CAPACITY", minimum=1),
            enable_response_tracking=bool(value("enable_response_tracking")),
            enable_request_body_tracking=bool(value("enable_request_body_tracking")),
            enable_error_tracking=bool(value("enable_error_tracking")),
            max_body_bytes=integer_setting(
                value("max_body_bytes"), "SQLITELOGS_MAX_BODY_BYTES", minimum=0
            ),
            redact_headers=_names(value("redact_headers"), "REDACT_HEADERS"),
            redact_fields=_names(value("redact_fields"), "REDACT_FIELDS"),
            request_id_header=_names([value("request_id_header")], "REQUEST_ID_HEADER")[0],
            user_id=_callable(value("user_id"), "USER_ID"),
            retention_months=_optional_integer(value("retention_months"), "RETENTION_MONTHS"),
            admin=bool(value("admin")),
            admin_prefix=prefix,
            authorize=_callable(value("authorize"), "AUTHORIZE"),
            export_limit=integer_setting(
                value("export_limit"), "SQLITELOGS_EXPORT_LIMIT", minimum=1
            ),
            exclude_paths=_paths(value("exclude_paths")),
            sqlite=sqlite,
        )


def _optional_integer(raw: Any, key: str) -> int | None:
    return None if raw is None else integer_setting(raw, f"SQLITELOGS_{key}", minimum=1)


def _names(raw: Any, key: str) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, (list, tuple, set, frozenset)):
        raise ValueError(f"SQLITELOGS_{key} must be a list of strings, not {raw!r}")
    names = tuple(raw)
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise ValueError(f"SQLITELOGS_{key} must hold non-empty strings only, not {raw!r}")
    return names


def _paths(raw: Any) -> tuple[str, ...]:
    paths = _names(raw, "EXCLUDE_PATHS")
    bad = [path for path in paths if not path.startswith("/")]
    if bad:
        raise ValueError(f"SQLITELOGS_EXCLUDE_PATHS are URL paths starting with '/', not {bad!r}")
    return paths


def _prefix(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.startswith("/") or raw != raw.strip():
        raise ValueError(
            f"SQLITELOGS_ADMIN_PREFIX must be a URL path starting with '/', not {raw!r}"
        )
    return raw.rstrip("/") or "/"


def _callable(raw: Any, key: str) -> Any:
    if raw is not None and not callable(raw):
        raise ValueError(
            f"SQLITELOGS_{key} must be a callable taking no argument (or None), not {raw!r}"
        )
    return raw
