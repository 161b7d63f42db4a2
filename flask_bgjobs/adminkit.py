"""What the admin pages of both extensions share: access, CSRF, security headers, parameters.

Flask only; it knows nothing of jobs or logs. A blueprint is protected with one call::

    guard = AdminGuard(authorize=my_check, name="sqlitelogs")
    guard.protect(blueprint)

- Access: with an authorizer (a callable taking no argument, run in the request context) its
  answer decides; without one, the pages answer 403 unless ``app.debug`` or ``app.testing``.
- CSRF: every request other than GET, HEAD and OPTIONS needs a token signed with the app's
  ``SECRET_KEY``. Templates get ``csrf_token()``; the token is checked against a random value in a
  ``SameSite=Strict``, ``HttpOnly`` cookie (a signed double-submit token), so the app's own session
  is left alone.
- Headers: a strict Content-Security-Policy (no inline script or style) and friends on every
  response of the blueprint, error pages included.
- Parameters: ``int_arg``, ``month_arg``, ``sort_arg``... read ``request.args`` and answer a
  clear 400 for a malformed value, never a 500; a missing or empty value gives the default.
"""

from __future__ import annotations

import hmac
import re
import secrets
import weakref
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, abort, current_app, g, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Response

from .text import utf8_safe

#: Decides whether the current request may see the admin pages (truthy: yes).
Authorizer = Callable[[], object]

DEFAULT_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class AdminGuard:
    """The access rule, CSRF protection and security headers of one admin blueprint.

    ``name`` keeps the CSRF cookie and signatures of two blueprints apart. ``token_max_age`` is
    how long (seconds) a page's CSRF token stays valid.
    """

    def __init__(
        self,
        authorize: Authorizer | None,
        *,
        name: str,
        csp: str = DEFAULT_CSP,
        token_max_age: int = 12 * 3600,
    ) -> None:
        if authorize is not None and not callable(authorize):
            raise TypeError(
                f"authorize must be a callable taking no argument that returns True to allow "
                f"the request, not {authorize!r}"
            )
        self.authorize = authorize
        self.name = name
        self.csp = csp
        self.token_max_age = token_max_age
        self.cookie_name = f"{name}_csrf"
        self._salt = f"flask-bgjobs.adminkit.csrf.{name}"
        #: The URL prefixes of the protected blueprint, per app: (prefix, prefix + "/") pairs.
        self._prefixes: weakref.WeakKeyDictionary[object, tuple[str, ...]] = (
            weakref.WeakKeyDictionary()
        )

    def protect(self, blueprint: Blueprint) -> None:
        """Check access and CSRF before every request of ``blueprint``; add headers after.

        The headers also go on the responses under the blueprint's URL prefix that no route of
        the blueprint answered (a 404 for an unknown page, a 405 for a wrong method): Flask
        runs no hook of the blueprint for them.
        """
        blueprint.before_request(self.check_request)
        blueprint.after_request(self.finish_response)
        blueprint.context_processor(
            lambda: {
                "csrf_token": self.csrf_token,
                "csrf_enabled": self.csrf_enabled,
                "url_with": url_with,
            }
        )
        name = blueprint.name

        def remember_prefix(state: BlueprintSetupState) -> None:
            prefix = (state.url_prefix or "").rstrip("/")
            if not prefix:  # a blueprint at the root: only its own routes get the headers
                return
            app = state.app
            known = self._prefixes.get(app)
            self._prefixes[app] = (*(known or ()), prefix, f"{prefix}/")
            if known is None:
                self._guard_strays(app, name)

        blueprint.record(remember_prefix)

    def _guard_strays(self, app: Any, name: str) -> None:
        """Give the headers to the HTTP errors under the prefixes that no route of blueprint
        ``name`` answered. A wrapper of ``app.handle_http_exception`` rather than an
        ``after_app_request`` hook: it runs only for those errors, not for every request the
        app serves."""
        handle = app.handle_http_exception

        def handle_http_exception(error: Any) -> Any:
            result = handle(error)
            prefixes = self._prefixes.get(app, ())
            path = request.path
            if request.blueprint != name and (
                path.startswith(prefixes[1::2]) or path in prefixes[::2]
            ):
                return set_security_headers(app.make_response(result), self.csp)
            return result

        app.handle_http_exception = handle_http_exception

    # -- access ----------------------------------------------------------------------------------

    def allowed(self) -> bool:
        """Tell whether the current request may use the admin pages."""
        if self.authorize is not None:
            return bool(self.authorize())
        app = current_app
        return bool(app.debug or app.testing)

    def check_request(self) -> None:
        """``before_request``: 403 without access, 400 for an unsafe request without CSRF token."""
        if not self.allowed():
            if self.authorize is None:
                abort(
                    403,
                    description=(
                        "The admin pages are closed: pass authorize=<callable> to the extension "
                        "(it runs in the request and returns True to allow), or run the app in "
                        "debug or testing mode."
                    ),
                )
            abort(403)
        if request.method not in SAFE_METHODS:
            self.validate_csrf()

    # -- CSRF ------------------------------------------------------------------------------------

    def csrf_enabled(self) -> bool:
        """Tell whether tokens can be made: they need the app's ``SECRET_KEY``."""
        return bool(current_app.config.get("SECRET_KEY"))

    def csrf_token(self) -> str:
        """The token to put in a form's ``csrf_token`` field (or the ``X-CSRF-Token`` header)."""
        return self._serializer().dumps(self._nonce())

    def validate_csrf(self) -> None:
        """Abort with 400 unless the request carries a valid token matching its cookie."""
        if not self.csrf_enabled():
            _bad_request(
                "This action needs a CSRF token, and tokens need the app's SECRET_KEY: set "
                "app.config['SECRET_KEY'] to a long random value."
            )
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            abort(403, description="Cross-origin request refused.")
        token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
        cookie = request.cookies.get(self.cookie_name, "")
        try:
            nonce = self._serializer().loads(token, max_age=self.token_max_age)
        except BadData:
            nonce = None
        if not (
            isinstance(nonce, str)
            and _NONCE.match(cookie)
            and hmac.compare_digest(nonce.encode(), cookie.encode())
        ):
            _bad_request(
                "The CSRF token is missing, invalid or expired. Reload the page and try again."
            )

    def finish_response(self, response: Response) -> Response:
        """``after_request``: security headers, and the CSRF cookie if a token was made."""
        set_security_headers(response, self.csp)
        nonce = g.get(self._g_key)
        if nonce is not None and request.cookies.get(self.cookie_name) != nonce:
            response.set_cookie(
                self.cookie_name,
                nonce,
                max_age=self.token_max_age,
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
                path=request.script_root or "/",
            )
        return response

    @property
    def _g_key(self) -> str:
        return f"_adminkit_nonce_{self.name}"

    def _nonce(self) -> str:
        nonce = g.get(self._g_key)
        if nonce is None:
            cookie = request.cookies.get(self.cookie_name, "")
            nonce = cookie if _NONCE.match(cookie) else secrets.token_hex(16)
            setattr(g, self._g_key, nonce)
        return str(nonce)

    def _serializer(self) -> URLSafeTimedSerializer:
        secret = current_app.config.get("SECRET_KEY")
        if not secret:
            raise RuntimeError(
                "CSRF tokens need the app's SECRET_KEY: set app.config['SECRET_KEY'] to a long "
                "random value"
            )
        return URLSafeTimedSerializer(secret, salt=self._salt)


def render(template: str, **context: Any) -> str:
    """``render_template``, made safe to send: a lone surrogate (``"\\ud800"``, which a JSON
    value may hold but UTF-8 cannot encode) becomes U+FFFD instead of failing the response."""
    return utf8_safe(render_template(template, **context))


def set_security_headers(response: Response, csp: str = DEFAULT_CSP) -> Response:
    """Put the Content-Security-Policy and the other security headers on ``response``."""
    response.headers["Content-Security-Policy"] = csp
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# -- query parameters ------------------------------------------------------------------------------


def _bad_request(message: str) -> NoReturn:
    abort(400, description=message)


def _raw(name: str) -> str | None:
    value = request.args.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def text_arg(name: str, *, max_length: int = 200) -> str | None:
    """A free-text parameter, or ``None`` when absent or blank; 400 if too long or binary."""
    value = _raw(name)
    if value is None:
        return None
    if len(value) > max_length:
        _bad_request(f"{name} is limited to {max_length} characters.")
    if _CONTROL.search(value):
        _bad_request(f"{name} must not contain control characters.")
    return value


def int_arg(
    name: str, default: int | None, *, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    """A whole-number parameter within ``[minimum, maximum]``; 400 when malformed or outside."""
    value = _raw(name)
    if value is None:
        return default
    if len(value) > 20 or not re.fullmatch(r"[+-]?\d+", value):
        _bad_request(f"{name} must be a whole number, not {value[:40]!r}.")
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        _bad_request(f"{name} must be between {minimum} and {maximum}, not {number}.")
    return number


def float_arg(name: str, *, minimum: float = 0.0, maximum: float = 1e12) -> float | None:
    """A decimal-number parameter within ``[minimum, maximum]``, or ``None`` when absent."""
    value = _raw(name)
    if value is None:
        return None
    if len(value) > 30 or not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", value):
        _bad_request(f"{name} must be a number, not {value[:40]!r}.")
    number = float(value)
    if not minimum <= number <= maximum:
        _bad_request(f"{name} must be between {minimum:g} and {maximum:g}, not {number:g}.")
    return number


def month_arg(name: str = "month", default: str | None = None) -> str | None:
    """A ``YYYY-MM`` month parameter; 400 when malformed."""
    value = _raw(name)
    if value is None:
        return default
    if not _MONTH.match(value):
        _bad_request(f"{name} is written YYYY-MM (e.g. 2026-03), not {value[:40]!r}.")
    return value


def choice_arg(name: str, choices: Collection[str], default: str | None = None) -> str | None:
    """One of ``choices``; 400 for anything else."""
    value = _raw(name)
    if value is None:
        return default
    if value not in choices:
        _bad_request(f"{name} must be one of {', '.join(sorted(choices))}; not {value[:40]!r}.")
    return value


def sort_arg(name: str, allowed: Collection[str], default: str) -> str:
    """A sort order: a column of ``allowed``, ``-`` in front for descending; 400 otherwise."""
    value = _raw(name)
    if value is None:
        return default
    if value.lstrip("-") not in allowed or value.startswith("--"):
        _bad_request(
            f"{name} must be one of {', '.join(sorted(allowed))} (with '-' in front for "
            f"descending), not {value[:40]!r}."
        )
    return value


def bool_arg(name: str) -> bool | None:
    """``1/true/yes/on`` or ``0/false/no/off``; ``None`` when absent; 400 otherwise."""
    value = _raw(name)
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    _bad_request(f"{name} must be 1 or 0, not {value[:40]!r}.")


def datetime_arg(name: str) -> datetime | None:
    """A date (``2026-03-15``) or date and time (``2026-03-15T08:30``) in UTC; 400 when malformed.

    A value with an explicit offset (``+01:00``, ``Z``) is converted to UTC.
    """
    value = _raw(name)
    if value is None:
        return None
    parsed: datetime | None = None
    if len(value) <= 40 and re.fullmatch(r"[0-9T:.+\-Z ]+", value):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
    if parsed is None or not 1970 <= parsed.year <= 9998:
        _bad_request(
            f"{name} is a date (2026-03-15) or date and time (2026-03-15T08:30), "
            f"not {value[:40]!r}."
        )
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def args_without(*names: str) -> dict[str, Any]:
    """The current query parameters minus ``names`` (to build links that change one of them).

    Give them to :func:`url_with`, not to ``url_for(endpoint, **args)``: a parameter named
    ``endpoint``, ``_external`` or like a route argument would clash with ``url_for``'s own.
    """
    return {k: v for k, v in request.args.items() if k not in names and v != ""}


def url_with(endpoint: str, params: Mapping[str, Any] | None = None, **values: Any) -> str:
    """``url_for(endpoint, **values)`` with ``params`` as its query string, whatever their names
    (``endpoint``, ``_external``, ``kind``... mean nothing to ``url_for`` here). Templates of a
    protected blueprint have it as ``url_with``."""
    base = url_for(endpoint, **values)
    pairs = [(k, v) for k, v in (params or {}).items() if v is not None and v != ""]
    if not pairs:
        return base
    return f"{base}{'&' if '?' in base else '?'}{urlencode(pairs)}"
