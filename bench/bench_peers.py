"""Side by side with the peers users would pick instead, measured the same way in one run.

Run: ``.venv/bin/python bench/bench_peers.py`` (``--rounds N``, default 3; ``--quick`` for a smoke
run; ``--only jobs|logs``; ``--systems a,b`` for a subset; ``--write-docs`` to rewrite the
generated part of ``docs/benchmarks.md``, its charts and their data; ``--from-json FILE`` to do
that again from a saved run; ``--keep`` to keep the run's files and logs). ``make bench`` runs it
with ``--write-docs``.

Jobs: flask_bgjobs at its default ``BGJOBS_SQLITE_SYNCHRONOUS`` (NORMAL) and at FULL, Huey
(``SqliteHuey``, SQLite's default FULL), RQ on a Redis of its own (127.0.0.1:6390, no persistence)
and, as the limit, raw ``sqlite3`` doing flask_bgjobs' transactions with nothing around them
(``bench/bench_queue.py``'s, at NORMAL and FULL). Every consumer runs in processes of its own with
two job-running threads in all: two ``flask jobs worker --threads 1`` processes, one
``huey_consumer -w 2 -k thread``, two RQ ``SimpleWorker`` processes. Each round and system:

1. enqueue rate from one thread (10,000 no-op jobs into an empty queue, nothing consuming);
2. drain rate of those 10,000: the consumers start, and the time runs from the moment the first
   job (queued before the others) starts to the moment the queue is empty (RQ: its 10,001st job
   finished; RQ's workers run in burst mode here);
3. end-to-end rate: 2,000 jobs enqueued from one thread while the (running, idle) consumers
   drain, from the first enqueue until the last job is done;
4. enqueue-to-start latency p50/p99 on an idle consumer: wall time at the top of the job minus
   wall time before the enqueue call, one job at a time, a random 2-25 ms pause between samples
   (flask_bgjobs: ``bench_queue.latency_cross_process``; the others: a ``stamp`` job);
5. a crash check: 100 jobs that each append their number to a file when they finish (after a
   20 ms pause), the consumer SIGKILLed once 40% are done (plus a random 0-20 ms, so that the
   kill does not always fall right after a job finished), started again, then the numbers
   counted: missing ones were lost, repeated ones ran twice.

Request logs: a small JSON app (``bench/peer_logs_app.py``) with no recorder, flask_sqlitelogs
(defaults; bodies on; defaults at FULL), Flask-MonitoringDashboard (levels 1 and 3) and
flask-profiler: (a) under gunicorn (2 sync workers): every variant's server starts once and gets
200 warm-up requests, then each round loads each server in turn with ``wrk -t1 -c4 --latency``
for 10 s; at the end the servers stop (SIGTERM) and the rows in each recorder's database are
counted against the requests its server answered; (b) in-process with Flask's test client, each
variant in a process of its own (the peers keep global state): up to 3,000 requests or 1 s a
round, plus the time until every entry is written (our ``flush()``, the dashboard's writer
threads joined), then rows against requests. Level 1 of the dashboard and our logger at FULL
run in-process only unless named with ``--systems``.

Every figure is the median of the rounds with its range; ratios are taken round by round between
measurements of the same round, and the order of the systems rotates from round to round. A peer
that is not installed is reported as SKIPPED. Every process started here is stopped at the end,
on error and on Ctrl-C too; every phase is bounded in time (``--limit``).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.client
import importlib.util
import itertools
import json
import os
import platform
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import bench_queue as bq  # noqa: E402
import peer_logs_app  # noqa: E402
import peer_tasks  # noqa: E402

BIN = Path(sys.executable).parent
REDIS_PORT = 6390
POLL = 0.01  # seconds between looks at a queue while waiting for it
KILL_AT = 0.4  # the crash check kills the consumer once this share of its jobs is done
URL_PATH = "/api/user"
DOCS = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- bench_peers:begin -->", "<!-- bench_peers:end -->"

JOB_SYSTEMS = ("bgjobs", "bgjobs-full", "huey", "rq", "raw", "raw-full")
LOG_VARIANTS = peer_logs_app.VARIANTS
IN_PROCESS_ONLY = ("dashboard-1", "sqlitelogs-full")
#: The ratios reported: ours first. FULL against Huey is the like-for-like durability pair.
JOB_PAIRS = (
    ("bgjobs", "huey"),
    ("bgjobs-full", "huey"),
    ("bgjobs", "rq"),
    ("bgjobs", "raw"),
    ("bgjobs-full", "raw-full"),
)
LOG_PAIRS = (
    ("sqlitelogs", "dashboard-3"),
    ("sqlitelogs", "dashboard-1"),
    ("sqlitelogs", "profiler"),
    ("sqlitelogs-full", "dashboard-3"),
    ("sqlitelogs-full", "dashboard-1"),
    ("sqlitelogs-full", "profiler"),
    ("sqlitelogs-bodies", "dashboard-3"),
    ("sqlitelogs-bodies", "profiler"),
)
LABELS = {
    "bgjobs": "flask_bgjobs, NORMAL (default)",
    "bgjobs-full": "flask_bgjobs, FULL",
    "huey": "Huey (SqliteHuey), FULL",
    "huey-default": "Huey at its default polling",
    "rq": "RQ + Redis, no persistence",
    "raw": "raw sqlite3, NORMAL (limit)",
    "raw-full": "raw sqlite3, FULL (limit)",
    "none": "no recorder",
    "sqlitelogs": "flask_sqlitelogs, defaults",
    "sqlitelogs-bodies": "flask_sqlitelogs, bodies on",
    "sqlitelogs-full": "flask_sqlitelogs, defaults, FULL",
    "dashboard-1": "MonitoringDashboard, level 1",
    "dashboard-3": "MonitoringDashboard, level 3",
    "profiler": "flask-profiler",
}
COLORS = {
    "bgjobs": "#1d4ed8",
    "bgjobs-full": "#60a5fa",
    "huey": "#d97706",
    "huey-default": "#fbbf24",
    "rq": "#b91c1c",
    "raw": "#4b5563",
    "raw-full": "#9ca3af",
    "none": "#4b5563",
    "sqlitelogs": "#1d4ed8",
    "sqlitelogs-bodies": "#3b82f6",
    "sqlitelogs-full": "#93c5fd",
    "dashboard-1": "#15803d",
    "dashboard-3": "#86efac",
    "profiler": "#7e22ce",
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    jobs: int = 10_000  # enqueued, then drained
    e2e_jobs: int = 2_000
    samples: int = 60  # latency samples a round and system
    default_samples: int = 20  # Huey at its default polling
    crash_jobs: int = 100
    crash_pause: float = 0.02
    raw_full_jobs: int = 2_000  # raw sqlite3 at FULL: a rate over fewer transactions
    requests: int = 3_000  # in-process, a round, at most...
    requests_seconds: float = 1.0  # ...and for at most this long
    seconds: float = 10.0  # wrk, a round
    warmup: int = 200  # requests to each server before its round
    limit: float = 60.0  # seconds a phase may take


# -- processes ------------------------------------------------------------------------------------


class Processes:
    """Every process this benchmark starts, so that each one is stopped whatever happens."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen[Any]] = {}

    def start(
        self,
        command: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(command),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # Ctrl-C in the terminal reaches this process only
            )
        return self.adopt(proc)

    def adopt(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.live[proc.pid] = proc
        return proc

    def stop(
        self, proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0
    ) -> None:
        """Ask ``proc`` to stop with ``sig``; SIGKILL it (and its process group) after ``timeout``
        seconds."""
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
        self.live.pop(proc.pid, None)

    def kill(self, proc: subprocess.Popen[Any]) -> None:
        """SIGKILL ``proc`` and what it started (its own process group), then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.live.pop(proc.pid, None)

    def stop_all(self) -> None:
        procs = list(self.live.values())
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            self.kill(proc)
        bq.kill_workers()


def python_path() -> str:
    paths = [str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in paths if p)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- time bounds ----------------------------------------------------------------------------------


class Watchdog(bq.Watchdog):
    def _fire(self, name: str, seconds: float) -> None:
        print(f"\nbench_peers: {name} is stuck (over {seconds:g} s)", file=sys.stderr, flush=True)
        super()._fire(name, seconds)


def wait_for(check: Callable[[], bool], phase: bq.Phase, what: str, poll: float = POLL) -> float:
    """Wait until ``check()``; return the wall time then (``PhaseTimeout`` past the limit)."""
    while not check():
        phase.check(f" (waiting for {what})")
        time.sleep(poll)
    return time.time()


# -- results --------------------------------------------------------------------------------------


@dataclass
class Results:
    rounds: int
    values: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    crash: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: dict[str, dict[str, list[list[int]]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def put(self, system: str, metric: str, index: int, value: float) -> None:
        row = self.values.setdefault(system, {}).setdefault(metric, [None] * self.rounds)
        row[index] = value

    def recorded(self, part: str, variant: str, served: int, rows: int) -> None:
        self.records.setdefault(part, {}).setdefault(variant, []).append([served, rows])


# -- jobs: shared steps ---------------------------------------------------------------------------


def read_mark(path: Path) -> float:
    return float(path.read_text().split()[0])


def read_numbers(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return handle.read().count(b"\n")
    except FileNotFoundError:
        return 0


def drain_rate(count: int, mark: Path, done: Callable[[], bool], phase: bq.Phase) -> float:
    """``count`` jobs over the time from the mark job's start until ``done()``."""
    ended = wait_for(done, phase, f"{count:,} jobs to drain")
    return count / (ended - read_mark(mark))


def timed_enqueue(enqueue: Callable[[int], object], count: int, phase: bq.Phase) -> float:
    started = time.perf_counter()
    for n in range(count):
        enqueue(n)
        if n & 255 == 0:
            phase.check(f" ({n:,} of {count:,} enqueued)")
    return count / (time.perf_counter() - started)


class Stamps:
    """The file the ``stamp`` jobs of a latency phase append ``key wall-time`` lines to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[int, float] = {}
        self.offset = 0

    def wait(self, key: int, phase: bq.Phase) -> float:
        while key not in self.seen:
            with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
                end = chunk.rfind(b"\n") + 1
                self.offset += end
                for line in chunk[:end].decode().splitlines():
                    name, wall = line.split()
                    self.seen[int(name)] = float(wall)
            if key not in self.seen:
                phase.check(f" (latency sample {key} did not start)")
                time.sleep(0.0005)
        return self.seen.pop(key)


_keys = itertools.count(1)


def latency_samples(
    enqueue: Callable[[str, int], object],
    idle: Callable[[], bool],
    stamps: Stamps,
    count: int,
    phase: bq.Phase,
) -> list[float]:
    """Seconds from before ``enqueue`` to the job's start, one job at a time on idle consumers."""
    samples = []
    for _ in range(count):
        key = next(_keys)
        started = time.time()
        enqueue(str(stamps.path), key)
        samples.append(stamps.wait(key, phase) - started)
        wait_for(idle, phase, "the consumer to be idle again", poll=0.001)
        time.sleep(random.uniform(*bq.SPACING))
    return samples


def put_latency(results: Results, system: str, index: int, samples: Sequence[float]) -> None:
    results.put(system, "lat_p50", index, bq.percentile(samples, 50) * 1000)
    results.put(system, "lat_p99", index, bq.percentile(samples, 99) * 1000)


def crash_check(
    ctx: Context,
    system: str,
    record: Path,
    start: Callable[[int], list[subprocess.Popen[Any]]],
    settled: Callable[[list[subprocess.Popen[Any]]], bool],
    phase: bq.Phase,
) -> dict[str, Any]:
    """The jobs are queued: start the consumer, SIGKILL it at ``KILL_AT``, start it again and
    count what the jobs recorded once the queue settled (or the phase's time ran out)."""
    count = ctx.settings.crash_jobs
    first = start(0)
    wait_for(lambda: count_lines(record) >= count * KILL_AT, phase, "jobs before the kill")
    # Jobs finish in step, and a kill right after a finish would catch the consumer between jobs:
    # a random delay of up to one job's duration puts the kill anywhere in the jobs' cycle.
    time.sleep(random.uniform(0, ctx.settings.crash_pause))
    for proc in first:
        ctx.procs.kill(proc)
    killed_after = count_lines(record)
    restarted = time.time()
    second = start(1)
    last, last_change, settled_at = killed_after, time.monotonic(), None
    note = ""
    while True:
        now = count_lines(record)
        if now != last:
            last, last_change = now, time.monotonic()
        if len(set(read_numbers(record))) >= count and now == last:
            settled_at = time.time()
            break
        if settled(second) and time.monotonic() - last_change > 1.0:
            settled_at = time.time()
            break
        if phase.remaining() <= 0:
            note = f"not settled after {phase.limit:g} s"
            break
        time.sleep(0.05)
    for proc in second:
        ctx.procs.stop(proc)
    numbers = read_numbers(record)
    distinct = set(numbers)
    return {
        "jobs": count,
        "killed_after": killed_after,
        "lost": count - len(distinct & set(range(count))),
        "duplicated": len(numbers) - len(distinct),
        "settled_s": None if settled_at is None else round(settled_at - restarted, 2),
        "note": note,
    }


# -- jobs: flask_bgjobs ---------------------------------------------------------------------------


def bgjobs_round(ctx: Context, index: int, system: str, folder: Path) -> None:
    config: dict[str, Any] = {}
    if system == "bgjobs-full":
        config["BGJOBS_SQLITE_SYNCHRONOUS"] = "FULL"
    s, results = ctx.settings, ctx.results
    app, jobs, probe = bq.open_app(folder, **config)
    workers: list[subprocess.Popen[Any]] = []

    def start(tag: int, extra: dict[str, Any] | None = None) -> list[subprocess.Popen[Any]]:
        args = ["--threads", "1"]
        return [
            ctx.procs.adopt(
                bq.start_worker(folder, tag * 10 + n, args, {**config, **(extra or {})})
            )
            for n in range(2)
        ]

    try:
        with app.app_context():
            mark = folder / "mark"
            jobs.enqueue_command("mark", {"path": str(mark)})
            with ctx.phase(f"{system}: enqueue") as phase:
                rate = timed_enqueue(
                    lambda n: jobs.enqueue_command("noop", {"n": n}), s.jobs, phase
                )
                results.put(system, "enqueue", index, rate)
            with ctx.phase(f"{system}: drain") as phase:
                workers = start(0)
                rate = drain_rate(s.jobs, mark, lambda: probe.left() == 0, phase)
                results.put(system, "drain", index, rate)
            probe.check_completed(s.jobs + 1)
            with ctx.phase(f"{system}: end-to-end") as phase:
                started = time.time()
                timed_enqueue(lambda n: jobs.enqueue_command("noop", {"n": n}), s.e2e_jobs, phase)
                ended = wait_for(lambda: probe.left() == 0, phase, "the end-to-end jobs")
                results.put(system, "e2e", index, s.e2e_jobs / (ended - started))
            if system == "bgjobs":  # the latency does not depend on the fsyncs: once is enough
                with ctx.phase(f"{system}: latency") as phase:
                    time.sleep(0.1)
                    samples = bq.latency_cross_process(jobs, probe, s.samples, phase)
                    put_latency(results, system, index, samples)
            for proc in workers:
                ctx.procs.stop(proc)
            if system == "bgjobs":
                record = folder / "record"
                for n in range(s.crash_jobs):
                    request = {"path": str(record), "n": n, "pause": s.crash_pause}
                    jobs.enqueue_command("record", request)
                with ctx.phase(f"{system}: crash check", s.limit) as phase:
                    # A short lease, and a short backoff before the jobs of the killed workers run
                    # again, so that the check ends in seconds (defaults: 30 s and 1 s).
                    lease = {"BGJOBS_LEASE_SECONDS": 2.0, "BGJOBS_RETRY_BACKOFF": 0.1}
                    outcome = crash_check(
                        ctx,
                        system,
                        record,
                        lambda tag: start(tag + 1, lease),
                        lambda procs: probe.left() == 0,
                        phase,
                    )
                results.crash.setdefault(system, []).append(outcome)
    finally:
        for proc in workers:
            ctx.procs.stop(proc)
        bq.close_app(app, probe, ctx.watchdog)


# -- jobs: Huey -----------------------------------------------------------------------------------


def huey_round(ctx: Context, index: int, system: str, folder: Path) -> None:
    import peer_huey

    s, results = ctx.settings, ctx.results
    path = folder / "huey.db"
    tasks = peer_huey.build(str(path))
    env = {**os.environ, "BENCH_HUEY_DB": str(path), "PYTHONPATH": python_path()}
    matched = ["-d", "0.02", "-m", "0.02", "-b", "1"]  # poll every 20 ms, like BGJOBS_POLL_INTERVAL
    consumers: list[subprocess.Popen[Any]] = []

    def start(tag: int, polling: Sequence[str] = matched) -> list[subprocess.Popen[Any]]:
        command = [str(BIN / "huey_consumer"), "peer_huey.huey", "-w", "2", "-k", "thread", "-q"]
        proc = ctx.procs.start([*command, *polling], folder / f"huey{tag}.log", env, BENCH)
        consumers.append(proc)
        return [proc]

    def stop() -> None:
        while consumers:
            ctx.procs.stop(consumers.pop(), signal.SIGINT)  # Huey's graceful shutdown

    idle: Callable[[], bool] = lambda: tasks.huey.pending_count() == 0  # noqa: E731
    try:
        mark = folder / "mark"
        tasks.mark(str(mark))
        with ctx.phase(f"{system}: enqueue") as phase:
            results.put(system, "enqueue", index, timed_enqueue(tasks.noop, s.jobs, phase))
        with ctx.phase(f"{system}: drain") as phase:
            start(0)
            results.put(system, "drain", index, drain_rate(s.jobs, mark, idle, phase))
        with ctx.phase(f"{system}: end-to-end") as phase:
            started = time.time()
            timed_enqueue(tasks.noop, s.e2e_jobs, phase)
            ended = wait_for(idle, phase, "the end-to-end jobs")
            results.put(system, "e2e", index, s.e2e_jobs / (ended - started))
        with ctx.phase(f"{system}: latency") as phase:
            time.sleep(0.1)
            stamps = Stamps(folder / "stamps")
            samples = latency_samples(tasks.stamp, idle, stamps, s.samples, phase)
            put_latency(results, system, index, samples)
        stop()
        with ctx.phase(f"{system}: latency at default polling") as phase:
            start(9, polling=())
            time.sleep(0.5)
            stamps = Stamps(folder / "stamps-default")
            samples = latency_samples(tasks.stamp, idle, stamps, s.default_samples, phase)
            put_latency(results, "huey-default", index, samples)
        stop()
        record = folder / "record"
        for n in range(s.crash_jobs):
            tasks.record(str(record), n, s.crash_pause)
        with ctx.phase(f"{system}: crash check", s.limit) as phase:
            outcome = crash_check(
                ctx, system, record, lambda t: start(t + 1), lambda p: idle(), phase
            )
        results.crash.setdefault(system, []).append(outcome)
    finally:
        stop()
        tasks.huey.storage.close()


# -- jobs: RQ -------------------------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on 127.0.0.1:``REDIS_PORT``: no snapshots, no append-only file."""

    def __init__(self, procs: Processes, folder: Path) -> None:
        from redis import Redis

        if port_open(REDIS_PORT):
            raise RuntimeError(f"something already listens on 127.0.0.1:{REDIS_PORT}")
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("no redis-server (apt-get install redis-server)")
        self.procs = procs
        self.log = folder / "redis.log"
        command = [exe, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(folder), "--daemonize", "no"]
        self.proc = procs.start(command, self.log)
        self.client = Redis(host="127.0.0.1", port=REDIS_PORT)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        "redis-server did not start:\n" + log_tail(self.log)
                    ) from None
                time.sleep(0.05)
        self.version = str(self.client.info("server").get("redis_version", "?"))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        self.procs.stop(self.proc)


def rq_round(ctx: Context, index: int, system: str, folder: Path) -> None:
    from rq import Queue, Worker

    assert ctx.redis is not None
    s, results, conn = ctx.settings, ctx.results, ctx.redis.client
    conn.flushall()
    queue = Queue("bench", connection=conn)
    url = f"redis://127.0.0.1:{REDIS_PORT}"
    env = {**os.environ, "PYTHONPATH": python_path()}
    workers: list[subprocess.Popen[Any]] = []

    def start(tag: int, burst: bool = True) -> list[subprocess.Popen[Any]]:
        command = [str(BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "--url", url]
        command += ["--quiet", *(["--burst"] if burst else []), "bench"]
        procs = [
            ctx.procs.start(command, folder / f"rq{tag}-{n}.log", env, BENCH) for n in range(2)
        ]
        workers.extend(procs)
        return procs

    def finished() -> int:
        return int(queue.finished_job_registry.get_job_count(cleanup=False))

    def idle() -> bool:
        return queue.count == 0 and queue.started_job_registry.get_job_count(cleanup=False) == 0

    def stop() -> None:
        while workers:
            ctx.procs.stop(workers.pop())  # SIGTERM: RQ's warm shutdown

    try:
        mark = folder / "mark"
        queue.enqueue(peer_tasks.mark, str(mark))
        with ctx.phase(f"{system}: enqueue") as phase:
            rate = timed_enqueue(lambda n: queue.enqueue(peer_tasks.noop, n), s.jobs, phase)
            results.put(system, "enqueue", index, rate)
        with ctx.phase(f"{system}: drain") as phase:
            start(0)
            done = s.jobs + 1
            rate = drain_rate(s.jobs, mark, lambda: finished() >= done, phase)
            results.put(system, "drain", index, rate)
            for proc in workers:
                proc.wait(timeout=max(1.0, phase.remaining()))
            stop()
        with ctx.phase(f"{system}: end-to-end") as phase:
            start(1, burst=False)
            wait_for(lambda: Worker.count(queue=queue) >= 2, phase, "the workers to register")
            time.sleep(0.1)
            base = finished()
            started = time.time()
            timed_enqueue(lambda n: queue.enqueue(peer_tasks.noop, n), s.e2e_jobs, phase)
            target = base + s.e2e_jobs
            ended = wait_for(lambda: finished() >= target, phase, "the end-to-end jobs")
            results.put(system, "e2e", index, s.e2e_jobs / (ended - started))
        with ctx.phase(f"{system}: latency") as phase:
            time.sleep(0.1)
            stamps = Stamps(folder / "stamps")
            samples = latency_samples(
                lambda path, key: queue.enqueue(peer_tasks.stamp, path, key),
                idle,
                stamps,
                s.samples,
                phase,
            )
            put_latency(results, system, index, samples)
        stop()
        record = folder / "record"
        for n in range(s.crash_jobs):
            queue.enqueue(peer_tasks.record, str(record), n, s.crash_pause)
        with ctx.phase(f"{system}: crash check", s.limit) as phase:
            outcome = crash_check(
                ctx,
                system,
                record,
                lambda tag: start(tag + 2),
                lambda procs: all(proc.poll() is not None for proc in procs),
                phase,
            )
        results.crash.setdefault(system, []).append(outcome)
    finally:
        stop()


# -- jobs: raw sqlite3 ----------------------------------------------------------------------------


def raw_round(ctx: Context, index: int, system: str, folder: Path) -> None:
    full = system == "raw-full"
    count = ctx.settings.raw_full_jobs if full else ctx.settings.jobs
    conn = bq.open_raw(folder / "raw.db", "FULL" if full else "NORMAL")
    try:
        with ctx.phase(f"{system}: enqueue") as phase:
            enqueue = bq.raw_enqueue(conn, count, phase)
        with ctx.phase(f"{system}: claim+complete") as phase:
            cycle = bq.raw_cycles(conn, count, phase)
    finally:
        conn.close()
    ctx.results.put(system, "enqueue", index, enqueue)
    ctx.results.put(system, "drain", index, cycle)
    ctx.results.put(system, "e2e", index, 1 / (1 / enqueue + 1 / cycle))


# -- request logs ---------------------------------------------------------------------------------


def child_main(variant: str, folder: str) -> None:
    """A test-client process for one variant: answers ``run N`` and ``quit`` lines on stdin."""
    import threading as _threading

    # Answers go to the original stdout; whatever the recorders print goes to stderr (the log).
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    app = peer_logs_app.create_app(variant, folder)
    client = app.test_client()
    served = 0

    def settle() -> None:
        logs = app.extensions.get("sqlitelogs")
        if logs is not None:
            with app.app_context():
                logs.flush()
        for thread in _threading.enumerate():  # the dashboard writes each request in a thread
            if type(thread).__module__.startswith("flask_monitoringdashboard"):
                thread.join(30)

    def reply(payload: dict[str, Any]) -> None:
        answers.write(json.dumps(payload) + "\n")
        answers.flush()

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "run":
            most, seconds = argument.split()
            count, errors, times = 0, 0, []
            started = time.perf_counter()
            deadline = started + float(seconds)
            while count < int(most) and (count & 63 or time.perf_counter() < deadline):
                begun = time.perf_counter()
                response = client.get(URL_PATH)
                times.append(time.perf_counter() - begun)
                errors += response.status_code != 200
                count += 1
            settle()
            ended = time.perf_counter()
            served += count
            reply(
                {
                    "rate": count / (ended - started),
                    "p50_us": bq.percentile(times, 50) * 1e6,
                    "p99_us": bq.percentile(times, 99) * 1e6,
                    "errors": errors,
                    "served": served,
                    "rows": peer_logs_app.count_entries(variant, Path(folder)),
                }
            )
        elif command == "quit":
            logs = app.extensions.get("sqlitelogs")
            if logs is not None:
                with app.app_context():
                    logs.stop()
            settle()
            reply({"served": served, "rows": peer_logs_app.count_entries(variant, Path(folder))})
            return


class Child:
    """One variant's test-client process, driven line by line."""

    def __init__(self, ctx: Context, variant: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.variant = variant
        self.log = folder.parent / f"child-{variant}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(folder)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONPATH": python_path()},
                cwd=folder,
                start_new_session=True,
            )
        ctx.procs.adopt(self.proc)

    def ask(self, line: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        answer = self.proc.stdout.readline() if ready else b""
        if not answer:
            raise RuntimeError(
                f"{self.variant}: no answer to {line!r} in {timeout:g} s:\n{log_tail(self.log)}"
            )
        return dict(json.loads(answer))


def in_process(ctx: Context, base: Path) -> None:
    s, results = ctx.settings, ctx.results
    variants = ctx.log_variants
    children: dict[str, Child] = {}
    try:
        for variant in variants:
            children[variant] = Child(ctx, variant, base / f"inproc-{variant}")
        for child in children.values():  # start-up and warm-up, not measured
            child.ask(f"run 300 {s.requests_seconds}", s.limit)
        for index in range(s.rounds):
            for variant in rotate(variants, index):
                with ctx.phase(f"in-process {variant}"):
                    answer = children[variant].ask(
                        f"run {s.requests} {s.requests_seconds}", s.limit
                    )
                results.put(variant, "inproc_rps", index, answer["rate"])
                results.put(variant, "inproc_p50_us", index, answer["p50_us"])
                results.put(variant, "inproc_p99_us", index, answer["p99_us"])
                if answer["errors"]:
                    results.problems.append(f"in-process {variant}: {answer['errors']} errors")
            print(f"  in-process round {index + 1}/{s.rounds} done", file=sys.stderr, flush=True)
        for variant, child in children.items():
            answer = child.ask("quit", s.limit)
            results.recorded("inproc", variant, answer["served"], answer["rows"])
            errors = log_errors(child.log)
            if errors:
                results.problems.append(f"in-process {variant}: its log has {errors}")
    finally:
        for child in children.values():
            ctx.procs.stop(child.proc, timeout=10)


def start_gunicorn(ctx: Context, variant: str, folder: Path) -> tuple[subprocess.Popen[Any], int]:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "BENCH_PEER_VARIANT": variant,
        "BENCH_PEER_DIR": str(folder),
        "PYTHONPATH": python_path(),
    }
    command = [str(BIN / "gunicorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    command += ["--chdir", str(BENCH), "--log-level", "warning", "peer_logs_app:create_app()"]
    return ctx.procs.start(command, folder / "gunicorn.log", env, BENCH), port


@dataclass
class WrkRun:
    requests: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: str


def wrk(port: int, seconds: float, timeout: float) -> WrkRun:
    exe = shutil.which("wrk")
    assert exe is not None
    url = f"http://127.0.0.1:{port}{URL_PATH}"
    done = subprocess.run(
        [exe, "-t1", "-c4", f"-d{max(1, round(seconds))}s", "--latency", url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = done.stdout
    served = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done.returncode != 0 or not served or not rate:
        raise RuntimeError(f"wrk failed:\n{out}\n{done.stderr}")
    errors = [
        m.group(0) for m in re.finditer(r"(Non-2xx or 3xx responses: \d+|Socket errors.*)", out)
    ]

    def quantile(pct: int) -> float:
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not found:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return float(found.group(1)) * scale

    return WrkRun(
        int(served.group(1)), float(rate.group(1)), quantile(50), quantile(99), "; ".join(errors)
    )


def warm_up(port: int, count: int) -> int:
    """``count`` requests, one connection each; return how many were answered 200."""
    ok = 0
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", URL_PATH)
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
        finally:
            conn.close()
    return ok


def dashboard_templates(ctx: Context, base: Path) -> dict[str, Path]:
    """A Flask-MonitoringDashboard database for each of its variants, made by one process.

    Two gunicorn workers that both find no database both create its tables, and the one that
    loses fails to boot (and gunicorn stops): each round's server starts on a copy instead."""
    made: dict[str, Path] = {}
    for variant in ctx.gunicorn_variants:
        if not variant.startswith("dashboard"):
            continue
        folder = base / f"template-{variant}"
        folder.mkdir()
        code = "import sys, peer_logs_app; peer_logs_app.create_app(sys.argv[1], sys.argv[2])"
        subprocess.run(
            [sys.executable, "-c", code, variant, str(folder)],
            env={**os.environ, "PYTHONPATH": python_path()},
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=ctx.settings.limit,
        )
        made[variant] = folder / "dashboard.db"
    return made


def under_gunicorn(ctx: Context, base: Path) -> None:
    """Every variant's server starts once (and is warmed up), the rounds run wrk against each in
    turn, then the servers stop (SIGTERM) and each recorder's rows are counted against every
    request its server answered."""
    s, results = ctx.settings, ctx.results
    variants = ctx.gunicorn_variants
    templates = dashboard_templates(ctx, base)
    servers: dict[str, tuple[subprocess.Popen[Any], int, Path]] = {}
    served: dict[str, int] = {}
    try:
        with ctx.phase("gunicorn start-up") as phase:
            for variant in variants:
                folder = base / f"gunicorn-{variant}"
                folder.mkdir()
                if variant in templates:
                    shutil.copy(templates[variant], folder / "dashboard.db")
                proc, port = start_gunicorn(ctx, variant, folder)
                servers[variant] = (proc, port, folder)
            for variant, (proc, port, folder) in servers.items():
                # Both workers booted (each leaves a file), so that none is still importing while
                # another variant is measured.
                while len(list(folder.glob("ready-*"))) < 2 or not port_open(port):
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"gunicorn ({variant}) exited:\n{log_tail(folder / 'gunicorn.log')}"
                        )
                    phase.check(f" (gunicorn for {variant})")
                    time.sleep(0.05)
            for variant, (_proc, port, _folder) in servers.items():
                served[variant] = warm_up(port, s.warmup)
        time.sleep(3.0)  # let the warm-up's entries be flushed before the first measurement
        for index in range(s.rounds):
            for variant in rotate(variants, index):
                proc, port, folder = servers[variant]
                if variant not in served:
                    continue  # failed in an earlier round
                try:
                    with ctx.phase(f"gunicorn round {index + 1}: {variant}"):
                        run = wrk(port, s.seconds, s.limit)
                except Exception as error:
                    results.problems.append(
                        f"gunicorn round {index + 1} {variant}: ERROR {error}\n"
                        + log_tail(folder / "gunicorn.log")
                    )
                    served.pop(variant)
                    continue
                served[variant] += run.requests
                results.put(variant, "gunicorn_rps", index, run.rate)
                results.put(variant, "gunicorn_p50_ms", index, run.p50_ms)
                results.put(variant, "gunicorn_p99_ms", index, run.p99_ms)
                if run.errors:
                    results.problems.append(f"gunicorn round {index + 1} {variant}: {run.errors}")
            print(f"  gunicorn round {index + 1}/{s.rounds} done", file=sys.stderr, flush=True)
    finally:
        for proc, _port, _folder in servers.values():
            ctx.procs.stop(proc, timeout=30)  # SIGTERM: the workers exit, loggers flush
    for variant, (_proc, _port, folder) in servers.items():
        if variant in served:
            rows = peer_logs_app.count_entries(variant, folder)
            results.recorded("gunicorn", variant, served[variant], rows)
            errors = log_errors(folder / "gunicorn.log")
            if errors:
                results.problems.append(f"gunicorn {variant}: its log has {errors}")


def log_errors(path: Path) -> str:
    """A summary of the error lines a recorder printed (the dashboard prints its failed commits)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "error" in line.lower() and "Traceback" not in line:
            key = re.sub(r"\d+", "N", line.strip())[:120]
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(
        f"{n} x {key!r}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Context:
    settings: Settings
    results: Results
    procs: Processes
    watchdog: Watchdog
    base: Path
    redis: RedisServer | None = None
    job_systems: tuple[str, ...] = ()
    log_variants: tuple[str, ...] = ()
    gunicorn_variants: tuple[str, ...] = ()

    @contextlib.contextmanager
    def phase(self, name: str, limit: float | None = None) -> Iterator[bq.Phase]:
        with self.watchdog.phase(name, limit or self.settings.limit) as phase:
            yield phase


def rotate(items: Sequence[str], index: int) -> list[str]:
    shift = index % len(items)
    return [*items[shift:], *items[:shift]]


ROUND_OF = {
    "bgjobs": bgjobs_round,
    "bgjobs-full": bgjobs_round,
    "huey": huey_round,
    "rq": rq_round,
    "raw": raw_round,
    "raw-full": raw_round,
}


def jobs_part(ctx: Context) -> None:
    for index in range(ctx.settings.rounds):
        for system in rotate(ctx.job_systems, index):
            folder = ctx.base / f"jobs-{system}-{index + 1}"
            folder.mkdir()
            started = time.monotonic()
            try:
                ROUND_OF[system](ctx, index, system, folder)
            except bq.PhaseTimeout as error:
                ctx.results.problems.append(f"round {index + 1} {system}: TIMEOUT {error}")
            except Exception:
                ctx.results.problems.append(
                    f"round {index + 1} {system}: ERROR\n" + traceback.format_exc().rstrip()
                )
            print(
                f"  jobs round {index + 1}/{ctx.settings.rounds}: {system} "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def logs_part(ctx: Context) -> None:
    for name, part in (("in-process", in_process), ("gunicorn", under_gunicorn)):
        if name == "gunicorn" and not ctx.gunicorn_variants:
            continue
        try:
            part(ctx, ctx.base)
        except bq.PhaseTimeout as error:
            ctx.results.problems.append(f"request logs, {name}: TIMEOUT {error}")
        except Exception:
            ctx.results.problems.append(
                f"request logs, {name}: ERROR\n" + traceback.format_exc().rstrip()
            )


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def tool_version(command: Sequence[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=10)
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory": memory,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def availability(results: Results, only: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    def have(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    systems = list(JOB_SYSTEMS) if only in (None, "jobs") else []
    variants = list(LOG_VARIANTS) if only in (None, "logs") else []
    if systems and not have("huey"):
        results.skipped["huey"] = "SKIPPED: huey is not installed (pip install '.[bench]')"
    if systems and not (have("rq") and have("redis")):
        results.skipped["rq"] = "SKIPPED: rq or redis is not installed (pip install '.[bench]')"
    elif systems and shutil.which("redis-server") is None:
        results.skipped["rq"] = "SKIPPED: no redis-server (apt-get install redis-server)"
    if variants and not have("flask_monitoringdashboard"):
        for variant in ("dashboard-1", "dashboard-3"):
            results.skipped[variant] = "SKIPPED: flask-monitoringdashboard is not installed"
    if variants and not have("flask_profiler"):
        results.skipped["profiler"] = "SKIPPED: flask-profiler is not installed"
    if variants and not (shutil.which("wrk") and (BIN / "gunicorn").exists()):
        results.skipped["gunicorn"] = "SKIPPED: gunicorn or wrk is missing (apt-get install wrk)"
    return (
        tuple(s for s in systems if s not in results.skipped),
        tuple(v for v in variants if v not in results.skipped),
    )


def run(
    settings: Settings, only: str | None, chosen: set[str] | None = None, keep: bool = False
) -> dict[str, Any]:
    results = Results(settings.rounds)
    procs = Processes()
    load = os.getloadavg()[0]
    began = time.monotonic()
    job_systems, log_variants = availability(results, only)
    if chosen:
        job_systems = tuple(x for x in job_systems if x in chosen)
        log_variants = tuple(x for x in log_variants if x in chosen)
    # Each gunicorn variant costs its 10 s a round: the dashboard's level 1 (its default) and our
    # logger at FULL (one more fsync a flush) run in-process only unless asked for by name.
    gunicorn_variants = tuple(v for v in log_variants if chosen or v not in IN_PROCESS_ONLY)

    def stop_on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    with tempfile.TemporaryDirectory(prefix="bench_peers-") as tmp:
        base = Path(tmp)
        if keep:
            base = Path(tempfile.mkdtemp(prefix="bench_peers-kept-"))
            print(f"keeping the run's files in {base}", file=sys.stderr)
        watchdog = Watchdog(grace=30.0, cleanup=procs.stop_all)
        ctx = Context(settings, results, procs, watchdog, base)
        ctx.job_systems, ctx.log_variants = job_systems, log_variants
        ctx.gunicorn_variants = () if "gunicorn" in results.skipped else gunicorn_variants
        try:
            if "rq" in job_systems:
                try:
                    ctx.redis = RedisServer(procs, base)
                except Exception as error:
                    results.skipped["rq"] = f"SKIPPED: {error}"
                    ctx.job_systems = tuple(s for s in job_systems if s != "rq")
            if ctx.job_systems:
                jobs_part(ctx)
            if ctx.log_variants:
                logs_part(ctx)
        finally:
            redis_version = ctx.redis.version if ctx.redis else None
            if ctx.redis is not None:
                ctx.redis.stop()
            procs.stop_all()
            signal.signal(signal.SIGTERM, previous)
    versions = {
        name: package_version(name)
        for name in (
            "flask-bgjobs",
            "Flask",
            "Werkzeug",
            "SQLAlchemy",
            "huey",
            "rq",
            "redis",
            "Flask-MonitoringDashboard",
            "flask-profiler",
            "gunicorn",
        )
    }
    server = redis_version or tool_version(["redis-server", "--version"]) or ""
    found = re.search(r"v=(\S+)", server)
    versions["redis-server"] = found.group(1) if found else (server or None)
    found = re.search(r"wrk (\S+)", tool_version(["wrk", "--version"]) or "")
    versions["wrk"] = found.group(1) if found else None
    results.meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine(),
        "versions": versions,
        "settings": asdict(settings),
        "job_systems": list(ctx.job_systems),
        "log_variants": list(ctx.log_variants),
        "gunicorn_variants": list(ctx.gunicorn_variants),
        "load_start": round(load, 2),
        "load_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - began),
    }
    return asdict(results)


# -- the report -----------------------------------------------------------------------------------


def done(values: Sequence[float | None] | None) -> list[float]:
    return [v for v in values or () if v is not None and v == v]


def cell(values: Sequence[float | None] | None, form: str, rounds: int) -> str:
    got = done(values)
    if not got:
        return "-"
    text = f"{statistics.median(got):{form}} ({min(got):{form}}-{max(got):{form}})"
    if len(got) < rounds:
        text += f" [{len(got)}/{rounds}]"
    return text


def ratios(data: dict[str, Any], a: str, b: str, metric: str, invert: bool = False) -> list[float]:
    """``a / b`` of ``metric`` round by round (``b / a`` with ``invert``)."""
    first = data["values"].get(a, {}).get(metric, [])
    second = data["values"].get(b, {}).get(metric, [])
    out = []
    for x, y in zip(first, second, strict=False):
        if x and y:
            out.append(y / x if invert else x / y)
    return out


def render(data: dict[str, Any]) -> str:
    """The generated part of ``docs/benchmarks.md`` (also what the script prints)."""
    meta, values, n = data["meta"], data["values"], data["rounds"]
    m, v, s = meta["machine"], meta["versions"], meta["settings"]
    lines: list[str] = []
    add = lines.append
    add(
        f"Measured on {meta['date']} by `bench/bench_peers.py` ({n} rounds, {meta['seconds']} s; "
        f"load average {meta['load_start']} at the start, {meta['load_end']} at the end): "
        f"{m['cpus']} cpus ({m['cpu']}), {m['memory']}, {m['system']}, Python {m['python']}, "
        f"SQLite {m['sqlite']}."
    )
    add("")
    add(
        "Versions: "
        + ", ".join(f"{name} {ver}" for name, ver in v.items() if ver)
        + "."
        + (
            " Not installed: " + ", ".join(k for k, ver in v.items() if not ver) + "."
            if any(not ver for ver in v.values())
            else ""
        )
    )
    for name, reason in data["skipped"].items():
        add("")
        add(f"**{name}**: {reason}")
    systems = [x for x in meta["job_systems"]]
    if systems:
        add("")
        add(
            f"### Jobs: {s['jobs']:,} no-op jobs enqueued then drained, {s['e2e_jobs']:,} end to "
            f"end, {s['samples']} latency samples a round"
        )
        add("")
        add("| system | enqueue, jobs/s | drain, jobs/s | end-to-end, jobs/s | "
            "latency p50, ms | latency p99, ms |")  # fmt: skip
        add("| --- | ---: | ---: | ---: | ---: | ---: |")
        rows = [x for x in systems]
        if "huey" in systems:
            rows.insert(rows.index("huey") + 1, "huey-default")
        for name in rows:
            row = values.get(name, {})
            add(
                f"| {LABELS[name]} | {cell(row.get('enqueue'), ',.0f', n)} | "
                f"{cell(row.get('drain'), ',.0f', n)} | {cell(row.get('e2e'), ',.0f', n)} | "
                f"{cell(row.get('lat_p50'), '.1f', n)} | {cell(row.get('lat_p99'), '.1f', n)} |"
            )
        add("")
        add(
            "Raw sqlite3 is one thread doing the same transactions back to back: its drain is "
            "claim+complete cycles, its end-to-end an enqueue and a cycle in series"
            + (f"; at FULL over {s['raw_full_jobs']:,} jobs." if "raw-full" in systems else ".")
            + " The latency of flask_bgjobs is measured at its default only: its polling sets it,"
            " not the fsyncs. Huey's first row polls every 20 ms like flask_bgjobs"
            " (`-d 0.02 -m 0.02 -b 1`), the second with Huey's defaults (from 0.1 s, backing off"
            " to 10 s while idle)."
        )
        pairs = [(a, b) for a, b in JOB_PAIRS if a in systems and b in systems]
        if pairs:
            add("")
            add("Throughput ratios, round by round within the run (median, range); above 1 means")
            add("flask_bgjobs did more jobs per second:")
            add("")
            add("| flask_bgjobs / other | enqueue | drain | end-to-end |")
            add("| --- | ---: | ---: | ---: |")
            for a, b in pairs:
                cells = [cell(ratios(data, a, b, m), ".2f", n) for m in ("enqueue", "drain", "e2e")]
                add(f"| {LABELS[a]} / {LABELS[b]} | " + " | ".join(cells) + " |")
        if data["crash"]:
            add("")
            add(
                f"Crash check: {s['crash_jobs']:,} jobs of {s['crash_pause'] * 1000:g} ms, the "
                f"consumer SIGKILLed after {KILL_AT:.0%} of them finished, started again; each "
                "round's count:"
            )
            add("")
            add("| system | done before the kill | lost | ran twice | settled after restart, s |")
            add("| --- | --- | --- | --- | --- |")
            for name, outcomes in data["crash"].items():

                def each(key: str, items: list[dict[str, Any]] = outcomes) -> str:
                    return ", ".join("-" if o[key] is None else f"{o[key]:,}" for o in items)

                notes = "; ".join(o["note"] for o in outcomes if o["note"])
                settled = each("settled_s") + (f" ({notes})" if notes else "")
                add(
                    f"| {LABELS[name]} | {each('killed_after')} | {each('lost')} | "
                    f"{each('duplicated')} | {settled} |"
                )
        add("")
        add("![Jobs throughput](img/peers-jobs.svg)")
        add("")
        add("![Enqueue-to-start latency](img/peers-latency.svg)")
    variants = meta["log_variants"]
    if variants:
        add("")
        add(
            f"### Request logs: `GET {URL_PATH}` (a 5-field JSON object), gunicorn with 2 sync "
            f"workers and `wrk -t1 -c4` for {s['seconds']:g} s; test client up to "
            f"{s['requests']:,} requests or {s['requests_seconds']:g} s a round"
        )
        add("")
        add("| recorder | gunicorn req/s | x none | p50, ms | p99, ms | rows / requests | "
            "test client req/s | x none | p50, us | p99, us | rows / requests |")  # fmt: skip
        add("| --- |" + " ---: |" * 10)
        records = data["records"]

        def kept(part: str, variant: str) -> str:
            pairs = records.get(part, {}).get(variant, [])
            if not pairs or variant == "none":
                return "-"
            served = sum(p[0] for p in pairs)
            rows = sum(p[1] for p in pairs)
            return f"{rows:,} / {served:,}" + (" **lost**" if rows < served else "")

        for name in variants:
            row = values.get(name, {})
            add(
                f"| {LABELS[name]} | {cell(row.get('gunicorn_rps'), ',.0f', n)} | "
                f"{cell(ratios(data, name, 'none', 'gunicorn_rps'), '.2f', n)} | "
                f"{cell(row.get('gunicorn_p50_ms'), '.2f', n)} | "
                f"{cell(row.get('gunicorn_p99_ms'), '.2f', n)} | {kept('gunicorn', name)} | "
                f"{cell(row.get('inproc_rps'), ',.0f', n)} | "
                f"{cell(ratios(data, name, 'none', 'inproc_rps'), '.2f', n)} | "
                f"{cell(row.get('inproc_p50_us'), ',.0f', n)} | "
                f"{cell(row.get('inproc_p99_us'), ',.0f', n)} | {kept('inproc', name)} |"
            )
        pairs = [(a, b) for a, b in LOG_PAIRS if a in variants and b in variants]
        if pairs:
            add("")
            add("Requests/s ratios, round by round within the run (median, range); above 1 means")
            add("the app served more requests per second with flask_sqlitelogs:")
            add("")
            add("| flask_sqlitelogs / other | gunicorn | test client |")
            add("| --- | ---: | ---: |")
            for a, b in pairs:
                cells = [
                    cell(ratios(data, a, b, m), ".2f", n) for m in ("gunicorn_rps", "inproc_rps")
                ]
                add(f"| {LABELS[a]} / {LABELS[b]} | " + " | ".join(cells) + " |")
        served = meta.get("gunicorn_variants", variants)
        apart = [LABELS[x] for x in variants if x not in served]
        if apart:
            add("")
            add(f"Not run under gunicorn (to keep `make bench` short): {', '.join(apart)}.")
        add("")
        add("![Request logs](img/peers-requestlogs.svg)")
    if data["problems"]:
        add("")
        add("Problems in this run:")
        add("")
        for problem in data["problems"]:
            add("    " + problem.replace("\n", "\n    "))
    return "\n".join(wrap(line) for line in lines) + "\n"


def wrap(line: str) -> str:
    """A paragraph wrapped at 100 columns; tables, headings, images and code as they are."""
    if len(line) <= 100 or line.startswith(("|", "#", "!", "    ")):
        return line
    return textwrap.fill(line, width=100, break_long_words=False, break_on_hyphens=False)


# -- charts ---------------------------------------------------------------------------------------


@dataclass
class Bar:
    label: str
    values: list[float]
    color: str


def svg_chart(title: str, panels: list[tuple[str, str, list[Bar]]]) -> str:
    """Horizontal bars (the median) with a whisker for the range, one scale per panel."""
    width, left, right, row, gap = 780, 250, 120, 22, 14
    plot = width - left - right
    parts: list[str] = []
    y = 34
    for heading, form, bars in panels:
        parts.append(f'<text x="8" y="{y}" font-weight="bold">{html.escape(heading)}</text>')
        y += 10
        shown = [b for b in bars if b.values]
        top = max((max(b.values) for b in shown), default=1.0) * 1.05 or 1.0
        for bar in bars:
            y += row
            label = html.escape(bar.label)
            parts.append(f'<text x="{left - 8}" y="{y - 6}" text-anchor="end">{label}</text>')
            if not bar.values:
                parts.append(f'<text x="{left + 4}" y="{y - 6}" fill="#6b7280">not measured</text>')
                continue
            median = statistics.median(bar.values)
            low, high, end = (
                left + plot * v / top for v in (min(bar.values), max(bar.values), median)
            )
            parts.append(
                f'<rect x="{left}" y="{y - 17}" width="{end - left:.1f}" height="14" '
                f'fill="{bar.color}"/>'
            )
            parts.append(
                f'<path d="M{low:.1f} {y - 10}H{high:.1f}M{low:.1f} {y - 14}V{y - 6}'
                f'M{high:.1f} {y - 14}V{y - 6}" stroke="#111827" fill="none"/>'
            )
            parts.append(f'<text x="{high + 6:.1f}" y="{y - 6}">{median:{form}}</text>')
        y += gap + 8
    height = y
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n'
        f'<text x="8" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>\n'
        + "\n".join(parts)
        + "\n</svg>\n"
    )


def charts(data: dict[str, Any]) -> dict[str, str]:
    values, meta = data["values"], data["meta"]
    rounds = data["rounds"]
    out: dict[str, str] = {}
    note = f"median of {rounds} rounds, whiskers: range"

    def bars(names: Sequence[str], metric: str) -> list[Bar]:
        return [
            Bar(LABELS[name], done(values.get(name, {}).get(metric)), COLORS[name])
            for name in names
        ]

    systems = list(meta["job_systems"])
    if systems:
        out["peers-jobs.svg"] = svg_chart(
            f"Jobs per second, no-op jobs, higher is better ({note})",
            [
                ("Enqueue from one thread", ",.0f", bars(systems, "enqueue")),
                (
                    f"Drain of {meta['settings']['jobs']:,} queued, 2 workers",
                    ",.0f",
                    bars(systems, "drain"),
                ),
                ("End to end, enqueue while draining", ",.0f", bars(systems, "e2e")),
            ],
        )
        timed = [x for x in systems if not x.startswith("raw") and x != "bgjobs-full"]
        if "huey" in timed:
            timed.insert(timed.index("huey") + 1, "huey-default")
        out["peers-latency.svg"] = svg_chart(
            f"Enqueue-to-start latency on an idle consumer, ms, lower is better ({note})",
            [("p50", ".1f", bars(timed, "lat_p50")), ("p99", ".1f", bars(timed, "lat_p99"))],
        )
    variants = list(meta["log_variants"])
    if variants:
        out["peers-requestlogs.svg"] = svg_chart(
            f"Requests per second with each request recorder, higher is better ({note})",
            [
                (
                    "gunicorn, 2 sync workers, wrk",
                    ",.0f",
                    bars(meta.get("gunicorn_variants", variants), "gunicorn_rps"),
                ),
                ("In-process, Flask test client", ",.0f", bars(variants, "inproc_rps")),
            ],
        )
    return out


def write_docs(data: dict[str, Any], text: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    (IMG / "peers-results.json").write_text(json.dumps(data, indent=1) + "\n")
    for name, svg in charts(data).items():
        (IMG / name).write_text(svg)
    page = DOCS.read_text()
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in page and END in page:
        head, _, rest = page.partition(BEGIN)
        _, _, tail = rest.partition(END)
        page = head + block + tail
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    DOCS.write_text(page)
    print(f"wrote {DOCS.relative_to(ROOT)} and docs/img/peers-*", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts, 2 s wrk")
    parser.add_argument("--only", choices=("jobs", "logs"), help="run one half only")
    parser.add_argument(
        "--systems",
        help="comma-separated subset of the job systems and request-log variants: "
        + ", ".join(JOB_SYSTEMS + LOG_VARIANTS),
    )
    parser.add_argument("--limit", type=float, default=60.0, help="seconds a phase may take")
    parser.add_argument("--seconds", type=float, help="wrk duration (default 10)")
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the run's files and logs")
    parser.add_argument("--json", type=Path, help="also save the results to this file")
    parser.add_argument("--from-json", type=Path, help="render a saved run instead of running")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return
    if args.from_json:
        data = json.loads(args.from_json.read_text())
    else:
        rounds = args.rounds or (1 if args.quick else 3)
        if rounds < 1:
            parser.error("--rounds must be at least 1")
        if args.quick:
            settings = Settings(
                rounds,
                jobs=1_000,
                e2e_jobs=500,
                samples=20,
                default_samples=10,
                crash_jobs=100,
                raw_full_jobs=300,
                requests=500,
                seconds=args.seconds or 2.0,
                limit=args.limit,
            )
        else:
            settings = Settings(rounds, seconds=args.seconds or 10.0, limit=args.limit)
        chosen = set(args.systems.split(",")) if args.systems else None
        if chosen and not chosen <= set(JOB_SYSTEMS + LOG_VARIANTS):
            parser.error(
                f"unknown system(s): {', '.join(chosen - set(JOB_SYSTEMS + LOG_VARIANTS))}"
            )
        data = run(settings, args.only, chosen, args.keep)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    text = render(data)
    print(text)
    if args.write_docs:
        write_docs(data, text)
    failed = any("ERROR" in p or "TIMEOUT" in p for p in data["problems"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
