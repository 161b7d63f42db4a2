"""JSON in and out of the database, with errors that say which value was at fault."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .errors import InvalidJobError

_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def to_json(value: Any, what: str) -> str | None:
    """Encode ``value`` as JSON text (``None`` stays NULL); dataclasses become objects.

    Raises :class:`InvalidJobError` naming ``what`` for values JSON cannot hold exactly
    (sets, bytes, objects, NaN, non-string keys).
    """
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    try:
        _check_keys(value)
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidJobError(f"{what} must be JSON-serialisable: {error}") from None


def from_json(text: str | None) -> Any:
    """Decode JSON text stored by :func:`to_json` (NULL gives ``None``)."""
    return None if text is None else json.loads(text)


def _check_keys(value: Any) -> None:
    # json.dumps turns int keys into strings silently: the job would see other keys than sent.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(f"keys must be strings, not {type(key).__name__} {key!r}")
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
