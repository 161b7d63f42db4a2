"""Browser-test fixtures: a live WSGI server in a thread, and headless Chromium through Playwright.

Use them from a test module with ``from .browser import browser, live_server, page  # noqa: F401``.

- ``live_server(app)`` serves ``app`` with Werkzeug's threaded server on 127.0.0.1 (a free port)
  and returns a :class:`LiveServer` with its ``url``; every server is shut down and its thread
  joined when the test ends.
- ``browser`` is one headless Chromium per test module; ``page`` a fresh context and page per
  test that records console errors and failed requests (``page_errors``), so a test can assert
  that the page ran clean under its Content-Security-Policy.

Chromium and Playwright are required, not optional: without them the tests fail and say to run
``make test``, which installs both.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
_MISSING = (
    "{what} is missing. Browser tests need Playwright (pip) and Chromium (/usr/bin/chromium): "
    "run `make test`, which installs both."
)


@dataclass
class LiveServer:
    """A running server: ``url`` is ``http://127.0.0.1:<port>`` without a trailing slash."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()
        assert not self.thread.is_alive(), "the live server thread did not stop"


def serve(app: Flask) -> LiveServer:
    """Start serving ``app`` on a free port of 127.0.0.1 in a thread."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    live = LiveServer(app, server, thread)
    thread.start()
    return live


@pytest.fixture
def live_server() -> Iterator[Callable[[Flask], LiveServer]]:
    """``live_server(app)`` -> a :class:`LiveServer`; all are stopped and joined afterwards."""
    started: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        live = serve(app)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


def chromium_path() -> str:
    """The Chromium binary: ``$CHROMIUM`` if set, else ``chromium`` on the PATH."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail(_MISSING.format(what=f"Chromium ({path})"), pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module.

    Not per session: Playwright's sync API runs an event loop in the main thread while it is
    open, and ``asyncio.run`` in later, unrelated tests would find it running.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(_MISSING.format(what="Playwright (the playwright package)"), pytrace=False)
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context; ``page.page_errors`` lists what went wrong in it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    opened.on("console", on_console)
    opened.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    opened.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    opened.page_errors = errors  # type: ignore[attr-defined]
    try:
        yield opened
    finally:
        context.close()
