"""Throughput and latency of the job queue, against raw ``sqlite3`` doing the same transactions.

Run: ``.venv/bin/python bench/bench_queue.py`` (``--rounds N``, default 5; ``--quick`` for a smoke
run with fewer jobs; ``--limit S``: seconds a phase may take). One run prints, each figure the
median of the rounds with its range:

1. durable enqueue rate from one thread (``BGJOBS_AUTOSTART=False``: nothing drains meanwhile);
2. drain rate of queued no-op jobs by the in-process runner (``jobs.start()``);
3. drain rate of queued no-op jobs by two ``flask jobs worker`` processes;
4. end-to-end rate: the runner drains while one thread enqueues;
5. enqueue-to-start latency (p50, p99) of single jobs on an idle runner, in-process and
   cross-process;
6. the limit: raw ``sqlite3`` with the same pragmas on a file of the same schema, (a) the same
   two-insert enqueue transactions, (b) claim+complete cycles (one transaction claims one job by
   ``UPDATE ... RETURNING``, one deletes it and updates its summary);

then the ours/raw ratios, pair by pair within each round, and the targets with PASS/MISS. The
app under test is ``bench/queue_app.py``; every round uses fresh files in a temporary directory.

How each figure is taken: (1) times ``jobs.enqueue_command("noop", {"n": i})`` calls into an
empty queue; those jobs are then (2) drained, timed from ``jobs.start()`` until the queue table
is empty (polled every few ms on a connection of the benchmark's own). (3) enqueues the jobs an
hour ahead (``run_after``), starts two workers, waits until both registered, then makes every
job due in one ``UPDATE`` and times until the queue is empty: worker start-up is not counted.
(5) in-process measures from just before ``enqueue_command`` to ``perf_counter()`` at the top
of the command; cross-process the same with wall time (the command returns it as its result).
Each sample waits until its job completed, then a few ms, so the runner is idle each time.

Every phase is bounded in time: one that runs too long is reported as a timeout (a phase stuck
inside a call ends the run with the threads' stacks). The exit code is 0 whether the targets
pass or not, 1 if a phase failed (an error, or jobs that did not complete).
"""

from __future__ import annotations

import argparse
import faulthandler
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

from flask import Flask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # queue_app
from queue_app import GATE, STARTS, create_app

from flask_bgjobs import BackgroundJobs
from flask_bgjobs.sqlite import Database, SqliteOptions
from flask_bgjobs.tables import QUEUE_SCHEMA, background_job

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
POLL = 0.005  # seconds between looks at the queue while waiting for a drain
# Seconds between latency samples, at random so that samples do not fall into step with the
# runner's polling (BGJOBS_POLL_INTERVAL, 0.02 s) and measure one phase of it only.
SPACING = (0.002, 0.025)
WORKERS = 2
FINAL_STATES = ("completed", "failed", "cancelled")

# The two statements of an enqueue, with the columns flask_bgjobs fills in.
RAW_SUMMARY = (
    "INSERT INTO job_summary (ref_id, command, request_type, state, created_at, worker, tag, "
    "batch_id, parent_id, created_by, user_id) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
)
RAW_QUEUE = (
    "INSERT INTO background_job (id, ref_id, parent_id, worker, tag, batch_id, callback, "
    "depends_on, run_after, created_at, created_by, request_type, command, request, user_id, "
    "reply_to, args, options, state, attempts, retry_limit, timeout, history) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)"
)
QUEUE_COLUMNS = [column.name for column in background_job.columns]
RAW_CLAIM = (
    "UPDATE background_job SET state = 'started', attempts = attempts + 1, started_at = ?, "
    "lease_owner = ?, lease_expires_at = ?, progress = NULL, status = NULL, logs = NULL "
    "WHERE id = (SELECT id FROM background_job WHERE worker IS NULL AND state = 'queued' "
    f"AND +run_after <= ? ORDER BY id LIMIT 1) RETURNING {', '.join(QUEUE_COLUMNS)}"
)
RAW_DELETE = "DELETE FROM background_job WHERE id = ? AND attempts = ?"
RAW_FINISH = (
    "UPDATE job_summary SET state = 'completed', attempts = ?, started_at = ?, completed_at = ?, "
    "duration = ?, month = ?, error_type = NULL, error_message = NULL WHERE id = ?"
)


@dataclass(frozen=True)
class Config:
    rounds: int
    jobs: int  # queued jobs a drain, and enqueues timed in (1) and (6a/6b)
    e2e_jobs: int
    samples: int  # latency samples of each kind a round
    limit: float  # seconds a phase may take before it counts as a timeout
    fan_out: int = 1_000  # dependents of one parent in (7)


# -- bounding time --------------------------------------------------------------------------------


class PhaseTimeout(Exception):
    """A phase ran past its time limit."""


class Phase:
    """The time limit of one phase, checked by its loops."""

    def __init__(self, name: str, limit: float) -> None:
        self.name = name
        self.limit = limit
        self.end = time.monotonic() + limit

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def check(self, progress: str = "") -> None:
        if time.monotonic() > self.end:
            raise PhaseTimeout(f"{self.name} took more than {self.limit:g} s{progress}")


class Watchdog:
    """The last resort for a phase stuck inside one call, where no check runs: after the phase's
    limit and a grace period, print every thread's stack, clean up and end the process."""

    def __init__(self, grace: float, cleanup: Callable[[], None]) -> None:
        self.grace = grace
        self.cleanup = cleanup

    @contextmanager
    def phase(self, name: str, limit: float) -> Iterator[Phase]:
        timer = threading.Timer(limit + self.grace, self._fire, args=(name, limit + self.grace))
        timer.daemon = True
        timer.start()
        try:
            yield Phase(name, limit)
        finally:
            timer.cancel()

    def _fire(self, name: str, seconds: float) -> None:
        print(
            f"\nbench_queue: {name} is stuck (over {seconds:g} s); the threads' stacks follow",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        self.cleanup()
        os._exit(3)


# -- watching the queue from outside --------------------------------------------------------------


class QueueProbe:
    """A connection of the benchmark's own to ``jobs.db``, to see how far the queue got."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")

    def close(self) -> None:
        self.conn.close()

    def left(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM background_job").fetchone()[0])

    def wait_drained(self, total: int, phase: Phase) -> float:
        """Wait until the queue table is empty; return ``perf_counter()`` then."""
        while True:
            left = self.left()
            if left == 0:
                return time.perf_counter()
            phase.check(f" ({total - left:,} of {total:,} jobs done)")
            time.sleep(POLL)

    def check_completed(self, total: int) -> None:
        states = dict(
            self.conn.execute("SELECT state, count(*) FROM job_summary GROUP BY state").fetchall()
        )
        if states != {"completed": total}:
            raise RuntimeError(f"expected {total:,} completed jobs, found {states}")
        again = self.conn.execute("SELECT count(*) FROM job_summary WHERE attempts != 1")
        if again.fetchone()[0]:
            raise RuntimeError("some jobs ran more than once (attempts != 1)")

    def state_of(self, job_id: int) -> str | None:
        row = self.conn.execute("SELECT state FROM job_summary WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def wait_workers(self, procs: Sequence[subprocess.Popen[bytes]], phase: Phase) -> None:
        """Wait until every worker process recorded its heartbeat."""
        pids = [proc.pid for proc in procs]
        sql = (
            "SELECT count(*) FROM worker_process WHERE stopped_at IS NULL "
            f"AND pid IN ({', '.join('?' * len(pids))})"
        )
        while self.conn.execute(sql, pids).fetchone()[0] < len(pids):
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"worker {proc.pid} exited with code {proc.returncode}:\n"
                        + worker_log(proc)
                    )
            phase.check(" (waiting for the workers to start)")
            time.sleep(0.02)

    def release(self) -> float:
        """Make every queued job due now, in one transaction; return ``perf_counter()`` after."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "UPDATE background_job SET run_after = ? WHERE state = 'queued'", (time.time() - 1,)
        )
        self.conn.execute("COMMIT")
        return time.perf_counter()


# -- worker processes ----------------------------------------------------------------------------

_live_workers: set[subprocess.Popen[bytes]] = set()
_worker_logs: dict[int, Path] = {}


def start_worker(
    folder: Path, index: int, args: Sequence[str] = (), config: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """A ``flask jobs worker`` process (``args`` added to its command line) on ``folder``'s
    ``jobs.db``; ``config`` goes into its app's config (``BGJOBS_SQLITE_SYNCHRONOUS``...)."""
    paths = [str(BENCH_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "BENCH_QUEUE_DIR": str(folder),
        "BENCH_QUEUE_CONFIG": json.dumps(config or {}),
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }
    command = [sys.executable, "-m", "flask", "--app", "queue_app:create_app", "jobs", "worker"]
    command += args
    log = folder / f"worker{index}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    _live_workers.add(proc)
    _worker_logs[proc.pid] = log
    return proc


def worker_log(proc: subprocess.Popen[bytes]) -> str:
    try:
        text = _worker_logs[proc.pid].read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-20:])


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM the workers (a graceful stop), then wait; kill any that does not end in 15 s."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        _live_workers.discard(proc)


def kill_workers() -> None:
    for proc in list(_live_workers):
        if proc.poll() is None:
            proc.kill()
        _live_workers.discard(proc)


# -- the scenarios of one round ------------------------------------------------------------------

Put = Callable[[str, float], None]
_keys = itertools.count()


def extension(app: Flask) -> BackgroundJobs:
    jobs = app.extensions["bgjobs"]
    assert isinstance(jobs, BackgroundJobs)
    return jobs


def open_app(folder: Path, **config: Any) -> tuple[Flask, BackgroundJobs, QueueProbe]:
    app = create_app(str(folder), **config)
    jobs = extension(app)
    with app.app_context():
        jobs.list_jobs(limit=1)  # creates jobs.db and its schema outside the timed parts
    return app, jobs, QueueProbe(folder / "jobs.db")


def close_app(app: Flask, probe: QueueProbe | None, watchdog: Watchdog) -> None:
    jobs = extension(app)
    with watchdog.phase("stopping the runner", 20):
        with app.app_context():
            jobs.stop(timeout=5)
        jobs.store(app).dispose()
    if probe is not None:
        probe.close()


def enqueue_many(jobs: BackgroundJobs, count: int, phase: Phase, **options: Any) -> float:
    """Enqueue ``count`` no-op jobs from this thread; return the rate (jobs/s)."""
    started = time.perf_counter()
    for n in range(count):
        jobs.enqueue_command("noop", {"n": n}, **options)
        if n & 255 == 0:
            phase.check(f" ({n:,} of {count:,} enqueued)")
    return count / (time.perf_counter() - started)


def drain_in_process(cfg: Config, folder: Path, put: Put, watchdog: Watchdog) -> None:
    """(1) enqueue into an empty queue, (2) drain those jobs with the in-process runner."""
    app, jobs, probe = open_app(folder)
    try:
        with app.app_context():
            with watchdog.phase("enqueue", cfg.limit) as phase:
                put("enqueue", enqueue_many(jobs, cfg.jobs, phase))
            with watchdog.phase("drain in-process", cfg.limit) as phase:
                started = time.perf_counter()
                jobs.start()
                ended = probe.wait_drained(cfg.jobs, phase)
            probe.check_completed(cfg.jobs)
            put("drain", cfg.jobs / (ended - started))
    finally:
        close_app(app, probe, watchdog)


def end_to_end(cfg: Config, folder: Path, put: Put, watchdog: Watchdog) -> None:
    """(4) enqueue while the runner drains, then (5) in-process latency on the idle runner."""
    app, jobs, probe = open_app(folder)
    try:
        with app.app_context():
            jobs.start()
            time.sleep(0.05)  # let the runner's threads reach their idle wait
            with watchdog.phase("end-to-end", cfg.limit) as phase:
                started = time.perf_counter()
                put("enqueue_busy", enqueue_many(jobs, cfg.e2e_jobs, phase))
                ended = probe.wait_drained(cfg.e2e_jobs, phase)
            probe.check_completed(cfg.e2e_jobs)
            put("e2e", cfg.e2e_jobs / (ended - started))
            time.sleep(0.05)
            with watchdog.phase("latency in-process", cfg.limit) as phase:
                samples = latency_in_process(jobs, cfg.samples, phase)
            put("lat_in_p50", percentile(samples, 50) * 1000)
            put("lat_in_p99", percentile(samples, 99) * 1000)
    finally:
        close_app(app, probe, watchdog)


def fan_out(cfg: Config, folder: Path, put: Put, watchdog: Watchdog) -> None:
    """(7) one parent, ``cfg.fan_out`` dependents: from the parent's completion to the last."""
    app, jobs, probe = open_app(folder)
    try:
        with app.app_context():
            GATE.clear()
            jobs.start()
            with watchdog.phase("fan-out", cfg.limit) as phase:
                parent = jobs.enqueue_command("gate")
                for _ in range(cfg.fan_out):
                    jobs.enqueue_command("noop", {}, depends_on=parent.id)
                    phase.check()
                GATE.set()
                probe.wait_drained(cfg.fan_out + 1, phase)
            probe.check_completed(cfg.fan_out + 1)
            first, last = probe.conn.execute(
                "SELECT (SELECT completed_at FROM job_summary WHERE id = ?), "
                "MAX(completed_at) FROM job_summary WHERE id != ?",
                (parent.id, parent.id),
            ).fetchone()
            put("fan_out", last - first)
    finally:
        close_app(app, probe, watchdog)


def latency_in_process(jobs: BackgroundJobs, count: int, phase: Phase) -> list[float]:
    samples = []
    for _ in range(count):
        key = next(_keys)
        started = time.perf_counter()
        ref = jobs.enqueue_command("stamp", {"n": key})
        while key not in STARTS:
            phase.check(f" (sample {len(samples) + 1} of {count} did not start)")
            time.sleep(0.0002)
        samples.append(STARTS.pop(key) - started)
        try:  # the runner is idle again before the next sample
            jobs.wait_for(ref.id, timeout=phase.remaining())
        except TimeoutError:
            raise PhaseTimeout(f"{phase.name}: job {ref.id} did not finish in time") from None
        time.sleep(random.uniform(*SPACING))
    return samples


def drain_by_workers(cfg: Config, folder: Path, put: Put, watchdog: Watchdog) -> None:
    """(3) drain by worker processes, then (5) cross-process latency with one of them."""
    app, jobs, probe = open_app(folder)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with app.app_context():
            with watchdog.phase("enqueue for the workers", cfg.limit) as phase:
                later = datetime.now(timezone.utc) + timedelta(hours=1)
                enqueue_many(jobs, cfg.jobs, phase, run_after=later)
            with watchdog.phase("worker start-up", cfg.limit) as phase:
                procs = [start_worker(folder, index) for index in range(WORKERS)]
                probe.wait_workers(procs, phase)
            with watchdog.phase(f"drain by {WORKERS} workers", cfg.limit) as phase:
                started = probe.release()
                ended = probe.wait_drained(cfg.jobs, phase)
            probe.check_completed(cfg.jobs)
            put("workers", cfg.jobs / (ended - started))
            with watchdog.phase("stopping a worker", 30):
                stop_workers(procs[1:])
            with watchdog.phase("latency cross-process", cfg.limit) as phase:
                samples = latency_cross_process(jobs, probe, cfg.samples, phase)
            put("lat_x_p50", percentile(samples, 50) * 1000)
            put("lat_x_p99", percentile(samples, 99) * 1000)
    finally:
        with watchdog.phase("stopping the workers", 30):
            stop_workers(procs)
        close_app(app, probe, watchdog)


def latency_cross_process(
    jobs: BackgroundJobs, probe: QueueProbe, count: int, phase: Phase
) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.time()
        ref = jobs.enqueue_command("stamp", {"n": next(_keys)})
        while probe.state_of(ref.id) not in FINAL_STATES:
            phase.check(f" (sample {len(samples) + 1} of {count} did not finish)")
            time.sleep(0.001)
        result = jobs.get_job(ref.id)
        if result is None or result.completed is None:
            raise RuntimeError(f"job {ref.id} did not complete: {result}")
        samples.append(result.completed.result["wall"] - started)
        time.sleep(random.uniform(*SPACING))
    return samples


def raw_sqlite(cfg: Config, folder: Path, put: Put, watchdog: Watchdog) -> None:
    """(6a) raw enqueue transactions into an empty file, (6b) claim+complete cycles on them."""
    conn = open_raw(folder / "raw.db")
    try:
        with watchdog.phase("raw enqueue", cfg.limit) as phase:
            put("raw_enqueue", raw_enqueue(conn, cfg.jobs, phase))
        with watchdog.phase("raw claim+complete", cfg.limit) as phase:
            put("raw_cycle", raw_cycles(conn, cfg.jobs, phase))
    finally:
        conn.close()


def open_raw(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A raw ``sqlite3`` connection to a new file with the schema and indexes of a jobs.db."""
    database = Database(path, QUEUE_SCHEMA, SqliteOptions())
    with database.write():
        pass  # the same file, schema and indexes as a jobs.db
    database.dispose()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("busy_timeout = 5000", "journal_mode = WAL", f"synchronous = {synchronous}"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def raw_enqueue(conn: sqlite3.Connection, count: int, phase: Phase) -> float:
    """What an enqueue has to do at the least: a ref id, the request's JSON, two inserts."""
    started = time.perf_counter()
    for n in range(count):
        ref_id = uuid.uuid4().hex
        request = json.dumps({"n": n}, separators=(",", ":"))
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        job_id = conn.execute(
            RAW_SUMMARY, (ref_id, "noop", "command", now, None, None, None, None, None, None)
        ).lastrowid
        conn.execute(
            RAW_QUEUE,
            (
                *(job_id, ref_id, None, None, None, None, None, None, now, now, None),
                *("command", "noop", request, None, None, None, None, 2, 3600.0, None),
            ),
        )
        conn.execute("COMMIT")
        if n & 255 == 0:
            phase.check(f" ({n:,} of {count:,} enqueued)")
    return count / (time.perf_counter() - started)


def raw_cycles(conn: sqlite3.Connection, count: int, phase: Phase) -> float:
    """Claim one job (a transaction), then delete it and update its summary (another)."""
    attempts_at = QUEUE_COLUMNS.index("attempts")
    owner = f"raw:{os.getpid()}"
    started = time.perf_counter()
    for n in range(count):
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(RAW_CLAIM, (now, owner, now + 30, now)).fetchone()
        conn.execute("COMMIT")
        if row is None:
            raise RuntimeError(f"the raw queue ran dry after {n:,} claims")
        ended = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(RAW_DELETE, (row[0], row[attempts_at]))
        conn.execute(
            RAW_FINISH,
            (row[attempts_at], now, ended, ended - now, time.strftime("%Y-%m"), row[0]),
        )
        conn.execute("COMMIT")
        if n & 255 == 0:
            phase.check(f" ({n:,} of {count:,} cycles)")
    return count / (time.perf_counter() - started)


# -- figures -------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], pct: int) -> float:
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[pct - 1]


@dataclass
class Results:
    rounds: int
    values: dict[str, list[float | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    failed: bool = False

    def putter(self, index: int) -> Put:
        def put(key: str, value: float) -> None:
            self.values.setdefault(key, [None] * self.rounds)[index] = value

        return put

    def of(self, key: str) -> list[float | None]:
        return self.values.get(key, [None] * self.rounds)

    def done(self, key: str) -> list[float]:
        return [v for v in self.of(key) if v is not None]

    def median(self, key: str) -> float | None:
        done = self.done(key)
        return statistics.median(done) if done else None

    def pairs(self, key: str, limit: Callable[[int], float | None]) -> list[float]:
        """``key / limit`` of every round where both were measured."""
        out = []
        for index, value in enumerate(self.of(key)):
            base = limit(index)
            if value is not None and base:
                out.append(value / base)
        return out


def spread(values: Sequence[float], rounds: int, form: str, unit: str = "") -> str:
    if not values:
        return f"{'no data':>9}  (every round timed out or failed)"
    median = statistics.median(values)
    text = f"{median:>9{form}}{unit}  (range {min(values):{form}}-{max(values):{form}})"
    if len(values) < rounds:
        text += f"  [{rounds - len(values)} of {rounds} rounds timed out or failed]"
    return text


def run_round(index: int, cfg: Config, base: Path, results: Results, watchdog: Watchdog) -> None:
    put = results.putter(index)
    scenarios: list[tuple[str, Callable[[Config, Path, Put, Watchdog], None]]] = [
        ("raw sqlite3", raw_sqlite),
        ("enqueue + in-process drain", drain_in_process),
        ("end-to-end + in-process latency", end_to_end),
        ("workers + cross-process latency", drain_by_workers),
        ("dependency fan-out", fan_out),
    ]
    for number, (name, scenario) in enumerate(scenarios):
        folder = base / f"round{index + 1}-{number}"
        folder.mkdir()
        started = time.monotonic()
        try:
            scenario(cfg, folder, put, watchdog)
        except PhaseTimeout as error:
            results.problems.append(f"round {index + 1}: TIMEOUT {error}")
        except Exception:
            results.failed = True
            results.problems.append(
                f"round {index + 1}: ERROR in {name}:\n" + traceback.format_exc().rstrip()
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(
            f"  round {index + 1}/{cfg.rounds}: {name} {time.monotonic() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def report(cfg: Config, results: Results, seconds: float, load: float) -> None:
    r, n = results, cfg.rounds
    print(
        f"bench_queue: {n} round(s); {cfg.jobs:,} jobs a drain, {cfg.e2e_jobs:,} end-to-end, "
        f"{cfg.samples} latency samples of each kind a round; {seconds:.0f} s"
    )
    print(
        f"machine: {os.cpu_count()} cpus, {platform.system()} {platform.machine()}, "
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"SQLAlchemy {version('sqlalchemy')}, Flask {version('flask')}; "
        f"load average {load:.2f} at the start"
    )
    print(
        "settings: WAL, synchronous=NORMAL, BGJOBS_MAX_THREADS=4, BGJOBS_POLL_INTERVAL=0.02 s "
        "(defaults); no-op jobs"
    )
    print()
    print("throughput, jobs/s (median of the rounds)")
    rows = [
        ("1.  enqueue, one thread, durable", "enqueue"),
        (f"2.  drain {cfg.jobs:,} queued, in-process runner", "drain"),
        (f"3.  drain {cfg.jobs:,} queued, {WORKERS} worker processes", "workers"),
        (f"4.  end-to-end {cfg.e2e_jobs:,}, enqueue while draining", "e2e"),
        ("    (its enqueue rate while the runner drains)", "enqueue_busy"),
        ("6a. raw sqlite3 enqueue transactions", "raw_enqueue"),
        ("6b. raw sqlite3 claim+complete cycles", "raw_cycle"),
    ]
    for label, key in rows:
        print(f"  {label:<50} {spread(r.done(key), n, ',.0f')}")
    print()
    print("5.  enqueue-to-start latency of one job on an idle runner, ms (median of the rounds)")
    for label, key in (("in-process", "lat_in"), ("cross-process (1 worker)", "lat_x")):
        print(f"  {label:<26} p50 {spread(r.done(f'{key}_p50'), n, '.2f')}")
        print(f"  {'':<26} p99 {spread(r.done(f'{key}_p99'), n, '.2f')}")
    print(
        f"7.  dependency fan-out: 1 parent, {cfg.fan_out:,} dependents, seconds from the parent's"
    )
    print(f"    completion to the last dependent's {spread(r.done('fan_out'), n, '.3f'):>31}")
    print()

    def raw(key: str) -> Callable[[int], float | None]:
        return lambda index: r.of(key)[index]

    def raw_serial(index: int) -> float | None:
        enqueue, cycle = r.of("raw_enqueue")[index], r.of("raw_cycle")[index]
        return None if not enqueue or not cycle else 1 / (1 / enqueue + 1 / cycle)

    ratios = {
        "enqueue": r.pairs("enqueue", raw("raw_enqueue")),
        "drain": r.pairs("drain", raw("raw_cycle")),
        "workers": r.pairs("workers", raw("raw_cycle")),
        "e2e": r.pairs("e2e", raw_serial),
    }
    print("ours / raw sqlite3, pair by pair within each round (median of the rounds)")
    for label, key in (
        ("enqueue / raw enqueue (6a)", "enqueue"),
        ("drain in-process / raw cycles (6b)", "drain"),
        (f"drain {WORKERS} workers / raw cycles (6b)", "workers"),
        ("end-to-end / raw enqueue + cycle in series", "e2e"),
    ):
        print(f"  {label:<50} {spread(ratios[key], n, '.2f')}")
    print("  (raw cycles write no monthly history row; the runner writes one a job, in batches)")
    print()

    def target(label: str, value: float | None, ok: Callable[[float], bool], form: str) -> bool:
        passed = value is not None and ok(value)
        shown = "no data" if value is None else f"{value:{form}}"
        print(f"  {'PASS' if passed else 'MISS'}  {label:<40} {shown:>9}")
        return passed

    ratio = statistics.median(ratios["enqueue"]) if ratios["enqueue"] else None
    print("targets")
    outcomes = [
        target("enqueue >= 10,000 jobs/s", r.median("enqueue"), lambda v: v >= 10_000, ",.0f"),
        target("enqueue >= 0.5 x raw", ratio, lambda v: v >= 0.5, ".2f"),
        target("drain in-process >= 5,000 jobs/s", r.median("drain"), lambda v: v >= 5_000, ",.0f"),
        target(
            f"drain {WORKERS} workers >= 5,000 jobs/s",
            r.median("workers"),
            lambda v: v >= 5_000,
            ",.0f",
        ),
        target("end-to-end >= 2,500 jobs/s", r.median("e2e"), lambda v: v >= 2_500, ",.0f"),
        target("latency p50 in-process < 2 ms", r.median("lat_in_p50"), lambda v: v < 2, ".2f"),
        target("latency p50 cross-process < 20 ms", r.median("lat_x_p50"), lambda v: v < 20, ".2f"),
        target("fan-out of 1,000 < 2 s", r.median("fan_out"), lambda v: v < 2, ".3f"),
    ]
    print(f"  {outcomes.count(True)} PASS, {outcomes.count(False)} MISS")
    if results.problems:
        print()
        print("problems")
        for problem in results.problems:
            print("  " + problem.replace("\n", "\n  "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds to run (default 5; 1 with --quick)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1,000 jobs a phase, 30 samples"
    )
    parser.add_argument(
        "--limit",
        type=float,
        help="seconds a phase may take before it counts as a timeout (default 60; 30 with --quick)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.limit is not None and not args.limit > 0:
        parser.error("--limit must be a positive number of seconds")
    if args.quick:
        cfg = Config(rounds, jobs=1_000, e2e_jobs=1_000, samples=30, limit=args.limit or 30.0)
    else:
        cfg = Config(rounds, jobs=10_000, e2e_jobs=10_000, samples=200, limit=args.limit or 60.0)

    results = Results(rounds)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_queue-") as folder:
        base = Path(folder)

        def cleanup() -> None:
            kill_workers()
            shutil.rmtree(base, ignore_errors=True)

        watchdog = Watchdog(grace=30.0, cleanup=cleanup)
        try:
            for index in range(rounds):
                run_round(index, cfg, base, results, watchdog)
        finally:
            kill_workers()
    report(cfg, results, time.monotonic() - began, load)
    sys.exit(1 if results.failed else 0)


if __name__ == "__main__":
    main()
