"""The actions: POST only, CSRF-checked by the guard, done through the extension's public API.

A form gets a 303 redirect back to the page it came from (``next``, if it is one of ours) with a
notice in the query string; a client asking for JSON gets ``{"ok": ..., "notice": ...}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, abort, jsonify, redirect, request, url_for
from werkzeug.wrappers import Response

from ..errors import JobNotFoundError, JobStateError
from . import queries
from .pages import MAX_ID, safe_next, selection, wants_json

if TYPE_CHECKING:
    from ..extension import BackgroundJobs

BULK_LIMIT = 1000  # failed jobs requeued by one click at most
#: What each notice says; values come from the query string and are escaped by the template.
NOTICES = {
    "cancelled": "Job {job} was cancelled (a running job stops within about a second).",
    "not-cancelled": "Job {job} was not queued or running: nothing to cancel.",
    "requeued": "Job {job} is back in the queue.",
    "bulk-requeued": "{n} job(s) requeued; {skipped} skipped (no longer failed).",
    "bulk-more": "{n} job(s) requeued; more match the filters: requeue again for the next ones.",
    "ran": "Task {task} fired now: job {job}.",
    "enabled": "Task {task} is enabled.",
    "disabled": "Task {task} is disabled: it fires no more until enabled.",
}
_NOTICE_VALUES = ("job", "n", "skipped", "task")


def register(blueprint: Blueprint, jobs: BackgroundJobs) -> None:
    """Add the POST routes to ``blueprint``."""

    @blueprint.post(f"/job/<int(max={MAX_ID}):job_id>/cancel")
    def cancel(job_id: int) -> Response:
        if jobs.get_job(job_id) is None:
            abort(404, description=f"No job has id {job_id}.")
        done = jobs.cancel_job(job_id)
        notice = "cancelled" if done else "not-cancelled"
        return _answer(url_for(".job", job_id=job_id), done, notice, job=job_id)

    @blueprint.post(f"/job/<int(max={MAX_ID}):job_id>/requeue")
    def requeue(job_id: int) -> Response:
        dependents = request.form.get("dependents") in ("1", "on", "true")
        try:
            jobs.requeue_job(job_id, dependents=dependents)
        except JobNotFoundError:
            abort(404, description=f"No job has id {job_id}.")
        except JobStateError as error:
            abort(409, description=str(error))
        return _answer(url_for(".job", job_id=job_id), True, "requeued", job=job_id)

    @blueprint.post("/failed/requeue")
    def bulk_requeue() -> Response:
        """Requeue the failed jobs that match the list's filters (query string), oldest first."""
        chosen = selection(jobs, "failed")
        ids = queries.history_ids(jobs.store(), "failed", chosen.month, chosen.filters,
                                  BULK_LIMIT + 1)  # fmt: skip
        requeued = skipped = 0
        for job_id in ids[:BULK_LIMIT]:
            try:
                jobs.requeue_job(job_id)
                requeued += 1
            except (JobNotFoundError, JobStateError):
                skipped += 1  # requeued or removed meanwhile
        filters: dict[str, Any] = chosen.filters.as_args()
        back = url_for(".failed", month=chosen.month, **filters)
        if len(ids) > BULK_LIMIT:
            return _answer(back, True, "bulk-more", n=requeued)
        return _answer(back, True, "bulk-requeued", n=requeued, skipped=skipped)

    @blueprint.post("/scheduled/run")
    def run_task() -> Response:
        name = _task_name()
        try:
            ref = jobs.run_now(name)
        except JobNotFoundError:
            abort(404, description=f"No recurring task is named {name!r}.")
        return _answer(url_for(".scheduled"), True, "ran", task=name, job=ref.id)

    @blueprint.post("/scheduled/enable")
    def enable_task() -> Response:
        name = _task_name()
        enabled = request.form.get("enabled", "")
        if enabled not in ("0", "1"):
            abort(400, description="enabled must be 1 (turn on) or 0 (turn off).")
        try:
            jobs.enable_recurring(name, enabled == "1")
        except JobNotFoundError:
            abort(404, description=f"No recurring task is named {name!r}.")
        notice = "enabled" if enabled == "1" else "disabled"
        return _answer(url_for(".scheduled"), True, notice, task=name)


def notice_text(args: Any) -> str | None:
    """The message of the notice in ``args`` (the query string), or ``None``.

    Lenient on purpose: it is read while a page renders, where a bad value must not fail it.
    """
    template = NOTICES.get(str(args.get("notice", "")))
    if template is None:
        return None
    values = {name: str(args.get(name, ""))[:200] for name in _NOTICE_VALUES}
    return template.format(**values)


def _task_name() -> str:
    name = (request.form.get("name") or "").strip()
    if not name or len(name) > 200:
        abort(400, description="name must be the name of a recurring task.")
    return name


def _answer(default: str, ok: bool, notice: str, **values: Any) -> Response:
    if wants_json():
        return jsonify({"ok": ok, "notice": notice, **values})
    path, _, query = safe_next(default).partition("?")
    # The notice of an earlier action goes; the page's own parameters stay.
    kept = [(k, v) for k, v in parse_qsl(query) if k != "notice" and k not in _NOTICE_VALUES]
    query = urlencode([*kept, ("notice", notice), *values.items()])
    return redirect(f"{path}?{query}", code=303)
