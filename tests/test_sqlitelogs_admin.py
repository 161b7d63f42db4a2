"""The log pages through the test client: access, CSRF, headers, escaping, bad parameters, export.

Also the shared ``flask_bgjobs.adminkit`` helpers the jobs pages will use.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from flask import Blueprint, Flask, request
from werkzeug.exceptions import BadRequest

from flask_bgjobs import ManualClock, adminkit
from flask_sqlitelogs import SqliteRequestLogger

PREFIX = "/admin/requests"
HOSTILE = '<script>alert("x")</script>'
Make = Callable[..., tuple[Flask, SqliteRequestLogger]]


@pytest.fixture
def make(make_logs: Make) -> Make:
    """``make(**config)`` builds a logged app (see ``make_logs`` in conftest)."""
    return make_logs


def flush(app: Flask, logs: SqliteRequestLogger) -> None:
    with app.app_context():
        logs.flush()


def token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


# -- access ----------------------------------------------------------------------------------------


def test_closed_outside_debug_and_testing_without_an_authorizer(make: Make) -> None:
    app, _ = make()
    app.config["TESTING"] = False
    response = app.test_client().get(f"{PREFIX}/")
    assert response.status_code == 403
    assert b"authorize=" in response.data
    assert app.test_client().get(f"{PREFIX}/static/sqlitelogs/style.css").status_code == 403
    app.debug = True
    assert app.test_client().get(f"{PREFIX}/").status_code == 200


def test_an_authorizer_decides_even_in_testing(make: Make) -> None:
    app, _ = make(authorize=lambda: request.headers.get("X-Admin") == "yes")
    client = app.test_client()
    assert client.get(f"{PREFIX}/").status_code == 403
    assert client.get(f"{PREFIX}/", headers={"X-Admin": "yes"}).status_code == 200
    app.config["TESTING"] = False
    assert client.get(f"{PREFIX}/", headers={"X-Admin": "yes"}).status_code == 200


def test_an_authorizer_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="authorize must be a callable"):
        adminkit.AdminGuard(True, name="x")  # type: ignore[arg-type]


def test_the_prefix_is_configurable(make: Make) -> None:
    app, _ = make(admin_prefix="/ops/logs/")
    assert app.test_client().get("/ops/logs/").status_code == 200
    assert app.test_client().get(f"{PREFIX}/").status_code == 404
    assert app.config["SQLITELOGS_EXCLUDE_PATHS"][-1] == "/ops/logs"


def test_pages_can_be_left_out(make: Make) -> None:
    app, _ = make(admin=False)
    assert app.test_client().get(f"{PREFIX}/").status_code == 404


# -- CSRF --------------------------------------------------------------------------------------


def test_posts_need_a_valid_csrf_token_and_its_cookie(make: Make) -> None:
    app, logs = make()
    client = app.test_client()
    client.get("/hello")
    page = client.get(f"{PREFIX}/?status=200")
    token = token_of(page.get_data(as_text=True))
    assert client.post(f"{PREFIX}/flush").status_code == 400
    assert client.post(f"{PREFIX}/flush", data={"csrf_token": "forged"}).status_code == 400
    other = app.test_client()  # the right token without its cookie
    assert other.post(f"{PREFIX}/flush", data={"csrf_token": token}).status_code == 400
    foreign = client.post(
        f"{PREFIX}/flush", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    done = client.post(f"{PREFIX}/flush?status=200", data={"csrf_token": token})
    assert done.status_code == 303
    assert done.headers["Location"].endswith(f"{PREFIX}/?status=200&flushed=1")
    assert "Flushed 1 entry." in client.get(done.headers["Location"]).get_data(as_text=True)
    header = client.post(f"{PREFIX}/flush", headers={"X-CSRF-Token": token})
    assert header.status_code == 303
    with app.app_context():
        assert logs.query().total == 1


def test_a_token_signed_with_another_key_is_refused(make: Make) -> None:
    app, _ = make()
    client = app.test_client()
    token = token_of(client.get(f"{PREFIX}/").get_data(as_text=True))
    app.config["SECRET_KEY"] = "rotated"
    assert client.post(f"{PREFIX}/flush", data={"csrf_token": token}).status_code == 400


def test_without_a_secret_key_actions_are_hidden_and_refused(make: Make) -> None:
    app, _ = make()
    app.config["SECRET_KEY"] = None
    client = app.test_client()
    page = client.get(f"{PREFIX}/")
    assert page.status_code == 200 and b"csrf_token" not in page.data
    refused = client.post(f"{PREFIX}/flush")
    assert refused.status_code == 400 and b"SECRET_KEY" in refused.data


# -- headers and escaping ------------------------------------------------------------------------


def test_every_response_carries_a_strict_csp(make: Make) -> None:
    app, _ = make()
    client = app.test_client()
    for url, status in (
        (f"{PREFIX}/", 200),
        (f"{PREFIX}/charts", 200),
        (f"{PREFIX}/static/sqlitelogs/logs.js", 200),
        (f"{PREFIX}/?page=x", 400),
        (f"{PREFIX}/99", 404),
    ):
        response = client.get(url)
        assert response.status_code == status, url
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        response.close()
    page = client.get(f"{PREFIX}/").get_data(as_text=True)
    assert "<style" not in page and " style=" not in page and "<script>" not in page
    assert "onclick" not in page


def test_hostile_values_are_escaped_everywhere(make: Make) -> None:
    app, logs = make(
        enable_request_body_tracking=True,
        enable_response_tracking=True,
        user_id=lambda: request.headers.get("X-User"),
    )
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.get("/evil/<path:rest>")
    def evil(rest: str) -> str:
        raise RuntimeError(f"broken by {HOSTILE}")

    client = app.test_client()
    client.get(
        f"/evil/{HOSTILE}?q={HOSTILE}",
        headers={
            "User-Agent": HOSTILE,
            "X-User": HOSTILE,
            "Referer": f"javascript:{HOSTILE}",
            "X-Note": "'; rm -rf / #",
        },
    )
    client.post("/echo", json={"html": HOSTILE, "password": "x"})
    flush(app, logs)
    with app.app_context():
        first = logs.query(order_by="id").items[0]
    pages = [
        client.get(f"{PREFIX}/").get_data(as_text=True),
        client.get(f"{PREFIX}/?q=evil&user={HOSTILE}").get_data(as_text=True),
        client.get(f"{PREFIX}/{first.id}?month={first.month}").get_data(as_text=True),
        client.get(f"{PREFIX}/2?month={first.month}").get_data(as_text=True),
        client.get(f"{PREFIX}/charts").get_data(as_text=True),
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "</script><" not in html
    detail = pages[2]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in detail
    assert "RuntimeError" in detail
    curl = re.search(r'<textarea id="curl" readonly rows="4">(.*?)</textarea>', detail, re.S)
    assert curl and "&#39;" in curl.group(1)  # shell quotes, escaped for HTML


@pytest.mark.parametrize(
    "query",
    [
        "page=0",
        "page=-1",
        "page=abc",
        "page=" + "9" * 400,
        "page=1e3",
        "per_page=1000000",
        "per_page=7",
        "month=2026-13",
        "month=../../etc",
        "month=2026-03%00",
        "sort=password",
        "sort=--timestamp",
        "sort=timestamp;DROP",
        "status=abc",
        "status=99999",
        "status=200.5",
        "status_class=6xx",
        "since=yesterday",
        "since=2026-02-30",
        "until=99999-01-01",
        "since=" + "1" * 100,
        "min_ms=-5",
        "min_ms=nan",
        "min_ms=inf",
        "errors=maybe",
        "method=BREW",
        "q=" + "x" * 1000,
        "q=%00%01",
        "path=%ff%fe",
        "ip=" + "1" * 200,
        "trace_id=%0d%0aSet-Cookie:x",
        "flushed=-1",
        "user=%C0%AF",
    ],
)
def test_bad_parameters_answer_400_never_500(make: Make, query: str) -> None:
    app, logs = make()
    app.test_client().get("/hello")
    flush(app, logs)
    client = app.test_client()
    for view in ("/", "/charts", "/export.csv", "/export.jsonl"):
        response = client.get(f"{PREFIX}{view}?{query}")
        assert response.status_code in (200, 400), (view, query, response.status_code)
        response.close()
    detail = client.get(f"{PREFIX}/1?{query}")
    assert detail.status_code in (200, 400, 404)


def test_odd_detail_urls_are_404s(make: Make) -> None:
    app, _ = make()
    client = app.test_client()
    for url in ("/0", "/-1", "/abc", "/" + "9" * 30, "/1?month=1999-01"):
        assert client.get(f"{PREFIX}{url}").status_code == 404, url


# -- the grid, export ------------------------------------------------------------------------------


def test_the_grid_filters_sorts_and_links_keep_the_selection(
    make: Make, clock: ManualClock
) -> None:
    app, logs = make()
    client = app.test_client()
    for number in range(30):
        client.get(f"/items/{number}" if number % 3 else "/missing")
        clock.advance(minutes=1)
    flush(app, logs)
    html = client.get(f"{PREFIX}/?status=404&per_page=25").get_data(as_text=True)
    assert 'id="total">10<' in html
    assert html.count('class="s4xx"') == 10
    assert f'href="{PREFIX}/?status=404&amp;per_page=25&amp;sort=-duration_ms"' in html
    sorted_page = client.get(f"{PREFIX}/?sort=path&per_page=25").get_data(as_text=True)
    assert "page 1 of 2" in sorted_page
    assert f'href="{PREFIX}/?sort=path&amp;per_page=25&amp;page=2"' in sorted_page
    assert "▲" in sorted_page
    second = client.get(f"{PREFIX}/?sort=path&per_page=25&page=2").get_data(as_text=True)
    assert "/missing" in second and "/items/" not in second.split("<tbody>")[1]


def test_csv_and_json_lines_export_the_current_filter(make: Make) -> None:
    app, logs = make()
    client = app.test_client()
    client.get("/items/1", headers={"User-Agent": '=HYPERLINK("http://evil")'})
    client.get("/missing")
    client.get("/items/2")
    flush(app, logs)
    response = client.get(f"{PREFIX}/export.csv?endpoint=item&sort=path")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="requests-2026-03.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [row["path"] for row in rows] == ["/items/1", "/items/2"]
    assert rows[0]["user_agent"].startswith("'=HYPERLINK")  # no formula in a spreadsheet
    assert json.loads(rows[0]["request_headers"])["Host"] == "localhost"
    lines = client.get(f"{PREFIX}/export.jsonl?status=404").get_data(as_text=True).splitlines()
    assert [json.loads(line)["path"] for line in lines] == ["/missing"]
    assert json.loads(lines[0])["time"] == "2026-03-15T12:00:00+00:00"


def test_export_is_capped(make: Make) -> None:
    app, logs = make(export_limit=2)
    client = app.test_client()
    for number in range(5):
        client.get(f"/items/{number}")
    flush(app, logs)
    lines = client.get(f"{PREFIX}/export.jsonl").get_data(as_text=True).splitlines()
    assert len(lines) == 2


def test_the_detail_page_and_copy_as_curl(make: Make) -> None:
    app, logs = make(enable_request_body_tracking=True, enable_response_tracking=True)
    client = app.test_client()
    client.post(
        "/echo?x=1",
        json={"name": "ann", "password": "pw-secret"},
        headers={"Authorization": "Bearer tok-secret"},
    )
    flush(app, logs)
    html = client.get(f"{PREFIX}/1?month=2026-03").get_data(as_text=True)
    assert "pw-secret" not in html and "tok-secret" not in html
    assert "&#34;name&#34;: &#34;ann&#34;" in html  # pretty-printed JSON
    with app.app_context():
        entry = logs.get(1)
    assert entry is not None
    from flask_sqlitelogs.admin import curl_command

    command = curl_command(entry)
    assert command.startswith("curl -X POST 'http://localhost/echo?x=1' ")
    assert "-H 'Authorization: Bearer [REDACTED]'" in command
    assert '--data-raw \'{"name": "ann", "password": "[REDACTED]"}\'' in command


def test_the_charts_page_draws_inline_svg(make: Make, clock: ManualClock) -> None:
    app, logs = make()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    for number in range(12):
        client.get(("/items/1", "/missing", "/boom")[number % 3])
        clock.advance(minutes=20)
    flush(app, logs)
    html = client.get(f"{PREFIX}/charts").get_data(as_text=True)
    assert html.count("<svg") == 3
    assert "Summary of 12 requests" in html
    assert re.search(r"<title>2026-03-15 12:00: 3</title>", html)
    assert "<title>5xx: 4</title>" in html
    assert "item p95:" in html


# -- adminkit helpers ------------------------------------------------------------------------------


def test_parameter_helpers() -> None:
    app = Flask("helpers")
    with app.test_request_context("/?page=3&month=2026-02&sort=-b&flag=yes&when=2026-03-05"):
        assert adminkit.int_arg("page", 1, minimum=1, maximum=10) == 3
        assert adminkit.int_arg("missing", 7) == 7
        assert adminkit.month_arg() == "2026-02"
        assert adminkit.sort_arg("sort", ("a", "b"), "a") == "-b"
        assert adminkit.bool_arg("flag") is True
        assert adminkit.datetime_arg("when") == datetime(2026, 3, 5, tzinfo=timezone.utc)
        assert adminkit.args_without("page") == {
            "month": "2026-02",
            "sort": "-b",
            "flag": "yes",
            "when": "2026-03-05",
        }
    with app.test_request_context("/?when=2026-03-05T10:00:00%2B02:00&page=11"):
        assert adminkit.datetime_arg("when") == datetime(2026, 3, 5, 8, tzinfo=timezone.utc)
        with pytest.raises(BadRequest, match="between 1 and 10"):
            adminkit.int_arg("page", 1, minimum=1, maximum=10)


def test_guard_protects_any_blueprint() -> None:
    app = Flask("guarded")
    app.config.update(SECRET_KEY="k")
    blueprint = Blueprint("things", __name__)

    @blueprint.route("/", methods=["GET", "POST"])
    def index() -> str:
        from flask import render_template_string

        return render_template_string("{{ csrf_token() }}")

    adminkit.AdminGuard(lambda: True, name="things").protect(blueprint)
    app.register_blueprint(blueprint, url_prefix="/things")
    client = app.test_client()
    page = client.get("/things/")
    assert page.headers["Content-Security-Policy"] == adminkit.DEFAULT_CSP
    cookie = page.headers["Set-Cookie"]
    assert "things_csrf=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    token = page.get_data(as_text=True)
    assert client.post("/things/", data={"csrf_token": token}).status_code == 200
    assert client.post("/things/").status_code == 400


def test_a_failed_flush_from_the_page_is_a_503_and_keeps_the_entries(make: Make) -> None:
    import sqlite3

    app, logs = make(sqlite_busy_timeout=0.05)
    client = app.test_client()
    client.get("/hello")
    flush(app, logs)
    client.get("/hello")
    with app.app_context():
        path = logs.store().files.path_for("2026-03")
    token = token_of(client.get(f"{PREFIX}/").get_data(as_text=True))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        failed = client.post(f"{PREFIX}/flush", data={"csrf_token": token})
        assert failed.status_code == 503 and b"will be retried" in failed.data
        assert b"The last flush failed" in client.get(f"{PREFIX}/").data
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert client.post(f"{PREFIX}/flush", data={"csrf_token": token}).status_code == 303
    with app.app_context():
        assert logs.query().total == 2
