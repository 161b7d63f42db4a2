"""The HTML pages: rendered on the server from the query string, so every URL is a bookmark.

The live parts (queue, a running job's progress and log, counts, workers) are refreshed by
``bgjobs/admin.js`` from the ``/api/`` twin of each page; everything reads fine without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, abort, request, url_for

from .. import adminkit
from . import charts, data
from .formatting import duration
from .queries import SORT_COLUMNS, HistoryFilters, known_commands

if TYPE_CHECKING:
    from ..extension import BackgroundJobs

#: Largest job id the routes accept (SQLite's INTEGER); larger ones are a plain 404.
MAX_ID = 9223372036854775807
PER_PAGE = ("25", "50", "100", "200")
QUEUE_LIMIT = 200
FAILED_STATES = ("failed", "cancelled")
#: Columns of the month's lists that sort: (sort key, heading).
SORTABLE = (("date", "Ended (UTC)"), ("duration", "Duration"))


def register(blueprint: Blueprint, jobs: BackgroundJobs) -> None:
    """Add the pages to ``blueprint``."""

    @blueprint.get("/")
    def dashboard() -> str:
        payload = data.dashboard(jobs)
        slowest = charts.horizontal(payload["slowest"], "avg_duration",
                                    lambda row: duration(row["avg_duration"]))  # fmt: skip
        return adminkit.render(
            "bgjobs/dashboard.html",
            data=payload,
            day_chart=charts.per_day(payload["days"]),
            slowest_chart=slowest,
            live_url=url_for(".api_dashboard_live"),
        )

    @blueprint.get("/queue")
    def queue() -> str:
        limit = adminkit.int_arg("limit", QUEUE_LIMIT, minimum=1, maximum=1000) or QUEUE_LIMIT
        return adminkit.render(
            "bgjobs/queue.html",
            data=data.queue(jobs, limit),
            live_url=url_for(".api_queue", limit=limit),
        )

    @blueprint.get("/completed")
    def completed() -> str:
        return _history(jobs, "completed")

    @blueprint.get("/failed")
    def failed() -> str:
        return _history(jobs, "failed")

    @blueprint.get(f"/job/<int(max={MAX_ID}):job_id>")
    def job(job_id: int) -> str:
        payload = data.job(jobs, job_id)
        if payload is None:
            abort(404, description=f"No job has id {job_id}.")
        return adminkit.render(
            "bgjobs/job.html",
            data=payload,
            job=payload["job"],
            related=payload["related"],
            live_url=url_for(".api_job", job_id=job_id),
        )

    @blueprint.get("/scheduled")
    def scheduled() -> str:
        return adminkit.render("bgjobs/scheduled.html", data=data.tasks(jobs))

    @blueprint.get("/workers")
    def workers() -> str:
        return adminkit.render(
            "bgjobs/workers.html", data=data.workers(jobs), live_url=url_for(".api_workers")
        )


def _history(jobs: BackgroundJobs, kind: str) -> str:
    current = selection(jobs, kind)
    payload = data.history(jobs, kind, current)
    args: dict[str, Any] = {"month": current.month, **current.filters.as_args()}
    if current.order_by != "-date":
        args["sort"] = current.order_by
    if current.per_page != 50:
        args["per_page"] = str(current.per_page)
    endpoint = f".{kind}"

    def page_link(number: int) -> str:
        return url_for(endpoint, **args, page=number)

    def sort_link(key: str) -> str:
        order = key if current.order_by == f"-{key}" else f"-{key}"
        return url_for(endpoint, **{k: v for k, v in args.items() if k != "sort"}, sort=order)

    return adminkit.render(
        "bgjobs/history.html",
        data=payload,
        args=args,
        page_link=page_link,
        sort_link=sort_link,
        sortable=SORTABLE,
        per_page_choices=PER_PAGE,
        states=FAILED_STATES,
        commands=known_commands(jobs.store()),
        api_url=url_for(f".api_{kind}", **args, page=current.page),
    )


def selection(jobs: BackgroundJobs, kind: str) -> data.Selection:
    """The month, filters, order and page a month's list asks for; 400 for a malformed one."""
    month = adminkit.month_arg("month") or jobs.store().history.current_month()
    state = adminkit.choice_arg("state", FAILED_STATES) if kind == "failed" else None
    filters = HistoryFilters(
        command=adminkit.text_arg("command"),
        tag=adminkit.text_arg("tag"),
        batch_id=adminkit.text_arg("batch_id"),
        created_by=adminkit.text_arg("created_by"),
        user_id=adminkit.text_arg("user_id"),
        state=state,
        text=adminkit.text_arg("q"),
    )
    return data.Selection(
        month=month,
        filters=filters,
        order_by=adminkit.sort_arg("sort", SORT_COLUMNS, "-date"),
        page=adminkit.int_arg("page", 1, minimum=1, maximum=1_000_000) or 1,
        per_page=int(adminkit.choice_arg("per_page", PER_PAGE, "50") or 50),
    )


def safe_next(default: str) -> str:
    """The form's ``next`` page if it is one of ours (never another site), else ``default``."""
    target = (request.form.get("next") or "").strip()
    root = url_for(".dashboard")
    if (
        not target.startswith(root)
        or "//" in target
        or "\\" in target
        or any(ord(char) < 32 for char in target)
    ):
        return default
    return target


def wants_json() -> bool:
    """True for the JSON API and for clients that ask for JSON rather than HTML."""
    if (request.endpoint or "").startswith(f"{request.blueprint}.api_"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and not request.accept_mimetypes.accept_html
