"""The app of the fault tests: ``tests.apps.queue_app`` plus fault hooks armed by the environment.

``flask --app tests.apps.chaos_app:create_app jobs worker`` runs the queue app's worker with:

- the command ``chaos``, which records each of its runs in a SQLite file of its own
  (``$CHAOS_EXECUTIONS``, table ``execution``: job id, attempt, pid, phase ``start``/``end``), so
  that the test counts every run, lost or repeated, outside the files under test;
- with ``CHAOS_DIE_AT=<point>:<n>``, a hook that kills the process with SIGKILL the ``n``-th time it
  reaches ``point``, after appending ``"<point> <pid> <job ids>"`` to ``$CHAOS_DEATHS``:

  ``claim-tx``  inside a claim's transaction, its rows taken but not committed;
  ``claim``     just after a claim committed, before any claimed job starts;
  ``run``       inside a running ``chaos`` job (after its ``start`` row);
  ``move``      between the two writes of the monthly move (the month's rows written, the queue
                not yet updated);
  ``lease``     inside a heartbeat's transaction that renews the leases of running jobs.

The hooks are monkeypatches of this test app, armed only in the worker processes the test starts;
the library has no fault hook of its own.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask

import flask_bgjobs.store as store_module
from flask_bgjobs import current_job
from flask_bgjobs.sqlite import WriteTx
from flask_bgjobs.store import JobStore

from .queue_app import create_app as create_queue_app
from .queue_app import jobs

POINTS = ("claim-tx", "claim", "run", "move", "lease")
EXECUTIONS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS execution (job_id INTEGER NOT NULL, attempt INTEGER NOT NULL, "
    "pid INTEGER NOT NULL, phase TEXT NOT NULL, at REAL NOT NULL)"
)


def create_app(instance: str | os.PathLike[str] | None = None) -> Flask:
    """The queue app; in a process started with ``CHAOS_DIE_AT``, with its fault hook armed."""
    app = create_queue_app(instance)
    armed = os.environ.get("CHAOS_DIE_AT")
    if armed:
        point, count = armed.split(":")
        _arm(point, int(count))
    return app


# -- the command ---------------------------------------------------------------------------------

_local = threading.local()


def _executions() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "executions", None)
    if conn is None:
        conn = sqlite3.connect(os.environ["CHAOS_EXECUTIONS"], timeout=60, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(EXECUTIONS_SCHEMA)
        _local.executions = conn
    return conn


def _note(phase: str) -> None:
    _executions().execute(
        "INSERT INTO execution VALUES (?, ?, ?, ?, ?)",
        (current_job.id, current_job.attempt, os.getpid(), phase, time.time()),
    )


@jobs.command
def chaos(req: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the run's start; sleep ``req["ms"]`` ms (the ``run`` hook may kill us there), or
    wait for the file ``req["release"]``; record the run's end.

    With ``req["cooperative"]`` it stops when asked (``current_job.cancelled``), as a well-behaved
    command does; otherwise it ignores stop requests.
    """
    req = req or {}
    _note("start")
    seconds = float(req.get("ms", 10)) / 1000
    release = Path(req["release"]) if req.get("release") else None
    cooperative = bool(req.get("cooperative"))
    if _hook is not None and _hook.point == "run":
        time.sleep(seconds / 2)
        _hook.reached([current_job.id])
        seconds /= 2
    deadline = time.monotonic() + (60.0 if release is not None else seconds)
    while time.monotonic() < deadline and not (release is not None and release.exists()):
        if cooperative:
            current_job.raise_if_cancelled()
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
    _note("end")
    return {"pid": os.getpid(), "attempt": current_job.attempt}


# -- the fault hook --------------------------------------------------------------------------------


class _Hook:
    """Kills this process the ``count``-th time ``point`` is reached."""

    def __init__(self, point: str, count: int) -> None:
        if point not in POINTS:
            raise ValueError(f"CHAOS_DIE_AT: unknown point {point!r}; one of {POINTS}")
        self.point = point
        self.count = count
        self.seen = 0
        self.lock = threading.Lock()

    def reached(self, job_ids: Sequence[int]) -> None:
        with self.lock:
            self.seen += 1
            if self.seen < self.count:
                return
            line = f"{self.point} {os.getpid()} {' '.join(map(str, job_ids))}\n".encode()
            fd = os.open(os.environ["CHAOS_DEATHS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, line)
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # never reached: SIGKILL cannot be caught


_hook: _Hook | None = None


def _arm(point: str, count: int) -> None:
    global _hook
    hook = _hook = _Hook(point, count)

    if point in ("claim-tx", "claim"):
        claim = JobStore.claim
        to_record = store_module.to_record

        def claim_then_die(self: JobStore, *args: Any, **kwargs: Any) -> Any:
            _local.claiming = True
            try:
                claimed = claim(self, *args, **kwargs)
            finally:
                _local.claiming = False
            ids = [job.id for lane in claimed.jobs.values() for job in lane]
            if ids and point == "claim":
                hook.reached(ids)
            return claimed

        def record_in_claim(kind: Any, fields: Any, row: Any) -> Any:
            record = to_record(kind, fields, row)
            if getattr(_local, "claiming", False):  # a claimed row, the claim not committed
                _local.claiming = False
                hook.reached([record.id])
            return record

        JobStore.claim = claim_then_die  # type: ignore[method-assign]
        if point == "claim-tx":
            store_module.to_record = record_in_claim  # type: ignore[assignment]

    elif point == "move":
        write_history = JobStore._write_history

        def write_history_then_die(self: JobStore, month: str, outcomes: Any) -> None:
            write_history(self, month, outcomes)
            hook.reached([outcome.job.id for outcome in outcomes])

        JobStore._write_history = write_history_then_die  # type: ignore[method-assign]

    elif point == "lease":
        heartbeat = JobStore.heartbeat
        executemany = WriteTx.executemany

        def heartbeat_marked(self: JobStore, process: Any, running: Any, until: float) -> None:
            _local.renewing = list(running)
            try:
                heartbeat(self, process, running, until)
            finally:
                _local.renewing = None

        def executemany_then_die(self: WriteTx, sql: str, rows: Any) -> Any:
            cursor = executemany(self, sql, rows)
            renewing = getattr(_local, "renewing", None)
            if renewing and "lease_expires_at" in sql:  # leases renewed, not committed
                hook.reached(renewing)
            return cursor

        JobStore.heartbeat = heartbeat_marked  # type: ignore[method-assign]
        WriteTx.executemany = executemany_then_die  # type: ignore[method-assign]
