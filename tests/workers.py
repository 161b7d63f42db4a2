"""Real ``flask jobs worker`` processes for the tests: started on one instance folder, their
output in a file each, and every one killed (if still running) and reaped by :meth:`close`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .apps.queue_app import jobs
from .conftest import wait_until

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Worker:
    """One ``flask jobs worker`` process and the file its output goes to.

    ``die_at`` is the fault point armed in it (``tests.apps.chaos_app``), if any.
    """

    process: subprocess.Popen[bytes]
    log: Path
    die_at: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def owner(self) -> str:
        """The runner's process id (``host:pid:uuid``), from its start-up line."""
        if " running " not in self.output():
            self.wait_ready()  # a job may start before the line is written
        for line in self.output().splitlines():
            if line.startswith("worker ") and " running " in line:
                return line.split()[1]
        raise AssertionError(f"worker {self.pid} did not announce itself:\n{self.output()}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the worker's start-up line; fail at once if it exits."""

        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.output()}")
            return " running " in self.output()

        wait_until(ready, timeout=timeout, interval=0.02)

    def wait_for_file(self, path: Path, timeout: float = 15.0) -> None:
        """Wait until a job of this worker writes ``path``; fail early if the worker exits."""
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = {s.id: (s.state.value, s.attempts) for s in jobs.list_jobs()}
                pytest.fail(
                    f"{path.name} not written within {timeout} s (worker exit code "
                    f"{self.process.poll()}, jobs {state}); worker output:\n{self.output()}"
                )
            time.sleep(0.01)

    def terminate(self, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` (SIGTERM), then return the exit code."""
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} ignored {sig.name} for {timeout} s:\n{self.output()}")


class Workers:
    """Starts ``flask --app APP jobs worker`` processes on ``tmp_path / "instance"``, with the
    test settings (fast polling, a short cancel grace) and ``env`` on top of the environment."""

    def __init__(
        self,
        tmp_path: Path,
        app: str = "tests.apps.queue_app:create_app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.app = app
        self.env = env or {}
        self.instance = tmp_path / "instance"
        self.runs = tmp_path / "runs.txt"
        self.started: list[Worker] = []

    def start(self, *args: str, die_at: str | None = None, **settings: Any) -> Worker:
        """Start ``flask jobs worker *args`` with ``BGJOBS_<KEY>=value`` for each setting and,
        with ``die_at``, that fault point armed (``CHAOS_DIE_AT``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BGJOBS_", "FLASK_"))}
        env.pop("CHAOS_DIE_AT", None)
        env.update(
            BGJOBS_TEST_INSTANCE=str(self.instance),
            BGJOBS_TEST_RUNS=str(self.runs),
            BGJOBS_POLL_INTERVAL="0.02",
            BGJOBS_CANCEL_GRACE="0.5",
            PYTHONUNBUFFERED="1",
            **self.env,
        )
        if die_at is not None:
            env["CHAOS_DIE_AT"] = die_at
        env.update({f"BGJOBS_{key.upper()}": str(value) for key, value in settings.items()})
        log = self.tmp_path / f"worker{len(self.started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", self.app, "jobs", "worker", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(process, log, die_at)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.kill()
        for worker in self.started:
            worker.process.wait(timeout=30)

    def run_lines(self) -> list[tuple[int, int]]:
        """``(job id, pid)`` of every ``record`` run so far."""
        if not self.runs.exists():
            return []
        text = self.runs.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being appended may show in part
        return [(int(a), int(b)) for a, b in (line.split() for line in complete.splitlines())]
