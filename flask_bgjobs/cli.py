"""``flask jobs ...``: run a worker process and manage jobs from the command line."""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import asdict
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from .callbacks import redact_reply_to
from .errors import BgJobsError
from .models import JobState, to_datetime
from .text import echo, terminal_safe

jobs_cli = AppGroup("jobs", help="Run and manage background jobs.")

_STATES = click.Choice([state.value for state in JobState])


def _extension() -> Any:
    extension = current_app.extensions.get("bgjobs")
    if extension is None:
        raise click.ClickException(
            "this app has no BackgroundJobs; create one with BackgroundJobs(app) or init_app(app)"
        )
    return extension


def _when(value: float | None) -> str:
    moment = to_datetime(value)
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


@jobs_cli.command("worker")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="Threads for unnamed jobs (default: BGJOBS_MAX_THREADS).",
)
@click.option(
    "--worker",
    "workers",
    multiple=True,
    metavar="NAME",
    help="Run only these named workers (repeatable); no unnamed jobs then.",
)
@click.option("--no-scheduler", is_flag=True, help="Do not run recurring tasks in this process.")
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish on SIGTERM/SIGINT before they are "
    "handed back to the queue.",
)
def worker_command(
    threads: int | None, workers: tuple[str, ...], no_scheduler: bool, stop_timeout: float
) -> None:
    """Run jobs in this process until SIGTERM or SIGINT."""
    extension = _extension()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    named = set(workers) if workers else None
    runner = extension.worker_runner(app, threads=threads, workers=named, pool=not workers,
                                     scheduler=False if no_scheduler else None)  # fmt: skip
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        echo(f"received {signal.Signals(signum).name}: stopping", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.start()
        lanes = (
            "named workers " + ", ".join(sorted(workers))
            if workers
            else (f"{runner.pool_size} threads and every named worker")
        )
        scheduling = "" if runner.scheduler is not None else ", no scheduler"
        echo(f"worker {runner.owner} running {lanes}{scheduling}", err=True)
        while not stop.wait(0.5):
            pass
        runner.stop(stop_timeout)
        echo(f"worker {runner.owner} stopped", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@jobs_cli.command("list")
@click.option("--state", type=_STATES, help="Only jobs in this state.")
@click.option("--command", help="Only jobs of this command.")
@click.option("--tag", help="Only jobs with this tag.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_command(
    state: str | None, command: str | None, tag: str | None, limit: int, as_json: bool
) -> None:
    """List the newest jobs."""
    summaries = _extension().list_jobs(state=state, command=command, tag=tag, limit=limit)
    if as_json:
        for summary in summaries:
            echo(json.dumps({**asdict(summary), "state": summary.state.value}))
        return
    if not summaries:
        echo("no jobs")
        return
    echo(f"{'ID':>8}  {'STATE':<9}  {'CREATED':<19}  {'ATTEMPTS':>8}  COMMAND")
    for s in summaries:
        echo(
            f"{s.id:>8}  {s.state.value:<9}  {_when(s.created_at):<19}  "
            f"{s.attempts:>8}  {s.command}{f'  [{s.tag}]' if s.tag else ''}"
        )


@jobs_cli.command("show")
@click.argument("job_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def show_command(job_id: int, as_json: bool) -> None:
    """Show everything about one job."""
    result = _extension().get_job(job_id)
    if result is None:
        raise click.ClickException(f"no job has id {job_id}")
    record = result.job
    fields: dict[str, Any] = asdict(result.summary)
    if record is not None:
        fields.update({k: v for k, v in asdict(record).items() if k != "future"})
    fields["state"] = result.state.value
    if fields.get("reply_to"):
        fields["reply_to"] = redact_reply_to(fields["reply_to"])  # never print its credentials
    if as_json:
        echo(json.dumps(fields, default=str, indent=2))
        return
    for key, value in fields.items():
        if value in (None, "", [], {}):
            continue
        if key.endswith("_at"):
            value = _when(value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=str, indent=2)
        echo(f"{key}: {value}")


@jobs_cli.command("cancel")
@click.argument("job_id", type=click.IntRange(min=1))
def cancel_command(job_id: int) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    extension = _extension()
    if extension.get_job(job_id) is None:
        raise click.ClickException(f"no job has id {job_id}")
    if not extension.cancel_job(job_id):
        raise click.ClickException(f"job {job_id} is not queued or running")
    echo(f"job {job_id} cancelled")


@jobs_cli.command("requeue")
@click.argument("job_id", type=click.IntRange(min=1), required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Requeue every failed job.")
@click.option("--command", help="With --failed: only this command's jobs.")
def requeue_command(job_id: int | None, all_failed: bool, command: str | None) -> None:
    """Put a failed or cancelled job (or, with --failed, every failed job) back in the queue."""
    extension = _extension()
    if (job_id is None) == (not all_failed):
        raise click.UsageError("give either a JOB_ID or --failed")
    ids = (
        [job_id]
        if job_id is not None
        else [s.id for s in extension.list_jobs(state="failed", command=command, limit=1_000_000)]
    )
    for one in ids:
        try:
            extension.requeue_job(one)
        except BgJobsError as error:
            raise click.ClickException(terminal_safe(str(error))) from None
    echo(f"requeued {len(ids)} job(s)")


@jobs_cli.command("prune")
@click.option(
    "--keep-months",
    type=click.IntRange(min=1),
    required=True,
    help="Keep this many months, the current one included.",
)
def prune_command(keep_months: int) -> None:
    """Delete the monthly job files of older months."""
    removed = _extension().prune(keep_months)
    echo(f"removed {len(removed)} month(s){': ' + ', '.join(removed) if removed else ''}")


@jobs_cli.group("schedule", invoke_without_command=True)
@click.pass_context
@with_appcontext
def schedule_group(ctx: click.Context) -> None:
    """List recurring tasks (or manage one: run, enable, disable, remove, prune)."""
    if ctx.invoked_subcommand is not None:
        return
    tasks = _extension().recurring_tasks()
    if not tasks:
        echo("no recurring tasks")
        return
    echo(f"{'NAME':<24} {'SCHEDULE':<28} {'LAST RUN':<19} {'JOB':>6} {'OUTCOME':<10} "
               f"{'NEXT RUN':<19}")  # fmt: skip
    for task in tasks:
        next_run = _when(task.next_run_at) if task.enabled else "disabled"
        echo(
            f"{task.name:<24} {task.schedule.describe():<28} {_when(task.last_run_at):<19} "
            f"{task.last_job_id or '-':>6} {task.last_state or '-':<10} {next_run:<19}"
            + (f"  (skipped {task.skipped}: {task.last_skip_reason})" if task.skipped else "")
        )


def _task_command(name: str, action: Any) -> None:
    try:
        action(name)
    except BgJobsError as error:
        raise click.ClickException(terminal_safe(str(error))) from None


@schedule_group.command("run")
@click.argument("name")
def schedule_run(name: str) -> None:
    """Fire task NAME now, outside its schedule."""
    ref: list[Any] = []
    _task_command(name, lambda n: ref.append(_extension().run_now(n)))
    echo(f"task {name!r} fired: job {ref[0].id}")


@schedule_group.command("enable")
@click.argument("name")
def schedule_enable(name: str) -> None:
    """Turn task NAME on."""
    _task_command(name, lambda n: _extension().enable_recurring(n, True))
    echo(f"task {name!r} enabled")


@schedule_group.command("disable")
@click.argument("name")
def schedule_disable(name: str) -> None:
    """Turn task NAME off (it stays registered)."""
    _task_command(name, lambda n: _extension().enable_recurring(n, False))
    echo(f"task {name!r} disabled")


@schedule_group.command("remove")
@click.argument("name")
def schedule_remove(name: str) -> None:
    """Delete task NAME from the database."""
    if not _extension().remove_recurring(name):
        raise click.ClickException(f"no recurring task is named {name!r}")
    echo(f"task {name!r} removed")


@schedule_group.command("prune")
def schedule_prune() -> None:
    """Delete the stored tasks that the app no longer registers."""
    gone = _extension().prune_recurring()
    echo(f"removed {len(gone)} task(s){': ' + ', '.join(gone) if gone else ''}")
