"""API jobs: a Flask view run through the app's whole request pipeline, as if it were called.

The request context is built from the job: its URL (from the endpoint and ``view_args``), method
and JSON body; ``before_request`` hooks, auth checks, error handlers and ``after_request`` hooks
all run. With Flask-Login set up, the job's user is logged in for that request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask
from werkzeug.routing import BuildError

from .errors import ApiJobError, InvalidJobError, UnknownCommandError
from .models import BackgroundJob

if TYPE_CHECKING:
    from .extension import BackgroundJobs

#: Methods whose request goes in the query string rather than a JSON body.
QUERY_METHODS = frozenset({"GET", "HEAD", "DELETE"})


def check_endpoint(app: Flask, endpoint: str, method: str, view_args: dict[str, Any]) -> str:
    """Return the path of ``endpoint`` for ``method``; raise a clear error if there is none."""
    try:
        rules = list(app.url_map.iter_rules(endpoint))
    except KeyError:
        known = ", ".join(sorted(app.view_functions)) or "none"
        raise UnknownCommandError(f"unknown endpoint {endpoint!r}; endpoints: {known}") from None
    allowed = sorted({m for rule in rules for m in rule.methods or ()})
    if method not in allowed:
        raise InvalidJobError(f"endpoint {endpoint!r} does not accept {method}; it accepts "
                              f"{', '.join(allowed)}")  # fmt: skip
    try:
        return app.url_map.bind("localhost").build(endpoint, view_args, method=method)
    except (BuildError, TypeError, ValueError) as error:  # converters raise the last two
        shown = repr(view_args)
        shown = shown if len(shown) <= 200 else f"{shown[:199]}…"
        raise InvalidJobError(f"no URL of endpoint {endpoint!r} fits view_args {shown}: "
                              f"{type(error).__name__}: {error}") from None  # fmt: skip


def call_view(extension: BackgroundJobs, app: Flask, job: BackgroundJob) -> Any:
    """Run the job's view through the full pipeline; its JSON (or text) is the job's result.

    A 4xx or 5xx answer raises :class:`ApiJobError` with the status and the body.
    """
    method = str(job.options.get("method", "POST"))
    view_args = dict(job.options.get("view_args") or {})
    path = check_endpoint(app, job.command, method, view_args)
    request: dict[str, Any] = {"method": method}
    if method in QUERY_METHODS:
        if isinstance(job.request, dict):
            request["query_string"] = job.request
    elif job.request is not None:
        request["json"] = job.request
    with app.test_request_context(path, **request):
        _log_in(extension, app, job)
        response = app.full_dispatch_request()
        body = response.get_data(as_text=True)
        status = response.status_code
        data = response.get_json(silent=True) if response.is_json else None
    if 200 <= status < 300:
        return data if data is not None else body
    raise ApiJobError(job.command, status, body)


def _log_in(extension: BackgroundJobs, app: Flask, job: BackgroundJob) -> None:
    """Make the job's user the request's user, for the app's own auth (Flask-Login)."""
    if job.user_id is None or getattr(app, "login_manager", None) is None:
        return
    from flask_login import login_user

    user = extension.load_user(job.user_id)
    if user is None:
        raise InvalidJobError(f"the user loader found no user {job.user_id!r}")
    login_user(user, force=True)
