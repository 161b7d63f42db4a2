"""The JSON API under ``/api/``: the same data as the pages, for the live views and for scripts.

Every answer is a JSON object; errors too (``{"error", "status", "message"}``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, abort, jsonify, url_for
from werkzeug.wrappers import Response

from .. import adminkit
from . import data
from .pages import MAX_ID, QUEUE_LIMIT, selection

if TYPE_CHECKING:
    from ..extension import BackgroundJobs


def register(blueprint: Blueprint, jobs: BackgroundJobs) -> None:
    """Add the API routes to ``blueprint``."""

    @blueprint.get("/api/")
    def api_index() -> Response:
        return jsonify({
            "dashboard": url_for(".api_dashboard"),
            "dashboard_live": url_for(".api_dashboard_live"),
            "queue": url_for(".api_queue"),
            "completed": url_for(".api_completed"),
            "failed": url_for(".api_failed"),
            "job": url_for(".api_job", job_id=0).removesuffix("0") + "<id>",
            "scheduled": url_for(".api_scheduled"),
            "workers": url_for(".api_workers"),
            "months": url_for(".api_months"),
        })  # fmt: skip

    @blueprint.get("/api/dashboard")
    def api_dashboard() -> Response:
        return jsonify(data.dashboard(jobs))

    @blueprint.get("/api/dashboard/live")
    def api_dashboard_live() -> Response:
        return jsonify(data.dashboard_counts(jobs))

    @blueprint.get("/api/queue")
    def api_queue() -> Response:
        limit = adminkit.int_arg("limit", QUEUE_LIMIT, minimum=0, maximum=1000)
        payload = data.queue(jobs, QUEUE_LIMIT if limit is None else limit)
        for row in payload["jobs"]:
            _add_urls(row)
        return jsonify(payload)

    @blueprint.get("/api/completed")
    def api_completed() -> Response:
        return _history(jobs, "completed")

    @blueprint.get("/api/failed")
    def api_failed() -> Response:
        return _history(jobs, "failed")

    @blueprint.get(f"/api/job/<int(max={MAX_ID}):job_id>")
    def api_job(job_id: int) -> Response:
        payload = data.job(jobs, job_id)
        if payload is None:
            abort(404, description=f"No job has id {job_id}.")
        payload["url"] = url_for(".job", job_id=job_id)
        return jsonify(payload)

    @blueprint.get("/api/scheduled")
    def api_scheduled() -> Response:
        return jsonify(data.tasks(jobs))

    @blueprint.get("/api/workers")
    def api_workers() -> Response:
        payload = data.workers(jobs)
        for process in payload["processes"]:
            for row in process["jobs"]:
                row["url"] = url_for(".job", job_id=row["id"])
        return jsonify(payload)

    @blueprint.get("/api/months")
    def api_months() -> Response:
        return jsonify({"months": data.month_choices(jobs)})


def _history(jobs: BackgroundJobs, kind: str) -> Response:
    payload = data.history(jobs, kind, selection(jobs, kind))
    for row in payload["jobs"]:
        row["url"] = url_for(".job", job_id=row["id"])
    return jsonify(payload)


def _add_urls(row: dict[str, Any]) -> None:
    row["url"] = url_for(".job", job_id=row["id"])
    row["cancel_url"] = url_for(".cancel", job_id=row["id"])
