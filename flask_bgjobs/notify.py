"""The built-in command that posts a completed job's result to its ``reply_to`` URL.

With ``BGJOBS_NOTIFY_REPLY_TO = True``, each completed job with a ``reply_to`` gets a child job
of this command: durable, retried like any job, and visible under its parent.
"""

from __future__ import annotations

from typing import Any

from .context import current_job

REPLY_TO_COMMAND = "bgjobs.reply_to"


def send_reply(request: dict[str, Any]) -> dict[str, Any]:
    """Post the parent job's result to the parent's ``reply_to`` URL; return the status."""
    from .callbacks import send_json_callback

    parent = current_job.parent
    job = parent.job if parent is not None else None
    if parent is None or job is None or not job.reply_to:
        raise LookupError(f"job {request.get('job_id')} is gone or has no reply_to")
    payload = {
        "id": job.id,
        "ref_id": job.ref_id,
        "command": job.command,
        "state": parent.state.value,
        "result": parent.result,
        "args": job.args,
    }
    response = send_json_callback(job.reply_to, payload)
    return {"status": response.status_code}
