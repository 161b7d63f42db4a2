"""What the request logger costs a hello-world app, how fast it flushes, how fast the grid queries.

Run: ``.venv/bin/python bench/bench_requestlogs.py`` (``--rounds N``, ``--quick`` for a smoke run,
``--skip-server``, ``--skip-query``). One run prints:

1. requests/s of ``bench/requestlogs_app.py`` through Flask's test client, without the logger,
   with its default options (bodies off) and with request and response bodies on. Each round
   times N requests plus the final ``flush()`` of what they left, so every entry's conversion and
   write is paid inside the measured time. Variants alternate round by round; medians.
2. the same app under gunicorn (one sync worker) on 127.0.0.1, loaded by ``wrk`` (or, without
   wrk, a load generator of threads and ``http.client``) for a few seconds per round; after each
   round gunicorn is stopped (its exit flushes) and the rows on disk are counted against the
   requests served.
3. the per-request overhead in microseconds (1 and 2), split in-process into capture (the
   request path) and flush (per row).
4. flush throughput in rows/s: ``flush()`` of 20,000 captured requests (conversion, redaction,
   one ``BEGIN IMMEDIATE`` and one ``executemany``) against raw ``sqlite3`` inserting the same
   rows into a file of the same schema with the same pragmas, round by round.
5. query latency p50/p95 of ``logs.query(...)`` over a month of 1,000,000 rows, for the grid's
   filtered and sorted pages (each with its total), then for the scans the indexes cannot help.

then the targets with PASS/MISS. The exit code is 0 whether the targets pass or not, 1 if a phase
failed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from flask import Flask  # noqa: E402
from requestlogs_app import create_app  # noqa: E402
from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: E402

from flask_bgjobs import ManualClock  # noqa: E402
from flask_sqlitelogs import SqliteRequestLogger  # noqa: E402
from flask_sqlitelogs.models import STORED_FIELDS  # noqa: E402
from flask_sqlitelogs.store import INSERT, SCHEMA, request_log  # noqa: E402

VARIANTS = ("plain", "default", "bodies")
MARCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    return f"{median(values):>9,.0f}  (range {min(values):,.0f}-{max(values):,.0f})"


def percentile(values: list[float], rank: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(rank / 100 * len(ordered) + 0.5) - 1))]


# -- 1. in-process ---------------------------------------------------------------------------------


def in_process(rounds: int, count: int, folder: Path) -> dict[str, Any]:
    """Rates with the default set-up (the flush thread running), then where the time goes."""
    apps = {v: create_app(v, str(folder / f"inproc-{v}")) for v in VARIANTS}
    rates = alternate(apps, rounds, count)
    for app in apps.values():
        stop_app(app)
    # The split: no flush thread and room for every entry, so that the requests' time is the
    # request path alone and the final flush holds every entry of the round.
    manual = {"SQLITELOGS_FLUSH_INTERVAL": 0, "SQLITELOGS_CAPACITY": count + 1000}
    split = {v: create_app(v, str(folder / f"split-{v}"), **manual) for v in VARIANTS}
    capture_us: dict[str, list[float]] = {v: [] for v in VARIANTS}
    flush_us: dict[str, list[float]] = {v: [] for v in VARIANTS}
    alternate(split, rounds, count, capture_us, flush_us)
    for app in split.values():
        stop_app(app)
    return {"rates": rates, "capture_us": capture_us, "flush_us": flush_us}


def alternate(
    apps: dict[str, Flask],
    rounds: int,
    count: int,
    capture_us: dict[str, list[float]] | None = None,
    flush_us: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Requests/s of each app: ``count`` requests and the final flush, variants taking turns."""
    clients = {v: app.test_client() for v, app in apps.items()}
    rates: dict[str, list[float]] = {v: [] for v in apps}
    for variant, client in clients.items():  # warm up, and create the month's file
        for _ in range(300):
            client.get("/")
        flush_app(apps[variant])
    for index in range(rounds):
        order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]
        for variant in order:
            client, app = clients[variant], apps[variant]
            started = time.perf_counter()
            for _ in range(count):
                client.get("/")
            served = time.perf_counter()
            written = flush_app(app)
            ended = time.perf_counter()
            rates[variant].append(count / (ended - started))
            if capture_us is not None and flush_us is not None:
                capture_us[variant].append((served - started) / count * 1e6)
                if variant != "plain":
                    flush_us[variant].append((ended - served) / max(written, 1) * 1e6)
    return rates


def flush_app(app: Flask) -> int:
    logs = app.extensions.get("sqlitelogs")
    if logs is None:
        return 0
    with app.app_context():
        return int(logs.flush())


def stop_app(app: Flask) -> None:
    logs = app.extensions.get("sqlitelogs")
    if logs is not None:
        with app.app_context():
            logs.stop()
            logs.store().dispose()


# -- 2. a real server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gunicorn(variant: str, folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_LOGS_VARIANT": variant, "BENCH_LOGS_DIR": str(folder)}
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(BENCH),
        "--log-level",
        "warning",
        "requestlogs_app:create_app()",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("gunicorn did not start within 20 s")


def stop_gunicorn(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def load(port: int, seconds: float) -> tuple[int, float]:
    """``(requests completed, requests/s)`` of ``GET /`` for ``seconds``."""
    wrk = shutil.which("wrk")
    if wrk:
        done = subprocess.run(
            [wrk, "-t1", "-c4", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        served = re.search(r"(\d+) requests in", done.stdout)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
        if not served or not rate or errors:
            raise RuntimeError(f"wrk failed:\n{done.stdout}\n{done.stderr}")
        return int(served.group(1)), float(rate.group(1))
    return python_load(port, seconds)


def python_load(port: int, seconds: float, threads: int = 4) -> tuple[int, float]:
    """A load generator for machines without wrk: threads, one connection per request."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                counts[index] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts), sum(counts) / (time.perf_counter() - started)


def count_rows(folder: Path) -> int:
    total = 0
    for path in (folder / "requests").glob("requests_*.db"):
        with sqlite3.connect(path) as conn:
            total += conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        conn.close()
    return total


def server(rounds: int, seconds: float, folder: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    checks: list[str] = []
    for index in range(rounds):
        order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]
        for variant in order:
            where = folder / f"server-{variant}-{index}"
            port = free_port()
            process = start_gunicorn(variant, where, port)
            try:
                load(port, 1)  # warm-up
                served, rate = load(port, seconds)
            finally:
                stop_gunicorn(process)
            rates[variant].append(rate)
            if variant != "plain":
                rows = count_rows(where)
                if rows < served:
                    checks.append(f"{variant} round {index}: {rows} rows for {served} requests")
    return {"rates": rates, "checks": checks, "tool": "wrk" if shutil.which("wrk") else "python"}


# -- 4. flush throughput ---------------------------------------------------------------------------


def raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in (
        "busy_timeout = 5000",
        "journal_mode = WAL",
        "synchronous = NORMAL",
        "foreign_keys = ON",
        "cache_size = -32768",
    ):
        conn.execute(f"PRAGMA {pragma}")
    from sqlalchemy.dialects import sqlite as dialect

    conn.execute(str(CreateTable(request_log).compile(dialect=dialect.dialect())))
    for index in request_log.indexes:
        conn.execute(str(CreateIndex(index).compile(dialect=dialect.dialect())))
    return conn


def flush_throughput(rounds: int, batch: int, folder: Path) -> dict[str, list[float]]:
    """Our flush of ``batch`` captured requests, then raw sqlite3 inserting the very same rows."""
    app = create_app(
        "default", str(folder / "flush"), SQLITELOGS_CAPACITY=batch, SQLITELOGS_FLUSH_INTERVAL=0
    )
    logs: SqliteRequestLogger = app.extensions["sqlitelogs"]
    client = app.test_client()
    raw = raw_connection(folder / "raw.db")
    columns = ", ".join(STORED_FIELDS)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        for _ in range(batch):
            client.get("/")
        with app.app_context():
            started = time.perf_counter()
            written = logs.flush()
            ours.append(written / (time.perf_counter() - started))
            database = logs.store().files.database()
        with sqlite3.connect(database.path) as conn:
            rows = conn.execute(
                f"SELECT {columns} FROM request_log ORDER BY id DESC LIMIT ?", (written,)
            ).fetchall()[::-1]
        conn.close()
        started = time.perf_counter()
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany(INSERT, rows)
        raw.execute("COMMIT")
        theirs.append(len(rows) / (time.perf_counter() - started))
    raw.close()
    stop_app(app)
    return {"ours": ours, "raw": theirs}


# -- 5. queries over 1,000,000 rows ----------------------------------------------------------------

PATHS = ["/", "/login", "/search", "/static/app.js"]
ENDPOINTS = {"/": "home", "/login": "auth.login", "/search": "search", "/static/app.js": "static"}


def synthetic_rows(count: int, seed: int = 7) -> Any:
    rng = random.Random(seed)
    start = MARCH.timestamp()
    step = 31 * 86400 / count
    request_headers = json.dumps(
        {
            "Host": "shop.example.org",
            "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131",
            "Accept": "text/html,application/xhtml+xml",
            "Accept-Language": "en-GB,en;q=0.9",
            "Accept-Encoding": "gzip, deflate, br",
            "Cookie": "[REDACTED]",
        }
    )
    statuses = [200] * 80 + [201] * 3 + [302] * 5 + [304] * 4 + [400] * 2 + [404] * 4 + [403, 500]
    methods = ["GET"] * 8 + ["POST", "PUT"]
    for n in range(count):
        timestamp = start + n * step
        if rng.random() < 0.7:
            item = rng.randrange(2000)
            path, endpoint = f"/api/items/{item}", "items.get"
        else:
            path = rng.choice(PATHS)
            endpoint = ENDPOINTS[path]
        status = rng.choice(statuses)
        failed = status == 500
        trace = f"{int(timestamp * 1000):012x}{rng.getrandbits(48):012x}"
        response_headers = json.dumps(
            {"Content-Type": "application/json", "Content-Length": "87", "X-Request-ID": trace}
        )
        yield (
            timestamp,
            trace,
            rng.choice(methods),
            f"https://shop.example.org{path}?page=2",
            path,
            "page=2",
            endpoint,
            status,
            round(rng.expovariate(1 / 40), 3),
            f"10.0.{rng.randrange(8)}.{rng.randrange(250)}",
            None,
            "https://shop.example.org/",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/131",
            str(rng.randrange(5000)) if rng.random() < 0.4 else None,
            "ValueError" if failed else None,
            "bad input" if failed else None,
            request_headers,
            None,
            None,
            response_headers,
            None,
            87,
            "Traceback (most recent call last): ..." if failed else None,
        )


def build_month(folder: Path, count: int) -> Path:
    """A ``requests_2026-03.db`` of ``count`` rows: table first, indexes after (much faster)."""
    from sqlalchemy.dialects import sqlite as dialect

    path = folder / "requests" / "requests_2026-03.db"
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(str(CreateTable(request_log).compile(dialect=dialect.dialect())))
    rows = synthetic_rows(count)
    while True:
        chunk = [row for _, row in zip(range(50_000), rows, strict=False)]
        if not chunk:
            break
        conn.execute("BEGIN")
        conn.executemany(INSERT, chunk)
        conn.execute("COMMIT")
    for index in request_log.indexes:
        conn.execute(str(CreateIndex(index).compile(dialect=dialect.dialect())))
    conn.execute(f"PRAGMA user_version = {SCHEMA.version}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


def grid_queries(trace: str) -> list[tuple[str, dict[str, Any]]]:
    day = MARCH + timedelta(days=17)
    return [
        ("newest page", {}),
        ("newest, page 20", {"offset": 950}),
        ("status=500 by -duration", {"status": 500, "order_by": "-duration_ms"}),
        ("4xx newest", {"status_class": "4xx"}),
        ("2xx, page 5", {"status_class": "2xx", "offset": 200}),
        ("path contains, newest", {"path_contains": "/api/items/12"}),
        ("endpoint+404 newest", {"endpoint": "home", "status": 404}),
        ("user newest", {"user_id": "1234"}),
        ("ip newest", {"ip": "10.0.3.77"}),
        (">=200 ms by -duration", {"min_duration_ms": 200.0, "order_by": "-duration_ms"}),
        (
            "one day by -duration",
            {"since": day, "until": day + timedelta(days=1), "order_by": "-duration_ms"},
        ),
        ("errors newest", {"has_error": True}),
        ("trace id", {"trace_id": trace}),
        ("POST newest", {"method": "POST"}),
        ("sort by path", {"order_by": "path"}),
        ("sort by -status", {"order_by": "-status_code"}),
    ]


SCANS = [
    ("text search (scan)", {"text": "items/77"}),
    ("sort by user agent (scan)", {"order_by": "user_agent"}),
]


def query_latency(count: int, repeat: int, folder: Path) -> dict[str, Any]:
    started = time.perf_counter()
    path = build_month(folder, count)
    built = time.perf_counter() - started
    with sqlite3.connect(path) as conn:
        trace = conn.execute(
            "SELECT trace_id FROM request_log WHERE id = ?", (count // 2,)
        ).fetchone()[0]
    conn.close()
    clock = ManualClock(datetime(2026, 3, 31, 12, tzinfo=timezone.utc))
    app = Flask("query_bench", instance_path=str(folder))
    logs = SqliteRequestLogger(app, clock=clock, flush_interval=0)
    timings: dict[str, list[float]] = {}
    totals: dict[str, int] = {}
    with app.app_context():
        for name, arguments in grid_queries(trace) + SCANS:
            samples = timings.setdefault(name, [])
            totals[name] = logs.query(**arguments).total  # warm-up
            for _ in range(repeat):
                begun = time.perf_counter()
                page = logs.query(**arguments)
                samples.append((time.perf_counter() - begun) * 1000)
                assert page.total == totals[name]
        logs.store().dispose()
    return {"timings": timings, "totals": totals, "built_s": built}


# -- the report ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer requests and rows")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--skip-query", action="store_true")
    args = parser.parse_args()
    requests_per_round = 2_000 if args.quick else 6_000
    seconds = 2.0 if args.quick else 5.0
    rows = 100_000 if args.quick else 1_000_000
    server_rounds = 1 if args.quick else 3
    failed = False
    print(
        f"bench_requestlogs: {args.rounds} rounds, python {sys.version.split()[0]}, sqlite "
        f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus, {platform.machine()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mine = in_process(args.rounds, requests_per_round, folder)
        rates = mine["rates"]
        base = median(rates["plain"])
        print(f"\n1. in-process (test client), requests/s, {requests_per_round:,} a round + flush")
        for variant in VARIANTS:
            print(
                f"   {variant:<8} {spread(rates[variant])}   x{median(rates[variant]) / base:.3f}"
            )
        capture = {
            v: median(mine["capture_us"][v]) - median(mine["capture_us"]["plain"])
            for v in VARIANTS[1:]
        }
        print("\n3. per-request overhead in-process, microseconds")
        for variant in VARIANTS[1:]:
            total = 1e6 / median(rates[variant]) - 1e6 / base
            print(
                f"   {variant:<8} {total:6.1f} us in all; measured apart: request path "
                f"{capture[variant]:5.1f} us, flush {median(mine['flush_us'][variant]):5.1f} us/row"
            )
        print(f"   (a request without the logger: {1e6 / base:.1f} us)")
        served: dict[str, Any] | None = None
        if not args.skip_server:
            try:
                served = server(server_rounds, seconds, folder)
            except Exception as error:  # reported, and the run goes on
                print(f"\n2. real server: FAILED: {error}")
                failed = True
        if served is not None:
            srates = served["rates"]
            sbase = median(srates["plain"])
            print(
                f"\n2. gunicorn (1 sync worker) + {served['tool']} on 127.0.0.1, requests/s, "
                f"{seconds:g} s a round"
            )
            for variant in VARIANTS:
                ratio = median(srates[variant]) / sbase
                extra = 1e6 / median(srates[variant]) - 1e6 / sbase
                print(
                    f"   {variant:<8} {spread(srates[variant])}   x{ratio:.3f}"
                    f"   overhead {extra:6.1f} us/request"
                )
            for check in served["checks"]:
                print(f"   LOST ROWS: {check}")
                failed = True
            if not served["checks"]:
                print("   every request served was on disk after gunicorn stopped")
        flushes = flush_throughput(3, 20_000, folder)
        ratios = [o / r for o, r in zip(flushes["ours"], flushes["raw"], strict=True)]
        print("\n4. flush throughput, rows/s (20,000 captured requests a flush)")
        print(f"   flush()      {spread(flushes['ours'])}")
        print(f"   raw sqlite3  {spread(flushes['raw'])}   (same rows, schema and pragmas)")
        print(f"   ratio        {median(ratios):.2f}")
        query: dict[str, Any] | None = None
        if not args.skip_query:
            query = query_latency(rows, 15, folder)
            print(
                f"\n5. query latency over {rows:,} rows (built in {query['built_s']:.0f} s), "
                "ms, 15 runs each"
            )
            grid: list[float] = []
            for name, samples in query["timings"].items():
                if not any(name == scan for scan, _ in SCANS):
                    grid += samples
                print(
                    f"   {name:<28} p50 {percentile(samples, 50):7.1f}  p95 "
                    f"{percentile(samples, 95):7.1f}   total {query['totals'][name]:>9,}"
                )
            print(
                f"   grid pages overall           p50 {percentile(grid, 50):7.1f}  p95 "
                f"{percentile(grid, 95):7.1f}"
            )
    print("\ntargets")
    verdicts: list[tuple[str, bool]] = [
        (
            f"in-process default >= 0.95x: x{median(rates['default']) / base:.3f}",
            median(rates["default"]) / base >= 0.95,
        ),
        (
            f"in-process bodies on >= 0.90x: x{median(rates['bodies']) / base:.3f}",
            median(rates["bodies"]) / base >= 0.90,
        ),
    ]
    if served is not None:
        srates, sbase = served["rates"], median(served["rates"]["plain"])
        verdicts += [
            (
                f"server default >= 0.95x: x{median(srates['default']) / sbase:.3f}",
                median(srates["default"]) / sbase >= 0.95,
            ),
            (
                f"server bodies on >= 0.90x: x{median(srates['bodies']) / sbase:.3f}",
                median(srates["bodies"]) / sbase >= 0.90,
            ),
        ]
    verdicts.append(
        (
            f"flush >= 75,000 rows/s: {median(flushes['ours']):,.0f}",
            median(flushes["ours"]) >= 75_000,
        )
    )
    verdicts.append((f"flush >= 0.5x raw sqlite3: {median(ratios):.2f}", median(ratios) >= 0.5))
    if query is not None:
        grid_p95 = percentile(grid, 95)
        verdicts.append(
            (f"grid query p95 < 50 ms at {rows:,} rows: {grid_p95:.1f} ms", grid_p95 < 50)
        )
    for text, ok in verdicts:
        print(f"   {'PASS' if ok else 'MISS'}  {text}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
