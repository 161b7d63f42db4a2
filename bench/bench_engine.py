"""Write speed of the shared SQLite engine against raw ``sqlite3`` with the same pragmas.

Run: ``.venv/bin/python bench/bench_engine.py`` (``--rounds N``, ``--synchronous FULL``).
Prints single-row write transactions per second and batched rows per second (1,000 rows of
~500 bytes a transaction), each the median of the rounds, and the engine/raw ratio. Both sides run
in the same process, alternating round by round, so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, Text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flask_bgjobs.sqlite import Database, Schema, SqliteOptions

metadata = MetaData()
Table("entry", metadata, Column("id", Integer, primary_key=True), Column("body", Text))
SCHEMA = Schema(metadata)
INSERT = "INSERT INTO entry (body) VALUES (?)"
PAYLOAD = "x" * 500
SINGLE_TX = 5_000
BATCH_ROWS = 1_000
BATCHES = 50


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in (
        "busy_timeout = 5000",
        "journal_mode = WAL",
        f"synchronous = {synchronous}",
        "foreign_keys = ON",
    ):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE IF NOT EXISTS entry (id INTEGER PRIMARY KEY, body TEXT)")
    return conn


def rate(count: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def raw_single(conn: sqlite3.Connection) -> None:
    for _ in range(SINGLE_TX):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT, (PAYLOAD,))
        conn.execute("COMMIT")


def raw_batched(conn: sqlite3.Connection) -> None:
    rows = [(PAYLOAD,)] * BATCH_ROWS
    for _ in range(BATCHES):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")


def engine_single(db: Database) -> None:
    for _ in range(SINGLE_TX):
        with db.write() as tx:
            tx.execute(INSERT, (PAYLOAD,))


def engine_batched(db: Database) -> None:
    rows = [(PAYLOAD,)] * BATCH_ROWS
    for _ in range(BATCHES):
        with db.write() as tx:
            tx.executemany(INSERT, rows)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f}  (range {min(values):,.0f}-{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    args = parser.parse_args()

    results: dict[str, list[float]] = {k: [] for k in ("raw1", "eng1", "rawN", "engN")}
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        raw = raw_connection(base / "raw.db", args.synchronous)
        db = Database(base / "engine.db", SCHEMA, SqliteOptions(synchronous=args.synchronous))
        with db.write():
            pass  # create the schema outside the timed part, as raw_connection does
        for _ in range(args.rounds):
            results["raw1"].append(rate(SINGLE_TX, lambda: raw_single(raw)))
            results["eng1"].append(rate(SINGLE_TX, lambda: engine_single(db)))
            results["rawN"].append(rate(BATCH_ROWS * BATCHES, lambda: raw_batched(raw)))
            results["engN"].append(rate(BATCH_ROWS * BATCHES, lambda: engine_batched(db)))
        raw.close()
        db.dispose()

    def ratio(engine: str, baseline: str) -> float:
        pairs = zip(results[engine], results[baseline], strict=True)
        return statistics.median(e / r for e, r in pairs)

    print(
        f"bench_engine: synchronous={args.synchronous}, {args.rounds} rounds, "
        f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} cpus"
    )
    print(f"single-row write tx/s   raw sqlite3 {summary(results['raw1'])}")
    print(f"                        engine      {summary(results['eng1'])}")
    print(f"batched rows/s          raw sqlite3 {summary(results['rawN'])}")
    print(f"                        engine      {summary(results['engN'])}")
    single, batched = ratio("eng1", "raw1"), ratio("engN", "rawN")
    print(
        f"engine/raw ratio        single-row {single:.2f} (target >= 0.50), "
        f"batched {batched:.2f} (target >= 0.80)"
    )
    if single < 0.5 or batched < 0.8:
        print("TARGET MISSED")
        sys.exit(1)


if __name__ == "__main__":
    main()
