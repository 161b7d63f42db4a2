"""The app that ``tests/test_logger_load.py`` serves with gunicorn: a hello view, logged, and a
``/_stats`` view (not logged) that tells what this worker's buffer holds, dropped and wrote.

Set-up comes from the environment: ``LOAD_DIR`` (the instance folder), ``LOAD_CAPACITY``,
``LOAD_FLUSH_INTERVAL`` and ``LOAD_BUSY_TIMEOUT``.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify

from flask_sqlitelogs import SqliteRequestLogger


def create_app() -> Flask:
    app = Flask("load_app", instance_path=os.environ["LOAD_DIR"])
    app.config.update(
        SQLITELOGS_CAPACITY=int(os.environ.get("LOAD_CAPACITY", "10000")),
        SQLITELOGS_FLUSH_INTERVAL=float(os.environ.get("LOAD_FLUSH_INTERVAL", "3")),
        SQLITELOGS_SQLITE_BUSY_TIMEOUT=float(os.environ.get("LOAD_BUSY_TIMEOUT", "5")),
        SQLITELOGS_EXCLUDE_PATHS=["/_stats"],
    )
    logs = SqliteRequestLogger(app)

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    @app.get("/_stats")
    def stats() -> Response:
        numbers = logs.stats()
        return jsonify(
            pid=os.getpid(),
            **{key: numbers[key] for key in ("pending", "dropped", "written", "failures")},
        )

    return app
