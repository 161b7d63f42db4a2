"""Recurring tasks: schedules, registration, once per due time, catch-up and overlap policies."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flask_bgjobs import InvalidJobError, JobNotFoundError, JobState, ManualClock
from flask_bgjobs.schedule import Schedule
from flask_bgjobs.scheduler import MAX_SLEEP

UTC = timezone.utc


def at(*parts: int, tz: Any = UTC) -> datetime:
    return datetime(*parts, tzinfo=tz)


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("*/5 * * * *", at(2026, 1, 31, 23, 58), at(2026, 2, 1, 0, 0)),  # month boundary
        ("0 0 1 1 *", at(2026, 12, 31, 23, 59, 59), at(2027, 1, 1)),  # year boundary
        ("0 12 29 2 *", at(2026, 3, 1), at(2028, 2, 29, 12)),  # next leap day
        ("*/10 * * * * *", at(2026, 3, 1, 0, 0, 55), at(2026, 3, 1, 0, 1, 0)),  # seconds first
        ("0 9 * * 1-5", at(2026, 11, 27, 10), at(2026, 11, 30, 9)),  # Friday to Monday
    ],
)
def test_cron_next_runs(expression: str, after: datetime, expected: datetime) -> None:
    assert Schedule.cron(expression).next_after(after) == expected


def test_cron_in_a_time_zone_across_daylight_saving_changes() -> None:
    paris = Schedule.cron("30 9 * * *", tz="Europe/Paris")
    # 09:30 in Paris is 08:30 UTC in winter and 07:30 UTC in summer (from 2026-03-29).
    assert paris.next_after(at(2026, 3, 28, 12)) == at(2026, 3, 29, 7, 30)
    assert paris.next_after(at(2026, 3, 27, 12)) == at(2026, 3, 28, 8, 30)
    assert paris.next_after(at(2026, 10, 24, 12)) == at(2026, 10, 25, 8, 30)
    # 02:30 does not exist on the spring-forward night: the run happens when the gap ends.
    gap = Schedule.cron("30 2 * * *", tz="Europe/Paris")
    assert gap.next_after(at(2026, 3, 28, 12)).astimezone(ZoneInfo("Europe/Paris")).hour == 3
    hourly_ny = Schedule.cron("0 * * * *", tz="America/New_York")
    first = hourly_ny.next_after(at(2026, 11, 1, 5, 30))  # 01:30 EDT, the hour repeats after
    assert hourly_ny.next_after(first) - first == timedelta(hours=1)


def test_intervals_and_shortcuts() -> None:
    every = Schedule.interval(timedelta(minutes=15))
    assert every.next_after(at(2026, 1, 1, 10, 7)) == at(2026, 1, 1, 10, 22)
    assert every.describe() == "every 15 minutes"
    assert Schedule.interval(90).describe() == "every 90 seconds"
    assert Schedule.hourly.next_after(at(2026, 1, 1, 10, 7)) == at(2026, 1, 1, 11)
    assert Schedule.daily.next_after(at(2026, 1, 1, 10, 7)) == at(2026, 1, 2)
    assert Schedule.every_minute.describe() == "every minute"
    assert (
        Schedule.cron("0 9 * * *", tz="Europe/Paris").describe() == "cron 0 9 * * * (Europe/Paris)"
    )
    assert Schedule.from_json(every.to_json()) == every


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Schedule.cron("61 * * * *"), "invalid cron expression"),
        (lambda: Schedule.cron("* * *"), "5 fields"),
        (lambda: Schedule.cron("every day"), "5 fields"),
        (lambda: Schedule.cron("* * * * *", tz="Mars/Olympus"), "unknown time zone"),
        (lambda: Schedule.interval(timedelta(0)), "must be positive"),
        (lambda: Schedule.interval(-5), "must be positive"),
    ],
)
def test_bad_schedules_are_refused(build: Any, message: str) -> None:
    with pytest.raises(InvalidJobError, match=message):
        build()


# -- registration ------------------------------------------------------------------------------


def test_registration_is_idempotent_and_keeps_the_last_run(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda req: req, name="report")
    with app.app_context():
        name = jobs.recurring_command("report", Schedule.cron("0 * * * *"), {"v": 1})
        assert name == "report"
        (task,) = jobs.recurring_tasks()
        assert task.next_run == at(2026, 3, 15, 13)
        clock.set(at(2026, 3, 15, 13, 0, 1))
        (fired,) = jobs.tick()
        # The same schedule again: next run and last run unchanged; request updated.
        jobs.recurring_command("report", Schedule.cron("0 * * * *"), {"v": 2}, tag="r")
        (again,) = jobs.recurring_tasks()
        assert (again.last_run, again.last_job_id) == (at(2026, 3, 15, 13), fired.job_id)
        assert again.next_run == at(2026, 3, 15, 14) and again.request == '{"v":2}'
        assert again.options == {"tag": "r"}
        # A new schedule: the next run follows it; the last run stays.
        jobs.recurring_command("report", Schedule.cron("30 * * * *"), {"v": 2})
        (changed,) = jobs.recurring_tasks()
        assert changed.next_run == at(2026, 3, 15, 13, 30)
        assert changed.last_job_id == fired.job_id
        assert jobs.get_job(fired.job_id).request == {"v": 1}


def test_registration_refuses_bad_input(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with app.app_context():
        with pytest.raises(Exception, match="unknown command 'missing'"):
            jobs.recurring_command("missing", Schedule.hourly)
        with pytest.raises(Exception, match="unknown endpoint"):
            jobs.recurring_api("nowhere", Schedule.hourly)
        with pytest.raises(InvalidJobError, match="must be a Schedule"):
            jobs.recurring_command("x", "*/5 * * * *")
        with pytest.raises(InvalidJobError, match="catch_up must be one of"):
            jobs.recurring_command("x", Schedule.hourly, catch_up="some")
        with pytest.raises(InvalidJobError, match="cannot set ref_id"):
            jobs.recurring_command("x", Schedule.hourly, ref_id="same-each-time")
        with pytest.raises(InvalidJobError, match="retry_limit"):
            jobs.recurring_command("x", Schedule.hourly, retry_limit=-1)
        assert jobs.recurring_tasks() == []


def test_tasks_registered_before_init_app_are_stored_at_init(tmp_path: Any) -> None:
    from flask import Flask

    from flask_bgjobs import BackgroundJobs

    jobs = BackgroundJobs()
    jobs.command(lambda: None, name="cleanup")
    jobs.recurring_command("cleanup", Schedule.daily, name="Nightly cleanup")
    app = Flask("late", instance_path=str(tmp_path))
    app.config["BGJOBS_AUTOSTART"] = False
    jobs.init_app(app)
    with app.app_context():
        assert [t.name for t in jobs.recurring_tasks()] == ["Nightly cleanup"]
        jobs.store().dispose()


# -- firing ------------------------------------------------------------------------------------


def scheduled(jobs: Any, name: str) -> list[Any]:
    return jobs.list_jobs(args={"scheduled_task": name}, limit=1000)


def test_each_due_time_fires_once_whoever_ticks(make_app: Any, clock: ManualClock) -> None:
    from flask_bgjobs import BackgroundJobs

    app, jobs = make_app(clock=clock)
    other_app, _ = make_app(clock=clock)
    jobs.command(lambda: None, name="beat")
    with app.app_context():
        jobs.recurring_command("beat", Schedule.every_minute, overlap=True)
        clock.set(at(2026, 3, 15, 12, 1, 0))
        first = jobs.tick()
        assert jobs.tick() == []  # the same due time again: nothing
    # A second process (another app on the same jobs.db) at the same moment: nothing either.
    second = BackgroundJobs(other_app, clock=clock, database_dir=str(jobs_dir(app, jobs)))
    second.command(lambda: None, name="beat")
    with other_app.app_context():
        assert second.tick() == []
        clock.advance(minutes=1)
        (next_one,) = second.tick()
        second.store().dispose()
    with app.app_context():
        ids = [s.id for s in scheduled(jobs, "beat")]
    assert ids == [next_one.job_id, first[0].job_id]


def jobs_dir(app: Any, jobs: Any) -> Any:
    with app.app_context():
        return jobs.settings().database_dir


@pytest.mark.parametrize(
    ("catch_up", "expected_runs", "expected_dues"),
    [
        ("one", 1, [at(2026, 3, 15, 12, 10)]),
        ("all", 10, [at(2026, 3, 15, 12, m) for m in range(1, 11)]),
        ("skip", 0, []),
    ],
)
def test_misfire_policies_after_downtime(
    make_app: Any, clock: ManualClock, catch_up: str, expected_runs: int, expected_dues: list[Any]
) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda: None, name="beat")
    with app.app_context():
        jobs.recurring_command("beat", Schedule.every_minute, catch_up=catch_up)
        clock.set(at(2026, 3, 15, 12, 10, 45))  # down for ten minutes: ten due times missed
        fired = jobs.tick()
        runs = [f for f in fired if f.job_id is not None]
        assert [f.due for f in runs] == expected_dues
        assert len(scheduled(jobs, "beat")) == expected_runs
        (task,) = jobs.recurring_tasks()
        assert task.next_run == at(2026, 3, 15, 12, 11)
        if catch_up == "skip":
            assert (task.skipped, task.last_skip_reason) == (1, "missed")
            clock.set(at(2026, 3, 15, 12, 11, 2))  # back on time: runs again
            assert [f.job_id is not None for f in jobs.tick()] == [True]


def test_overlap_false_skips_while_the_previous_run_is_queued(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda: None, name="slow")
    jobs.command(lambda: None, name="fast")
    with app.app_context():
        jobs.recurring_command("slow", Schedule.every_minute)
        jobs.recurring_command("fast", Schedule.every_minute, overlap=True)
        for minute in (1, 2, 3):
            clock.set(at(2026, 3, 15, 12, minute, 1))
            jobs.tick()  # no runner: every job stays queued
        tasks = {t.name: t for t in jobs.recurring_tasks()}
        assert len(scheduled(jobs, "slow")) == 1 and len(scheduled(jobs, "fast")) == 3
        assert (tasks["slow"].skipped, tasks["slow"].last_skip_reason) == (2, "overlap")
        jobs.start()
        jobs.wait_for(tasks["slow"].last_job_id)
        clock.set(at(2026, 3, 15, 12, 4, 1))
        jobs.tick()
        assert len(scheduled(jobs, "slow")) == 2


def test_task_options_apply_to_every_job_it_creates(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda req: req, name="sync")
    with app.app_context():
        jobs.recurring_command("sync", Schedule.every_minute, {"full": True}, name="Full sync",
                               worker="sync", retry_limit=5, timeout=30, tag="nightly",
                               args={"team": "ops"})  # fmt: skip
        clock.set(at(2026, 3, 15, 12, 1))
        (fired,) = jobs.tick()
        job = jobs.get_job(fired.job_id).queued
    assert (job.worker, job.retry_limit, job.timeout, job.tag) == ("sync", 5, 30.0, "nightly")
    assert job.args == {"team": "ops", "scheduled_task": "Full sync"}
    assert job.created_by == "scheduler" and job.request == {"full": True}
    assert job.options["due"] == "2026-03-15T12:01:00+00:00"


def test_run_now_enable_disable_remove_prune(make_app: Any, clock: ManualClock) -> None:
    app, jobs = make_app(clock=clock)
    jobs.command(lambda: None, name="x")
    with app.app_context():
        jobs.recurring_command("x", Schedule.hourly, name="a")
        jobs.recurring_command("x", Schedule.hourly, name="b")
        ref = jobs.run_now("a")
        assert jobs.get_job(ref.id).summary.args == {"scheduled_task": "a"}
        with pytest.raises(JobNotFoundError):
            jobs.run_now("nope")
        jobs.enable_recurring("b", False)
        clock.set(at(2026, 3, 15, 13, 0, 1))
        fired = jobs.tick()
        assert [f.task for f in fired] == ["a"]  # b is disabled
        jobs.enable_recurring("b")
        assert [f.task for f in jobs.tick()] == ["b"]
        del jobs._recurring["b"]  # as if a new release no longer registers it
        assert jobs.prune_recurring() == ["b"]
        assert jobs.remove_recurring("a") is True and jobs.remove_recurring("a") is False
        assert jobs.recurring_tasks() == []


def test_the_scheduler_thread_fires_due_tasks_and_sleeps_until_the_next(
    make_app: Any, clock: ManualClock
) -> None:
    app, jobs = make_app(clock=clock)
    ran = threading.Event()
    jobs.command(lambda: ran.set(), name="beat")
    with app.app_context():
        jobs.recurring_command("beat", Schedule.interval(30))
        jobs.start()
        runner = jobs._state().runner
        assert runner.scheduler is not None
        assert runner.scheduler.sleep_for(clock()) == MAX_SLEEP  # due in 30 s: sleep at most 1
        clock.advance(seconds=29.5)
        assert runner.scheduler.sleep_for(clock()) == pytest.approx(0.5)
        clock.advance(seconds=1)
        assert ran.wait(5)
        (task,) = jobs.recurring_tasks()
        jobs.wait_for(task.last_job_id)
        assert jobs.get_job(task.last_job_id).state is JobState.COMPLETED
