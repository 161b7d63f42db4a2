"""The jobs admin pages in headless Chromium, driven by Playwright against a live server thread.

A real runner executes the jobs. The test opens the dashboard, watches a running job's progress
bar advance and its log lines appear without the page reloading, cancels it with the button,
requeues a failed job from the failed list, and switches months with the picker. Screenshots of
each step are saved under the test's ``tmp_path``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask

from flask_bgjobs import BackgroundJobs, JobState, ManualClock, current_job

from .browser import LiveServer, browser, live_server, page  # noqa: F401
from .conftest import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

PREFIX = "/admin/jobs"
STEPS = 4


@dataclass
class LiveApp:
    app: Flask
    jobs: BackgroundJobs
    steps: threading.Semaphore  # one release lets the stepper do one step
    past_month: str

    def enqueue(self, command: str, request: Any = None, **options: Any) -> int:
        with self.app.app_context():
            return self.jobs.enqueue_command(command, request, **options).id

    def state(self, job_id: int) -> JobState:
        with self.app.app_context():
            found = self.jobs.get_job(job_id)
        assert found is not None
        return found.state

    def wait_for(self, job_id: int) -> JobState:
        with self.app.app_context():
            return self.jobs.wait_for(job_id, timeout=15).state


def add_commands(jobs: BackgroundJobs, steps: threading.Semaphore) -> None:
    runs: dict[str, int] = {}

    @jobs.command
    def stepper(req: dict[str, int]) -> str:
        """One step per release of ``steps``; stops when cancelled."""
        total = req["steps"]
        for step in range(1, total + 1):
            while not steps.acquire(timeout=0.05):
                current_job.raise_if_cancelled()
            current_job.log.info("step %d of %d done", step, total)
            current_job.update_status(progress=step / total, status=f"step {step} of {total}")
        return "all steps done"

    @jobs.command(retry_limit=0)
    def fails_once(req: dict[str, str]) -> str:
        """Fails the first time it runs for a key, succeeds after a requeue."""
        runs[req["key"]] = runs.get(req["key"], 0) + 1
        if runs[req["key"]] == 1:
            raise ConnectionError(f"the printer {req['key']} is offline")
        return "printed"

    @jobs.command
    def archive(req: dict[str, int]) -> dict[str, int]:
        return {"archived": req["rows"]}


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[LiveApp]:
    """A live app (real clock, autostarted runner) with last month's jobs already on disk."""
    instance = str(tmp_path / "instance")
    steps = threading.Semaphore(0)
    past = ManualClock(datetime.now(timezone.utc) - timedelta(days=40))
    twin_app = Flask("browser-twin", instance_path=instance)
    twin_app.config.update(TESTING=True, BGJOBS_EAGER=True, BGJOBS_ADMIN_URL_PREFIX=None)
    twin = BackgroundJobs(twin_app, clock=past)
    add_commands(twin, steps)
    with twin_app.app_context():
        for rows in (10, 20, 30):
            twin.enqueue_command("archive", {"rows": rows}, tag="last-month")
        twin.store().dispose()
    app = Flask("browser-app", instance_path=instance)
    app.config.update(
        TESTING=True,
        SECRET_KEY="browser-test",
        BGJOBS_POLL_INTERVAL=0.02,
        BGJOBS_CANCEL_GRACE=0.5,
    )
    jobs = BackgroundJobs(app)
    add_commands(jobs, steps)
    yield LiveApp(app, jobs, steps, past().strftime("%Y-%m"))
    steps.release(100)  # nothing may wait for a step any more
    with app.app_context():
        jobs.stop(timeout=5)
        jobs.store().dispose()


def progress_at_least(view: Page, selector: str, value: float) -> None:
    view.wait_for_function(
        "([selector, value]) => { const bar = document.querySelector(selector);"
        " return !!bar && bar.hasAttribute('value') && bar.value >= value - 1e-9; }",
        arg=[selector, value],
        timeout=8000,
    )


def test_watch_cancel_requeue_and_switch_months(
    live_app: LiveApp,
    live_server: Callable[[Flask], LiveServer],  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    server = live_server(live_app.app)
    shots = tmp_path / "screenshots"
    failed = live_app.enqueue("fails_once", {"key": "lp-2"}, tag="printing")
    assert live_app.wait_for(failed) is JobState.FAILED
    running = live_app.enqueue("stepper", {"steps": STEPS}, tag="demo")
    wait_until(lambda: live_app.state(running) is JobState.STARTED)

    # The dashboard: counts, the chart of the last 30 days.
    page.goto(f"{server.url}{PREFIX}/")
    page.wait_for_function(
        "() => document.querySelector(\"[data-count='queue.started']\").textContent === '1'"
    )
    assert page.locator("[data-count='today.failed']").inner_text() == "1"
    assert page.locator("#chart-days rect.failed").count() == 1
    page.screenshot(path=str(shots / "1-dashboard.png"), full_page=True)

    # The queue: the progress bar advances without the page reloading.
    page.click("nav >> text=Queue")
    page.wait_for_url(f"**{PREFIX}/queue")
    page.evaluate("window.__sameDocument = 'yes'")
    bar = f"#queue-rows tr[data-id='{running}'] progress"
    live_app.steps.release()
    progress_at_least(page, bar, 0.25)
    live_app.steps.release()
    progress_at_least(page, bar, 0.5)
    row = page.locator(f"#queue-rows tr[data-id='{running}']")
    assert "step 2 of 4" in row.inner_text() and "50%" in row.inner_text()
    assert page.evaluate("window.__sameDocument") == "yes"
    page.screenshot(path=str(shots / "2-queue.png"), full_page=True)

    # The job's page: its log grows line by line, still without a reload.
    row.locator(f"a[href$='/job/{running}']").click()
    page.wait_for_url(f"**{PREFIX}/job/{running}")
    page.evaluate("window.__sameDocument = 'yes'")
    assert "step 2 of 4 done" in page.locator("#job-log").inner_text()
    live_app.steps.release()
    page.wait_for_function(
        "() => document.querySelector('#job-log').textContent.includes('step 3 of 4 done')",
        timeout=8000,
    )
    progress_at_least(page, "#job-progress progress", 0.75)
    assert page.locator("#job-status").inner_text() == "step 3 of 4"
    assert page.evaluate("window.__sameDocument") == "yes"
    page.screenshot(path=str(shots / "3-job-running.png"), full_page=True)

    # Cancel it with the button: the page follows the job to its end.
    page.click("button:has-text('Cancel job')")
    page.wait_for_url(f"**{PREFIX}/job/{running}?notice=cancelled*")
    assert live_app.wait_for(running) is JobState.CANCELLED
    page.wait_for_selector("#job-state .s-off", timeout=8000)
    assert page.locator("#job-state").inner_text() == "cancelled"
    # Either the page saw the job end (and says so), or it was drawn after the end.
    assert page.locator("#finished-note").is_visible() or page.locator("[data-live]").count() == 0
    assert page.locator("button:has-text('Cancel job')").count() == 0
    page.screenshot(path=str(shots / "4-cancelled.png"), full_page=True)

    # Requeue the failed job from the failed list; it runs again and completes.
    page.click("nav >> text=Failed")
    page.wait_for_url(f"**{PREFIX}/failed")
    failed_row = page.locator(f"#history tr[data-id='{failed}']")
    assert "the printer lp-2 is offline" in failed_row.inner_text()
    page.screenshot(path=str(shots / "5-failed.png"), full_page=True)
    failed_row.locator("button:has-text('Requeue')").click()
    page.wait_for_url("**notice=requeued*")
    assert "is back in the queue" in page.locator(".notice").inner_text()
    assert live_app.wait_for(failed) is JobState.COMPLETED
    page.goto(f"{server.url}{PREFIX}/job/{failed}")
    assert page.locator("#job-state").inner_text() == "completed"
    assert "printed" in page.locator("#job-result").inner_text()
    assert "ConnectionError" in page.locator("#attempts").inner_text()  # the first attempt
    page.screenshot(path=str(shots / "6-requeued.png"), full_page=True)

    # Completed jobs: switch to last month with the picker (it submits on change).
    page.click("nav >> text=Completed")
    page.wait_for_url(f"**{PREFIX}/completed")
    assert page.locator(f"#history tr[data-id='{failed}']").count() == 1
    page.select_option("#month-picker", live_app.past_month)
    page.wait_for_url(f"**month={live_app.past_month}*")
    rows = page.locator("#history tbody tr[data-id]")
    assert rows.count() == 3
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {"archive"}
    page.screenshot(path=str(shots / "7-last-month.png"), full_page=True)

    # A poll still in flight when the test clicks away is aborted by the browser: harmless.
    errors = [
        error
        for error in page.page_errors  # type: ignore[attr-defined]
        if not (error.startswith("request failed: ") and f"{PREFIX}/api/" in error)
    ]
    assert errors == []
    assert len(list(shots.glob("*.png"))) == 7
