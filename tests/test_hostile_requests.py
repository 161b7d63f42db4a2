"""Hostile requests to an app with the request logger (issue #8), bodies tracked and not.

Huge headers, invalid JSON, binary bodies, bodies that are not UTF-8, secrets in the query
string, the form, the JSON (at any depth), the headers and the cookies: every request is logged
(the flush never fails), read back through ``query()``, the grid, the detail pages and the
exports; no secret is in any of them, nor in the bytes of the SQLite files; kept bodies are
capped at ``SQLITELOGS_MAX_BODY_BYTES`` with their original length recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import Flask, Response, request
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_sqlitelogs import REDACTED, LogEntry, SqliteRequestLogger

from .hostile import MARKUP, SETTINGS, check_response, encode

pytestmark = pytest.mark.chaos

Make = Callable[..., tuple[Flask, SqliteRequestLogger]]
CAP = 4096
JSON, BINARY = "application/json", "application/octet-stream"
LOGS = "/admin/requests"


class Secrets:
    """Unique secret values, so that any trace of one is found wherever it went."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, kind: str = "s") -> str:
        value = f"ZQ{kind}{len(self.made):04d}SECRET"
        self.made.append(value)
        return value

    def find(self, text: str) -> list[str]:
        return [secret for secret in self.made if secret in text]


def logged_app(make: Make, bodies: bool) -> tuple[Flask, SqliteRequestLogger]:
    app, logs = make(
        enable_request_body_tracking=bodies,
        enable_response_tracking=bodies,
        max_body_bytes=CAP,
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.route("/sink", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def sink() -> Response:
        request.get_data()
        return Response("ok", mimetype="text/plain")

    @app.get("/fail/<path:why>")
    def fail(why: str) -> str:
        raise RuntimeError(f"failed because {why}")

    return app, logs


def entries(app: Flask, logs: SqliteRequestLogger) -> list[LogEntry]:
    with app.app_context():
        logs.flush()
        return logs.query(order_by="id", limit=10_000).items


def stored_bytes(app: Flask) -> bytes:
    """Every byte of the request-log files (the month's file and its write-ahead log)."""
    folder = Path(app.instance_path) / "requests"
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file())


def everything_shown(app: Flask, logs: SqliteRequestLogger, items: list[LogEntry]) -> str:
    """The entries as ``query()`` gives them, the grid, every detail page and both exports."""
    client = app.test_client()
    texts = [json.dumps([entry.to_dict() for entry in items], ensure_ascii=False)]
    pages = [f"{LOGS}/?per_page=200", f"{LOGS}/charts", f"{LOGS}/export.csv",
             f"{LOGS}/export.jsonl"]  # fmt: skip
    pages += [f"{LOGS}/{entry.id}?month={entry.month}" for entry in items]
    for url in pages:
        texts.append(check_response(client.get(url), url, frozenset({200})))
    return "\n".join(texts)


# -- the requests of the issue ---------------------------------------------------------------------


def hostile_requests(secret: Secrets) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, keywords of the test client's ``open``) for each hostile request."""
    deep: Any = {"password": secret("deep")}
    for level in range(100):
        deep = {f"level{level}": deep, "list": [deep] if level == 50 else []}
    big_json = {"blob": "b" * 10_000, "password": secret("bigjson")}
    return [
        ("GET", "/hello", {"headers": {"X-Big": "v" * 65536, "X-Also-Big": "w" * 65536}}),
        ("GET", "/hello", {"headers": {"Authorization": f"Bearer {secret()}{'a' * 65536}"}}),
        ("GET", "/hello", {"headers": {"Cookie": f"session={secret('cookie')}; theme=dark"}}),
        ("GET", "/hello", {"headers": {"X-Api-Key": secret("apikey"), "X-Access-Token": secret(),
                                       "Private-Token": secret(), "X-Auth-Token": secret(),
                                       "Proxy-Authorization": f"Basic {secret()}"}}),
        ("GET", f"/hello?password={secret()}&token={secret()}&api_key={secret()}&page=2", {}),
        ("GET", f"/hello?a=1;password={secret()}&TOKEN={secret()}&Api-Key={secret()}", {}),
        ("GET", f"/hello?pass%77ord={secret()}&api%5Fkey={secret()}&x%00token={secret()}", {}),
        ("GET", f"/hello?token={secret()}&token={secret()}&token=", {}),
        ("GET", "/hello", {"headers": {"Referer": f"https://a.example/?token={secret()}&q=1"}}),
        ("POST", "/echo", {"data": b'{"password": "' + secret().encode() + b'", "x": [1, 2',
                           "content_type": "application/json"}),
        ("POST", "/echo", {"data": b'{"pass\\u0077ord": "' + secret().encode() + b'", ',
                           "content_type": "application/json"}),
        ("POST", "/echo", {"data": f"password={secret()}&user=ann".encode(),
                           "content_type": "application/json"}),
        ("POST", "/echo", {"data": b'{"a": "\\ud800", "token": "' + secret().encode() + b'"}',
                           "content_type": "application/json"}),
        ("POST", "/echo", {"data": b'{"x": "\xff\xfe\xc0\xaf", "password": "'
                           + secret().encode() + b'"}', "content_type": "application/json"}),
        ("POST", "/sink", {"data": bytes(range(256)) * 64, "content_type": BINARY}),
        ("POST", "/sink", {"data": b"\xff\xfe text \xc0\xaf" * 1000, "content_type": "text/plain"}),
        ("POST", "/sink", {"data": b"[" * 20_000 + b"]" * 20_000, "content_type": JSON}),
        ("POST", "/echo", {"json": deep}),
        ("POST", "/echo", {"json": big_json}),
        ("POST", "/echo", {"json": [{"token": secret()}, {"passwd": [secret()]}, {"apiKey": 7}]}),
        ("POST", "/echo", {"json": {"password": 12345, "client_secret": {"inner": secret()}}}),
        ("POST", "/echo", {"data": {"password": secret(), "csrf_token": secret(), "name": "n"}}),
        ("POST", "/echo", {"data": f"blob={'b' * 9000}&password={secret()}",
                           "content_type": "application/x-www-form-urlencoded"}),
        ("PUT", "/echo", {"data": "x" * (2 * 1024 * 1024), "content_type": "text/plain"}),
        ("GET", "/fail/" + encode(MARKUP[0]), {}),
        ("GET", "/h%ff%fe/\x7f?%ff=%fe%00", {}),
        ("BREW", "/hello", {}),
        ("GET", "/hello", {"headers": {"X-Request-ID": MARKUP[0], "User-Agent": MARKUP[1]}}),
    ]  # fmt: skip


@pytest.mark.parametrize("bodies", [True, False], ids=["bodies", "no-bodies"])
def test_hostile_requests_are_logged_redacted_and_capped(make_logs: Make, bodies: bool) -> None:
    app, logs = logged_app(make_logs, bodies)
    secret = Secrets()
    sent = hostile_requests(secret)
    client = app.test_client()
    for method, url, keywords in sent:
        client.open(url, method=method, **keywords).close()
    items = entries(app, logs)
    assert len(items) == len(sent)  # every one logged, none lost to a failed flush
    shown = everything_shown(app, logs, items)
    assert secret.find(shown) == []
    assert secret.find(stored_bytes(app).decode("latin-1")) == []
    for entry in items:
        for body, size in ((entry.request_body, entry.request_body_size),
                           (entry.response_body, entry.response_body_size)):  # fmt: skip
            if not bodies:
                assert body is None
            elif body is not None:
                assert len(body.encode("utf-8")) <= CAP, entry.url
                if size is not None and size > CAP:
                    assert len(body.encode("utf-8")) >= CAP - 4  # cut at the cap, not emptied
    by_path: dict[str, list[LogEntry]] = {}
    for entry in items:
        by_path.setdefault(entry.path, []).append(entry)
    big = by_path["/hello"][0]
    assert len(big.request_headers["X-Big"]) == 65536  # kept whole: headers are not capped
    assert big.request_headers["X-Also-Big"] == "w" * 65536
    sinks = by_path["/sink"]
    assert [entry.request_body_size for entry in sinks] == [256 * 64, 10 * 1000, 40_000]
    if bodies:
        assert sinks[0].request_body is None  # binary: not kept
        assert sinks[1].request_body is not None and "\ufffd" in sinks[1].request_body
        assert sinks[2].request_body is not None and len(sinks[2].request_body) == CAP
        large = next(e for e in by_path["/echo"] if e.method == "PUT")
        assert large.request_body is None and large.request_body_size == 2 * 1024 * 1024
    failed = by_path[f"/fail/{MARKUP[0]}"][0]
    assert failed.status_code == 500 and failed.error_type == "RuntimeError"


def test_what_redaction_leaves_is_still_useful(make_logs: Make) -> None:
    app, logs = logged_app(make_logs, True)
    client = app.test_client()
    client.get("/hello?a=1;password=x&page=2")
    client.post("/echo", data=b'{"a": "\\ud800", "token": "t"}', content_type="application/json")
    client.post("/echo", data=b"password=p&user=ann", content_type="application/json")
    client.get("/hello", headers={"X-Access-Token": "t", "X-Visible": "shown"})
    first, second, third, fourth = entries(app, logs)
    assert first.query_string == f"a=1;password={REDACTED}&page=2"
    assert second.request_body == f'{{"a": "\\ud800", "token": "{REDACTED}"}}'
    assert third.request_body == f"password={REDACTED}&user=ann"
    assert fourth.request_headers["X-Access-Token"] == REDACTED
    assert fourth.request_headers["X-Visible"] == "shown"


# -- any request -----------------------------------------------------------------------------------

SECRET_NAMES = ["password", "token", "api_key", "apiKey", "client_secret", "X-Session",
                "csrf_token", "Signature", "passwd"]  # fmt: skip
PLAIN_NAMES = ["q", "page", "user", "next", "", "a b", "名前", "\x00"]
HEADER_SECRETS = ["Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "X-Auth-Token",
                  "X-Access-Token", "Private-Token", "X-Client-Secret", "X-CSRF-Token"]  # fmt: skip
PLAIN_VALUES = st.one_of(st.text(max_size=20), st.binary(max_size=8))
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@st.composite
def hostile_request(draw: st.DrawFn, secret: Secrets) -> tuple[str, str, dict[str, Any]]:
    """A request with secrets in every place the logger promises to redact."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = draw(st.sampled_from(["/echo", "/sink", "/hello", "/nope", "/fail/x"]))
    path += draw(st.sampled_from(["", "/", "/%ff", "/" + encode(MARKUP[0])]))
    pairs = draw(st.lists(st.one_of(
        st.tuples(st.sampled_from(SECRET_NAMES), st.just(None)),
        st.tuples(st.sampled_from(PLAIN_NAMES), PLAIN_VALUES),
    ), max_size=5))  # fmt: skip
    query = "&".join(
        f"{encode(name)}={encode(secret('q') if value is None else value)}" for name, value in pairs
    )
    headers = {
        name: f"{draw(st.sampled_from(['', 'Bearer ', 'Basic ', 'session=']))}{secret('h')}"
        for name in draw(st.lists(st.sampled_from(HEADER_SECRETS), max_size=3, unique=True))
    }
    plain = st.sampled_from(["User-Agent", "X-Note", "Referer", "X-Request-ID"])
    headers.update(draw(st.dictionaries(plain, header_values)))
    if "Referer" in headers and draw(st.booleans()):
        headers["Referer"] = f"https://r.example/x?token={secret('r')}&a=1"
    kind = draw(st.sampled_from(["json", "form", "text", "binary", "none", "bad-json"]))
    keywords: dict[str, Any] = {"headers": headers}
    if kind == "json":
        document = draw(st.recursive(
            st.one_of(st.none(), st.integers(), st.text(max_size=10), st.sampled_from(MARKUP)),
            lambda children: st.one_of(
                st.lists(children, max_size=3),
                st.dictionaries(st.one_of(st.sampled_from(SECRET_NAMES), st.text(max_size=6)),
                                children, max_size=3),
            ),
            max_leaves=10,
        ))  # fmt: skip
        keywords["json"] = _plant(document, secret)
    elif kind == "form":
        form = [(name, secret("f")) for name in draw(st.lists(st.sampled_from(SECRET_NAMES),
                                                              max_size=3))]  # fmt: skip
        form += draw(st.lists(st.tuples(st.sampled_from(PLAIN_NAMES), st.text(max_size=10)),
                              max_size=3))  # fmt: skip
        keywords["data"] = "&".join(f"{encode(k)}={encode(v)}" for k, v in form)
        keywords["content_type"] = "application/x-www-form-urlencoded"
    elif kind == "bad-json":
        keywords["data"] = f'{{"password": "{secret("b")}", "x": ['.encode()
        keywords["data"] += draw(st.binary(max_size=CAP * 2))
        keywords["content_type"] = "application/json"
    elif kind in ("text", "binary"):
        keywords["data"] = draw(st.binary(max_size=CAP * 2))
        keywords["content_type"] = "text/plain" if kind == "text" else "application/octet-stream"
    url = f"{path}?{query}" if query else path
    return method, url, keywords


def _plant(document: Any, secret: Secrets) -> Any:
    """``document`` with a secret under every key that looks secret."""
    if isinstance(document, dict):
        return {key: secret("j") if key in SECRET_NAMES else _plant(value, secret)
                for key, value in document.items()}  # fmt: skip
    if isinstance(document, list):
        return [_plant(item, secret) for item in document]
    return document


@pytest.mark.parametrize("bodies", [True, False], ids=["bodies", "no-bodies"])
def test_any_request_is_logged_without_its_secrets(make_logs: Make, bodies: bool) -> None:
    app, logs = logged_app(make_logs, bodies)
    secret = Secrets()
    client = app.test_client()
    sent = [0]

    @settings(SETTINGS, max_examples=150)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        method, url, keywords = data.draw(hostile_request(secret))
        client.open(url, method=method, **keywords).close()
        sent[0] += 1
        with app.app_context():
            logs.flush()
            (entry,) = logs.query(order_by="-id", limit=1).items
        leaks = secret.find(json.dumps(entry.to_dict(), ensure_ascii=False))
        assert leaks == [], (method, url, keywords.get("content_type"), leaks)
        detail = client.get(f"{LOGS}/{entry.id}?month={entry.month}")
        assert secret.find(check_response(detail, url, frozenset({200}))) == []

    one()
    items = entries(app, logs)
    assert len(items) == sent[0] >= 150
    assert secret.find(everything_shown(app, logs, items[-200:])) == []
    assert secret.find(stored_bytes(app).decode("latin-1")) == []


# -- text SQLite refuses: a lone surrogate in what the app hands the logger -----------------------


def test_an_error_message_with_a_lone_surrogate_is_logged(make_logs: Make) -> None:
    app, logs = logged_app(make_logs, False)

    @app.get("/odd-error")
    def odd_error() -> str:
        raise ValueError("bad \ud800 value")

    client = app.test_client()
    client.get("/odd-error")
    client.get("/hello")
    try:
        items = entries(app, logs)
        assert [entry.path for entry in items] == ["/odd-error", "/hello"]
        assert items[0].error_message == "bad \ufffd value"
    finally:
        logs.state(app).pipeline.discard()  # no complaint at exit about the stuck entries


def test_a_user_id_with_a_lone_surrogate_is_logged(make_logs: Make) -> None:
    app, logs = make_logs(user_id=lambda: "user-\udcff")
    app.test_client().get("/hello")
    try:
        (entry,) = entries(app, logs)
        assert entry.user_id == "user-\ufffd"
    finally:
        logs.state(app).pipeline.discard()


def test_check_response_needs_the_csp() -> None:
    class Fake:
        status_code = 200
        headers: ClassVar[dict[str, str]] = {}
        mimetype = "text/html"

        def get_data(self) -> bytes:
            return b"<p>x</p>"

        def close(self) -> None:
            pass

    with pytest.raises(AssertionError, match="without CSP"):
        check_response(Fake(), "fake")
