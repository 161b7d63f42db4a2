"""The hello-world app that ``bench/bench_requestlogs.py`` measures, in-process and under gunicorn.

``create_app(variant, directory)``: ``variant`` is ``plain`` (no logger), ``default`` (the logger
with its default options: bodies off) or ``bodies`` (request and response bodies tracked);
``directory`` is the instance folder. Under gunicorn both come from ``$BENCH_LOGS_VARIANT`` and
``$BENCH_LOGS_DIR`` (``gunicorn 'requestlogs_app:create_app()'``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flask_sqlitelogs import SqliteRequestLogger

VARIANTS = ("plain", "default", "bodies")


def create_app(variant: str | None = None, directory: str | None = None, **config: object) -> Flask:
    """The app; ``config`` (``SQLITELOGS_CAPACITY=...``) is applied before the logger reads it."""
    variant = variant or os.environ.get("BENCH_LOGS_VARIANT", "default")
    folder = directory or os.environ.get("BENCH_LOGS_DIR")
    if variant not in VARIANTS or not folder:
        raise RuntimeError(f"variant is one of {VARIANTS} and a directory is needed")
    app = Flask("requestlogs_app", instance_path=str(Path(folder).resolve()))
    app.config.update(config)

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    if variant != "plain":
        bodies = variant == "bodies"
        SqliteRequestLogger(
            app, enable_request_body_tracking=bodies, enable_response_tracking=bodies
        )
    return app
