"""The blueprint of the jobs admin pages: its guard, error pages, template helpers and routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, ServiceUnavailable
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from .. import adminkit
from ..errors import DatabaseBusyError, StorageError
from . import actions, api, pages
from .formatting import Formatter
from .pages import wants_json

if TYPE_CHECKING:
    from ..extension import BackgroundJobs

NAME = "bgjobs"
#: The navigation bar: (endpoint, label).
NAV = (
    ("bgjobs.dashboard", "Dashboard"),
    ("bgjobs.queue", "Queue"),
    ("bgjobs.completed", "Completed"),
    ("bgjobs.failed", "Failed"),
    ("bgjobs.scheduled", "Scheduled"),
    ("bgjobs.workers", "Workers"),
)


def create_blueprint(guard: adminkit.AdminGuard) -> Blueprint:
    """The admin blueprint of one app, protected by ``guard`` (see :mod:`..adminkit`).

    Its views use the extension registered on the app they serve (``app.extensions["bgjobs"]``),
    found at each request: one extension may serve several apps, and an app set up again with
    another extension shows that one.
    """
    extension = cast("BackgroundJobs", LocalProxy(_current_extension))
    blueprint = Blueprint(
        NAME,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    guard.protect(blueprint)
    formatter = Formatter(extension)

    @blueprint.context_processor
    def helpers() -> dict[str, Any]:
        return {"fmt": formatter, "nav": NAV, "notice": actions.notice_text(request.args)}

    @blueprint.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response | str, int]:
        return _error(error)

    @blueprint.errorhandler(DatabaseBusyError)
    def busy(error: DatabaseBusyError) -> tuple[Response | str, int]:
        return _error(ServiceUnavailable(f"The job database is busy; try again. ({error})"))

    @blueprint.errorhandler(StorageError)
    def storage(error: StorageError) -> tuple[Response | str, int]:
        # A damaged or unreadable file (e.g. a month's file deleted or overwritten while in
        # use): the page says which, rather than a bare 500.
        return _error(ServiceUnavailable(f"A job database file could not be read: {error}"))

    pages.register(blueprint, extension)
    api.register(blueprint, extension)
    actions.register(blueprint, extension)
    return blueprint


def _current_extension() -> BackgroundJobs:
    return cast("BackgroundJobs", current_app.extensions["bgjobs"])


def _error(error: HTTPException) -> tuple[Response | str, int]:
    status = error.code or 500
    if wants_json():
        body = {"error": error.name, "status": status, "message": error.description}
        return jsonify(body), status
    page = adminkit.render("bgjobs/error.html", status=status, title=error.name,
                           message=error.description)  # fmt: skip
    return page, status
