"""The jobs admin pages: a blueprint registered by ``BackgroundJobs.init_app``.

Pages under ``BGJOBS_ADMIN_URL_PREFIX`` (default ``/admin/jobs``; ``None`` turns them off): the
dashboard, the live queue, completed and failed jobs by month, one job, scheduled tasks and
worker processes, plus the JSON they poll under ``/api/``. Access, CSRF and security headers come
from :mod:`flask_bgjobs.adminkit`, shared with the request-log pages.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ..adminkit import AdminGuard
    from ..config import Settings
    from ..extension import BackgroundJobs

#: The guard of each app's admin blueprint (an app set up twice keeps its blueprint).
_guards: weakref.WeakKeyDictionary[Flask, AdminGuard] = weakref.WeakKeyDictionary()


def register_admin(extension: BackgroundJobs, app: Flask, settings: Settings) -> None:
    """Register the admin blueprint on ``app`` unless ``BGJOBS_ADMIN_URL_PREFIX`` is ``None``.

    The authorizer is ``BackgroundJobs(authorize=...)``, else ``BGJOBS_ADMIN_AUTHORIZE``. An app
    set up again (``init_app`` of another extension) keeps its blueprint and prefix; the new
    authorizer applies.
    """
    prefix = settings.admin_url_prefix
    if prefix is None:
        return
    if not isinstance(prefix, str) or not prefix.startswith("/") or prefix != prefix.strip():
        raise ValueError(
            f"BGJOBS_ADMIN_URL_PREFIX must be a URL path starting with '/' (or None to turn "
            f"the admin pages off), not {prefix!r}"
        )
    authorize = extension.authorize if extension.authorize is not None else settings.admin_authorize
    if authorize is not None and not callable(authorize):
        raise ValueError(
            f"BGJOBS_ADMIN_AUTHORIZE must be a callable taking no argument that returns True to "
            f"allow the request (or None), not {authorize!r}"
        )
    from ..adminkit import AdminGuard
    from .blueprint import NAME, create_blueprint

    if app in _guards and NAME in app.blueprints:
        _guards[app].authorize = authorize
        return
    guard = _guards[app] = AdminGuard(authorize, name=NAME)
    app.register_blueprint(create_blueprint(guard), url_prefix=prefix.rstrip("/"))
