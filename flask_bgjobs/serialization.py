"""JSON in and out of the database, with errors that say which value was at fault."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .errors import InvalidJobError

_encoder = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

#: How deep lists and dicts may nest in stored JSON. Deeper documents are refused when they are
#: stored: Python decodes JSON recursively, and a document that only just fits the recursion
#: limit when it is written may not fit when it is read from a deeper stack.
MAX_DEPTH = 200


def to_json(value: Any, what: str) -> str | None:
    """Encode ``value`` as JSON text (``None`` stays NULL); dataclasses become objects.

    Raises :class:`InvalidJobError` naming ``what`` for values JSON cannot hold exactly
    (sets, bytes, objects, NaN, non-string keys, nesting deeper than :data:`MAX_DEPTH`), and for
    objects that fail while they are read (a dataclass field or a ``dict`` subclass that raises).
    """
    if value is None:
        return None
    try:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        _check_keys(value)
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidJobError(f"{what} must be JSON-serialisable: {error}") from None
    except Exception as error:  # a user object that breaks while it is read
        raise InvalidJobError(
            f"{what} must be JSON-serialisable: reading it raised {type(error).__name__}: {error}"
        ) from error


def from_json(text: str | None) -> Any:
    """Decode JSON text stored by :func:`to_json` (NULL gives ``None``)."""
    return None if text is None else json.loads(text)


def _check_keys(value: Any) -> None:
    # json.dumps turns int keys into strings silently: the job would see other keys than sent.
    # Walked without recursion; the depth bound also stops a list or dict that contains itself.
    if not isinstance(value, _CONTAINERS):
        return
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"it nests lists and dicts deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    raise TypeError(f"keys must be strings, not {type(key).__name__} {key!r:.80}")
        stack.extend((child, depth + 1) for child in children if isinstance(child, _CONTAINERS))


_CONTAINERS = (dict, list, tuple)
