"""Text that encodes as UTF-8.

Python strings may hold what UTF-8 cannot encode: lone surrogates such as ``"\\ud800"``, from
bytes decoded with ``surrogateescape`` or JSON's ``\\ud800`` escape. SQLite's driver refuses them
and so does a response body; text that comes from outside goes through :func:`utf8_safe` before
it is stored or sent (or, where checking costs too much, after a refused write).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload


@overload
def utf8_safe(text: str) -> str: ...
@overload
def utf8_safe(text: None) -> None: ...
def utf8_safe(text: str | None) -> str | None:
    """``text`` with each lone surrogate replaced by U+FFFD (``text`` itself when it has none)."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def utf8_safe_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``rows`` with :func:`utf8_safe` applied to every string value."""
    return [
        tuple(utf8_safe(value) if isinstance(value, str) else value for value in row)
        for row in rows
    ]
