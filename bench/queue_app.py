"""The app that ``bench/bench_queue.py`` measures, in its own process and in worker processes.

``create_app(directory)`` keeps ``jobs.db`` in ``directory`` (default: ``$BENCH_QUEUE_DIR``, which
``flask --app queue_app:create_app jobs worker`` subprocesses get from the benchmark). The runner
never starts by itself (``BGJOBS_AUTOSTART=False``): the benchmark decides when jobs drain.
``config`` (``BGJOBS_SQLITE_SYNCHRONOUS="FULL"``...) is applied before the extension reads it;
worker subprocesses get the same from ``$BENCH_QUEUE_CONFIG`` (a JSON object).

``mark`` and ``record`` run the job bodies of ``peer_tasks`` that
``bench/bench_peers.py`` runs on every queue it compares.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_tasks

from flask_bgjobs import BackgroundJobs

#: ``perf_counter()`` at which each ``stamp`` job started in this process, by its request's ``n``.
STARTS: dict[int, float] = {}
#: What the ``gate`` job waits for: the fan-out's parent completes when the benchmark says so.
GATE = threading.Event()


def create_app(directory: str | None = None, **config: Any) -> Flask:
    folder = directory or os.environ.get("BENCH_QUEUE_DIR")
    if not folder:
        raise RuntimeError("give create_app a directory or set BENCH_QUEUE_DIR")
    app = Flask("queue_app", instance_path=str(Path(folder).resolve()))
    app.config.update(BGJOBS_DATABASE_DIR=str(Path(folder).resolve()), BGJOBS_AUTOSTART=False)
    app.config.update(json.loads(os.environ.get("BENCH_QUEUE_CONFIG") or "{}"), **config)
    jobs = BackgroundJobs(app)

    @jobs.command
    def noop(request: dict[str, Any]) -> None:
        return None

    @jobs.command
    def stamp(request: dict[str, Any]) -> dict[str, float]:
        """Record when the job started: ``perf_counter`` here, wall time in its result."""
        STARTS[request["n"]] = time.perf_counter()
        return {"wall": time.time()}

    @jobs.command
    def gate() -> None:
        GATE.wait(60)

    @jobs.command
    def mark(request: dict[str, Any]) -> None:
        peer_tasks.mark(request["path"])

    @jobs.command
    def record(request: dict[str, Any]) -> None:
        peer_tasks.record(request["path"], request["n"], request.get("pause", 0.0))

    return app
