"""A small app for the process tests: ``flask --app tests.apps.queue_app:create_app jobs worker``.

Worker subprocesses and the test process build it with the same factory and the same instance
folder, so they share one ``jobs.db``. Configuration comes from the environment:

- ``BGJOBS_TEST_INSTANCE``: the instance folder (required);
- ``BGJOBS_TEST_RUNS``: the file ``record`` appends ``"<job id> <pid>"`` lines to;
- any other ``BGJOBS_*`` variable (``BGJOBS_LEASE_SECONDS=1``, ``BGJOBS_CANCEL_GRACE=0.2``, ...)
  becomes that config key, its value parsed as JSON when it is JSON (``1`` is an int, ``0.5`` a
  float, ``false`` a bool), else kept as a string; ``FLASK_*`` variables are read too.

``BGJOBS_AUTOSTART`` is always false: only ``flask jobs worker`` processes run jobs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask

from flask_bgjobs import BackgroundJobs, current_job
from flask_bgjobs.schedule import Schedule

#: Environment variables that configure the tests, not the extension.
TEST_VARIABLES = frozenset({"BGJOBS_TEST_INSTANCE", "BGJOBS_TEST_RUNS", "BGJOBS_TEST_TICK"})

jobs = BackgroundJobs()


def create_app(instance: str | os.PathLike[str] | None = None) -> Flask:
    """The app, its instance folder from ``instance`` or ``$BGJOBS_TEST_INSTANCE``."""
    folder = instance if instance is not None else os.environ.get("BGJOBS_TEST_INSTANCE")
    if not folder:
        raise RuntimeError("set BGJOBS_TEST_INSTANCE to the instance folder of the test")
    app = Flask(__name__, instance_path=str(Path(folder).resolve()))
    app.config.from_prefixed_env(prefix="FLASK")
    for key, raw in os.environ.items():
        if key.startswith("BGJOBS_") and key not in TEST_VARIABLES:
            app.config[key] = _parse(raw)
    app.config["BGJOBS_AUTOSTART"] = False
    jobs.init_app(app)
    if os.environ.get("BGJOBS_TEST_TICK"):
        # Every worker registers the same task: the scheduler test runs three of them.
        jobs.recurring_command("record", Schedule.every_second, name="tick", overlap=True)
    return app


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _mark(path: str) -> None:
    """Write our pid to ``path`` atomically: a reader sees no file or the whole pid."""
    partial = Path(f"{path}.partial")
    partial.write_text(str(os.getpid()))
    os.replace(partial, path)


@jobs.command
def record() -> None:
    """Append ``"<job id> <pid>\\n"`` to ``$BGJOBS_TEST_RUNS`` in one ``O_APPEND`` write."""
    line = f"{current_job.id} {os.getpid()}\n".encode()
    fd = os.open(os.environ["BGJOBS_TEST_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@jobs.command
def block_first_attempt(req: dict[str, Any]) -> dict[str, Any]:
    """Attempt 1: write ``req["marker"]`` (our pid), then wait for ``req["release"]``.

    The release file never appears in the tests, so attempt 1 only ends when the job is asked to
    stop (``current_job.cancelled``) or its process dies. Later attempts complete at once.
    """
    if current_job.attempt == 1:
        _mark(req["marker"])
        release = Path(req["release"])
        while not release.exists():
            current_job.raise_if_cancelled()
            time.sleep(0.01)
    return {"attempt": current_job.attempt, "pid": os.getpid()}


@jobs.command
def slow(req: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``req["marker"]`` (if given), sleep ``req["seconds"]`` (default 0.5), return."""
    req = req or {}
    if "marker" in req:
        _mark(req["marker"])
    seconds = float(req.get("seconds", 0.5))
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


@jobs.command(name="record_serial", worker="serial")
def record_serial() -> None:
    """``record`` on the named worker ``serial``: one at a time, in enqueue order."""
    record()
