"""Text that encodes as UTF-8.

Python strings may hold what UTF-8 cannot encode: lone surrogates such as ``"\\ud800"``, from
bytes decoded with ``surrogateescape`` or JSON's ``\\ud800`` escape. SQLite's driver refuses them
and so does a response body; text that comes from outside goes through :func:`utf8_safe` before
it is stored or sent (or, where checking costs too much, after a refused write).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, overload

import click

#: Characters a terminal may act on: C0 controls but tab and newline, DEL, C1 controls.
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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


def terminal_safe(text: str) -> str:
    """``text`` fit to print on a terminal: control characters (an escape sequence in a job's
    tag, a carriage return in a request path) shown as ``\\x1b`` rather than acted on."""
    return _TERMINAL_CONTROLS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def echo(text: str, err: bool = False) -> None:
    """``click.echo`` for the commands' output, which holds what users and clients wrote (tags,
    paths, errors): control characters are shown, never sent to the terminal."""
    click.echo(terminal_safe(text), err=err)
