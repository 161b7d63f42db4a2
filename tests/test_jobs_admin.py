"""The jobs admin pages through the test client: every page and API route, access, CSRF, headers,
escaping of hostile values, bad parameters, and the actions (cancel, requeue, bulk requeue, run
now, enable and disable).

Jobs are made without worker threads: an eager twin of the extension (same files, same manual
clock) runs jobs to completion or failure at enqueue; the app under test leaves its own jobs in
the queue, and a test "starts" one by claiming it for a fake worker process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from flask_bgjobs import BackgroundJobs, JobState, ManualClock, Schedule, current_job
from flask_bgjobs.models import BackgroundJob
from flask_bgjobs.records import LiveState, Outcome, history_row, month_of_epoch

PREFIX = "/admin/jobs"
HOSTILE = '<script>alert("x")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
OWNER = "host-a:4242:cafe"


def add_commands(jobs: BackgroundJobs, clock: ManualClock) -> None:
    """The commands of both the app and its eager twin."""

    @jobs.command
    def work(req: dict[str, Any]) -> dict[str, Any]:
        clock.advance(seconds=float(req.get("seconds", 1)))
        current_job.log.info("working on %s", req.get("text", ""))
        current_job.update_status(progress=1.0, status=req.get("status"))
        return {"echo": req.get("text")}

    @jobs.command(retry_limit=0)
    def boom(req: dict[str, Any]) -> None:
        clock.advance(seconds=float(req.get("seconds", 0.5)))
        raise ValueError(req.get("text", "boom"))

    @jobs.command(retry_limit=1)
    def flaky(req: dict[str, Any]) -> None:
        clock.advance(seconds=0.25)
        raise ConnectionError(f"attempt {current_job.attempt} failed")

    @jobs.command(retry_limit=0)
    def split_then_fail() -> None:
        """An atomic batch that fails: the dependent it enqueued is cancelled."""
        jobs.enqueue_command("idle", depends_on=current_job.id)
        raise RuntimeError("validation failed")

    @jobs.command
    def idle() -> None:
        """Never run here: it stays queued, or is "started" by a test."""


@dataclass
class Admin:
    """The app under test, its eager twin and a client."""

    app: Flask
    jobs: BackgroundJobs
    twin_app: Flask
    twin: BackgroundJobs
    clock: ManualClock
    client: FlaskClient

    def run(self, command: str, request: Any = None, **options: Any) -> int:
        """Run a job to its end now (through the eager twin); return its id."""
        with self.twin_app.app_context():
            return self.twin.enqueue_command(command, request, **options).id

    def enqueue(self, command: str = "idle", request: Any = None, **options: Any) -> int:
        """Put a job in the queue of the app under test, where it stays."""
        with self.app.app_context():
            return self.jobs.enqueue_command(command, request, **options).id

    def start(
        self, job_id: int, progress: float | None = None, status: str | None = None, logs: str = ""
    ) -> None:
        """Claim a queued job for a fake live worker process and report its live state."""
        store = self.store
        now = self.clock().timestamp()
        job = store.claim_id(job_id, OWNER, now, 30.0)
        assert job is not None
        self.heartbeat(OWNER, now, running=[job_id])
        store.save_live(OWNER, [LiveState(job_id, job.attempts, progress, status, logs)])

    def heartbeat(
        self, owner: str, at: float, running: list[int] | None = None, **fields: Any
    ) -> None:
        process = {"id": owner, "host": "host-a", "pid": 4242, "started_at": at - 60,
                   "heartbeat_at": at, "threads": 4, "workers": None, "scheduler": 1,
                   "stopped_at": None, **fields}  # fmt: skip
        self.store.heartbeat(process, running or [], at + 30)

    @property
    def store(self) -> Any:
        with self.app.app_context():
            return self.jobs.store()

    def state(self, job_id: int) -> JobState:
        with self.app.app_context():
            found = self.jobs.get_job(job_id)
        assert found is not None
        return found.state

    def page(self, path: str, status: int = 200, **kwargs: Any) -> str:
        response = self.client.get(f"{PREFIX}{path}", **kwargs)
        assert response.status_code == status, (path, response.get_data(as_text=True)[:2000])
        return response.get_data(as_text=True)

    def api(self, path: str, status: int = 200) -> Any:
        response = self.client.get(f"{PREFIX}/api{path}")
        assert response.status_code == status, (path, response.get_data(as_text=True)[:2000])
        assert response.mimetype == "application/json"
        return response.get_json()

    def token(self) -> str:
        return token_of(self.page("/"))

    def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        form = {"csrf_token": self.token(), **(data or {})}
        return self.client.post(f"{PREFIX}{path}", data=form, **kwargs)


def token_of(html: str) -> str:
    match = re.search(r'data-csrf="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def build(tmp_path: Path, clock: ManualClock, name: str = "app", **options: Any) -> Admin:
    instance = tmp_path / name
    config = dict(
        TESTING=True,
        SECRET_KEY="test-secret",
        BGJOBS_AUTOSTART=False,
        BGJOBS_RETRY_BACKOFF=0.01,
    )
    app = Flask("jobsadmin", instance_path=str(instance))
    app.config.update(config)
    authorize = options.pop("authorize", None)
    app.config.update(options.pop("config", {}))
    jobs = BackgroundJobs(app, clock=clock, authorize=authorize, **options)
    add_commands(jobs, clock)
    twin_app = Flask("jobsadmin-twin", instance_path=str(instance))
    twin_app.config.update(config, BGJOBS_EAGER=True, BGJOBS_ADMIN_URL_PREFIX=None)
    twin = BackgroundJobs(twin_app, clock=clock)
    add_commands(twin, clock)
    return Admin(app, jobs, twin_app, twin, clock, app.test_client())


@pytest.fixture
def made(tmp_path: Path, clock: ManualClock) -> Iterator[list[Admin]]:
    admins: list[Admin] = []
    yield admins
    for admin in admins:
        for app, jobs in ((admin.app, admin.jobs), (admin.twin_app, admin.twin)):
            with app.app_context():
                jobs.stop(timeout=5)
                jobs.store().dispose()


@pytest.fixture
def admin(tmp_path: Path, clock: ManualClock, made: list[Admin]) -> Admin:
    made.append(build(tmp_path, clock))
    return made[-1]


@pytest.fixture
def seeded(admin: Admin) -> Admin:
    """February: 3 completed, 2 failed. March (now): 4 completed, 2 failed, 1 cancelled,
    a failed job with two attempts; a queue of one running, two queued, one delayed job."""
    clock = admin.clock
    clock.set(datetime(2026, 2, 20, 9, 0, tzinfo=timezone.utc))
    for number in range(3):
        admin.run("work", {"text": f"feb {number}", "seconds": 1 + number}, tag="feb")
    for number in range(2):
        admin.run("boom", {"text": f"feb failure {number}"}, tag="feb")
    clock.set(datetime(2026, 3, 15, 10, 0, tzinfo=timezone.utc))
    for number in range(4):
        admin.run("work", {"text": f"march {number}", "seconds": 2 + number}, tag="march",
                  batch_id="b-1" if number < 2 else None, created_by="alice",
                  user_id="7" if number == 0 else None)  # fmt: skip
    admin.run("boom", {"text": "disk full"}, tag="march", created_by="bob")
    admin.run("boom", {"text": "quota exceeded"}, tag="other")
    admin.run("flaky", {}, tag="march")
    with admin.app.app_context():
        admin.jobs.cancel_job(admin.enqueue("idle", tag="march"))
    clock.set(datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc))
    running = admin.enqueue("work", {"text": "live"})
    admin.enqueue("idle", tag="later")
    admin.enqueue("idle", tag="later")
    admin.enqueue("idle", run_after=clock() + timedelta(hours=1))
    admin.start(running, progress=0.4, status="4 of 10", logs="line one\nline two\n")
    return admin


# -- access ----------------------------------------------------------------------------------------


def test_closed_outside_debug_and_testing_without_an_authorizer(admin: Admin) -> None:
    admin.app.config["TESTING"] = False
    for path in ("/", "/queue", "/api/queue", "/static/bgjobs/admin.css", "/job/1"):
        response = admin.client.get(f"{PREFIX}{path}")
        assert response.status_code == 403, path
        assert "Content-Security-Policy" in response.headers
    page = admin.client.get(f"{PREFIX}/").get_data(as_text=True)
    assert "authorize=" in page
    assert admin.client.get(f"{PREFIX}/api/queue").get_json()["status"] == 403
    assert admin.client.post(f"{PREFIX}/job/1/cancel").status_code == 403
    admin.app.debug = True
    assert admin.client.get(f"{PREFIX}/").status_code == 200


@pytest.mark.parametrize("where", ["keyword", "config"])
def test_an_authorizer_decides_even_in_testing(
    tmp_path: Path, clock: ManualClock, made: list[Admin], where: str
) -> None:
    def check() -> bool:
        return request.headers.get("X-Admin") == "yes"

    config = {"BGJOBS_ADMIN_AUTHORIZE": check}
    options: dict[str, Any] = {"authorize": check} if where == "keyword" else {"config": config}
    made.append(build(tmp_path, clock, **options))
    client = made[-1].client
    assert client.get(f"{PREFIX}/").status_code == 403
    assert client.get(f"{PREFIX}/", headers={"X-Admin": "yes"}).status_code == 200
    made[-1].app.config["TESTING"] = False
    assert client.get(f"{PREFIX}/api/queue", headers={"X-Admin": "yes"}).status_code == 200


def test_the_keyword_authorizer_wins_over_the_config(
    tmp_path: Path, clock: ManualClock, made: list[Admin]
) -> None:
    made.append(build(tmp_path, clock, authorize=lambda: True,
                      config={"BGJOBS_ADMIN_AUTHORIZE": lambda: False}))  # fmt: skip
    assert made[-1].client.get(f"{PREFIX}/").status_code == 200


def test_prefix_is_configurable_and_none_turns_the_pages_off(
    tmp_path: Path, clock: ManualClock, made: list[Admin]
) -> None:
    made.append(build(tmp_path, clock, "a", config={"BGJOBS_ADMIN_URL_PREFIX": "/ops/jobs/"}))
    assert made[-1].client.get("/ops/jobs/").status_code == 200
    assert made[-1].client.get("/ops/jobs/api/queue").status_code == 200
    assert made[-1].client.get(f"{PREFIX}/").status_code == 404
    made.append(build(tmp_path, clock, "b", admin_url_prefix=None))
    assert made[-1].client.get(f"{PREFIX}/").status_code == 404
    assert "bgjobs" not in made[-1].app.blueprints
    with pytest.raises(ValueError, match="BGJOBS_ADMIN_URL_PREFIX"):
        build(tmp_path, clock, "c", admin_url_prefix="admin")
    with pytest.raises(ValueError, match="BGJOBS_ADMIN_AUTHORIZE"):
        build(tmp_path, clock, "d", admin_authorize="yes")


def test_an_app_set_up_again_keeps_its_pages_for_the_new_extension(
    admin: Admin, clock: ManualClock
) -> None:
    job_id = admin.enqueue("idle")
    assert admin.api(f"/job/{job_id}")["state"] == "queued"
    other = BackgroundJobs(admin.app, clock=clock, database_dir="other-jobs",
                           authorize=lambda: request.headers.get("X-Admin") == "1")  # fmt: skip
    try:
        url = f"{PREFIX}/api/job/{job_id}"
        assert admin.client.get(url).status_code == 403  # the new authorizer decides
        # The new extension's files, where this job does not exist.
        assert admin.client.get(url, headers={"X-Admin": "1"}).status_code == 404
    finally:
        with admin.app.app_context():
            other.store().dispose()


# -- CSRF and headers ------------------------------------------------------------------------------


def test_every_post_needs_a_valid_csrf_token_and_its_cookie(seeded: Admin) -> None:
    failed = seeded.api("/failed?month=2026-03&state=failed")["jobs"][0]["id"]
    queued = seeded.api("/queue")["jobs"][1]["id"]
    actions = [
        (f"/job/{queued}/cancel", {}),
        (f"/job/{failed}/requeue", {}),
        ("/failed/requeue?month=2026-03", {}),
        ("/scheduled/run", {"name": "nightly"}),
        ("/scheduled/enable", {"name": "nightly", "enabled": "0"}),
    ]
    token = seeded.token()
    stranger = seeded.app.test_client()  # the right token, but not its cookie
    for path, form in actions:
        url = f"{PREFIX}{path}"
        assert seeded.client.post(url, data=form).status_code == 400, path
        assert seeded.client.post(url, data={**form, "csrf_token": "forged"}).status_code == 400
        assert stranger.post(url, data={**form, "csrf_token": token}).status_code == 400
        foreign = seeded.client.post(url, data={**form, "csrf_token": token},
                                     headers={"Origin": "https://evil.example"})  # fmt: skip
        assert foreign.status_code == 403
        assert seeded.client.get(url).status_code == 405  # GET never changes state
    assert seeded.state(queued) is JobState.QUEUED
    assert seeded.state(failed) is JobState.FAILED
    done = seeded.client.post(f"{PREFIX}/job/{queued}/cancel", headers={"X-CSRF-Token": token})
    assert done.status_code == 303
    assert seeded.state(queued) is JobState.CANCELLED


def test_without_a_secret_key_actions_are_hidden_and_refused(seeded: Admin) -> None:
    seeded.app.config["SECRET_KEY"] = None
    page = seeded.page("/queue")
    assert "SECRET_KEY" in page and "csrf_token" not in page and "data-csrf" not in page
    refused = seeded.client.post(f"{PREFIX}/job/1/cancel")
    assert refused.status_code == 400 and b"SECRET_KEY" in refused.data


def test_every_response_carries_a_strict_csp_and_no_inline_code(seeded: Admin) -> None:
    job_id = seeded.api("/completed?month=2026-03")["jobs"][0]["id"]
    pages = ["/", "/queue", "/completed", "/failed?month=2026-02", f"/job/{job_id}",
             "/scheduled", "/workers"]  # fmt: skip
    for path, status in [*((p, 200) for p in pages), ("/static/bgjobs/admin.js", 200),
                         ("/static/bgjobs/admin.css", 200), ("/api/queue", 200),
                         ("/queue?limit=x", 400), ("/job/99999", 404)]:  # fmt: skip
        response = seeded.client.get(f"{PREFIX}{path}")
        assert response.status_code == status, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        response.close()
    for path in pages:
        html = seeded.page(path)
        assert "<style" not in html and " style=" not in html
        assert re.search(r"<script(?![^>]*\bsrc=)", html) is None, path
        assert re.search(r"\son[a-z]+=", html) is None, path


# -- escaping --------------------------------------------------------------------------------------


def test_hostile_values_are_escaped_everywhere(admin: Admin) -> None:
    admin.twin.recurring_command("work", Schedule.every_minute, {"text": HOSTILE}, name=HOSTILE,
                                 tag=HOSTILE)  # fmt: skip
    done = admin.run("work", {"text": HOSTILE, "status": HOSTILE}, tag=HOSTILE, batch_id=HOSTILE,
                     created_by=HOSTILE, user_id=HOSTILE, args={HOSTILE: HOSTILE},
                     reply_to=f"https://example.org/{HOSTILE}")  # fmt: skip
    failed = admin.run("boom", {"text": HOSTILE}, tag=HOSTILE)
    live = admin.enqueue("work", {"text": HOSTILE}, tag=HOSTILE)
    admin.start(live, progress=0.5, status=HOSTILE, logs=f"{HOSTILE}\n")
    pages = [
        "/", "/queue", "/completed", "/failed", f"/job/{done}", f"/job/{failed}", f"/job/{live}",
        "/scheduled", "/workers", f"/completed?tag={HOSTILE}", f"/failed?q={HOSTILE}",
        f"/job/{live}?x={HOSTILE}",
    ]  # fmt: skip
    for path in pages:
        html = admin.page(path)
        assert HOSTILE not in html and "<script>" not in html, path
    assert ESCAPED in admin.page(f"/job/{done}")
    assert ESCAPED in admin.page(f"/job/{failed}")  # the error message
    assert ESCAPED in admin.page("/queue")  # the status text
    assert ESCAPED in admin.page(f"/job/{live}")  # the live log
    assert ESCAPED in admin.page("/scheduled")
    # The JSON carries the values as they are, as JSON that no browser runs.
    response = admin.client.get(f"{PREFIX}/api/job/{done}")
    assert response.mimetype == "application/json"
    assert response.get_json()["job"]["result"] == {"echo": HOSTILE}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_reply_to_is_shown_redacted_only(admin: Admin) -> None:
    job_id = admin.run("work", {}, reply_to="user:s3cret-pw@https://hooks.example.org/done")
    page = admin.page(f"/job/{job_id}")
    assert "s3cret-pw" not in page and "***@https://hooks.example.org/done" in page
    payload = admin.client.get(f"{PREFIX}/api/job/{job_id}").get_data(as_text=True)
    assert "s3cret-pw" not in payload
    admin.twin.recurring_command("work", Schedule.hourly, name="hook",
                                 reply_to="token123@https://hooks.example.org/t")  # fmt: skip
    assert "token123" not in admin.page("/scheduled")
    assert "token123" not in admin.client.get(f"{PREFIX}/api/scheduled").get_data(as_text=True)


# -- pages -----------------------------------------------------------------------------------------


def test_dashboard_counts_charts_and_commands(seeded: Admin) -> None:
    data = seeded.api("/dashboard")
    assert data["queue"] == {"waiting": 0, "queued": 3, "started": 1, "delayed": 1, "retrying": 0}
    assert data["today"] == {"completed": 4, "failed": 3, "cancelled": 1}
    assert data["this_month"] == data["today"]
    assert data["months"] == [
        {"month": "2026-03", "completed": 4, "failed": 3, "cancelled": 1},
        {"month": "2026-02", "completed": 3, "failed": 2, "cancelled": 0},
    ]
    by_day = {day["day"]: day for day in data["days"]}
    assert len(data["days"]) == 30 and data["days"][-1]["day"] == "2026-03-15"
    assert by_day["2026-02-20"] == {"day": "2026-02-20", "completed": 3, "failed": 2,
                                    "cancelled": 0}  # fmt: skip
    assert data["slowest"][0]["command"] == "work"
    assert [row["command"] for row in data["failing"]] == ["boom", "flaky"]
    assert data["failing"][0]["failed"] == 4 and data["failing"][0]["failure_rate"] == 1.0
    assert data["processes"] == {"live": 1, "lost": 0}
    assert seeded.api("/dashboard/live")["queue"] == data["queue"]
    html = seeded.page("/")
    assert 'data-count="queue.started">1<' in html
    assert html.count('<rect class="completed"') == 2 and html.count('<rect class="failed"') == 2
    assert 'id="chart-slowest"' in html and "boom" in html
    assert f'href="{PREFIX}/completed?month=2026-02"' in html


def test_the_chart_covers_every_month_of_the_last_30_days(admin: Admin) -> None:
    admin.clock.set(datetime(2026, 2, 10, 9, 0, tzinfo=timezone.utc))
    admin.run("work", {"text": "in February"})
    admin.clock.set(datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc))  # 30 days: Jan 31 on
    days = admin.api("/dashboard")["days"]
    assert days[0]["day"] == "2026-01-31" and days[-1]["day"] == "2026-03-01"
    assert [day["day"] for day in days if day["completed"]] == ["2026-02-10"]


def test_queue_shows_progress_status_elapsed_and_cancel_buttons(seeded: Admin) -> None:
    seeded.clock.advance(seconds=90)
    data = seeded.api("/queue")
    assert data["counts"]["started"] == 1 and data["total"] == 4
    running, first, _, delayed = data["jobs"]
    assert running["state"] == "started" and running["progress"] == 0.4
    assert running["progress_estimated"] is False and running["status"] == "4 of 10"
    assert running["elapsed"] == 90 and running["lease_owner"] == OWNER
    assert [first["state"], first["tag"], first["progress"]] == ["queued", "later", None]
    assert delayed["due_in"] == pytest.approx(3600 - 90)
    assert running["url"] == f"{PREFIX}/job/{running['id']}"
    assert running["cancel_url"] == f"{PREFIX}/job/{running['id']}/cancel"
    html = seeded.page("/queue")
    assert '<progress class="pbar" max="1" value="0.4000">' in html and "40%" in html
    assert "running 1 min 30 s" in html and "due in 58 min 30 s" in html
    assert html.count(">Cancel</button>") == 4
    assert 'data-live="queue"' in html and f'data-api="{PREFIX}/api/queue?limit=200"' in html


def test_queue_estimates_progress_from_past_durations(seeded: Admin) -> None:
    job_id = seeded.enqueue("work", {"text": "no progress reported"})
    seeded.start(job_id)  # no explicit progress
    seeded.clock.advance(seconds=1)
    row = next(job for job in seeded.api("/queue")["jobs"] if job["id"] == job_id)
    assert row["progress_estimated"] is True and 0 < row["progress"] < 0.99
    with seeded.app.app_context():
        result = seeded.jobs.get_job(job_id)
        assert result is not None and row["progress"] == seeded.jobs.progress_of(result)
    assert "estimated from past durations" in seeded.page("/queue")


def test_completed_and_failed_by_month(seeded: Admin) -> None:
    march = seeded.api("/completed")
    assert march["month"] == "2026-03" and march["months"] == ["2026-03", "2026-02"]
    assert march["total"] == 4 and all(job["command"] == "work" for job in march["jobs"])
    february = seeded.api("/completed?month=2026-02")
    assert february["total"] == 3 and {j["tag"] for j in february["jobs"]} == {"feb"}
    failed = seeded.api("/failed?month=2026-03")
    assert failed["total"] == 4
    assert sorted(j["state"] for j in failed["jobs"]) == ["cancelled", "failed", "failed",
                                                          "failed"]  # fmt: skip
    html = seeded.page("/failed?month=2026-02")
    assert '<option value="2026-02" selected>' in html and "feb failure 1" in html
    assert "Requeue all 2 matching jobs" in html
    empty = seeded.page("/completed?month=2025-07")
    assert "No job finished in 2025-07: it has no file." in empty
    assert seeded.api("/months")["months"] == ["2026-03", "2026-02"]


def test_filters_search_sort_and_pages(seeded: Admin) -> None:
    def ids(query: str, kind: str = "completed") -> list[int]:
        return [job["id"] for job in seeded.api(f"/{kind}?month=2026-03&{query}")["jobs"]]

    every = ids("")
    assert len(every) == 4
    assert len(ids("batch_id=b-1")) == 2 and len(ids("user_id=7")) == 1
    assert len(ids("created_by=alice")) == 4 and ids("created_by=nobody") == []
    assert len(ids("q=march%202")) == 1  # the request
    assert len(ids("q=disk", "failed")) == 1  # the error
    assert len(ids("q=%25", "failed")) == 0  # LIKE wildcards are searched as text
    assert len(ids("state=cancelled", "failed")) == 1
    assert len(ids("command=boom&tag=march", "failed")) == 1
    newest_first = seeded.api("/completed?month=2026-03")["jobs"]
    assert [j["completed_at"] for j in newest_first] == sorted(
        (j["completed_at"] for j in newest_first), reverse=True)  # fmt: skip
    longest = seeded.api("/completed?month=2026-03&sort=-duration")["jobs"]
    assert [j["duration"] for j in longest] == [5.0, 4.0, 3.0, 2.0]
    shortest = seeded.api("/completed?month=2026-03&sort=duration")["jobs"]
    assert [j["duration"] for j in shortest] == [2.0, 3.0, 4.0, 5.0]
    seeded.clock.set(datetime(2026, 3, 16, 8, 0, tzinfo=timezone.utc))
    for number in range(30):
        seeded.run("work", {"text": f"bulk {number}", "seconds": 0.01}, tag="bulk")
    first = seeded.api("/completed?month=2026-03&per_page=25&tag=bulk")
    assert first["total"] == 30 and first["pages"] == 2 and len(first["jobs"]) == 25
    second = seeded.api("/completed?month=2026-03&per_page=25&tag=bulk&page=2")
    assert len(second["jobs"]) == 5
    assert not {j["id"] for j in first["jobs"]} & {j["id"] for j in second["jobs"]}
    html = seeded.page("/completed?month=2026-03&per_page=25&tag=bulk")
    following = re.search(r'<a href="([^"]+)" rel="next">', html)
    assert "page 1 of 2" in html and following is not None
    assert "per_page=25" in following.group(1) and "tag=bulk" in following.group(1)


def test_a_job_both_in_the_queue_and_in_a_month_is_listed_once(admin: Admin) -> None:
    """A crash between the two writes of a move leaves the month's row and the queue row."""
    job_id = admin.enqueue("work", {"text": "cut short"})
    admin.start(job_id)
    store = admin.store
    with store.queue.read() as conn:
        row = conn.exec_driver_sql("SELECT * FROM background_job WHERE id = ?", (job_id,)).one()
    job = BackgroundJob(**{**row._asdict(), "state": JobState.STARTED, "args": {},
                           "options": {}, "logs": "", "history": []})  # fmt: skip
    ended = admin.clock().timestamp() + 1
    with store.history.write(month_of_epoch(ended)) as tx:
        values = history_row(Outcome(job, JobState.COMPLETED, ended, result="1"))
        tx.execute(f"INSERT INTO completed_job VALUES ({', '.join('?' * len(values))})", values)
    other = admin.run("work", {"text": "normal"})
    assert [j["id"] for j in admin.api("/completed")["jobs"]] == [other]
    assert admin.api("/completed")["total"] == 1
    assert [j["id"] for j in admin.api("/queue")["jobs"]] == [job_id]
    assert admin.api(f"/job/{job_id}")["state"] == "started"


def test_job_page_shows_everything_and_its_relations(seeded: Admin) -> None:
    seeded.twin.recurring_command("work", Schedule.cron("*/5 * * * *"), {"text": "tick"},
                                  name="Five minutes")  # fmt: skip
    with seeded.twin_app.app_context():
        task_job = seeded.twin.run_now("Five minutes").id
        parent = seeded.twin.enqueue_command("work", {"text": "parent"}, callback="work",
                                             batch_id="b-9", tag="family")  # fmt: skip
        child = seeded.twin.enqueue_command("work", {"text": "child"}, depends_on=parent.id,
                                            batch_id="b-9")  # fmt: skip
    data = seeded.api(f"/job/{parent.id}")
    related = data["related"]
    assert data["state"] == "completed" and data["final"] and not data["can_cancel"]
    assert [row["id"] for row in related["dependents"]] == [child.id]
    assert [(row["command"], row["role"]) for row in related["children"]] == [("work", "callback")]
    callback_id = related["children"][0]["id"]
    # The callback inherits the batch.
    assert [row["id"] for row in related["batch"]] == sorted([child.id, callback_id])
    assert related["batch_total"] == 2
    assert seeded.api(f"/job/{callback_id}")["related"]["callback_of"]["id"] == parent.id
    assert seeded.api(f"/job/{child.id}")["related"]["parent"]["id"] == parent.id
    assert seeded.api(f"/job/{task_job}")["related"]["task"] == "Five minutes"
    html = seeded.page(f"/job/{parent.id}")
    assert f'href="{PREFIX}/job/{child.id}"' in html and "Callback:" in html
    assert "&#34;text&#34;: &#34;parent&#34;" in html  # the request, pretty JSON
    assert "&#34;echo&#34;: &#34;parent&#34;" in html  # the result
    assert "working on parent" in html  # the log
    assert "Five minutes" in seeded.page(f"/job/{task_job}")


def test_job_page_of_a_failed_job_shows_attempts_and_tracebacks(seeded: Admin) -> None:
    flaky = seeded.api("/failed?month=2026-03&command=flaky")["jobs"][0]["id"]
    data = seeded.api(f"/job/{flaky}")
    assert data["state"] == "failed" and data["can_requeue"]
    assert data["job"]["error_type"] == "ConnectionError"
    assert [a["error_message"] for a in data["job"]["history"]] == ["attempt 1 failed"]
    html = seeded.page(f"/job/{flaky}")
    assert "Earlier attempts" in html and "attempt 2 failed" in html
    assert "Traceback (most recent call last)" in html and ">Requeue</button>" in html


def test_job_page_of_a_running_job_is_live(seeded: Admin) -> None:
    running = seeded.api("/queue")["jobs"][0]
    data = seeded.api(f"/job/{running['id']}")
    assert data["state"] == "started" and data["progress"] == 0.4 and data["can_cancel"]
    assert data["job"]["logs"] == "line one\nline two\n"
    html = seeded.page(f"/job/{running['id']}")
    assert f'data-live="job" data-api="{PREFIX}/api/job/{running["id"]}"' in html
    assert "line one\nline two" in html and ">Cancel job</button>" in html


def test_scheduled_tasks_page(admin: Admin) -> None:
    admin.twin.recurring_command("work", Schedule.every_minute, {"text": "t"}, name="Minutely")
    admin.twin.recurring_command("idle", Schedule.cron("*/5 * * * *", tz="Europe/Paris"),
                                 name="Paris")  # fmt: skip
    admin.twin.recurring_command("idle", Schedule.interval(timedelta(hours=2)), name="Twice")
    admin.clock.advance(minutes=1)
    with admin.twin_app.app_context():
        fired = admin.twin.tick()
    job_id = fired[0].job_id
    tasks = {task["name"]: task for task in admin.api("/scheduled")["tasks"]}
    assert tasks["Minutely"]["schedule"] == "every minute"
    assert tasks["Minutely"]["last_job_id"] == job_id
    assert tasks["Minutely"]["last_state"] == "queued"
    assert tasks["Paris"]["schedule"] == "cron */5 * * * * (Europe/Paris)"
    assert tasks["Twice"]["schedule"] == "every 2 hours" and tasks["Twice"]["interval"] == 7200
    html = admin.page("/scheduled")
    assert "every minute" in html and "cron */5 * * * * (Europe/Paris)" in html
    assert f'href="{PREFIX}/job/{job_id}"' in html and "in 1 min" in html


def test_workers_page_flags_lost_processes(admin: Admin) -> None:
    now = admin.clock().timestamp()
    job_id = admin.enqueue("work", {})
    admin.start(job_id)
    admin.heartbeat("host-b:1:lost", now - 120, pid=1)
    admin.heartbeat("host-c:2:gone", now - 300, pid=2, stopped_at=now - 200)
    admin.heartbeat("host-d:3:old", now - 3 * 86400, pid=3, stopped_at=now - 2 * 86400)
    data = admin.api("/workers")
    status = {p["id"]: p["status"] for p in data["processes"]}
    assert status == {OWNER: "live", "host-b:1:lost": "lost", "host-c:2:gone": "stopped"}
    live = next(p for p in data["processes"] if p["id"] == OWNER)
    assert [job["id"] for job in live["jobs"]] == [job_id] and live["workers"] is None
    html = admin.page("/workers")
    assert 'class="p-lost"' in html and f'href="{PREFIX}/job/{job_id}"' in html
    assert admin.api("/dashboard")["processes"] == {"live": 1, "lost": 1}


def test_api_index_lists_every_route(admin: Admin) -> None:
    index = admin.api("/")
    for name, url in index.items():
        if "<id>" not in url:
            assert admin.client.get(url).status_code == 200, name


# -- actions ---------------------------------------------------------------------------------------


def test_cancel_a_queued_and_a_running_job(seeded: Admin) -> None:
    running, queued = (job["id"] for job in seeded.api("/queue")["jobs"][:2])
    done = seeded.post(f"/job/{queued}/cancel", {"next": f"{PREFIX}/queue"})
    assert done.status_code == 303
    assert done.headers["Location"] == f"{PREFIX}/queue?notice=cancelled&job={queued}"
    assert seeded.state(queued) is JobState.CANCELLED
    assert f"Job {queued} was cancelled" in seeded.page(done.headers["Location"][len(PREFIX) :])
    asked = seeded.post(f"/job/{running}/cancel")
    assert asked.headers["Location"] == f"{PREFIX}/job/{running}?notice=cancelled&job={running}"
    row = seeded.api("/queue")["jobs"][0]
    assert row["id"] == running and row["cancelling"] is True  # its process stops it
    assert "stopping" in seeded.page("/queue")
    again = seeded.post(f"/job/{queued}/cancel", headers={"Accept": "application/json"})
    assert again.get_json() == {"ok": False, "notice": "not-cancelled", "job": queued}
    assert seeded.post("/job/999999/cancel").status_code == 404


def test_next_must_be_one_of_our_pages(seeded: Admin) -> None:
    queued = seeded.api("/queue")["jobs"][1]["id"]
    for target in ("https://evil.example/", "//evil.example/admin/jobs", "/elsewhere",
                   f"{PREFIX}/\\evil"):  # fmt: skip
        done = seeded.post(f"/job/{queued}/cancel", {"next": target})
        assert done.headers["Location"].startswith(f"{PREFIX}/job/{queued}?"), target


def test_requeue_a_failed_job(seeded: Admin) -> None:
    failed = seeded.api("/failed?month=2026-03&command=flaky")["jobs"][0]["id"]
    done = seeded.post(f"/job/{failed}/requeue")
    assert done.status_code == 303 and "notice=requeued" in done.headers["Location"]
    assert seeded.state(failed) is JobState.QUEUED
    assert failed not in [j["id"] for j in seeded.api("/failed?month=2026-03")["jobs"]]
    assert "is back in the queue" in seeded.page(f"/job/{failed}?notice=requeued&job={failed}")
    again = seeded.post(f"/job/{failed}/requeue")
    assert again.status_code == 409 and b"only failed or cancelled" in again.data
    completed = seeded.api("/completed")["jobs"][0]["id"]
    refused = seeded.post(f"/job/{completed}/requeue", headers={"Accept": "application/json"})
    assert refused.status_code == 409 and refused.get_json()["status"] == 409
    assert seeded.post("/job/999999/requeue").status_code == 404


def test_requeue_with_dependents(admin: Admin) -> None:
    parent = admin.run("split_then_fail")
    child = admin.api(f"/job/{parent}")["related"]["dependents"][0]["id"]
    assert admin.state(child) is JobState.CANCELLED
    assert "and its cancelled dependents" in admin.page(f"/job/{parent}")
    admin.post(f"/job/{parent}/requeue", {"dependents": "1"})
    assert admin.state(parent) is JobState.QUEUED and admin.state(child) is JobState.WAITING


def test_bulk_requeue_of_the_filtered_failed_jobs(seeded: Admin) -> None:
    before = {j["id"]: j for j in seeded.api("/failed?month=2026-03")["jobs"]}
    done = seeded.post("/failed/requeue?month=2026-03&command=boom&tag=march")
    assert done.status_code == 303
    location = done.headers["Location"]
    assert location.startswith(f"{PREFIX}/failed?month=2026-03&command=boom&tag=march&")
    assert "notice=bulk-requeued&n=1&skipped=0" in location
    requeued = [i for i, j in before.items() if j["command"] == "boom" and j["tag"] == "march"]
    assert len(requeued) == 1 and seeded.state(requeued[0]) is JobState.QUEUED
    after = {j["id"] for j in seeded.api("/failed?month=2026-03")["jobs"]}
    assert after == set(before) - set(requeued)
    as_json = {"Accept": "application/json"}
    everything = seeded.post("/failed/requeue?month=2026-02", headers=as_json)
    assert everything.get_json() == {"ok": True, "notice": "bulk-requeued", "n": 2, "skipped": 0}
    assert seeded.api("/failed?month=2026-02")["total"] == 0
    assert seeded.post("/failed/requeue?month=2026-13").status_code == 400


def test_run_now_enable_and_disable(admin: Admin) -> None:
    admin.twin.recurring_command("idle", Schedule.hourly, name="Hourly & <b>bold</b>")
    name = "Hourly & <b>bold</b>"
    done = admin.post("/scheduled/run", {"name": name})
    assert done.status_code == 303 and "notice=ran" in done.headers["Location"]
    queued = admin.api("/queue")["jobs"]
    assert len(queued) == 1 and queued[0]["command"] == "idle"
    page = admin.page(done.headers["Location"][len(PREFIX) :])
    assert f"Task Hourly &amp; &lt;b&gt;bold&lt;/b&gt; fired now: job {queued[0]['id']}" in page
    assert admin.post("/scheduled/enable", {"name": name, "enabled": "0"}).status_code == 303
    assert admin.api("/scheduled")["tasks"][0]["enabled"] is False
    assert "is disabled" in admin.page("/scheduled?notice=disabled&task=x")
    admin.post("/scheduled/enable", {"name": name, "enabled": "1"})
    assert admin.api("/scheduled")["tasks"][0]["enabled"] is True
    assert admin.post("/scheduled/run", {"name": "nope"}).status_code == 404
    assert admin.post("/scheduled/enable", {"name": "nope", "enabled": "1"}).status_code == 404
    assert admin.post("/scheduled/enable", {"name": name, "enabled": "yes"}).status_code == 400
    assert admin.post("/scheduled/run", {"name": ""}).status_code == 400
    assert admin.post("/scheduled/run", {"name": "x" * 201}).status_code == 400


# -- bad parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/completed?month=2026-13", "/completed?month=march", "/failed?month=2026-3",
        "/completed?page=abc", "/completed?page=0", "/completed?page=-1",
        "/completed?page=99999999999999999999999", "/completed?per_page=7",
        "/completed?sort=bogus", "/completed?sort=--date", "/failed?state=running",
        "/completed?q=" + "x" * 201, "/completed?tag=%00", "/queue?limit=x", "/queue?limit=0",
        "/queue?limit=100000", "/api/completed?month=x", "/api/failed?sort=id;drop",
        "/api/queue?limit=-1", "/api/completed?page=1.5",
    ],
)  # fmt: skip
def test_bad_parameters_answer_400(seeded: Admin, path: str) -> None:
    response = seeded.client.get(f"{PREFIX}{path}")
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    if "/api/" in path:
        assert response.get_json()["status"] == 400 and response.get_json()["message"]
    else:
        assert "400 · Bad Request" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "/job/0", "/job/9223372036854775807", "/job/9223372036854775808", "/job/-1", "/job/x",
        "/api/job/9223372036854775808", "/job/1/cancel", "/nope",
    ],
)  # fmt: skip
def test_odd_urls_are_404_or_405_never_500(seeded: Admin, path: str) -> None:
    assert seeded.client.get(f"{PREFIX}{path}").status_code in (404, 405)


def test_odd_but_valid_parameters_fall_back(seeded: Admin) -> None:
    assert seeded.api("/completed?page=99")["jobs"] == []
    assert seeded.api("/completed?month=1999-01")["exists"] is False
    assert seeded.api("/completed?q=%25%5F%27%22")["total"] == 0
    assert seeded.api("/completed?sort=")["sort"] == "-date"
    assert seeded.page("/?notice=bogus&job=<b>")  # an unknown notice is ignored
    assert "Job &lt;b&gt; is back" in seeded.page("/?notice=requeued&job=<b>")
    assert json.loads(json.dumps(seeded.api("/dashboard")))  # plain JSON all the way
