"""How the templates write times, durations, percentages and JSON (``fmt.*`` in templates).

Everything returns plain text: Jinja escapes it where it is shown.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..extension import BackgroundJobs

#: CSS class of each state's badge.
STATE_CLASSES = {
    "waiting": "waiting",
    "queued": "queued",
    "started": "running",
    "completed": "ok",
    "failed": "bad",
    "cancelled": "off",
}


class Formatter:
    """Formatting helpers bound to one extension (its clock says what "now" is)."""

    def __init__(self, extension: BackgroundJobs) -> None:
        self._extension = extension

    def time(self, epoch: float | None) -> str:
        """``2026-03-15 12:00:05`` (UTC), or an empty string."""
        if epoch is None:
            return ""
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    def iso(self, epoch: float | None) -> str:
        """ISO 8601 with ``Z``, for ``<time datetime=...>``."""
        if epoch is None:
            return ""
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ago(self, epoch: float | None) -> str:
        """``3 min ago`` or ``in 5 s``, from the extension's clock."""
        if epoch is None:
            return ""
        delta = self._extension.now() - epoch
        return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"

    def duration(self, seconds: float | None) -> str:
        return "" if seconds is None else duration(seconds)

    def percent(self, value: float | None) -> str:
        return "" if value is None else f"{value * 100:.0f}%"

    def pretty(self, value: Any) -> str:
        """A JSON value indented for reading."""
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)

    def state_class(self, state: str | None) -> str:
        return STATE_CLASSES.get(state or "", "unknown")

    def state_label(self, state: str | None) -> str:
        return "running" if state == "started" else (state or "unknown")


def duration(seconds: float) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for big, small, size, unit in ((86400, 3600, "d", "h"), (3600, 60, "h", "min"),
                                   (60, 1, "min", "s")):  # fmt: skip
        if whole >= big:
            rest = (whole % big) // small
            return f"{whole // big} {size} {rest} {unit}" if rest else f"{whole // big} {size}"
    return f"{whole} s"
