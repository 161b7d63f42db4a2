"""``flask sqlitelogs prune|stats``: retention and a look at the monthly files."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from flask_bgjobs.text import echo

sqlitelogs_cli = AppGroup("sqlitelogs", help="Manage the request logs.")


def _extension() -> Any:
    extension = current_app.extensions.get("sqlitelogs")
    if extension is None:
        raise click.ClickException(
            "this app has no SqliteRequestLogger; create one with SqliteRequestLogger(app) "
            "or init_app(app)"
        )
    return extension


@sqlitelogs_cli.command("prune")
@click.option(
    "--keep-months",
    type=click.IntRange(min=1),
    help="Months to keep, the current one included (default: SQLITELOGS_RETENTION_MONTHS).",
)
@click.option(
    "--archive-dir",
    type=click.Path(file_okay=False),
    help="Move the old files into this folder instead of deleting them.",
)
def prune_command(keep_months: int | None, archive_dir: str | None) -> None:
    """Delete (or archive) the monthly log files older than the months kept."""
    extension = _extension()
    try:
        removed = extension.prune(keep_months, archive_dir)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    verb = "archived" if archive_dir else "removed"
    if removed:
        echo(f"{verb} {len(removed)} month(s): {', '.join(removed)}")
    else:
        echo("nothing to prune")


@sqlitelogs_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def stats_command(as_json: bool) -> None:
    """Show every monthly file: rows, errors, first and last request, size."""
    stats = _extension().stats()
    months = stats["months"]
    if as_json:
        echo(json.dumps({"directory": stats["directory"], "months": months}, default=str))
        return
    echo(f"request logs in {stats['directory']}")
    if not months:
        echo("no months logged yet")
        return
    echo(f"{'MONTH':<8}  {'ROWS':>10}  {'ERRORS':>8}  {'SIZE':>10}  FIRST .. LAST (UTC)")
    for month in months:
        span = (
            f"{month['first']:%Y-%m-%d %H:%M} .. {month['last']:%Y-%m-%d %H:%M}"
            if month["first"] is not None
            else "-"
        )
        echo(
            f"{month['month']:<8}  {month['rows']:>10,}  {month['errors']:>8,}  "
            f"{_size(month['bytes']):>10}  {span}"
        )
    total = sum(month["rows"] for month in months)
    size = sum(month["bytes"] for month in months)
    echo(f"{'total':<8}  {total:>10,}  {'':>8}  {_size(size):>10}")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"
