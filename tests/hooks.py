"""A local HTTP server that records what it receives: the other end of reply_to and callbacks.

Its fixtures (``server``, ``no_proxy_for_localhost``) are available to every test module.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class HookServer:
    """A WSGI app that records each request and answers with ``status``.

    With ``hold`` set, it waits (at most ``hold`` seconds, or until ``release`` is set) before
    answering: the timeout tests use it, and the fixture sets ``release`` before shutting down.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.extra_headers: list[tuple[str, str]] = []
        self.hold = 0.0
        self.release = threading.Event()
        self.base = ""

    def url(self, path: str = "/hook") -> str:
        return f"{self.base}{path}"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        request = Request(environ)
        path = request.path + (f"?{request.query_string.decode()}" if request.query_string else "")
        self.received.append(
            Received(request.method, path, dict(request.headers), request.get_data())
        )
        if self.hold:
            self.release.wait(self.hold)
        reason = HTTP_STATUS_CODES.get(self.status, "Unknown")
        headers = [("Content-Type", "application/json"), *self.extra_headers]
        if self.status in (301, 302, 303, 307, 308):
            headers.append(("Location", self.url("/elsewhere")))
        start_response(f"{self.status} {reason}", headers)
        return [b'{"received": true}']

    @property
    def last(self) -> Received:
        assert self.received, "the server received no request"
        return self.received[-1]


@pytest.fixture
def no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a proxy configured in the environment away from the local server."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server(no_proxy_for_localhost: None) -> Iterator[HookServer]:
    hooks = HookServer()
    httpd = make_server("127.0.0.1", 0, hooks, request_handler=_QuietHandler)
    hooks.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hook-server"
    )
    thread.start()
    try:
        yield hooks
    finally:
        hooks.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()
