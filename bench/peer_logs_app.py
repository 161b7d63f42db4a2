"""The small JSON app of ``bench/bench_peers.py``, with one request recorder or none.

``create_app(variant, directory)``; under gunicorn both come from ``$BENCH_PEER_VARIANT`` and
``$BENCH_PEER_DIR`` (``gunicorn 'peer_logs_app:create_app()'``). Every recorder keeps its
database in ``directory`` and is set up after the app's routes, as each one's docs say:

- ``none``: no recorder, the baseline;
- ``sqlitelogs``: ``SqliteRequestLogger(app)`` with its defaults (bodies off, NORMAL);
- ``sqlitelogs-bodies``: request and response bodies tracked as well;
- ``sqlitelogs-full``: the defaults with ``SQLITELOGS_SQLITE_SYNCHRONOUS = "FULL"``;
- ``dashboard-1``, ``dashboard-3``: Flask-MonitoringDashboard, every endpoint at that monitoring
  level (``config.monitor_level``, the level new endpoints get), ``dashboard.bind(app)``;
- ``profiler``: flask-profiler with its SQLite storage through ``flask_profiler.init_app(app)``:
  its documented ``Profiler(app)`` calls ``app.before_first_request``, which Flask 3 removed.

``count_entries(variant, directory)`` counts what a recorder wrote, by reading its database.
A gunicorn worker leaves a ``ready-PID`` file in the directory once its app is made.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = (
    "none",
    "sqlitelogs",
    "sqlitelogs-bodies",
    "sqlitelogs-full",
    "dashboard-1",
    "dashboard-3",
    "profiler",
)
PAYLOAD: dict[str, Any] = {
    "id": 42,
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "roles": ["admin", "editor"],
    "active": True,
}


def create_app(variant: str | None = None, directory: str | None = None) -> Flask:
    variant = variant or os.environ.get("BENCH_PEER_VARIANT", "none")
    folder = directory or os.environ.get("BENCH_PEER_DIR")
    if variant not in VARIANTS or not folder:
        raise RuntimeError(f"variant is one of {VARIANTS} and a directory is needed")
    where = Path(folder).resolve()
    app = Flask("peer_logs_app", instance_path=str(where))
    app.secret_key = "bench-only"

    @app.get("/api/user")
    def user() -> dict[str, Any]:
        return PAYLOAD

    if variant.startswith("sqlitelogs"):
        from flask_sqlitelogs import SqliteRequestLogger

        if variant == "sqlitelogs-full":
            app.config["SQLITELOGS_SQLITE_SYNCHRONOUS"] = "FULL"
        bodies = variant == "sqlitelogs-bodies"
        SqliteRequestLogger(
            app, enable_request_body_tracking=bodies, enable_response_tracking=bodies
        )
    elif variant.startswith("dashboard"):
        import flask_monitoringdashboard as dashboard

        # Both are read when the dashboard's database module is imported (by bind).
        dashboard.config.database_name = f"sqlite:///{where / 'dashboard.db'}"
        dashboard.config.monitor_level = int(variant.rpartition("-")[2])
        dashboard.bind(app)
    elif variant == "profiler":
        import flask_profiler

        app.config["flask_profiler"] = {
            "enabled": True,
            "storage": {"engine": "sqlite", "FILE": str(where / "profiler.sql")},
            "basicAuth": {"enabled": False},
        }
        flask_profiler.init_app(app)
    if directory is None:  # a gunicorn worker: tell the benchmark that this one has booted
        (where / f"ready-{os.getpid()}").touch()
    return app


def count_entries(variant: str, directory: Path) -> int:
    """Rows the recorder wrote for requests to the app (0 for ``none``)."""
    if variant.startswith("sqlitelogs"):
        files = sorted((directory / "requests").glob("requests_*.db"))
        return sum(count(path, "SELECT count(*) FROM request_log") for path in files)
    if variant.startswith("dashboard"):
        return count(directory / "dashboard.db", "SELECT count(*) FROM Request")
    if variant == "profiler":
        return count(directory / "profiler.sql", "SELECT count(*) FROM measurements")
    return 0


def count(path: Path, sql: str) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()
