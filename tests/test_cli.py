"""``flask jobs list|show|cancel|requeue|prune`` and ``worker --help``, through Flask's CLI runner.

Two apps share one instance folder and one :class:`BackgroundJobs`: ``eager`` runs jobs at
enqueue (to get completed and failed jobs at once), ``queue`` only queues them (nothing runs, so
what the CLI changes stays visible). The CLI is run against ``queue``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from flask_bgjobs import BackgroundJobs, JobState, ManualClock
from flask_bgjobs.cli import jobs_cli


def make_commands(jobs: BackgroundJobs) -> None:
    @jobs.command
    def ok(req: Any = None) -> dict[str, Any]:
        return {"echo": req}

    @jobs.command(retry_limit=0)
    def boom() -> None:
        raise ValueError("boom!")

    @jobs.command(retry_limit=0)
    def other_boom() -> None:
        raise RuntimeError("other boom")


def make_app(instance: Path, jobs: BackgroundJobs, **config: Any) -> Flask:
    app = Flask("cliapp", instance_path=str(instance))
    app.config.update(TESTING=True, BGJOBS_AUTOSTART=False, **config)
    jobs.init_app(app)
    return app


@dataclass
class Apps:
    jobs: BackgroundJobs
    eager: Flask
    queue: Flask
    instance: Path

    def enqueue(self, command: str, request: Any = None, **options: Any) -> int:
        """Run ``command`` at once (eager app); return the job id."""
        with self.eager.app_context():
            return self.jobs.enqueue_command(command, request, **options).id

    def enqueue_only(self, command: str, request: Any = None, **options: Any) -> int:
        """Queue ``command`` without running it; return the job id."""
        with self.queue.app_context():
            return self.jobs.enqueue_command(command, request, **options).id

    def state(self, job_id: int) -> JobState:
        with self.queue.app_context():
            result = self.jobs.get_job(job_id)
        assert result is not None
        return result.state

    def get(self, job_id: int) -> Any:
        with self.queue.app_context():
            return self.jobs.get_job(job_id)

    def cli(self, *args: str, code: int = 0) -> Result:
        """``flask jobs *args`` on the queue app; check the exit code and that nothing crashed."""
        result = self.queue.test_cli_runner().invoke(args=["jobs", *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, result.output
        return result


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Apps]:
    jobs = BackgroundJobs()
    make_commands(jobs)
    instance = tmp_path / "instance"
    eager = make_app(instance, jobs, BGJOBS_EAGER=True)
    queue = make_app(instance, jobs)
    yield Apps(jobs, eager, queue, instance)
    for app in (eager, queue):
        with app.app_context():
            jobs.store().dispose()


def json_lines(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.output.splitlines()]


# -- list --------------------------------------------------------------------------------------


def test_list_without_jobs(apps: Apps) -> None:
    assert apps.cli("list").output == "no jobs\n"
    assert apps.cli("list", "--json").output == ""


def test_list_shows_newest_first_with_state_attempts_and_tag(apps: Apps) -> None:
    done = apps.enqueue("ok", {"n": 1}, tag="nightly")
    failed = apps.enqueue("boom")
    queued = apps.enqueue_only("ok")

    lines = apps.cli("list").output.splitlines()
    assert lines[0].split() == ["ID", "STATE", "CREATED", "ATTEMPTS", "COMMAND"]
    rows = [line.split() for line in lines[1:]]
    assert [(row[0], row[1]) for row in rows] == [
        (str(queued), "queued"),
        (str(failed), "failed"),
        (str(done), "completed"),
    ]
    by_id = {int(row[0]): row for row in rows}
    # ID STATE DATE TIME ATTEMPTS COMMAND [TAG]
    assert by_id[done][4:] == ["1", "ok", "[nightly]"]
    assert by_id[failed][4:] == ["1", "boom"]
    assert by_id[queued][4:] == ["0", "ok"]


def test_control_characters_from_users_are_shown_not_sent_to_the_terminal(apps: Apps) -> None:
    hostile = "\x1b]0;owned\x07\x1b[2J\rnightly\x9b"
    job = apps.enqueue_only("ok", {"note": "\x1b[31mred"}, tag=hostile)
    for output in (apps.cli("list").output, apps.cli("show", str(job)).output):
        assert not any(ch in output for ch in "\x1b\x07\r\x9b")
        assert "\\x1b]0;owned\\x07\\x1b[2J\\x0dnightly\\x9b" in output
    shown = json.loads(apps.cli("list", "--json").output)
    assert shown["tag"] == hostile  # JSON keeps the value exactly, escaped by JSON itself


def test_list_filters_by_state_command_tag_and_limit(apps: Apps) -> None:
    done = apps.enqueue("ok", tag="a")
    failed = [apps.enqueue("boom"), apps.enqueue("other_boom", tag="a")]
    queued = apps.enqueue_only("ok")

    def ids(*args: str) -> list[int]:
        return [row["id"] for row in json_lines(apps.cli("list", "--json", *args))]

    assert ids("--state", "failed") == failed[::-1]
    assert ids("--state", "completed") == [done]
    assert ids("--state", "queued") == [queued]
    assert ids("--state", "started") == []
    assert ids("--command", "ok") == [queued, done]
    assert ids("--tag", "a") == [failed[1], done]
    assert ids("--state", "failed", "--tag", "a") == [failed[1]]
    assert ids("--limit", "2") == [queued, failed[1]]

    text = apps.cli("list", "--state", "failed").output
    assert "boom" in text and "other_boom" in text
    assert " ok" not in text and "completed" not in text and "queued" not in text


def test_list_json_is_one_object_per_line(apps: Apps) -> None:
    done = apps.enqueue("ok", tag="t")
    failed = apps.enqueue("boom")

    rows = {row["id"]: row for row in json_lines(apps.cli("list", "--json"))}
    assert set(rows) == {done, failed}
    assert rows[done]["state"] == "completed"
    assert rows[done]["command"] == "ok"
    assert rows[done]["tag"] == "t"
    assert rows[done]["attempts"] == 1
    assert isinstance(rows[done]["created_at"], float)
    assert rows[failed]["state"] == "failed"
    assert rows[failed]["error_type"] == "ValueError"
    assert rows[failed]["error_message"] == "boom!"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--state", "lost"], "Invalid value for '--state'"),
        (["--limit", "0"], "Invalid value for '--limit'"),
        (["--limit", "many"], "Invalid value for '--limit'"),
        (["--bogus"], "No such option"),
    ],
)
def test_list_bad_options_are_usage_errors(apps: Apps, args: list[str], message: str) -> None:
    assert message in apps.cli("list", *args, code=2).output


# -- show --------------------------------------------------------------------------------------


def test_show_completed_job(apps: Apps) -> None:
    job_id = apps.enqueue("ok", {"to": "a@example.org"}, tag="mail")
    lines = apps.cli("show", str(job_id)).output.splitlines()
    assert f"id: {job_id}" in lines
    assert "state: completed" in lines
    assert "command: ok" in lines
    assert "attempts: 1" in lines
    assert "tag: mail" in lines
    output = "\n".join(lines)
    assert '"to": "a@example.org"' in output  # the request and the result, as JSON
    assert '"echo"' in output
    created = [line for line in lines if line.startswith("created_at: ")]
    assert len(created) == 1
    datetime.strptime(created[0].removeprefix("created_at: "), "%Y-%m-%d %H:%M:%S")


def test_show_json(apps: Apps) -> None:
    job_id = apps.enqueue("ok", {"n": 7})
    record = json.loads(apps.cli("show", str(job_id), "--json").output)
    assert record["id"] == job_id
    assert record["state"] == "completed"
    assert record["command"] == "ok"
    assert record["request"] == {"n": 7}
    assert record["result"] == {"echo": {"n": 7}}
    assert record["attempts"] == 1
    assert record["history"] == []
    assert "future" not in record


def test_show_failed_job_has_its_error(apps: Apps) -> None:
    job_id = apps.enqueue("boom")
    record = json.loads(apps.cli("show", str(job_id), "--json").output)
    assert record["state"] == "failed"
    assert record["error_type"] == "ValueError"
    assert record["error_message"] == "boom!"
    assert "Traceback" in record["error_traceback"]
    assert "error_type: ValueError" in apps.cli("show", str(job_id)).output


def test_show_queued_job(apps: Apps) -> None:
    job_id = apps.enqueue_only("ok", {"n": 1})
    record = json.loads(apps.cli("show", str(job_id), "--json").output)
    assert record["state"] == "queued"
    assert record["attempts"] == 0
    assert record["lease_owner"] is None


def test_show_unknown_id_fails_clearly(apps: Apps) -> None:
    apps.enqueue("ok")
    result = apps.cli("show", "999", code=1)
    assert result.output == "Error: no job has id 999\n"


@pytest.mark.parametrize("command", ["show", "cancel", "requeue"])
@pytest.mark.parametrize("bad", ["abc", "1.5", "0", "-3"])
def test_job_id_must_be_a_positive_integer(apps: Apps, command: str, bad: str) -> None:
    output = apps.cli(command, "--", bad, code=2).output
    assert re.search(r"Invalid value for '\[?JOB_ID\]?'", output), output


def test_show_without_id_is_a_usage_error(apps: Apps) -> None:
    assert "Missing argument 'JOB_ID'" in apps.cli("show", code=2).output


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_queued_job(apps: Apps) -> None:
    job_id = apps.enqueue_only("ok")
    assert apps.cli("cancel", str(job_id)).output == f"job {job_id} cancelled\n"
    result = apps.get(job_id)
    assert result.state is JobState.CANCELLED
    assert result.failed is not None
    assert result.failed.error_type == "JobCancelled"
    assert result.failed.attempts == 0  # it never ran

    again = apps.cli("cancel", str(job_id), code=1)
    assert again.output == f"Error: job {job_id} is not queued or running\n"


def test_cancel_finished_job_is_refused(apps: Apps) -> None:
    job_id = apps.enqueue("ok")
    assert "is not queued or running" in apps.cli("cancel", str(job_id), code=1).output
    assert apps.state(job_id) is JobState.COMPLETED


def test_cancel_unknown_id_fails(apps: Apps) -> None:
    assert apps.cli("cancel", "999", code=1).output == "Error: no job has id 999\n"


# -- requeue -----------------------------------------------------------------------------------


def test_requeue_failed_job_by_id(apps: Apps) -> None:
    job_id = apps.enqueue("boom")
    assert apps.cli("requeue", str(job_id)).output == "requeued 1 job(s)\n"
    result = apps.get(job_id)
    assert result.state is JobState.QUEUED
    assert result.queued is not None
    assert result.queued.attempts == 0
    [attempt] = result.queued.history  # the failed run stays in the job's history
    assert (attempt.number, attempt.error_type, attempt.error_message) == (1, "ValueError", "boom!")
    assert json.loads(apps.cli("list", "--json").output)["state"] == "queued"


def test_requeue_cancelled_job_by_id(apps: Apps) -> None:
    job_id = apps.enqueue_only("ok", {"n": 2})
    apps.cli("cancel", str(job_id))
    apps.cli("requeue", str(job_id))
    result = apps.get(job_id)
    assert result.state is JobState.QUEUED
    assert result.request == {"n": 2}


@pytest.mark.parametrize("kind", ["completed", "queued"])
def test_requeue_refuses_jobs_that_did_not_fail(apps: Apps, kind: str) -> None:
    job_id = apps.enqueue("ok") if kind == "completed" else apps.enqueue_only("ok")
    output = apps.cli("requeue", str(job_id), code=1).output
    assert output == (
        f"Error: job {job_id} is {kind}; only failed or cancelled jobs can be requeued\n"
    )
    assert apps.state(job_id).value == kind


def test_requeue_unknown_id_fails(apps: Apps) -> None:
    assert apps.cli("requeue", "999", code=1).output == "Error: no job has id 999\n"


@pytest.mark.parametrize("args", [[], ["1", "--failed"], ["--command", "boom"]])
def test_requeue_needs_exactly_an_id_or_failed(apps: Apps, args: list[str]) -> None:
    failed = apps.enqueue("boom")
    assert failed == 1
    assert "give either a JOB_ID or --failed" in apps.cli("requeue", *args, code=2).output
    assert apps.state(failed) is JobState.FAILED  # nothing was requeued


def test_requeue_all_failed_jobs(apps: Apps) -> None:
    failed = [apps.enqueue("boom"), apps.enqueue("other_boom"), apps.enqueue("boom")]
    done = apps.enqueue("ok")
    cancelled = apps.enqueue_only("ok")
    apps.cli("cancel", str(cancelled))

    assert apps.cli("requeue", "--failed").output == "requeued 3 job(s)\n"
    assert [apps.state(job_id) for job_id in failed] == [JobState.QUEUED] * 3
    assert apps.state(done) is JobState.COMPLETED
    assert apps.state(cancelled) is JobState.CANCELLED  # --failed means failed only
    assert json.loads(apps.cli("list", "--json", "--state", "failed").output or "null") is None

    assert apps.cli("requeue", "--failed").output == "requeued 0 job(s)\n"


def test_requeue_failed_of_one_command(apps: Apps) -> None:
    boom = [apps.enqueue("boom"), apps.enqueue("boom")]
    other = apps.enqueue("other_boom")
    assert apps.cli("requeue", "--failed", "--command", "boom").output == "requeued 2 job(s)\n"
    assert [apps.state(job_id) for job_id in boom] == [JobState.QUEUED] * 2
    assert apps.state(other) is JobState.FAILED


# -- prune -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-months", "0"], "Invalid value for '--keep-months'"),
        (["--keep-months", "-1"], "Invalid value for '--keep-months'"),
        (["--keep-months", "x"], "Invalid value for '--keep-months'"),
        ([], "Missing option '--keep-months'"),
    ],
)
def test_prune_refuses_bad_keep_months(apps: Apps, args: list[str], message: str) -> None:
    job_id = apps.enqueue("ok")
    assert message in apps.cli("prune", *args, code=2).output
    assert apps.get(job_id).completed is not None  # nothing was removed


def test_prune_removes_old_months_only(apps: Apps) -> None:
    # A job that completed in January 2020, written by an app whose clock says so.
    old_jobs = BackgroundJobs(clock=ManualClock(datetime(2020, 1, 15, tzinfo=timezone.utc)))
    make_commands(old_jobs)
    old_app = make_app(apps.instance, old_jobs, BGJOBS_EAGER=True)
    with old_app.app_context():
        old = old_jobs.enqueue_command("ok").id
        old_jobs.store().dispose()
    new = apps.enqueue("ok")
    folder = apps.instance / "jobs"
    old_file = folder / "jobs_2020-01.db"
    new_file = folder / f"jobs_{datetime.now(timezone.utc):%Y-%m}.db"
    assert old_file.exists() and new_file.exists()

    assert apps.cli("prune", "--keep-months", "1").output == "removed 1 month(s): 2020-01\n"
    assert not old_file.exists()
    assert new_file.exists()
    assert apps.get(new).completed is not None
    assert apps.cli("prune", "--keep-months", "1").output == "removed 0 month(s)\n"

    # The summary of the pruned job stays in jobs.db; its full record went with its month.
    summary = apps.get(old)
    assert summary.state is JobState.COMPLETED
    assert summary.completed is None
    assert "state: completed" in apps.cli("show", str(old)).output


# -- worker and help ---------------------------------------------------------------------------


def test_worker_help(apps: Apps) -> None:
    output = apps.cli("worker", "--help").output
    assert "Run jobs in this process until SIGTERM or SIGINT." in output
    for option in ("--threads", "--worker", "--no-scheduler", "--stop-timeout"):
        assert option in output


def test_worker_rejects_zero_threads(apps: Apps) -> None:
    assert "Invalid value for '--threads'" in apps.cli("worker", "--threads", "0", code=2).output


def test_group_help_lists_the_commands(apps: Apps) -> None:
    output = apps.cli("--help").output
    for command in ("worker", "list", "show", "cancel", "requeue", "prune"):
        assert f"  {command} " in output


def test_commands_need_the_extension(tmp_path: Path) -> None:
    app = Flask("bare", instance_path=str(tmp_path / "instance"))
    app.cli.add_command(jobs_cli)
    result = app.test_cli_runner().invoke(args=["jobs", "list"])
    assert result.exit_code == 1
    assert "this app has no BackgroundJobs" in result.output


def test_show_never_prints_reply_to_credentials(tmp_path: Path) -> None:
    from flask import Flask

    from flask_bgjobs import BackgroundJobs

    app = Flask("showapp", instance_path=str(tmp_path / "show"))
    app.config["BGJOBS_AUTOSTART"] = False
    jobs = BackgroundJobs(app)
    jobs.command(lambda: None, name="x")
    with app.app_context():
        ref = jobs.enqueue_command("x", reply_to="user:hunter2@https://example.org/hook")
    runner = app.test_cli_runner()
    for extra in ([], ["--json"]):
        result = runner.invoke(args=["jobs", "show", str(ref.id), *extra])
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output and "example.org/hook" in result.output
    with app.app_context():
        jobs.store().dispose()


def test_schedule_commands(tmp_path: Path) -> None:
    from flask import Flask

    from flask_bgjobs import BackgroundJobs
    from flask_bgjobs.schedule import Schedule

    app = Flask("scheduleapp", instance_path=str(tmp_path / "schedule"))
    app.config["BGJOBS_AUTOSTART"] = False
    jobs = BackgroundJobs(app)
    jobs.command(lambda: None, name="report")
    runner = app.test_cli_runner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(args=["jobs", "schedule", *args])
        assert result.exit_code == code, result.output
        return result.output

    assert cli() == "no recurring tasks\n"
    with app.app_context():
        jobs.recurring_command("report", Schedule.cron("*/5 * * * *"), name="Report")
        jobs.recurring_command("report", Schedule.interval(90), name="Old")
    listing = cli()
    assert "Report" in listing and "cron */5 * * * *" in listing and "every 90 seconds" in listing
    fired = cli("run", "Report")
    assert re.match(r"task 'Report' fired: job \d+", fired)
    assert re.search(r"Report .* queued", cli())
    assert cli("disable", "Report") == "task 'Report' disabled\n"
    assert "disabled" in cli()
    assert cli("enable", "Report") == "task 'Report' enabled\n"
    assert "no recurring task is named 'Nope'" in cli("run", "Nope", code=1)
    assert "no recurring task is named 'Nope'" in cli("enable", "Nope", code=1)
    del jobs._recurring["Old"]
    assert cli("prune") == "removed 1 task(s): Old\n"
    assert cli("remove", "Report") == "task 'Report' removed\n"
    assert cli("remove", "Report", code=1).endswith("no recurring task is named 'Report'\n")
    assert runner.invoke(args=["jobs", "worker", "--help"]).output.count("--no-scheduler") == 1
    with app.app_context():
        jobs.store().dispose()
