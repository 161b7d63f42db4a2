"""Redaction: secrets in headers, JSON and form bodies and query strings are replaced, never stored.

A header is secret when its name is one of :data:`ALWAYS_REDACTED`, matches a pattern of
``SQLITELOGS_REDACT_HEADERS`` (``fnmatch`` style, any case), or looks secret by the rule of the
fields below (``X-Access-Token``, ``Private-Token``). A JSON or form field, or a query
parameter, is secret when its name, lower-cased and stripped of everything but letters and
digits, contains one of ``SQLITELOGS_REDACT_FIELDS`` (so ``api_key`` catches ``X-Api-Key``,
``apiKey`` and ``user_api_key``), or is one of the short names ``key``, ``sig``, ``auth``,
``code``, ``pw``, ``pwd``, ``jwt``: the rule of :mod:`flask_bgjobs.redaction`, which the job
pages apply to ``reply_to`` URLs too. The value is replaced by :data:`REDACTED`, whatever its type.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
from collections.abc import Iterable
from typing import Any

from flask_bgjobs.redaction import SecretNames, redact_query

#: What a redacted value reads as.
REDACTED = "[REDACTED]"

#: Headers redacted whatever the configuration says.
ALWAYS_REDACTED = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)

#: Headers whose value keeps its first word (the scheme: ``Bearer [REDACTED]``).
_KEEP_SCHEME = frozenset({"authorization", "proxy-authorization"})

_TEXTUAL = re.compile(
    r"^(text/.*|application/(json|.*\+json|x-ndjson|xml|.*\+xml|x-www-form-urlencoded|"
    r"javascript|graphql|x-yaml|yaml|csv))$"
)
_FORM = "application/x-www-form-urlencoded"
_JSON_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]*)')
_MAX_DEPTH = 64
_CACHE_SIZE = 4096
_PLAIN, _SECRET, _URL = 0, 1, 2
#: Headers that carry a URL whose query string may hold secrets.
_URL_HEADERS = frozenset({"referer", "location", "content-location"})


def is_textual(mimetype: str | None) -> bool:
    """Tell whether a body of this (lower-case, parameter-free) mimetype is text worth keeping."""
    return bool(mimetype) and _TEXTUAL.match(mimetype or "") is not None


def mimetype_of(content_type: str | None) -> str:
    """``application/json`` from ``application/json; charset=utf-8``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


class Redactor:
    """Applies one app's redaction rules; decisions per name are cached."""

    def __init__(self, header_patterns: Iterable[str], field_names: Iterable[str]) -> None:
        self.header_patterns = tuple(pattern.lower() for pattern in header_patterns)
        self._secret_name = SecretNames(field_names)
        self._headers: dict[str, bool] = {}
        self._treatments: dict[str, int] = {}

    # -- names ---------------------------------------------------------------------------------

    def is_secret_header(self, name: str) -> bool:
        """Tell whether the header ``name`` (any case) is redacted."""
        known = self._headers.get(name)
        if known is None:
            lowered = name.lower()
            known = (
                lowered in ALWAYS_REDACTED
                or any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self.header_patterns)
                # X-Access-Token, Private-Token, X-Vault-Token, X-Hub-Signature...
                or self.is_secret_field(name)
            )
            _remember(self._headers, name, known)
        return known

    def is_secret_field(self, name: str) -> bool:
        """Tell whether a JSON/form field or query parameter called ``name`` is redacted."""
        return self._secret_name(name)

    # -- values --------------------------------------------------------------------------------

    def headers(self, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Headers as a dict (repeated names joined by ``, ``) with secret values redacted."""
        result: dict[str, str] = {}
        treatments = self._treatments
        for name, value in pairs:
            treatment = treatments.get(name)
            if treatment is None:
                treatment = self._treatment(name)
            if treatment == _SECRET:
                value = _redact_header_value(name, value)
            elif treatment == _URL:
                value = self.url(value)
            if name in result:
                result[name] = f"{result[name]}, {value}"
            else:
                result[name] = value
        return result

    def needs_redaction(self, name: str) -> bool:
        """Tell whether the value of header ``name`` may need redacting (secret, or a URL)."""
        return self._treatment(name) != _PLAIN

    def _treatment(self, name: str) -> int:
        if self.is_secret_header(name):
            treatment = _SECRET
        elif name.lower() in _URL_HEADERS:
            treatment = _URL
        else:
            treatment = _PLAIN
        if len(self._treatments) >= _CACHE_SIZE:
            self._treatments.clear()
        self._treatments[name] = treatment
        return treatment

    def query(self, query_string: str) -> str:
        """A query string with the values of secret parameters redacted, the rest untouched."""
        return redact_query(query_string, self._secret_name, REDACTED)

    def url(self, url: str) -> str:
        """A URL with its query string redacted."""
        base, sep, rest = url.partition("?")
        if not sep:
            return url
        query, hash_sep, fragment = rest.partition("#")
        return f"{base}?{self.query(query)}{hash_sep}{fragment}"

    def json_value(self, value: Any, depth: int = 0) -> Any:
        """A decoded JSON document with the values of secret keys redacted (a new object)."""
        if depth > _MAX_DEPTH:
            return REDACTED
        if isinstance(value, dict):
            return {
                key: REDACTED
                if isinstance(key, str) and self.is_secret_field(key)
                else self.json_value(item, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.json_value(item, depth + 1) for item in value]
        return value

    def json_text(self, text: str) -> str:
        """JSON text redacted; text that does not parse is redacted pair by pair."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            # Cut short or malformed: its "name": value pairs; not JSON at all (a form sent as
            # JSON): its name=value pairs.
            if text.lstrip()[:1] not in ("{", "[") and "=" in text:
                return self.query(text)
            return _JSON_PAIR.sub(self._redact_pair, text)
        redacted = self.json_value(document)
        result = json.dumps(redacted, ensure_ascii=False)
        if not result.isascii():
            try:
                result.encode("utf-8")
            except UnicodeEncodeError:
                # A "\ud800" escape decodes to a lone surrogate, which UTF-8 (and so SQLite)
                # cannot hold: keep the escapes as the client sent them.
                result = json.dumps(redacted)
        return result

    def body(self, data: bytes, mimetype: str) -> str:
        """A textual body decoded (UTF-8) and redacted by its type (JSON or form)."""
        text = data.decode("utf-8", "replace")
        if mimetype == _FORM:
            return self.query(text)
        if "json" in mimetype:
            return self.json_text(text)
        return text

    def capped_body(self, data: bytes, mimetype: str, cap: int) -> str:
        """:meth:`body`, cut to at most ``cap`` bytes of UTF-8 (redacted before it is cut)."""
        text = self.body(data, mimetype)
        encoded = text.encode("utf-8")
        if len(encoded) <= cap:
            return text
        return encoded[:cap].decode("utf-8", "ignore")

    def _redact_pair(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if "\\" in name:  # "pass\u0077ord" is "password"
            with contextlib.suppress(ValueError):
                name = json.loads(f'"{name}"')
        if self.is_secret_field(name):
            return f'"{match.group(1)}"{match.group(2)}"{REDACTED}"'
        return match.group(0)


def _redact_header_value(name: str, value: str) -> str:
    if name.lower() in _KEEP_SCHEME:
        scheme, space, _rest = value.partition(" ")
        if space and scheme.isalpha() and len(scheme) <= 20:
            return f"{scheme} {REDACTED}"
    return REDACTED


def _remember(cache: dict[str, bool], name: str, decision: bool) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()  # names come from clients: never let them grow the cache without bound
    cache[name] = decision
