"""The job bodies that ``bench/bench_peers.py`` runs on every queue, the same code for each.

flask_bgjobs runs them as commands of ``bench/queue_app.py``, Huey as tasks of
``bench/peer_huey.py``, RQ by their import path (``peer_tasks.noop``...). Each records what it
needs with one ``os.write`` to a file opened with ``O_APPEND``: the line reaches the kernel before
the function returns, so it survives a SIGKILL of the process that ran it, and lines written by
several processes at once do not mix.
"""

from __future__ import annotations

import os
import time


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


def noop(n: int = 0) -> None:
    """The job of the throughput figures: nothing at all."""
    return None


def mark(path: str) -> None:
    """The first job of a drain: when it started (wall time), the drain's time zero."""
    append_line(path, repr(time.time()))


def stamp(path: str, key: int) -> None:
    """A latency sample: the job's key and the wall time at which it started."""
    append_line(path, f"{key} {time.time()!r}")


def record(path: str, n: int, pause: float = 0.0) -> None:
    """A job of the crash check: a short pause (so that a consumer killed mid-run is killed with
    jobs in flight), then its number, one line each time the job runs to its end."""
    if pause:
        time.sleep(pause)
    append_line(path, str(n))
