"""Jobs run by the in-process runner: call styles, current_job, lanes, history, signals."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest

from flask_bgjobs import JobState, ManualClock, current_job
from flask_bgjobs.signals import (
    job_completed,
    job_enqueued,
    job_failed,
    job_retrying,
    job_started,
)

from .conftest import wait_until


@dataclass
class Pair:
    a: int
    b: int


def test_the_eight_call_styles(make_app: Any) -> None:
    app, jobs = make_app()
    seen: list[str] = []

    @jobs.command
    def sync_plain() -> None:
        seen.append("sync_plain")

    @jobs.command
    def sync_arg(req: dict[str, int]) -> None:
        seen.append(f"sync_arg {req['n']}")

    @jobs.command
    def sync_result() -> str:
        return "r1"

    @jobs.command
    def sync_arg_result(req: Pair) -> int:
        return req.a + req.b

    @jobs.command
    async def async_plain() -> None:
        await asyncio.sleep(0)
        seen.append("async_plain")

    @jobs.command
    async def async_arg(req: list[int]) -> None:
        seen.append(f"async_arg {sum(req)}")

    @jobs.command
    async def async_result() -> dict[str, bool]:
        return {"ok": True}

    @jobs.command
    async def async_arg_result(req: Pair) -> Pair:
        return Pair(req.b, req.a)

    with app.app_context():
        jobs.start()
        refs = {
            "sync_plain": jobs.enqueue_command("sync_plain"),
            "sync_arg": jobs.enqueue_command("sync_arg", {"n": 3}),
            "sync_result": jobs.enqueue_command("sync_result"),
            "sync_arg_result": jobs.enqueue_command("sync_arg_result", Pair(2, 5)),
            "async_plain": jobs.enqueue_command("async_plain"),
            "async_arg": jobs.enqueue_command("async_arg", [1, 2, 3]),
            "async_result": jobs.enqueue_command("async_result"),
            "async_arg_result": jobs.enqueue_command("async_arg_result", {"a": 1, "b": 9}),
        }
        results = {name: jobs.wait_for(ref.id) for name, ref in refs.items()}
    assert {r.state for r in results.values()} == {JobState.COMPLETED}
    assert sorted(seen) == ["async_arg 6", "async_plain", "sync_arg 3", "sync_plain"]
    assert {name: r.result for name, r in results.items()} == {
        "sync_plain": None,
        "sync_arg": None,
        "sync_result": "r1",
        "sync_arg_result": 7,
        "async_plain": None,
        "async_arg": None,
        "async_result": {"ok": True},
        "async_arg_result": {"a": 9, "b": 1},
    }


def test_current_job_inside_a_command(make_app: Any) -> None:
    app, jobs = make_app()
    captured: dict[str, Any] = {}

    @jobs.command
    def inspect_me(req: dict[str, str]) -> None:
        captured.update(
            id=current_job.id,
            ref_id=current_job.ref_id,
            args=current_job.args,
            tag=current_job.tag,
            batch_id=current_job.batch_id,
            user_id=current_job.user_id,
            attempt=current_job.attempt,
            request=current_job.request,
            reply_to=current_job.reply_to,
            parent_id=current_job.parent_id,
            cancelled=current_job.cancelled,
        )
        from flask import current_app

        captured["app"] = current_app.name

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command(
            "inspect_me",
            {"x": "y"},
            args={"a": "b"},
            tag="t",
            batch_id="b",
            user_id="u1",
            reply_to="https://example.org",
            ref_id="r-1",
        )
        jobs.wait_for(ref.id)
    assert captured == {
        "id": ref.id,
        "ref_id": "r-1",
        "args": {"a": "b"},
        "tag": "t",
        "batch_id": "b",
        "user_id": "u1",
        "attempt": 1,
        "request": {"x": "y"},
        "reply_to": "https://example.org",
        "parent_id": None,
        "cancelled": False,
        "app": "testapp",
    }
    with pytest.raises(RuntimeError, match="outside of a job"):
        current_job.id  # noqa: B018


def test_logs_and_progress_are_live_while_the_job_runs(make_app: Any) -> None:
    app, jobs = make_app()
    go_on = threading.Event()

    @jobs.command
    def step() -> str:
        current_job.log.info("checked %s", "a.example")
        current_job.update_status(progress=0.4, status="4 of 10")
        go_on.wait(10)
        current_job.log.warning("done")
        return "ok"

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("step")

        def live() -> Any:
            job = jobs.get_job(ref.id).queued
            return job is not None and job.progress == 0.4 and "checked a.example" in job.logs

        wait_until(live, timeout=5)
        running = jobs.get_job(ref.id)
        assert running.state is JobState.STARTED and running.queued.status == "4 of 10"
        go_on.set()
        done = jobs.wait_for(ref.id).completed
    assert done is not None
    assert "INFO checked a.example" in done.logs and "WARNING done" in done.logs
    assert (done.progress, done.status, done.result) == (0.4, "4 of 10", "ok")


def test_progress_out_of_range_fails_the_job(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0)

    @jobs.command
    def overdo() -> None:
        current_job.update_status(progress=1.5)

    with app.app_context():
        jobs.start()
        failed = jobs.wait_for(jobs.enqueue_command("overdo").id).failed
    assert failed is not None and failed.error_type == "ValueError"
    assert "fraction from 0.0 to 1.0" in (failed.error_message or "")


def test_progress_estimate_from_past_durations(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)
    started = threading.Event()
    gate = threading.Event()

    @jobs.command
    def timed() -> None:
        started.set()
        gate.wait(10)

    def run_held(seconds: float) -> tuple[Any, Any]:
        started.clear()
        gate.clear()
        ref = jobs.enqueue_command("timed")
        assert started.wait(5)
        clock.advance(seconds=seconds)
        wait_until(lambda: jobs.get_job(ref.id).state is JobState.STARTED)
        seen = jobs.progress_of(jobs.get_job(ref.id))
        gate.set()
        return seen, jobs.wait_for(ref.id)

    with app.app_context():
        jobs.start()
        first, done = run_held(10)  # no past runs: no estimate
        assert first is None and done.completed.duration == 10
        halfway, _ = run_held(5)
        overdue, _ = run_held(30)
        assert jobs.progress_of(done) == 1.0
    assert halfway == pytest.approx(0.5)
    assert overdue == 0.99  # never 100% before it completes


def test_completed_job_moves_to_its_month_with_full_history(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock)

    @jobs.command
    def work(req: dict[str, int]) -> dict[str, int]:
        current_job.log.info("working")
        return {"double": req["n"] * 2}

    clock.set(datetime(2026, 3, 31, 23, 59, 59, tzinfo=timezone.utc))
    with app.app_context():
        jobs.start()
        march = jobs.wait_for(jobs.enqueue_command("work", {"n": 1}, tag="m").id)
        clock.advance(seconds=1)
        april = jobs.wait_for(jobs.enqueue_command("work", {"n": 2}).id)
        store = jobs.store()
        folder = jobs.settings().database_dir
    assert store.history.months() == ["2026-04", "2026-03"]
    assert (march.summary.month, april.summary.month) == ("2026-03", "2026-04")
    job = march.completed
    assert job is not None and march.queued is None and march.failed is None
    assert (job.request, job.result, job.tag, job.attempts, job.state) == (
        {"n": 1},
        {"double": 2},
        "m",
        1,
        JobState.COMPLETED,
    )
    assert job.worker_process and "working" in job.logs
    assert job.started_at is not None and job.completed_at is not None and job.duration == 0
    raw = sqlite3.connect(folder / "jobs.db")
    try:
        assert raw.execute("SELECT count(*) FROM background_job").fetchone() == (0,)
        assert raw.execute("SELECT state FROM job_summary ORDER BY id").fetchall() == [
            ("completed",),
            ("completed",),
        ]
    finally:
        raw.close()
    assert store.history.prune(keep_months=1) == ["2026-03"]


def test_named_worker_runs_in_enqueue_order_one_at_a_time(make_app: Any) -> None:
    app, jobs = make_app(max_threads=4)
    order: list[int] = []
    active = [0, 0]  # current, highest
    lock = threading.Lock()

    @jobs.command(worker="serial")
    def ordered(n: int) -> None:
        with lock:
            active[0] += 1
            active[1] = max(active)
        order.append(n)
        with lock:
            active[0] -= 1

    @jobs.command
    def noise() -> None: ...

    with app.app_context():
        jobs.start()
        refs = []
        for n in range(150):
            refs.append(jobs.enqueue_command("ordered", n))
            jobs.enqueue_command("noise")
        for ref in refs:
            jobs.wait_for(ref.id)
    assert order == list(range(150))
    assert active[1] == 1


def test_pool_never_runs_more_than_max_threads(make_app: Any) -> None:
    app, jobs = make_app(max_threads=3)
    lock = threading.Lock()
    counts = {"now": 0, "peak": 0}
    release = threading.Event()

    @jobs.command
    def hold() -> None:
        with lock:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
        release.wait(10)
        with lock:
            counts["now"] -= 1

    with app.app_context():
        jobs.start()
        refs = [jobs.enqueue_command("hold") for _ in range(10)]
        wait_until(lambda: counts["now"] == 3)
        states = [jobs.get_job(r.id).state for r in refs]
        release.set()
        for ref in refs:
            jobs.wait_for(ref.id)
    assert states.count(JobState.STARTED) == 3 and states.count(JobState.QUEUED) == 7
    assert counts["peak"] == 3


def test_signals_for_each_state_change(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=1)
    events: list[tuple[str, Any]] = []

    def recorder(name: str) -> Any:
        def receive(sender: Any, **extra: Any) -> None:
            assert sender is app
            events.append((name, extra.get("ref") or extra["job"].id))

        return receive

    receivers = {name: recorder(name) for name in ("enq", "start", "ok", "fail", "retry")}
    job_enqueued.connect(receivers["enq"], app)
    job_started.connect(receivers["start"], app)
    job_completed.connect(receivers["ok"], app)
    job_failed.connect(receivers["fail"], app)
    job_retrying.connect(receivers["retry"], app)

    @jobs.command
    def good() -> None: ...

    @jobs.command
    def bad() -> None:
        raise RuntimeError("boom")

    try:
        with app.app_context():
            jobs.start()
            ok = jobs.enqueue_command("good")
            jobs.wait_for(ok.id)
            ko = jobs.enqueue_command("bad")
            jobs.wait_for(ko.id)
    finally:
        for name, receiver in receivers.items():
            for signal in (job_enqueued, job_started, job_completed, job_failed, job_retrying):
                signal.disconnect(receiver)
            del name
    names = [(name, getattr(key, "id", key)) for name, key in events]
    assert names == [
        ("enq", ok.id),
        ("start", ok.id),
        ("ok", ok.id),
        ("enq", ko.id),
        ("start", ko.id),
        ("retry", ko.id),
        ("start", ko.id),
        ("fail", ko.id),
    ]


def test_eager_mode_runs_at_enqueue(make_app: Any) -> None:
    app, jobs = make_app(eager=True, retry_limit=2)
    calls: list[int] = []

    @jobs.command
    def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) < 3:
            raise ValueError("not yet")
        return n * 10

    with app.app_context():
        ref = jobs.enqueue_command("flaky", 4)
        result = jobs.get_job(ref.id)
    assert result.state is JobState.COMPLETED and result.result == 40
    assert calls == [4, 4, 4]
    assert [a.error_message for a in result.completed.history] == ["not yet", "not yet"]


def test_run_command_is_transient(make_app: Any) -> None:
    app, jobs = make_app()
    threads: list[str] = []

    @jobs.command(worker="smtp")
    def send(req: dict[str, str]) -> str:
        threads.append(threading.current_thread().name)
        return req["to"].upper()

    with app.app_context():
        job = jobs.run_command("send", {"to": "a@b"})
        assert job.future is not None and job.future.result(timeout=5) == "A@B"
        assert job.state is JobState.COMPLETED
        assert asyncio.run(jobs.run_command_async("send", {"to": "c@d"})) == "C@D"
        assert jobs.list_jobs() == []  # nothing stored
    assert threads and all("smtp" in name for name in threads)


def test_an_unknown_command_in_the_queue_fails_without_retrying(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=3)
    jobs.command(lambda: None, name="gone")
    with app.app_context():
        ref = jobs.enqueue_command("gone")
        del jobs.registry._commands["gone"]  # as if a deploy removed the command
        jobs.start()
        result = jobs.wait_for(ref.id)
    assert result.state is JobState.FAILED
    assert result.failed.error_type == "UnknownCommandError" and result.failed.attempts == 1


def test_autostart_at_first_request_or_enqueue(make_app: Any) -> None:
    app, jobs = make_app(autostart=True)
    jobs.command(lambda: "done", name="work")

    @app.get("/")
    def index() -> str:
        return "hello"

    with app.app_context():
        assert jobs._state().runner is None  # nothing started at init_app
    assert app.test_client().get("/").status_code == 200
    with app.app_context():
        runner = jobs._state().runner
        assert runner is not None and runner.started
        assert jobs.wait_for(jobs.enqueue_command("work").id).result == "done"

    other, other_jobs = make_app(autostart=True)
    other_jobs.command(lambda: "also", name="work")
    with other.app_context():
        ref = other_jobs.enqueue_command("work")  # the first enqueue starts it too
        assert other_jobs._state().runner.started
        assert other_jobs.wait_for(ref.id).result == "also"


def test_a_delayed_job_of_a_named_worker_holds_back_the_ones_behind_it(
    make_app: Any, clock: ManualClock
) -> None:
    from datetime import timedelta

    app, jobs = make_app(clock=clock)
    order: list[str] = []

    @jobs.command(worker="line")
    def line(name: str) -> None:
        order.append(name)

    with app.app_context():
        jobs.start()
        later = jobs.enqueue_command("line", "later", run_after=clock() + timedelta(seconds=30))
        now = jobs.enqueue_command("line", "now")
        with pytest.raises(TimeoutError):
            jobs.wait_for(now.id, timeout=0.2)
        clock.advance(seconds=30)
        jobs.wait_for(later.id)
        jobs.wait_for(now.id)
    assert order == ["later", "now"]


def test_one_extension_serves_two_apps_without_mixing_them(tmp_path: Any) -> None:
    from flask import Flask, current_app

    from flask_bgjobs import BackgroundJobs

    jobs = BackgroundJobs()
    seen: list[str] = []

    @jobs.command
    def which() -> str:
        seen.append(current_app.name)
        return current_app.name

    apps = []
    for name in ("first", "second"):
        app = Flask(name, instance_path=str(tmp_path / name))
        app.config.update(BGJOBS_AUTOSTART=False, BGJOBS_POLL_INTERVAL=0.01)
        jobs.init_app(app)
        apps.append(app)
    refs = []
    try:
        for app in apps:
            with app.app_context():
                jobs.start()
                refs.append(jobs.enqueue_command("which"))
        results = []
        for app, ref in zip(apps, refs, strict=True):
            with app.app_context():
                results.append(jobs.wait_for(ref.id).result)
                assert jobs.settings().database_dir == tmp_path / app.name / "jobs"
    finally:
        for app in apps:
            with app.app_context():
                jobs.stop()
                jobs.store().dispose()
    assert results == ["first", "second"] and sorted(seen) == ["first", "second"]
    assert refs[0].id == refs[1].id == 1  # two queues, each with its own ids
