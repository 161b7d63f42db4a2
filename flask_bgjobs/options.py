"""The options of an enqueue call: checked once, resolved against defaults, turned into a row."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .callbacks import parse_reply_to, redact_reply_to
from .clock import as_utc
from .config import Settings, check_option
from .context import _current
from .errors import InvalidJobError
from .records import NewJob
from .registry import Command, CommandRegistry
from .serialization import to_json

ON_CONFLICT = ("raise", "return_existing")
#: The largest id, retry limit or other whole number a job row holds (SQLite's INTEGER).
MAX_INT = 2**63 - 1
#: The longest ``tag``, ``created_by``, ``batch_id``, ``worker`` and ``ref_id``.
MAX_NAME = 200
#: The longest ``reply_to`` (a URL with credentials, such as a bearer token, may be long).
MAX_REPLY_TO = 2000
_ANY_VARIABLE: defaultdict[str, str] = defaultdict(lambda: "set-when-used")


@dataclass
class JobOptions:
    """The keyword options of ``enqueue_command`` and ``enqueue_api`` (see the design)."""

    worker: str | None = None
    callback: str | None = None
    depends_on: int | None = None
    user_id: Any = None
    run_after: datetime | None = None
    retry_limit: int | None = None
    timeout: float | None = None
    ref_id: str | None = None
    tag: str | None = None
    created_by: str | None = None
    batch_id: str | None = None
    reply_to: str | None = None
    args: dict[str, str] | None = None
    parent_id: int | None = None
    on_conflict: str = "raise"

    def check(self, registry: CommandRegistry) -> None:
        """Raise :class:`InvalidJobError` (or ``UnknownCommandError``) for a bad option."""
        for name in ("tag", "created_by", "batch_id", "worker", "ref_id"):
            check_text(getattr(self, name), name)
        check_text(self.reply_to, "reply_to", MAX_REPLY_TO, secret=True)
        if self.user_id is not None:
            check_text(str(self.user_id), "user_id", None, empty=True)
        for name in ("depends_on", "parent_id"):
            check_option(getattr(self, name), name, is_id, "a job id (a positive integer)")
        if self.args is not None and not _is_str_dict(self.args):
            raise InvalidJobError(f"args must be a dict of str to str, not {shown(self.args)}")
        check_option(self.run_after, "run_after", lambda v: isinstance(v, datetime), "a datetime")
        check_retry_limit(self.retry_limit)
        check_timeout(self.timeout)
        if self.on_conflict not in ON_CONFLICT:
            raise InvalidJobError(f"on_conflict must be one of {ON_CONFLICT}, not "
                                  f"{self.on_conflict!r}")  # fmt: skip
        if self.callback is not None:
            registry.get(self.callback)
        if self.reply_to is not None:
            # Its form is checked now; the $VARIABLES it names are read when it is used.
            parse_reply_to(self.reply_to, environ=_ANY_VARIABLE)

    def new_job(
        self,
        command: str,
        request_type: str,
        request: str | None,
        settings: Settings,
        now: float,
        defaults: Command | None = None,
        extra: dict[str, Any] | None = None,
    ) -> NewJob:
        """The row to store: options first, then the command's defaults, then the config."""
        retry_limit = _first(self.retry_limit, defaults.retry_limit if defaults else None,
                             settings.retry_limit)  # fmt: skip
        extra = dict(extra or {})
        current = _current.get(None)
        if current is not None and self.depends_on is not None and self.depends_on == current.id:
            # Enqueued by the job it depends on: cancelled if that attempt fails (atomic batch).
            extra["parent_attempt"] = current.attempt
        return NewJob(
            command=command,
            request_type=request_type,
            request=request,
            created_at=now,
            run_after=as_utc(self.run_after).timestamp() if self.run_after is not None else now,
            retry_limit=retry_limit,
            timeout=_first(self.timeout, defaults.timeout if defaults else None, settings.timeout),
            ref_id=self.ref_id,
            parent_id=self.parent_id if self.parent_id is not None else self.depends_on,
            worker=_first(self.worker, defaults.worker if defaults else None),
            tag=self.tag,
            batch_id=self.batch_id,
            callback=self.callback,
            depends_on=self.depends_on,
            created_by=self.created_by,
            user_id=None if self.user_id is None else str(self.user_id),
            reply_to=self.reply_to,
            args=to_json(self.args or None, "args"),
            options=to_json(extra or None, "options"),
        )


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME


def is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INT


def check_text(
    value: Any,
    name: str,
    limit: int | None = MAX_NAME,
    *,
    secret: bool = False,
    empty: bool = False,
) -> None:
    """Raise :class:`InvalidJobError` unless ``value`` is ``None`` or a string SQLite can store:
    not empty (unless ``empty``), at most ``limit`` characters, valid Unicode (no lone surrogate
    such as ``"\\ud800"``, which UTF-8 cannot encode). The message never repeats a long value,
    and shows a ``secret`` one (a ``reply_to``) redacted."""
    if value is None:
        return
    size = f" of at most {limit:,} characters" if limit is not None else ""
    if not isinstance(value, str) or (not value and not empty) or (limit and len(value) > limit):
        what = f"{len(value):,} characters" if isinstance(value, str) and value else None
        raise InvalidJobError(f"{name} must be a non-empty string{size}, not "
                              f"{what or shown(value, secret)}")  # fmt: skip
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidJobError(
                f"{name} must be valid Unicode text: it holds the lone surrogate "
                f"{value[error.start]!r} at position {error.start}, which UTF-8 cannot encode"
            ) from None


def shown(value: Any, secret: bool = False) -> str:
    """``value`` as an error message may show it: short, and redacted when ``secret``."""
    if isinstance(value, str) and secret:
        value = redact_reply_to(value)
    text = repr(value) if isinstance(value, (str, int, float, type(None))) else type(value).__name__
    return text if len(text) <= 80 else f"{text[:79]}…"


def _is_str_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def check_retry_limit(value: Any) -> None:
    check_option(value, "retry_limit",
                 lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT,
                 "a whole number from 0 to 2**63 - 1")  # fmt: skip


def check_timeout(value: Any) -> None:
    check_option(value, "timeout",
                 lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                 and 0 < v < math.inf,
                 "a positive number of seconds (finite)")  # fmt: skip
