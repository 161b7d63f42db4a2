"""Registering commands and enqueueing jobs: what is stored, and what is refused."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from flask_bgjobs import (
    BgJobsError,
    DuplicateRefIdError,
    InvalidJobError,
    JobState,
    ManualClock,
    UnknownCommandError,
)


@dataclass
class Greeting:
    name: str
    times: int = 1


def test_enqueue_persists_every_option_before_returning(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)

    @jobs.command(worker="mail", retry_limit=5, timeout=12)
    def send(req: dict[str, Any]) -> None: ...

    @jobs.command
    def notify(result: Any) -> None: ...

    run_after = datetime(2026, 3, 16, 9, 30, tzinfo=timezone.utc)
    with app.app_context():
        parent = jobs.enqueue_command("notify")
        ref = jobs.enqueue_command(
            "send",
            {"to": "a@example.org", "n": [1, 2]},
            callback="notify",
            user_id=42,
            run_after=run_after,
            ref_id="order-7",
            tag="mail",
            created_by="tests",
            batch_id="b1",
            reply_to="https://example.org/hook",
            args={"k": "v"},
            parent_id=parent.id,
            depends_on=parent.id,
        )
        # Nothing runs (no runner): the row is on disk, read with plain sqlite3.
        path = jobs.settings().database_dir / "jobs.db"
        raw = sqlite3.connect(path)
        row = raw.execute(
            "SELECT command, state, ref_id, worker, retry_limit, timeout FROM background_job "
            "WHERE id = ?",
            (ref.id,),
        ).fetchone()
        raw.close()
        # It waits for its parent (depends_on) to complete.
        assert row == ("send", "waiting", "order-7", "mail", 5, 12.0)

        result = jobs.get_job(ref.id)
        assert result is not None and result.queued is not None
        job = result.queued
        assert (result.state, result.job) == (JobState.WAITING, job)
        assert job.request == {"to": "a@example.org", "n": [1, 2]}
        assert (job.callback, job.user_id, job.tag, job.created_by, job.batch_id) == (
            "notify",
            "42",
            "mail",
            "tests",
            "b1",
        )
        assert (job.reply_to, job.args, job.parent_id, job.depends_on) == (
            "https://example.org/hook",
            {"k": "v"},
            parent.id,
            parent.id,
        )
        assert job.run_after == run_after.timestamp()
        assert job.created_at == clock().timestamp()
        assert jobs.get_job_by_ref_id("order-7") == result
        assert result.summary.ref_id == "order-7" and result.summary.command == "send"


def test_job_options_override_command_defaults_and_config(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=4, timeout=99)

    @jobs.command(retry_limit=1)
    def a() -> None: ...

    @jobs.command
    def b() -> None: ...

    with app.app_context():
        ids = [
            jobs.enqueue_command("a").id,
            jobs.enqueue_command("a", retry_limit=0, timeout=3, worker="w").id,
            jobs.enqueue_command("b").id,
        ]
        stored = [jobs.get_job(i).queued for i in ids]
    assert [(j.retry_limit, j.timeout, j.worker) for j in stored] == [
        (1, 99.0, None),
        (0, 3.0, "w"),
        (4, 99.0, None),
    ]


def test_naive_run_after_is_utc(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with app.app_context():
        ref = jobs.enqueue_command("x", run_after=datetime(2030, 1, 1, 12, 0))
        assert (
            jobs.get_job(ref.id).queued.run_after
            == datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp()
        )


def test_unknown_command_names_the_registered_ones(make_app: Any) -> None:
    app, jobs = make_app()

    @jobs.command
    def alpha() -> None: ...

    @jobs.command(name="beta")
    def whatever() -> None: ...

    with app.app_context():
        with pytest.raises(UnknownCommandError, match="'gamma'; registered commands: alpha, beta"):
            jobs.enqueue_command("gamma")
        with pytest.raises(UnknownCommandError, match="'nope'"):
            jobs.enqueue_command("alpha", callback="nope")
        assert jobs.list_jobs() == []


@pytest.mark.parametrize(
    ("request_value", "message"),
    [
        ({"when": datetime(2026, 1, 1)}, "request must be JSON-serialisable"),
        ({1: "int key"}, "keys must be strings"),
        ({"x": float("nan")}, "request must be JSON-serialisable"),
        ({"s": {1, 2}}, "request must be JSON-serialisable"),
        (b"bytes", "request must be JSON-serialisable"),
    ],
)
def test_requests_that_json_cannot_hold_are_refused(
    make_app: Any, request_value: Any, message: str
) -> None:
    app, jobs = make_app()
    jobs.command(lambda req: None, name="x")
    with app.app_context():
        with pytest.raises(InvalidJobError, match=message):
            jobs.enqueue_command("x", request_value)
        assert jobs.list_jobs() == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_limit": -1}, "retry_limit must be a whole number"),
        ({"retry_limit": True}, "retry_limit"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": "5"}, "timeout"),
        ({"args": {"a": 1}}, "args must be a dict of str to str"),
        ({"tag": ""}, "tag must be a non-empty string"),
        ({"worker": 3}, "worker"),
        ({"depends_on": "7"}, "depends_on must be a job id"),
        ({"run_after": "tomorrow"}, "run_after must be a datetime"),
    ],
)
def test_bad_options_are_refused(make_app: Any, options: dict[str, Any], message: str) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with app.app_context():
        with pytest.raises(InvalidJobError, match=message):
            jobs.enqueue_command("x", **options)
        assert jobs.list_jobs() == []


def test_duplicate_ref_id_is_refused_and_keeps_the_first(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda req: None, name="x")
    with app.app_context():
        first = jobs.enqueue_command("x", 1, ref_id="once")
        with pytest.raises(DuplicateRefIdError, match="'once' already exists"):
            jobs.enqueue_command("x", 2, ref_id="once")
        assert [s.id for s in jobs.list_jobs()] == [first.id]
        assert jobs.get_job_by_ref_id("once").request == 1


def test_errors_share_one_base() -> None:
    for error in (UnknownCommandError, InvalidJobError, DuplicateRefIdError):
        assert issubclass(error, BgJobsError)


def test_command_signatures_are_checked(make_app: Any) -> None:
    _, jobs = make_app()
    with pytest.raises(TypeError, match="zero or one argument"):

        @jobs.command
        def two(a: int, b: int) -> None: ...

    with pytest.raises(InvalidJobError, match="retry_limit"):
        jobs.command(retry_limit=-2)(lambda: None)

    @jobs.command
    def taken() -> None: ...

    def other() -> None: ...

    with pytest.raises(ValueError, match="already registered"):
        jobs.command(name="taken")(other)


def test_dataclass_request_is_checked_at_enqueue(make_app: Any) -> None:
    app, jobs = make_app()

    @jobs.command
    def greet(req: Greeting) -> str:
        return req.name * req.times

    with app.app_context():
        with pytest.raises(InvalidJobError, match="does not fit Greeting"):
            jobs.enqueue_command("greet", {"nom": "x"})
        with pytest.raises(InvalidJobError, match="must be a JSON object"):
            jobs.enqueue_command("greet", ["x"])
        ref = jobs.enqueue_command("greet", Greeting("ab", 2))
        assert jobs.get_job(ref.id).request == {"name": "ab", "times": 2}


def test_outside_app_context_and_without_init_app_the_error_says_what_to_do(
    make_app: Any,
) -> None:
    from flask import Flask

    from flask_bgjobs import BackgroundJobs

    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with pytest.raises(RuntimeError, match="app_context"):
        jobs.enqueue_command("x")
    other = Flask("other")
    with other.app_context(), pytest.raises(RuntimeError, match="init_app"):
        jobs.enqueue_command("x")
    assert app.extensions["bgjobs"] is jobs
    assert isinstance(jobs, BackgroundJobs)


def test_config_values_are_checked(make_app: Any) -> None:
    with pytest.raises(ValueError, match="BGJOBS_MAX_THREADS must be a whole number"):
        make_app(max_threads=0)
    with pytest.raises(ValueError, match="BGJOBS_POLL_INTERVAL must be a positive number"):
        make_app(poll_interval="fast")
    with pytest.raises(ValueError, match="synchronous must be one of"):
        make_app(sqlite_synchronous="sometimes")


def test_defaults_are_visible_in_app_config(make_app: Any) -> None:
    app, _ = make_app()
    assert app.config["BGJOBS_LEASE_SECONDS"] == 30.0
    assert app.config["BGJOBS_RETRY_LIMIT"] == 2
    assert app.config["BGJOBS_DATABASE_DIR"] == "jobs"


def test_relative_run_after_in_the_past_is_allowed(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda: None, name="x")
    with app.app_context():
        ref = jobs.enqueue_command("x", run_after=clock() - timedelta(days=1))
        assert jobs.get_job(ref.id).queued.run_after < clock().timestamp()
