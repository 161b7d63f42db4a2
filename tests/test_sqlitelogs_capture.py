"""Capture: every field of normal, 404/405, raising, handled, streamed and file responses; trace
ids; redaction of headers, JSON, form and query string; body rules; exclusions and hooks."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_bgjobs import ManualClock
from flask_sqlitelogs import REDACTED, LogEntry, SqliteRequestLogger
from flask_sqlitelogs.capture import TraceIds

from .apps.logs_app import create_app

Make = Callable[..., tuple[Flask, SqliteRequestLogger]]


@pytest.fixture
def make(make_logs: Make) -> Make:
    """``make(**config)`` builds a logged app (see ``make_logs`` in conftest)."""
    return make_logs


def logged(app: Flask, logs: SqliteRequestLogger) -> list[LogEntry]:
    """Flush, then every entry of the current month, oldest first."""
    with app.app_context():
        logs.flush()
        return logs.query(order_by="id", limit=1000).items


def only(app: Flask, logs: SqliteRequestLogger) -> LogEntry:
    entries = logged(app, logs)
    assert len(entries) == 1, [e.path for e in entries]
    return entries[0]


def test_a_normal_request_records_every_field(make: Make, clock: ManualClock) -> None:
    app, logs = make(user_id=lambda: "user-7")
    response = app.test_client().get(
        "/items/42?page=2&sort=name",
        headers={
            "User-Agent": "pytest-agent/1.0",
            "Referer": "https://example.org/list?q=x",
            "X-Forwarded-For": "203.0.113.9, 10.0.0.1",
        },
        environ_base={"REMOTE_ADDR": "192.0.2.5"},
    )
    assert response.status_code == 200
    entry = only(app, logs)
    assert entry.timestamp == clock().timestamp()
    assert entry.when == datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)
    assert entry.month == "2026-03" and entry.id == 1
    assert entry.method == "GET"
    assert entry.url == "http://localhost/items/42?page=2&sort=name"
    assert entry.path == "/items/42"
    assert entry.query_string == "page=2&sort=name"
    assert entry.endpoint == "item"
    assert entry.status_code == 200 and entry.status_class == "2xx"
    assert 0 < entry.duration_ms < 5000
    assert entry.ip == "192.0.2.5"
    assert entry.forwarded_for == "203.0.113.9, 10.0.0.1"
    assert entry.referer == "https://example.org/list?q=x"
    assert entry.user_agent == "pytest-agent/1.0"
    assert entry.user_id == "user-7"
    assert entry.request_headers["User-Agent"] == "pytest-agent/1.0"
    assert entry.request_headers["Host"] == "localhost"
    assert entry.response_headers["Content-Type"] == "application/json"
    assert entry.response_headers["X-Request-ID"] == response.headers["X-Request-ID"]
    assert entry.trace_id == response.headers["X-Request-ID"]
    assert entry.response_body_size == len(response.data)
    assert entry.request_body is None and entry.response_body is None  # bodies off by default
    assert entry.error_type is entry.error_message is entry.error_traceback is None


def test_404_and_405_are_captured(make: Make) -> None:
    app, logs = make()
    client = app.test_client()
    assert client.get("/missing").status_code == 404
    assert client.delete("/hello").status_code == 405
    missing, wrong_method = logged(app, logs)
    assert (missing.path, missing.status_code, missing.endpoint) == ("/missing", 404, None)
    assert (wrong_method.method, wrong_method.status_code) == ("DELETE", 405)
    assert missing.error_type is None  # an HTTP error is a status, not an exception
    assert int(missing.response_headers["Content-Length"]) == missing.response_body_size


def test_a_raising_view_is_captured_when_the_exception_propagates(make: Make) -> None:
    app, logs = make()
    with pytest.raises(ValueError, match="the view broke"):
        app.test_client().get("/boom")
    entry = only(app, logs)
    assert (entry.status_code, entry.endpoint) == (500, "boom")
    assert entry.error_type == "ValueError"
    assert entry.error_message == "the view broke"
    assert entry.error_traceback is not None
    assert "def boom" in entry.error_traceback or "in boom" in entry.error_traceback


def test_a_raising_view_is_captured_when_flask_answers_500(make: Make) -> None:
    app, logs = make()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().get("/boom").status_code == 500
    entry = only(app, logs)
    assert entry.status_code == 500
    assert (entry.error_type, entry.error_message) == ("ValueError", "the view broke")


def test_an_error_the_app_handles_is_still_recorded(make: Make) -> None:
    app, logs = make()
    response = app.test_client().get("/handled")
    assert (response.status_code, response.data) == (418, b"handled: no coffee here")
    entry = only(app, logs)
    assert entry.status_code == 418
    assert entry.error_type == "tests.apps.logs_app.Teapot"
    assert entry.error_message == "no coffee here"
    assert "Teapot" in (entry.error_traceback or "")


def test_error_tracking_off_keeps_only_the_type(make: Make) -> None:
    app, logs = make(enable_error_tracking=False)
    with pytest.raises(ValueError):
        app.test_client().get("/boom")
    entry = only(app, logs)
    assert entry.error_type == "ValueError"
    assert entry.error_message is None and entry.error_traceback is None


def test_a_streamed_body_is_never_read_and_ends_the_entry_when_closed(make: Make) -> None:
    app, logs = make(enable_response_tracking=True)
    state = app.stream_state  # type: ignore[attr-defined]
    environ = EnvironBuilder(path="/stream").get_environ()
    started: list[str] = []
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: started.append(status))
    assert started == ["200 OK"]
    assert state["sent"] == 0  # the logger read nothing
    with app.app_context():
        assert len(logs.state().buffer) == 0  # the entry waits for the end of the body
    assert b"".join(body) == b"chunk 0\nchunk 1\nchunk 2\n"
    body.close()  # type: ignore[attr-defined]
    entry = only(app, logs)
    assert (entry.path, entry.status_code, entry.endpoint) == ("/stream", 200, "stream")
    assert entry.response_body is None and entry.response_body_size is None
    assert "X-Request-ID" in entry.response_headers


def test_a_file_response_is_not_buffered(make: Make) -> None:
    app, logs = make(enable_response_tracking=True)
    response = app.test_client().get("/file")
    size = Path(__file__).parent.joinpath("apps", "logs_app.py").stat().st_size
    assert len(response.get_data()) == size
    response.close()
    entry = only(app, logs)
    assert entry.response_body is None
    assert entry.response_body_size == size


def test_an_incoming_request_id_is_kept_and_echoed(make: Make) -> None:
    app, logs = make()
    client = app.test_client()
    good = client.get("/hello", headers={"X-Request-ID": "req-42.abc:7"})
    bad = client.get("/hello", headers={"X-Request-ID": "<script>alert(1)</script>"})
    long = client.get("/hello", headers={"X-Request-ID": "a" * 129})
    assert good.headers["X-Request-ID"] == "req-42.abc:7"
    for response in (bad, long):
        assert len(response.headers["X-Request-ID"]) == 24
        assert response.headers.getlist("X-Request-ID") == [response.headers["X-Request-ID"]]
    entries = logged(app, logs)
    assert [e.trace_id for e in entries] == [r.headers["X-Request-ID"] for r in (good, bad, long)]
    assert len({e.trace_id for e in entries}) == 3


def test_generated_trace_ids_are_unique_time_ordered_and_differ_after_a_fork() -> None:
    ids = TraceIds()
    moment = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
    made: list[str] = []

    def burst() -> None:
        made.extend(ids.new(moment) for _ in range(5000))

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 20000
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in made)
    assert ids.new(moment) < ids.new(moment + 0.002)  # the milliseconds lead
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not repeat the parent's
        os.close(reader)
        os.write(writer, ids.new(moment).encode())
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 100).decode()
    os.close(reader)
    assert os.waitpid(pid, 0)[1] == 0
    assert len(child) == 24 and child[12:20] != ids.new(moment)[12:20]


def test_secret_headers_are_redacted(make: Make) -> None:
    app, logs = make(redact_headers=["X-Internal-*"])
    client = app.test_client()
    client.set_cookie("session", "cookie-secret")
    client.get(
        "/hello",
        headers={
            "Authorization": "Bearer eyJ-secret-jwt",
            "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
            "X-Api-Key": "key-secret",
            "X-Internal-Signature": "internal-secret",
            "X-Visible": "shown",
        },
    )
    headers = only(app, logs).request_headers
    assert headers["Authorization"] == f"Bearer {REDACTED}"
    assert headers["Proxy-Authorization"] == f"Basic {REDACTED}"
    assert headers["Cookie"] == REDACTED
    assert headers["X-Api-Key"] == REDACTED
    assert headers["X-Internal-Signature"] == REDACTED
    assert headers["X-Visible"] == "shown"


def test_set_cookie_in_the_response_is_redacted(make: Make) -> None:
    app, logs = make()

    @app.get("/login")
    def login() -> Any:
        response = app.make_response("ok")
        response.set_cookie("session", "cookie-value-secret")
        return response

    app.test_client().get("/login")
    assert only(app, logs).response_headers["Set-Cookie"] == REDACTED


def test_json_form_and_query_secrets_are_never_stored(make: Make, tmp_path: Path) -> None:
    app, logs = make(enable_request_body_tracking=True, enable_response_tracking=True)
    client = app.test_client()
    client.post(
        "/echo?api_key=query-secret-1&page=3",
        json={
            "user": "ann",
            "password": "json-secret-2",
            "profile": {"accessToken": "json-secret-3", "tags": [{"client_secret": "s4"}]},
        },
        headers={"Referer": "https://example.org/?token=referer-secret-5"},
    )
    seen = client.post("/echo", data={"user": "bob", "password": "form-secret-6", "keep": "yes"})
    assert seen.json is not None and seen.json["form"]["password"] == "form-secret-6"
    json_entry, form_entry = logged(app, logs)
    assert json_entry.query_string == f"api_key={REDACTED}&page=3"
    assert json_entry.url.endswith(f"/echo?api_key={REDACTED}&page=3")
    assert json_entry.referer == f"https://example.org/?token={REDACTED}"
    assert json_entry.request_body is not None
    assert '"password": "[REDACTED]"' in json_entry.request_body
    assert '"accessToken": "[REDACTED]"' in json_entry.request_body
    assert '"client_secret": "[REDACTED]"' in json_entry.request_body
    assert '"user": "ann"' in json_entry.request_body
    assert json_entry.response_body is not None
    assert "server-token-123" not in json_entry.response_body
    assert "server-secret-456" not in json_entry.response_body
    assert form_entry.request_body == f"user=bob&password={REDACTED}&keep=yes"
    assert '"password": "[REDACTED]"' in (form_entry.response_body or "")
    with app.app_context():
        logs.store().dispose()  # checkpoint the WAL into the file
        path = logs.store().files.path_for("2026-03")
    raw = path.read_bytes()
    for secret in (
        "query-secret-1",
        "json-secret-2",
        "json-secret-3",
        "s4",
        "referer-secret-5",
        "form-secret-6",
        "server-token-123",
        "server-secret-456",
    ):
        assert secret.encode() not in raw, secret


def test_bodies_are_captured_only_when_textual_and_capped(make: Make) -> None:
    app, logs = make(
        enable_request_body_tracking=True, enable_response_tracking=True, max_body_bytes=100
    )
    client = app.test_client()
    client.post("/echo", data=b"\x00\x01binary", content_type="application/octet-stream")
    big = {"api_key": "big-secret", "filler": "x" * 500}  # sorted: the secret comes first
    client.post("/echo", json=big)
    client.get("/binary")
    upload, large, binary = logged(app, logs)
    assert upload.request_body is None and upload.request_body_size == 8
    assert large.request_body_size is not None and large.request_body_size > 500
    assert large.request_body is not None and len(large.request_body.encode()) == 100
    assert "big-secret" not in large.request_body and REDACTED in large.request_body
    assert binary.response_body is None and binary.response_body_size == 256


def test_excluded_paths_and_the_log_pages_are_not_logged(make: Make) -> None:
    app, logs = make(exclude_paths=["/health", "/assets/"])

    @app.get("/health")
    def health() -> str:
        return "ok"

    client = app.test_client()
    client.get("/health")
    client.get("/assets/app.js")
    client.get("/healthz")
    assert [e.path for e in logged(app, logs)] == ["/healthz"]
    default_app, default_logs = make()
    default_app.test_client().get("/admin/requests/")
    default_app.test_client().get("/hello")
    assert [e.path for e in logged(default_app, default_logs)] == ["/hello"]
    assert default_app.config["SQLITELOGS_EXCLUDE_PATHS"] == ["/static/", "/admin/requests"]


def test_skip_logging_and_entry_filters(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    app, logs = make()
    logs.skip_logging(lambda request: request.path == "/hello")

    @logs.entry_filter
    def tag(entry: LogEntry) -> LogEntry | None:
        if entry.path == "/items/2":
            return None
        if entry.path == "/items/3":
            raise RuntimeError("filter bug")
        entry.user_id = "tagged"
        return entry

    client = app.test_client()
    for path in ("/hello", "/items/1", "/items/2", "/items/3"):
        client.get(path)
    with caplog.at_level(logging.ERROR, logger="flask_sqlitelogs"):
        entries = logged(app, logs)
    assert [(e.path, e.user_id) for e in entries] == [("/items/1", "tagged")]
    assert "filter bug" in caplog.text


def test_a_failing_user_id_callable_is_logged_not_raised(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str:
        raise LookupError("no user store")

    app, logs = make(user_id=broken)
    with caplog.at_level(logging.ERROR, logger="flask_sqlitelogs"):
        assert app.test_client().get("/hello").status_code == 200
    assert only(app, logs).user_id is None
    assert "user_id callable failed" in caplog.text


def test_one_extension_serves_several_apps_without_leaks(tmp_path: Path) -> None:
    shared = SqliteRequestLogger(flush_interval=0)
    first, _ = create_app(tmp_path / "a", logs=shared)
    second, _ = create_app(tmp_path / "b", logs=shared, enable_request_body_tracking=True)
    first.test_client().get("/items/1")
    second.test_client().post("/echo", json={"n": 2})
    try:
        assert [e.path for e in logged(first, shared)] == ["/items/1"]
        second_entries = logged(second, shared)
        assert [(e.path, e.request_body) for e in second_entries] == [("/echo", '{"n": 2}')]
        with first.app_context():
            assert shared.settings().enable_request_body_tracking is False
    finally:
        for app in (first, second):
            with app.app_context():
                shared.stop()
                shared.store().dispose()


def test_disabled_logging_captures_nothing(make: Make) -> None:
    app, logs = make(enabled=False)
    response = app.test_client().get("/hello")
    assert "X-Request-ID" not in response.headers
    assert logged(app, logs) == []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"capacity": 0}, "SQLITELOGS_CAPACITY must be a whole number of at least 1"),
        ({"flush_interval": "soon"}, "SQLITELOGS_FLUSH_INTERVAL must be a non-negative"),
        ({"exclude_paths": ["health"]}, "URL paths starting with '/'"),
        ({"admin_prefix": "admin"}, "SQLITELOGS_ADMIN_PREFIX must be a URL path"),
        ({"redact_fields": "password"}, "SQLITELOGS_REDACT_FIELDS must be a list"),
        ({"user_id": "current_user"}, "SQLITELOGS_USER_ID must be a callable"),
        ({"sqlite_synchronous": "SOMETIMES"}, "synchronous must be one of"),
    ],
)
def test_bad_config_fails_early_with_a_clear_message(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(tmp_path, **config)


def test_unknown_keyword_is_refused(tmp_path: Path) -> None:
    app = Flask("x", instance_path=str(tmp_path))
    with pytest.raises(TypeError, match=r"unknown SqliteRequestLogger option.*flush_every"):
        SqliteRequestLogger(app, flush_every=3)


def test_using_it_without_init_app_says_how_to_fix_it(tmp_path: Path) -> None:
    logs = SqliteRequestLogger()
    app = Flask("x", instance_path=str(tmp_path))
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        logs.flush()
    with pytest.raises(RuntimeError, match="app_context"):
        logs.query()


def test_files_go_to_the_instance_folder(make: Make) -> None:
    app, logs = make()
    app.test_client().get("/hello")
    logged(app, logs)
    folder = Path(app.instance_path) / "requests"
    assert sorted(p.name for p in folder.glob("*.db")) == ["requests_2026-03.db"]
    with sqlite3.connect(folder / "requests_2026-03.db") as conn:
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    for column in ("timestamp", "status", "path", "duration", "user", "ip"):
        assert f"ix_request_log_{column}" in indexes


def test_the_user_of_flask_login_is_recorded_when_the_request_loaded_it(make: Make) -> None:
    flask_login = pytest.importorskip("flask_login")  # a test extra; installed by `make test`

    class User(flask_login.UserMixin):  # type: ignore[misc, name-defined]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app, logs = make()
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.get("/me")
    def me() -> str:
        flask_login.login_user(User("ann"))
        return "hi"

    client = app.test_client()
    client.get("/me")
    client.get("/hello")  # the session holds "ann", but this view never loads the user
    first, second = logged(app, logs)
    assert (first.path, first.user_id) == ("/me", "ann")
    assert (second.path, second.user_id) == ("/hello", None)


def test_the_request_logs_and_reply_to_urls_share_one_secret_rule(make: Make) -> None:
    """``?key=``, ``?sig=`` and ``?code=`` are secret in both; so is ``card_number``."""
    from flask_bgjobs.callbacks import redact_reply_to

    query = "key=k-1&sig=s-2&code=c-3&card_number=4111&keyboard=qwerty&page=2"
    app, logs = make()
    app.test_client().get(f"/hello?{query}")
    (entry,) = logged(app, logs)
    masked = "&".join(
        f"{name}={REDACTED}" if name in {"key", "sig", "code", "card_number"} else pair
        for pair in query.split("&")
        for name in [pair.partition("=")[0]]
    )
    assert entry.query_string == masked
    shown = redact_reply_to(f"https://hooks.example/in?{query}")
    assert shown == "https://hooks.example/in?" + masked.replace(REDACTED, "***")
