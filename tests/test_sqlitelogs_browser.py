"""The grid in headless Chromium, driven by Playwright against a live server thread: sort, filter,
open a detail, switch month, and the same page with JavaScript off. Screenshots of each step are
saved under the test's ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flask import Flask

from flask_bgjobs import ManualClock
from flask_sqlitelogs import SqliteRequestLogger

from .apps.logs_app import create_app
from .browser import LiveServer, browser, live_server, page  # noqa: F401

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

PREFIX = "/admin/requests"


@pytest.fixture
def logged_app(tmp_path: Path) -> Iterator[tuple[Flask, SqliteRequestLogger]]:
    """40 requests in February and 60 in March 2026 (every 4th a 404, every 10th a 500)."""
    clock = ManualClock(datetime(2026, 2, 26, 9, 0, tzinfo=timezone.utc))
    app, logs = create_app(tmp_path / "instance", clock=clock)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    for number in range(100):
        path = (
            "/boom" if number % 10 == 9 else "/missing" if number % 4 == 3 else f"/items/{number}"
        )
        client.get(path, environ_base={"REMOTE_ADDR": f"10.1.0.{number % 3}"})
        clock.advance(hours=1 if number < 39 else 2)
        if number == 39:
            clock.set(datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc))
    with app.app_context():
        logs.flush()
    yield app, logs
    with app.app_context():
        logs.stop()
        logs.store().dispose()


def column(view: Page, index: int) -> list[str]:
    """The text of column ``index`` (0: the # link) of every data row."""
    return view.locator("#grid tbody tr[data-href]").evaluate_all(
        f"rows => rows.map(r => r.cells[{index}].innerText.trim())"
    )


def test_sort_filter_open_and_switch_month(
    logged_app: tuple[Flask, SqliteRequestLogger],
    live_server: Callable[[Flask], LiveServer],  # noqa: F811
    page: Page,  # noqa: F811
    tmp_path: Path,
) -> None:
    app, logs = logged_app
    server = live_server(app)
    shots = tmp_path / "screenshots"
    page.goto(f"{server.url}{PREFIX}/?month=2026-03")
    assert page.locator("#total").inner_text() == "60"
    assert page.locator("#grid tbody tr[data-href]").count() == 50
    page.screenshot(path=str(shots / "1-grid.png"), full_page=True)

    # Sort by duration: a click on the heading, newest URL is bookmarkable.
    page.click("a.sort[data-column='duration_ms']")
    page.wait_for_url("**sort=-duration_ms**")
    durations = [float(value) for value in column(page, 6)]
    assert durations == sorted(durations, reverse=True)
    page.click("a.sort[data-column='duration_ms']")
    page.wait_for_url("**sort=duration_ms**")
    durations = [float(value) for value in column(page, 6)]
    assert durations == sorted(durations)
    page.screenshot(path=str(shots / "2-sorted.png"), full_page=True)

    # Filter on the status column: type, press Enter.
    page.fill("input[name='status']", "404")
    page.press("input[name='status']", "Enter")
    page.wait_for_url("**status=404**")
    statuses = column(page, 3)
    with app.app_context():
        expected = logs.query("2026-03", status=404).total
    assert statuses == ["404"] * expected and expected > 0
    assert page.locator("#total").inner_text() == str(expected)
    assert "sort=duration_ms" in page.url  # the sort survived the filter
    page.screenshot(path=str(shots / "3-filtered.png"), full_page=True)

    # Open an entry with a click on its row.
    first_path = column(page, 4)[0]
    page.locator("#grid tbody tr[data-href]").first.locator("td.status").click()
    page.wait_for_url("**/admin/requests/*?month=2026-03")
    assert page.locator("#detail-path").inner_text() == first_path
    assert page.locator("h1 .status").inner_text() == "404"
    copy = page.locator("button[data-copy='curl']")
    assert copy.is_visible()  # the script ran under the CSP
    assert page.locator("#curl").input_value().startswith("curl ")
    page.screenshot(path=str(shots / "4-detail.png"), full_page=True)

    # Back to the grid, then another month from the picker (it submits on change).
    page.go_back()
    page.select_option("#month", "2026-02")
    page.wait_for_url("**month=2026-02**")
    assert page.locator("#total").inner_text() == str(
        sum(1 for n in range(40) if n % 4 == 3 and n % 10 != 9)
    )
    times = column(page, 1)
    assert times and all(value.startswith("2026-02") for value in times)
    page.screenshot(path=str(shots / "5-february.png"), full_page=True)

    assert page.page_errors == []  # type: ignore[attr-defined]
    assert len(list(shots.glob("*.png"))) == 5


def test_the_grid_works_without_javascript(
    logged_app: tuple[Flask, SqliteRequestLogger],
    live_server: Callable[[Flask], LiveServer],  # noqa: F811
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    app, _logs = logged_app
    server = live_server(app)
    context = browser.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        plain.goto(f"{server.url}{PREFIX}/")
        plain.select_option("#month", "2026-02")
        plain.fill("input[name='ip']", "10.1.0.2")
        plain.click("#apply")
        plain.wait_for_url("**ip=10.1.0.2**")
        assert "month=2026-02" in plain.url
        ips = [cell.inner_text() for cell in plain.locator("#grid tbody td:nth-child(9)").all()]
        assert ips and set(ips) == {"10.1.0.2"}
        plain.locator("#grid tbody tr a.open").first.click()
        plain.wait_for_url("**/admin/requests/*?month=2026-02")
        assert not plain.locator("button[data-copy='curl']").is_visible()
        assert plain.locator("#curl").input_value().startswith("curl ")
        plain.screenshot(path=str(tmp_path / "no-js-detail.png"), full_page=True)
    finally:
        context.close()
