"""The example app of flask-bgjobs: ``make demo`` serves it on http://127.0.0.1:5000.

Its SQLite files go to ``examples/instance/``. Buttons enqueue jobs that report progress and
log lines, fail and retry, or run in order on a named worker; the page lists the newest jobs.
"""

from __future__ import annotations

import os
import random
import time

from flask import Flask, redirect, render_template_string, request, url_for
from werkzeug.wrappers import Response

from flask_bgjobs import BackgroundJobs, Schedule, current_job
from flask_sqlitelogs import SqliteRequestLogger

# The admin pages (/admin/jobs/) answer only requests from this machine in the demo.
jobs = BackgroundJobs(authorize=lambda: request.remote_addr in ("127.0.0.1", "::1"))
logs = SqliteRequestLogger(authorize=lambda: request.remote_addr in ("127.0.0.1", "::1"))


@jobs.command
def count_to(req: dict[str, int]) -> dict[str, int]:
    """Count slowly, reporting progress and logging each step."""
    total = int(req.get("n", 10))
    for step in range(1, total + 1):
        current_job.raise_if_cancelled()
        time.sleep(0.5)
        current_job.log.info("counted %d of %d", step, total)
        current_job.update_status(progress=step / total, status=f"{step} of {total}")
    return {"counted": total}


@jobs.command(retry_limit=2)
def flaky() -> str:
    """Fail two times out of three; retried with backoff."""
    if random.random() < 2 / 3:
        raise ConnectionError("the remote service did not answer")
    return "lucky"


@jobs.command(worker="printer")
def print_page(req: dict[str, int]) -> str:
    """Named worker: pages print one at a time, in order."""
    time.sleep(0.3)
    current_job.log.info("printed page %d", req["page"])
    return f"page {req['page']}"


@jobs.command
def export_rows(req: dict[str, int]) -> dict[str, int]:
    """A parent job: its dependents run only if it completes."""
    time.sleep(1)
    current_job.log.info("exported %d rows", req["rows"])
    return {"rows": req["rows"]}


@jobs.command
def upload_export() -> str:
    """Runs after export_rows, and sees its result."""
    parent = current_job.parent
    rows = parent.result["rows"] if parent is not None else 0
    current_job.log.info("uploading %d rows", rows)
    return f"uploaded {rows} rows"


@jobs.command
def notify_done(result: dict[str, int]) -> None:
    """The callback of export_rows: gets its result as request."""
    current_job.log.info("export finished with %s", result)


@jobs.command
def heartbeat() -> str:
    """A recurring task: runs every minute."""
    current_job.log.info("still alive")
    return "ok"


jobs.recurring_command("heartbeat", Schedule.every_minute, name="Heartbeat", tag="demo")


PAGE = """<!doctype html>
<title>flask-bgjobs example</title>
<h1>flask-bgjobs example</h1>
<p>Jobs are stored in <code>{{ folder }}</code>. <code>flask --app examples/app jobs list</code>
shows them from a shell.</p>
<form method="post" action="{{ url_for('enqueue') }}">
  <button name="kind" value="count">Count to 10 (progress, logs)</button>
  <button name="kind" value="flaky">Flaky job (retries)</button>
  <button name="kind" value="pages">Print 5 pages (named worker)</button>
  <button name="kind" value="pipeline">Export, then upload (dependency, callback)</button>
</form>
<p><a href="{{ url_for('index') }}">Refresh</a> ·
<a href="{{ url_for('bgjobs.dashboard') }}">Admin pages</a> (live queue, logs, history, tasks)</p>
<p><a href="{{ url_for('sqlitelogs.grid') }}">Request logs</a> of this demo</p>
<table border="1" cellpadding="4">
  <tr><th>id</th><th>command</th><th>state</th><th>attempts</th><th>progress</th></tr>
  {% for job in recent %}
  <tr><td>{{ job.id }}</td><td>{{ job.command }}</td><td>{{ job.state.value }}</td>
      <td>{{ job.attempts }}</td><td>{{ progress[job.id] }}</td></tr>
  {% endfor %}
</table>
"""


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.setdefault("BGJOBS_RETRY_BACKOFF", 2.0)
    app.config.setdefault("SECRET_KEY", os.environ.get("SECRET_KEY") or os.urandom(32).hex())
    jobs.init_app(app)
    logs.init_app(app)

    @app.get("/")
    def index() -> str:
        recent = jobs.list_jobs(limit=20)
        progress = {}
        for summary in recent:
            result = jobs.get_job(summary.id)
            value = jobs.progress_of(result) if result is not None else None
            progress[summary.id] = "" if value is None else f"{value:.0%}"
        return render_template_string(
            PAGE, folder=jobs.settings().database_dir, recent=recent, progress=progress
        )

    @app.post("/enqueue")
    def enqueue() -> Response:
        kind = request.form.get("kind")
        if kind == "count":
            jobs.enqueue_command("count_to", {"n": 10}, tag="demo")
        elif kind == "flaky":
            jobs.enqueue_command("flaky", tag="demo")
        elif kind == "pages":
            for page in range(1, 6):
                jobs.enqueue_command("print_page", {"page": page}, tag="demo")
        elif kind == "pipeline":
            export = jobs.enqueue_command("export_rows", {"rows": 120}, callback="notify_done",
                                          tag="demo")  # fmt: skip
            jobs.enqueue_command("upload_export", depends_on=export.id, tag="demo")
        return redirect(url_for("index"))

    return app
