"""Which names are secret, and query strings with the values of secret parameters masked.

One rule for the whole distribution: the ``reply_to`` URLs that job pages, the CLI and messages
show, and everything the request logs keep (query strings, JSON and form fields, header names).
A name is secret when, lower-cased and stripped to letters and digits, it contains one of the
configured words (:data:`SECRET_WORDS` by default: ``api_key`` catches ``X-Api-Key``, ``apiKey``
and ``user_api_key``), or is one of :data:`SECRET_NAMES`, short names that mean a credential on
their own but are too common inside other words to be looked for there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote_plus

#: Words whose presence in a name makes it secret (``SQLITELOGS_REDACT_FIELDS`` by default).
SECRET_WORDS = (
    "password", "passwd", "passphrase", "secret", "token", "api_key", "apikey", "access_key",
    "private_key", "authorization", "credential", "session", "csrf", "signature", "card_number",
    "cvv", "ssn",
)  # fmt: skip
#: Names that are secret only as the whole name (``?key=``, ``?sig=``, ``?code=``...).
SECRET_NAMES = frozenset({"key", "sig", "auth", "code", "pw", "pwd", "jwt"})

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_SEPARATORS = re.compile(r"([&;])")
_CACHE_SIZE = 4096


def fold(name: str) -> str:
    """``name`` lower-cased and stripped to letters and digits: ``X-Api-Key`` -> ``xapikey``."""
    return _NOT_ALNUM.sub("", name.lower())


class SecretNames:
    """``secret(name)``: tell whether ``name`` is secret under the rule above; cached per name
    (names come from clients: the cache is bounded)."""

    def __init__(self, words: Iterable[str] = SECRET_WORDS) -> None:
        self.words = tuple(word for word in (fold(w) for w in words) if word)
        self._known: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        known = self._known.get(name)
        if known is None:
            folded = fold(name)
            known = folded in SECRET_NAMES or any(word in folded for word in self.words)
            if len(self._known) >= _CACHE_SIZE:
                self._known.clear()
            self._known[name] = known
        return known


def redact_query(query: str, secret: Callable[[str], bool], mark: str) -> str:
    """``query`` (no ``?``) with the value of each parameter whose name is ``secret`` replaced by
    ``mark``; the rest untouched, byte for byte. ``&`` separates parameters, and ``;`` too (some
    servers and frameworks take it)."""
    if not query:
        return query
    semicolons = ";" in query
    pieces = _SEPARATORS.split(query) if semicolons else query.split("&")
    changed = False
    for index in range(0, len(pieces), 2 if semicolons else 1):
        name, equals, _value = pieces[index].partition("=")
        if equals and name and secret(unquote_plus(name)):  # a bare ``?flag`` holds no value
            pieces[index] = f"{name}={mark}"
            changed = True
    if not changed:
        return query
    return "".join(pieces) if semicolons else "&".join(pieces)
