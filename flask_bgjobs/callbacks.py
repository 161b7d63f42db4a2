"""Delivery of JSON results to ``reply_to`` URLs.

A ``reply_to`` value is a URL with two optional additions in front of it::

    [METHOD ][credentials@]http(s)://host[:port]/path[?query]

``METHOD`` is one of ``GET``, ``POST``, ``PUT``, ``PATCH`` and ``DELETE`` (any case, default
``POST``), separated from the rest by whitespace. ``credentials`` take one of three forms:

* ``user:password`` sends HTTP Basic authentication;
* ``http.Header-Name:value`` sends a request header (the ``http.`` prefix marks a header);
* ``token`` sends ``Authorization: Bearer token``.

A password, header value or token written as ``$NAME`` is read from the environment variable
``NAME`` when the URL is parsed. Every part may be URL-encoded: ``%40`` for ``@``, ``%3A`` for
``:``, ``%24`` for a literal leading ``$``. For example::

    send_json_callback("PUT $HOOK_TOKEN@https://example.org/hooks/7", {"ok": True})
    send_json_callback("http.X-API-Key:$API_KEY@https://example.org/hooks", result)
    send_json_callback("ci:s3cr%40t@https://example.org/hooks", result)

Secrets never appear in the messages of the errors raised here: they name the URL as
:func:`redact_reply_to` shows it, with the credentials, and the values of query parameters that
look secret (``?token=``, ``?api_key=``, ``?sig=``...), replaced by ``***``.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from .errors import BgJobsError, InvalidJobError
from .redaction import SecretNames, redact_query

__all__ = [
    "METHODS",
    "ReplyTo",
    "ReplyToError",
    "parse_reply_to",
    "redact_reply_to",
    "send_json_callback",
]

#: The HTTP methods a ``reply_to`` URL may name.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

#: What every parse error tells the user to write.
_EXPECTED = (
    "expected '[METHOD ][credentials@]http(s)://host/path' where credentials are "
    "'user:password', 'http.Header-Name:value' or 'token'"
)

#: A method word followed by whitespace at the start of a ``reply_to`` value.
_METHOD_PREFIX = re.compile(r"([A-Za-z]+)\s+(\S.*)", re.DOTALL)

#: A URL scheme followed by ``://`` (RFC 3986 scheme characters).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")

#: The credentials separator: an ``@`` directly followed by a scheme and ``://``.
_CREDENTIALS_END = re.compile(r"@(?=[A-Za-z][A-Za-z0-9+.\-]*://)")

#: An HTTP header name (RFC 9110 ``token``).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z\-]+")

#: A header value or token we can send as is: visible ASCII, inner spaces and tabs.
_HEADER_VALUE = re.compile(r"[!-~]([!-~ \t]*[!-~])?")

_REDACTED = "***"

#: Query parameters whose values :func:`redact_reply_to` hides: the request logs' default rule.
_SECRET_PARAM = SecretNames()


@dataclass(frozen=True)
class ReplyTo:
    """A parsed ``reply_to`` value, ready to be sent.

    Its ``repr`` masks header values and credentials, so that it can be logged.

    :ivar method: the HTTP method, upper case.
    :ivar url: the ``http`` or ``https`` URL, without the credentials part.
    :ivar headers: request headers to send (a header credential, or the Bearer ``Authorization``).
    :ivar auth: ``(user, password)`` for HTTP Basic authentication, or ``None``.
    """

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None

    def __repr__(self) -> str:
        headers = {name: _REDACTED for name in self.headers}
        auth = None if self.auth is None else (_REDACTED, _REDACTED)
        return (
            f"ReplyTo(method={self.method!r}, url={redact_reply_to(self.url)!r}, "
            f"headers={headers!r}, auth={auth!r})"
        )


class ReplyToError(BgJobsError):
    """A ``reply_to`` delivery failed: a non-2xx answer, a connection error or a timeout.

    :ivar url: the target as :func:`redact_reply_to` shows it (method included), never secrets.
    :ivar status: the HTTP status of the answer, or ``None`` when there was no answer.
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reply_to_error, (str(self), self.url, self.status))


def _rebuild_reply_to_error(message: str, url: str, status: int | None) -> ReplyToError:
    """Unpickle a :class:`ReplyToError` (its keyword-only arguments need this)."""
    return ReplyToError(message, url=url, status=status)


def _split_method(value: str) -> tuple[str | None, str]:
    """Split an optional leading method word from the rest of a ``reply_to`` value."""
    match = _METHOD_PREFIX.fullmatch(value)
    if match is None:
        return None, value
    return match.group(1), match.group(2)


def _split_credentials(value: str) -> tuple[str | None, str]:
    """Split ``credentials@scheme://...`` into the raw credentials and the URL.

    A value that starts with a scheme has no credentials. Otherwise the credentials end at the
    first ``@`` that is directly followed by a scheme and ``://``; ``(None, value)`` when there
    is no such ``@``.
    """
    if _SCHEME.match(value):
        return None, value
    match = _CREDENTIALS_END.search(value)
    if match is None:
        return None, value
    return value[: match.start()], value[match.end() :]


def _redact_netloc(url: str) -> str:
    """Mask a ``user:password@`` inside the authority of ``url``, if there is one."""
    scheme = _SCHEME.match(url)
    if scheme is None:
        return url
    start = scheme.end()
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at == -1:
        return url
    return f"{url[:start]}{_REDACTED}{url[at:]}"


def redact_reply_to(url: str) -> str:
    """Return ``url`` fit for display: its credentials replaced by ``***``.

    So are the values of query parameters whose names look secret: a name that, lower-cased and
    stripped to letters and digits, contains ``password``, ``token``, ``secret``, ``apikey``,
    ``signature``... or is ``key``, ``sig``, ``auth``, ``code``, ``pw``, ``pwd`` or ``jwt``.

    Works on any string, valid or not: ``"PUT user:pw@https://h/x"`` gives
    ``"PUT ***@https://h/x"``. A ``user:password@`` inside the URL's authority is masked too,
    and so is everything before the last ``@`` of a value that has no ``scheme://`` at all.

    :param url: a ``reply_to`` value.
    :returns: the value without secrets.
    """
    value = url.strip()
    method, rest = _split_method(value)
    credentials, target = _split_credentials(rest)
    if credentials is not None:
        shown = f"{_REDACTED}@{_redact_netloc(target)}"
    elif _SCHEME.match(target):
        shown = _redact_netloc(target)
    elif "@" in target:
        shown = f"{_REDACTED}{target[target.rfind('@') :]}"
    else:
        shown = target
    shown = _redact_query(shown)
    return shown if method is None else f"{method} {shown}"


def _redact_query(url: str) -> str:
    """Mask the values of the query parameters of ``url`` whose names look secret
    (``?token=...``, ``?api_key=...``, ``?sig=...``)."""
    base, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_sign, fragment = rest.partition("#")
    return f"{base}?{redact_query(query, _SECRET_PARAM, _REDACTED)}{hash_sign}{fragment}"


def _invalid(url: str, problem: str) -> InvalidJobError:
    """An :class:`InvalidJobError` about ``url`` (shown redacted) that says what is expected."""
    return InvalidJobError(f"invalid reply_to {redact_reply_to(url)!r}: {problem}; {_EXPECTED}")


def _secret(url: str, raw: str, what: str, environ: Mapping[str, str]) -> str:
    """Decode one secret part; ``$NAME`` reads the environment variable ``NAME``.

    The ``$`` is recognised before URL-decoding, so ``%24`` writes a literal leading ``$``.
    """
    if not raw.startswith("$"):
        return unquote(raw)
    name = unquote(raw[1:])
    if not name:
        raise _invalid(url, f"the {what} '$' names no environment variable")
    try:
        return environ[name]
    except KeyError:
        raise InvalidJobError(
            f"reply_to {redact_reply_to(url)!r}: environment variable {name!r} "
            f"(for the {what}) is not set"
        ) from None


def _check_header_value(url: str, value: str, what: str) -> None:
    """Refuse a header value that HTTP (or ``requests``) would reject, without echoing it."""
    if not value:
        raise _invalid(url, f"the {what} is empty")
    if _HEADER_VALUE.fullmatch(value) is None:
        raise _invalid(
            url,
            f"the {what} has characters a header cannot carry (control characters, "
            "non-ASCII, or leading/trailing whitespace)",
        )


def _parse_credentials(
    url: str, raw: str, environ: Mapping[str, str]
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Turn the raw credentials part into request headers or a Basic auth pair."""
    if not raw:
        raise _invalid(url, "nothing before '@'")
    if raw.startswith("http."):
        name_raw, colon, value_raw = raw[len("http.") :].partition(":")
        name = unquote(name_raw)
        if not colon or not name:
            raise _invalid(url, "a header credential needs a name and a value")
        if _HEADER_NAME.fullmatch(name) is None:
            raise _invalid(url, f"{name!r} is not a valid HTTP header name")
        value = _secret(url, value_raw, f"value of header {name}", environ)
        _check_header_value(url, value, f"value of header {name}")
        return {name: value}, None
    if ":" in raw:
        user_raw, _, password_raw = raw.partition(":")
        user = unquote(user_raw)
        password = _secret(url, password_raw, "password", environ)
        if ":" in user:
            raise _invalid(url, "the Basic auth user name cannot contain ':'")
        if not user and not password:
            raise _invalid(url, "both the Basic auth user and password are empty")
        return {}, (user, password)
    token = _secret(url, raw, "token", environ)
    _check_header_value(url, token, "token")
    return {"Authorization": f"Bearer {token}"}, None


def parse_reply_to(url: str, *, environ: Mapping[str, str] | None = None) -> ReplyTo:
    """Parse a ``reply_to`` value without touching the network.

    :param url: ``[METHOD ][credentials@]http(s)://host/path`` (see the module documentation).
    :param environ: where ``$NAME`` values are read; :data:`os.environ` by default.
    :returns: the method, the bare URL, the headers and the Basic auth pair to send.
    :raises InvalidJobError: the value is malformed, or names an environment variable that is
        not set. The message shows the value redacted and never contains a secret.
    """
    if environ is None:
        environ = os.environ
    if not isinstance(cast(object, url), str):
        raise InvalidJobError(f"reply_to must be a string, not {type(url).__name__}")
    value = url.strip()
    if not value:
        raise _invalid(url, "it is empty")
    method_word, rest = _split_method(value)
    method = "POST"
    if method_word is not None:
        method = method_word.upper()
        if method not in METHODS:
            raise _invalid(
                url, f"unknown method {method_word!r} (use one of {', '.join(sorted(METHODS))})"
            )
    raw_credentials, target = _split_credentials(rest)
    scheme = _SCHEME.match(target)
    if scheme is None:
        raise _invalid(url, "no 'http://' or 'https://' URL")
    if target[: scheme.end() - 3].lower() not in ("http", "https"):
        raise _invalid(url, "only http and https URLs are accepted")
    if any(char.isspace() for char in target):
        raise _invalid(url, "the URL contains whitespace (URL-encode it as %20)")
    try:
        parts = urlsplit(target)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise _invalid(url, f"the URL is malformed ({exc})") from None
    if not parts.hostname:
        raise _invalid(url, "the URL has no host")
    if "@" in parts.netloc:
        raise _invalid(url, "put credentials before the scheme, not inside the URL")
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if raw_credentials is not None:
        headers, auth = _parse_credentials(url, raw_credentials, environ)
    return ReplyTo(method=method, url=target, headers=headers, auth=auth)


class _NoAuth(AuthBase):
    """An auth object that changes nothing.

    Passing it stops ``requests`` from adding Basic auth found in ``~/.netrc``, which would
    replace a Bearer ``Authorization`` header of the ``reply_to`` value.
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


class _RejectCookies(DefaultCookiePolicy):
    """A cookie policy that keeps no cookie: ``reply_to`` targets must not share state."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


_session: requests.Session | None = None
_session_lock = threading.Lock()


def _forget_session_after_fork() -> None:
    """Drop the parent's session in a forked child: its pooled sockets belong to the parent."""
    global _session, _session_lock
    _session = None
    _session_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_session_after_fork)


def _get_session() -> requests.Session:
    """Return the module's shared session, creating it on first use."""
    global _session
    session = _session
    if session is not None:
        return session
    with _session_lock:
        if _session is None:
            created = requests.Session()
            created.cookies.set_policy(_RejectCookies())
            created.headers["User-Agent"] = "flask-bgjobs"
            _session = created
        return _session


def send_json_callback(url: str, payload: Any, timeout: float = 10.0) -> requests.Response:
    """Send ``payload`` as JSON to a ``reply_to`` URL and return the response.

    Redirects are not followed (a ``3xx`` is a failure), so that credentials in headers never
    travel to another host. One shared :class:`requests.Session` serves every thread.

    :param url: ``[METHOD ][credentials@]http(s)://host/path`` (see the module documentation).
    :param payload: any JSON-serialisable value; sent as the body, whatever the method.
    :param timeout: seconds to wait for the connection and then for each read.
    :returns: the 2xx response.
    :raises InvalidJobError: ``url`` is malformed or names an unset environment variable, or
        ``payload`` is not JSON-serialisable.
    :raises ReplyToError: the target answered with a non-2xx status, could not be reached, or
        did not answer within ``timeout``.
    """
    target = parse_reply_to(url)
    try:
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidJobError(f"reply_to payload is not JSON-serialisable: {exc}") from None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(target.headers)
    auth: AuthBase = _NoAuth()
    if target.auth is not None:
        user, password = target.auth
        auth = HTTPBasicAuth(user.encode("utf-8"), password.encode("utf-8"))
    shown = f"{target.method} {redact_reply_to(target.url)}"
    try:
        response = _get_session().request(
            target.method,
            target.url,
            data=body,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=False,
        )
    # The errors of requests repeat the URL with its query string (which may hold a token): they
    # are not chained, so that no traceback of a failed notification shows it.
    except requests.Timeout as exc:
        raise ReplyToError(
            f"reply_to {shown} did not answer within {timeout:g} s ({type(exc).__name__})",
            url=shown,
        ) from None
    except requests.RequestException as exc:
        raise ReplyToError(
            f"reply_to {shown} could not be reached ({type(exc).__name__})", url=shown
        ) from None
    if not 200 <= response.status_code < 300:
        status = response.status_code
        reason = f" {response.reason}" if response.reason else ""
        response.close()
        raise ReplyToError(f"reply_to {shown} answered {status}{reason}", url=shown, status=status)
    return response
