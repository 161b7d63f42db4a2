"""The request logger under load, behind a real WSGI server (gunicorn) and real HTTP.

1,000 requests/s for 30 s: every request served is on disk once gunicorn has stopped (its
workers flush at exit), and the workers' memory stays bounded. Then a writer stalled by another
process's lock: the buffer fills to its capacity, the rest is dropped and counted, requests are
never held up, and what was kept is written once the lock goes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .conftest import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(
    folder: Path, workers: int, **env: str
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """gunicorn serving ``tests/apps/load_app.py`` on a free port; stopped with SIGTERM (the
    graceful way, so that its workers flush) and waited for."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(GUNICORN),
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "tests.apps.load_app:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, "LOAD_DIR": str(folder), **env},
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: _answers(port) or process.poll() is not None, timeout=30)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        yield port, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def _answers(port: int) -> bool:
    try:
        return get(port, "/_stats")[0] == 200
    except OSError:
        return False


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def paced_load(port: int, rate: float, seconds: float, threads: int = 8) -> dict[str, Any]:
    """``GET /`` at ``rate`` requests/s for ``seconds``: each thread keeps its share of a fixed
    schedule (sending at once when behind). Returns counts and latencies."""
    start = time.perf_counter() + 0.05
    total = int(rate * seconds)
    ok = [0] * threads
    failures: list[str] = []
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def worker(index: int) -> None:
        for n in range(index, total, threads):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            try:
                status, body = get(port, "/")
            except OSError as error:
                failures.append(f"{type(error).__name__}: {error}")
                continue
            latencies[index].append(time.perf_counter() - sent)
            if status == 200 and body == b"Hello, World!":
                ok[index] += 1
            else:
                failures.append(f"HTTP {status}")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(x for part in latencies for x in part)
    return {
        "sent": total,
        "ok": sum(ok),
        "failures": failures,
        "rate": total / elapsed,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else float("nan"),
        "max_ms": ordered[-1] * 1000 if ordered else float("nan"),
    }


def rows_on_disk(folder: Path) -> int:
    total = 0
    for path in sorted((folder / "requests").glob("requests_*.db")):
        conn = sqlite3.connect(path)
        try:
            total += conn.execute("SELECT count(*) FROM request_log WHERE path = '/'").fetchone()[0]
        finally:
            conn.close()
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers_of(process: subprocess.Popen[bytes]) -> list[int]:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def stats(port: int) -> dict[str, Any]:
    status, body = get(port, "/_stats")
    assert status == 200
    return dict(json.loads(body))


def test_every_request_at_1000_per_second_for_30_seconds_is_logged_in_bounded_memory(
    tmp_path: Path,
) -> None:
    seconds = float(os.environ.get("LOAD_SECONDS", "30"))
    with gunicorn(tmp_path, workers=2) as (port, process):
        workers = workers_of(process)
        assert len(workers) == 2
        for _ in range(200):  # warm up both workers
            assert get(port, "/")[0] == 200
        baseline = {pid: rss_kib(pid) for pid in workers}
        peak = dict(baseline)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                for pid in workers:
                    peak[pid] = max(peak[pid], rss_kib(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = paced_load(port, rate=1000, seconds=seconds)
        finally:
            sampling.set()
            sampler.join()
    assert process.returncode == 0
    assert result["failures"] == []
    assert result["ok"] == result["sent"] == int(1000 * seconds)
    # The load kept its pace (a machine too busy to send 1,000/s would not test the promise).
    assert result["rate"] > 800, result
    assert rows_on_disk(tmp_path) == result["ok"] + 200
    growth_mib = max(peak[pid] - baseline[pid] for pid in workers) / 1024
    assert growth_mib < 64, (baseline, peak)
    print(
        f"\nload: {result['ok']} requests at {result['rate']:.0f}/s, p99 {result['p99_ms']:.1f} ms,"
        f" all logged; worker RSS growth at most {growth_mib:.1f} MiB"
    )


def test_a_stalled_writer_drops_past_capacity_counts_the_drops_and_never_blocks_requests(
    tmp_path: Path,
) -> None:
    capacity = 300
    with gunicorn(
        tmp_path,
        workers=1,
        LOAD_CAPACITY=str(capacity),
        LOAD_FLUSH_INTERVAL="0.2",
        LOAD_BUSY_TIMEOUT="1",
    ) as (port, process):
        for _ in range(50):
            assert get(port, "/")[0] == 200
        wait_until(lambda: stats(port)["written"] == 50, timeout=10)
        (month_file,) = (tmp_path / "requests").glob("requests_*.db")
        blocker = sqlite3.connect(month_file, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process's writer holds the file
            stalled = paced_load(port, rate=500, seconds=2)
            during = stats(port)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert stalled["failures"] == [] and stalled["ok"] == stalled["sent"] == 1000
        assert during["failures"] > 0  # the flush kept trying, and failing, while stalled
        assert during["pending"] == capacity
        assert during["dropped"] == 1000 - capacity
        # Requests never waited for the writer: its 1 s busy wait at every flush did not show.
        assert stalled["max_ms"] < 500, stalled
        wait_until(lambda: stats(port)["pending"] == 0, timeout=10)
        after = stats(port)
        assert after["written"] == 50 + capacity and after["dropped"] == 1000 - capacity
    assert process.returncode == 0
    assert rows_on_disk(tmp_path) == 50 + capacity
    print(
        f"\nstalled writer: 1000 requests, {capacity} kept, {after['dropped']} dropped and "
        f"counted, slowest request {stalled['max_ms']:.1f} ms, p99 {stalled['p99_ms']:.1f} ms"
    )
