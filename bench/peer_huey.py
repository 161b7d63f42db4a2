"""The Huey side of ``bench/bench_peers.py``: a ``SqliteHuey`` and the tasks of ``peer_tasks``.

``build(filename)`` makes one; the consumer the benchmark starts as
``huey_consumer peer_huey.huey -w 2 -k thread ...`` loads the module's ``huey``, made at that
first use on the file named by ``$BENCH_HUEY_DB``. Huey's defaults are kept: WAL journal,
SQLite's default ``synchronous`` (FULL: Huey sets it only when given ``fsync``), results stored
(none here: every task returns ``None`` and ``store_none`` is off).
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huey import SqliteHuey

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peer_tasks


@dataclass(frozen=True)
class HueyTasks:
    huey: SqliteHuey
    noop: Any
    mark: Any
    stamp: Any
    record: Any


def build(filename: str) -> HueyTasks:
    """A ``SqliteHuey`` on ``filename`` with the benchmark's tasks, named alike everywhere."""
    huey = SqliteHuey("bench", filename=filename)
    return HueyTasks(
        huey=huey,
        noop=huey.task(name="noop")(peer_tasks.noop),
        mark=huey.task(name="mark")(peer_tasks.mark),
        stamp=huey.task(name="stamp")(peer_tasks.stamp),
        record=huey.task(name="record")(peer_tasks.record),
    )


@functools.cache
def from_environment() -> SqliteHuey:
    return build(os.environ["BENCH_HUEY_DB"]).huey


def __getattr__(name: str) -> Any:
    """``peer_huey.huey``, made at its first use only (importing this module creates no file)."""
    if name == "huey":
        return from_environment()
    raise AttributeError(name)
