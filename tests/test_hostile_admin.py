"""Hostile input to the admin areas of both extensions (issue #8).

One app runs both extensions; its jobs, recurring tasks, worker heartbeats and request logs are
seeded with hostile values (markup, SQL, control characters, lone surrogates, huge numbers, deep
and big JSON). Then every route of both blueprints, enumerated from ``app.url_map`` (so a new
route is covered without touching this file), is requested with hostile paths, parameters,
methods and forms: never a 500, never a payload unescaped in HTML, always strict JSON, always
the CSP header (404 and 405 under the prefixes included), never a redirect out of the admin,
never a state change without a CSRF token.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from flask_bgjobs import BackgroundJobs, ManualClock, Schedule, current_job
from flask_bgjobs.records import LiveState
from flask_sqlitelogs import SqliteRequestLogger

from .hostile import (
    MARKUP,
    PAYLOADS,
    SETTINGS,
    admin_rules,
    check_html,
    check_response,
    encode,
    fill,
    queries,
    route_paths,
    values,
)

pytestmark = pytest.mark.chaos

JOBS, LOGS = "/admin/jobs", "/admin/requests"
OWNER = "hostile-host:4242:feed"
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)


def deep(levels: int) -> Any:
    value: Any = "bottom <hx-mark>"
    for _ in range(levels - 1):
        value = [value]
    return value


#: Requests the seeded jobs carry: markup, odd text, deep, big, huge and tiny numbers.
REQUESTS: list[Any] = [
    *({"text": text, "status": text} for text in PAYLOADS),
    deep(200),
    {"big": "<hx-mark>" * 20_000},
    {"n": 10**4000, "f": 1e308, "z": -0.0, "tiny": 5e-324},
    {"\ud800": "\udfff", "key\x00": "nul", "<hx-mark>": ["<hx-mark>", None, True, 1.5]},
    "plain <hx-mark> string",
]


def add_commands(jobs: BackgroundJobs) -> None:
    @jobs.command
    def echo(req: Any = None) -> Any:
        current_job.log.info("echo %s", json.dumps(req)[:300])
        if isinstance(req, dict) and isinstance(req.get("status"), str):
            current_job.update_status(progress=0.5, status=req["status"])
        return req

    @jobs.command(retry_limit=0)
    def boom(req: Any = None) -> None:
        raise ValueError(req)

    @jobs.command
    def idle() -> None:
        """Stays queued, or is "started" for a fake worker process."""


@dataclass
class Site:
    app: Flask
    jobs: BackgroundJobs
    logs: SqliteRequestLogger
    client: FlaskClient
    database: Path
    job_ids: list[int] = field(default_factory=list)
    entry_ids: list[int] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    def good(self) -> dict[str, list[Any]]:
        """Path arguments that exist, by argument name."""
        return {
            "job_id": self.job_ids,
            "entry_id": self.entry_ids,
            "kind": ["csv", "jsonl"],
            "bgjobs.filename": ["bgjobs/admin.css", "bgjobs/admin.js"],
            "sqlitelogs.filename": ["sqlitelogs/logs.js", "sqlitelogs/style.css"],
        }

    def token(self, blueprint: str = "bgjobs") -> str:
        """A CSRF token of this client for ``blueprint`` (its cookie is set by the page)."""
        if blueprint == "bgjobs":
            page = self.client.get(f"{JOBS}/").get_data(as_text=True)
            mark = 'data-csrf="'
        else:
            page = self.client.get(f"{LOGS}/").get_data(as_text=True)
            mark = 'name="csrf_token" value="'
        start = page.index(mark) + len(mark)
        return page[start : page.index('"', start)]

    def snapshot(self) -> Any:
        """What an action could change: job states, task switches, the log buffer's writes."""
        with sqlite3.connect(self.database) as db:
            states = db.execute("SELECT id, state FROM job_summary ORDER BY id").fetchall()
            tasks = db.execute("SELECT name, enabled FROM scheduled_task ORDER BY name").fetchall()
        with self.app.app_context():
            written = self.logs.state().pipeline.written
        return states, tasks, written


def build_site(root: Path) -> tuple[Site, list[tuple[Flask, Any]]]:
    clock = ManualClock(NOW)
    config = dict(
        TESTING=True,
        SECRET_KEY="hostile-secret-key",
        PROPAGATE_EXCEPTIONS=False,
        BGJOBS_AUTOSTART=False,
        BGJOBS_RETRY_BACKOFF=0.01,
        SQLITELOGS_FLUSH_INTERVAL=0,
        SQLITELOGS_ENABLE_REQUEST_BODY_TRACKING=True,
        SQLITELOGS_ENABLE_RESPONSE_TRACKING=True,
        SQLITELOGS_MAX_BODY_BYTES=2048,
        SQLITELOGS_EXCLUDE_PATHS=["/admin/"],  # the seed only: not the thousands of probes
    )
    app = Flask("hostile", instance_path=str(root))
    app.config.update(config)
    jobs = BackgroundJobs(app, clock=clock)
    add_commands(jobs)
    logs = SqliteRequestLogger(app, clock=clock, user_id=lambda: request.headers.get("X-User"))
    twin_app = Flask("hostile-twin", instance_path=str(root))
    twin_app.config.update(config, BGJOBS_EAGER=True, BGJOBS_ADMIN_URL_PREFIX=None,
                           SQLITELOGS_ADMIN=False)  # fmt: skip
    twin = BackgroundJobs(twin_app, clock=clock)
    add_commands(twin)

    @app.route("/h/<path:rest>", methods=["GET", "POST", "PUT"])
    def hostile_view(rest: str) -> Response:
        if "raise" in request.args:
            raise RuntimeError(f"broken by {rest} {request.args['raise']}")
        return jsonify(rest=rest, args=request.args.to_dict(), body=request.get_data()[:300].hex())

    site = Site(app, jobs, logs, app.test_client(), root / "jobs" / "jobs.db")
    with twin_app.app_context():
        for number, req in enumerate(REQUESTS):
            text = MARKUP[number % len(MARKUP)]
            site.job_ids.append(twin.enqueue_command(
                "echo", req, tag=text, batch_id=text, created_by=text, user_id=text,
                args={text: text, "n": str(number)},
                reply_to=f"ci:hunter2@https://hooks.example.org/{encode(text)}?token=tok-secret",
            ).id)  # fmt: skip
        for text in PAYLOADS:
            site.job_ids.append(twin.enqueue_command("boom", text, tag="boom").id)
        for text in MARKUP:
            site.tasks.append(twin.recurring_command(
                "echo", Schedule.every_minute, {"text": text}, name=text, tag=text,
                reply_to="ci:hunter2@https://hooks.example.org/t?api_key=key-secret",
            ))  # fmt: skip
        twin.run_now(MARKUP[0])
        twin.enable_recurring(MARKUP[1], False)
    with app.app_context():
        queued = [
            jobs.enqueue_command("idle", tag=MARKUP[2], run_after=datetime(9999, 12, 31)).id,
            jobs.enqueue_command("idle", run_after=datetime(1970, 1, 1, 0, 0, 1)).id,
            jobs.enqueue_command("echo", {"text": MARKUP[3]}, depends_on=site.job_ids[0]).id,
        ]
        site.job_ids += queued
        cancelled = jobs.enqueue_command("idle", tag=MARKUP[4]).id
        jobs.cancel_job(cancelled)
        running = jobs.enqueue_command("echo", {"text": MARKUP[5]}, tag=MARKUP[5]).id
        site.job_ids += [cancelled, running]
        store = jobs.store()
        now = clock().timestamp()
        job = store.claim_id(running, OWNER, now, 30.0)
        assert job is not None
        process = {"id": OWNER, "host": MARKUP[0], "pid": 4242, "started_at": now - 60,
                   "heartbeat_at": now, "threads": 4, "workers": json.dumps(MARKUP[:2]),
                   "scheduler": 1, "stopped_at": None}  # fmt: skip
        store.heartbeat(process, [running], now + 30)
        store.save_live(OWNER, [LiveState(running, job.attempts, 0.25, MARKUP[6],
                                          "\n".join(PAYLOADS))])  # fmt: skip
    seed_requests(site)
    return site, [(app, jobs), (twin_app, twin), (app, logs)]


def seed_requests(site: Site) -> None:
    """Requests whose every logged field carries a payload; then flushed."""
    client = site.app.test_client()
    for text in PAYLOADS:
        quoted = encode(text)
        header = text if text.isprintable() and text.isascii() else "odd"
        headers = {
            "User-Agent": header,
            "Referer": f"https://x.example/?q={quoted}&token=t-secret",
            "X-Request-ID": header,
            "X-User": header or "empty",
            "Authorization": "Bearer bearer-secret",
            "Cookie": "session=cookie-secret",
        }
        client.get(f"/h/{quoted}?q={quoted}&password=pw-secret", headers=headers)
        client.post(f"/h/{quoted}", json={"text": text, "password": "pw-secret"}, headers=headers)
        client.get(f"/h/x?raise={quoted}")
        client.post("/h/form", data=f"text={quoted}&token=tok-secret",
                    content_type="application/x-www-form-urlencoded")  # fmt: skip
    client.post("/h/deep", data=b"[" * 5000 + b"]" * 5000, content_type="application/json")
    client.post("/h/bin", data=bytes(range(256)) * 40, content_type="text/plain")
    client.get("/h/%ff%fe?%ff=%fe%00")
    client.get("/nothing-here")
    with site.app.app_context():
        site.logs.flush()
        page = site.logs.query(order_by="id", limit=10_000)
    site.entry_ids += [entry.id for entry in page.items]
    assert len(site.entry_ids) >= 4 * len(PAYLOADS)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made, stop = build_site(tmp_path_factory.mktemp("hostile-admin"))
    yield made
    for app, extension in stop:
        with app.app_context():
            extension.stop()
            extension.store().dispose()


def get_rules(site: Site, *blueprints: str) -> list[Rule]:
    rules = admin_rules(site.app.url_map, *blueprints)
    assert rules, blueprints
    return rules


def good_value(rule: Rule, name: str, good: dict[str, list[Any]]) -> Any:
    return good.get(f"{rule.endpoint.split('.')[0]}.{name}", good.get(name, [1]))[0]


# -- every page once, with the hostile seed --------------------------------------------------------


def test_every_page_renders_the_hostile_seed_escaped(site: Site) -> None:
    client = site.client
    rules = get_rules(site, "bgjobs", "sqlitelogs")
    good = site.good()
    seen = 0
    for rule in rules:
        names = list(rule.arguments)
        if not names:
            urls = [fill(rule, [])]
        else:
            (name,) = names
            found = good.get(f"{rule.endpoint.split('.')[0]}.{name}", good.get(name, []))
            urls = [fill(rule, [encode(str(value))]) for value in found]
        for url in urls:
            month = "?month=2026-03" if rule.endpoint == "sqlitelogs.detail" else ""
            response = client.get(url + month, headers={"Accept": "text/html"})
            check_response(response, url, frozenset({200}))
            seen += 1
    assert seen > len(site.job_ids) + len(site.entry_ids)
    for rule in rules:
        if rule.endpoint in ("bgjobs.job", "sqlitelogs.detail"):
            continue
        url = fill(rule, [encode(str(good_value(rule, name, good))) for name in rule.arguments])
        for accept in ("application/json", "*/*", "text/html;q=0.1, application/json"):
            check_response(client.get(url, headers={"Accept": accept}), f"{url} {accept}")


def test_the_seed_is_shown_escaped_not_dropped(site: Site) -> None:
    job = site.job_ids[0]
    page = site.client.get(f"{JOBS}/job/{job}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;hx&#34;)&lt;/script&gt;" in page
    assert "hunter2" not in page and "tok-secret" not in page
    scheduled = site.client.get(f"{JOBS}/scheduled").get_data(as_text=True)
    assert "&lt;script&gt;" in scheduled and "key-secret" not in scheduled
    entry = site.entry_ids[0]
    detail = site.client.get(f"{LOGS}/{entry}?month=2026-03").get_data(as_text=True)
    assert "&lt;script&gt;" in detail and "pw-secret" not in detail
    assert "bearer-secret" not in detail and "cookie-secret" not in detail


# -- properties over every route -------------------------------------------------------------------


def _get_property(site: Site, rule_and_path: tuple[Rule, str], query: str, accept: str) -> None:
    rule, path = rule_and_path
    url = f"{path}?{query}" if query else path
    response = site.client.get(url, headers={"Accept": accept} if accept else {})
    check_response(response, f"GET {url!r} ({rule.endpoint})")


ACCEPTS = st.sampled_from(["", "text/html", "application/json", "*/*", "<hx-mark>", "\x7f"])


@settings(SETTINGS, max_examples=300)
@given(data=st.data(), query=queries(), accept=ACCEPTS)
def test_jobs_routes_with_hostile_paths_and_parameters(
    site: Site, data: st.DataObject, query: str, accept: str
) -> None:
    rule_and_path = data.draw(route_paths(get_rules(site, "bgjobs"), site.good()))
    _get_property(site, rule_and_path, query, accept)


@settings(SETTINGS, max_examples=300)
@given(data=st.data(), query=queries(), accept=ACCEPTS)
def test_log_routes_with_hostile_paths_and_parameters(
    site: Site, data: st.DataObject, query: str, accept: str
) -> None:
    rule_and_path = data.draw(route_paths(get_rules(site, "sqlitelogs"), site.good()))
    _get_property(site, rule_and_path, query, accept)


#: The parameters each area documents (docs/admin.md, docs/requestlogs.md).
OWN_PARAMS = {
    "bgjobs": ["month", "command", "tag", "batch_id", "created_by", "user_id", "state", "q",
               "sort", "page", "per_page", "limit", "notice", "job", "n", "skipped", "task"],
    "sqlitelogs": ["month", "since", "until", "method", "status", "status_class", "path",
                   "endpoint", "user", "ip", "trace_id", "min_ms", "errors", "q", "sort", "page",
                   "per_page", "flushed", "kind", "entry_id", "_external", "_scheme", "_anchor"],
}  # fmt: skip


@pytest.mark.parametrize("blueprint", ["bgjobs", "sqlitelogs"])
def test_every_parameter_with_every_payload(site: Site, blueprint: str) -> None:
    """Deterministic: each documented parameter alone with each payload (the routes taking
    turns), and each route with each parameter."""
    good = site.good()
    paths = []
    for rule in get_rules(site, blueprint):
        if not rule.endpoint.endswith(".static"):
            values = [encode(str(good_value(rule, name, good))) for name in rule.arguments]
            path = fill(rule, values)
            paths.append(path + ("?month=2026-03" if rule.endpoint == "sqlitelogs.detail" else ""))
    urls = [
        (paths[(number + index) % len(paths)], name, payload)
        for number, name in enumerate(OWN_PARAMS[blueprint])
        for index, payload in enumerate(PAYLOADS)
    ]
    urls += [
        (path, name, PAYLOADS[(number * 7 + index) % len(PAYLOADS)])
        for number, path in enumerate(paths)
        for index, name in enumerate(OWN_PARAMS[blueprint])
    ]
    for path, name, payload in urls:
        url = f"{path}{'&' if '?' in path else '?'}{name}={encode(payload)}"
        check_response(site.client.get(url), url)
    assert len(urls) > 1000


# -- methods, POST and CSRF ------------------------------------------------------------------------


def post_rules(site: Site) -> list[Rule]:
    rules = admin_rules(site.app.url_map, "bgjobs", "sqlitelogs", method="POST")
    assert {rule.endpoint for rule in rules} >= {"bgjobs.cancel", "sqlitelogs.flush"}
    return rules


CSRF_FAILURES = ["none", "forged", "header-forged", "no-cookie", "foreign-origin"]


def forms() -> st.SearchStrategy[dict[str, Any]]:
    names = st.sampled_from(["next", "name", "enabled", "dependents", "x", "csrf_token"])
    return st.dictionaries(names, values(), max_size=4)


FORM = "application/x-www-form-urlencoded"


def form_body(form: dict[str, Any]) -> str:
    """The form as a request body (werkzeug would refuse to encode a lone surrogate)."""
    return "&".join(f"{encode(name)}={encode(value)}" for name, value in form.items())


@settings(SETTINGS, max_examples=150)
@given(data=st.data(), query=queries(), form=forms(), how=st.sampled_from(CSRF_FAILURES))
def test_posts_without_a_valid_csrf_token_change_nothing(
    site: Site, data: st.DataObject, query: str, form: dict[str, Any], how: str
) -> None:
    rule, path = data.draw(route_paths(post_rules(site), site.good()))
    before = site.snapshot()
    headers: dict[str, str] = {}
    client = site.client
    if how == "forged":
        form["csrf_token"] = "forged." + str(form.get("csrf_token", ""))
    elif how == "header-forged":
        headers["X-CSRF-Token"] = "a.b.c"
    elif how == "no-cookie":
        form["csrf_token"] = site.token(rule.endpoint.split(".")[0])
        client = site.app.test_client()
    elif how == "foreign-origin":
        form["csrf_token"] = site.token(rule.endpoint.split(".")[0])
        headers["Origin"] = "https://evil.example"
    if how == "none":
        form.pop("csrf_token", None)
    url = f"{path}?{query}" if query else path
    response = client.post(url, data=form_body(form), content_type=FORM, headers=headers)
    expected = {"foreign-origin": 403}.get(how, 400)
    # A path no POST route matches is a 404 or 405 before any check.
    check_response(response, f"POST {url!r} {how}", frozenset({expected, 404, 405}))
    if response.status_code not in (404, 405):
        assert response.status_code == expected, (url, how)
    assert site.snapshot() == before, f"POST {url!r} ({how}) changed something"


@settings(SETTINGS, max_examples=150)
@given(data=st.data(), query=queries(), form=forms(), as_json=st.booleans())
def test_posts_with_a_valid_token_never_fail(
    site: Site, data: st.DataObject, query: str, form: dict[str, Any], as_json: bool
) -> None:
    rule, path = data.draw(route_paths(post_rules(site), site.good()))
    form["csrf_token"] = site.token(rule.endpoint.split(".")[0])
    url = f"{path}?{query}" if query else path
    headers = {"Accept": "application/json"} if as_json else {}
    response = site.client.post(url, data=form_body(form), content_type=FORM, headers=headers)
    check_response(response, f"POST {url!r}")


@SETTINGS
@given(data=st.data(), method=st.sampled_from(["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD",
                                               "TRACE", "PROPFIND"]))  # fmt: skip
def test_other_methods_are_refused_with_the_headers(
    site: Site, data: st.DataObject, method: str
) -> None:
    rules = admin_rules(site.app.url_map, "bgjobs", "sqlitelogs", method="GET")
    rules += post_rules(site)
    _rule, path = data.draw(route_paths(rules, site.good()))
    response = site.client.open(path, method=method)
    allowed = frozenset({200, 400, 403, 404, 405})
    check_response(response, f"{method} {path!r}", allowed, head=method == "HEAD")
    if method in ("PUT", "PATCH", "DELETE", "TRACE", "PROPFIND"):
        assert response.status_code in (404, 405), (method, path)


def test_every_post_route_needs_the_token(site: Site) -> None:
    """Deterministic: each POST rule of both blueprints, without a token, is a 400."""
    for rule in post_rules(site):
        path = fill(rule, [encode(str(good_value(rule, n, site.good()))) for n in rule.arguments])
        before = site.snapshot()
        response = site.client.post(path, data={"name": MARKUP[0], "enabled": "0"})
        check_response(response, path, frozenset({400}))
        assert "CSRF" in response.get_data(as_text=True)
        assert site.snapshot() == before


# -- headers on responses no route of the blueprints answered --------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("GET", f"{JOBS}/nope", 404),
        ("GET", f"{JOBS}/api/nope", 404),
        ("GET", f"{JOBS}/job/-1", 404),
        ("GET", f"{JOBS}/job/1/cancel", 405),
        ("POST", f"{JOBS}/queue", 405),
        ("DELETE", f"{JOBS}/api/queue", 405),
        ("GET", f"{LOGS}/nope/deeper", 404),
        ("GET", f"{LOGS}/99999999999999999999", 404),
        ("POST", f"{LOGS}/", 405),
        ("GET", f"{LOGS}/flush", 405),
        ("GET", JOBS, 308),
        ("GET", LOGS, 308),
    ],
)
def test_404_and_405_under_the_prefixes_carry_the_csp(
    site: Site, method: str, url: str, status: int
) -> None:
    """Regression: Flask runs no hook of a blueprint for a URL none of its routes matched."""
    response = site.client.open(url, method=method)
    assert response.status_code == status
    check_response(response, url, frozenset({status}))
    elsewhere = site.client.get("/admin/jobsx")  # not under the prefix: the app's own business
    assert elsewhere.status_code == 404
    assert "Content-Security-Policy" not in elsewhere.headers


@SETTINGS
@given(prefix=st.sampled_from([JOBS, LOGS, f"{JOBS}/api", f"{LOGS}/export"]),
       rest=st.lists(values().map(encode), min_size=1, max_size=3))  # fmt: skip
def test_any_url_under_the_prefixes_carries_the_csp(
    site: Site, prefix: str, rest: list[str]
) -> None:
    url = "/".join([prefix, *rest])
    response = site.client.get(url)
    check_response(response, url)


# -- access ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["production", "authorizer says no"])
def test_both_admin_areas_deny_by_default(tmp_path: Path, mode: str) -> None:
    """Outside debug and testing, and without an authorizer, every route of both blueprints
    answers 403 (with the headers); a URL under the prefixes that no route matches is a 404."""
    app = Flask("closed", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k", BGJOBS_AUTOSTART=False, SQLITELOGS_FLUSH_INTERVAL=0)
    authorize = (lambda: False) if mode == "authorizer says no" else None
    if mode == "authorizer says no":
        app.config["TESTING"] = True  # the authorizer decides, even in testing
    jobs = BackgroundJobs(app, authorize=authorize)
    logs = SqliteRequestLogger(app, authorize=authorize)
    try:
        client = app.test_client()
        rules = admin_rules(app.url_map, "bgjobs", "sqlitelogs")
        rules += admin_rules(app.url_map, "bgjobs", "sqlitelogs", method="POST")
        assert len(rules) >= 20
        for rule in rules:
            given = {"kind": "csv", "filename": f"{rule.endpoint.split('.')[0]}/x.js"}
            path = fill(rule, [given.get(name, "1") for name in rule.arguments])
            method = "GET" if "GET" in (rule.methods or ()) else "POST"
            response = client.open(path, method=method)
            check_response(response, f"{method} {path}", frozenset({403}))
            body = response.get_data(as_text=True)
            assert "hx" not in body
        for path in (f"{JOBS}/nope", f"{LOGS}/nope/x"):
            check_response(client.get(path), path, frozenset({404}))
    finally:
        with app.app_context():
            jobs.store().dispose()
            logs.stop()
            logs.store().dispose()


# -- regressions -----------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_job_is_shown_not_a_500(site: Site) -> None:
    """Regression: JSON may hold "\\ud800"; the page wrote it raw and UTF-8 refused the page."""
    job = site.job_ids[REQUESTS.index(next(r for r in REQUESTS if isinstance(r, dict)
                                           and "\ud800" in r))]  # fmt: skip
    response = site.client.get(f"{JOBS}/job/{job}")
    text = check_response(response, "job", frozenset({200}))
    assert "\ufffd" in text
    data = site.client.get(f"{JOBS}/api/job/{job}").get_json()
    assert data["job"]["request"]["\ud800"] == "\udfff"  # the API keeps it, escaped in JSON


@pytest.mark.parametrize("name", ["endpoint", "kind", "_external", "_scheme", "_anchor"])
def test_a_parameter_named_like_an_argument_of_url_for_is_no_500(site: Site, name: str) -> None:
    """Regression: the grid passed its query string to ``url_for(**args)``: ``?endpoint=x`` (a
    documented filter) clashed with its first argument, ``?kind=`` with the export's."""
    for view in ("/", "/charts"):
        url = f"{LOGS}{view}?{name}=hostile.view&q=x"
        text = check_response(site.client.get(url), url, frozenset({200}))
        assert f"{name}=hostile.view" in text
    token = site.token("sqlitelogs")
    done = site.client.post(f"{LOGS}/flush?{name}=x", data={"csrf_token": token})
    assert done.status_code == 303 and f"{name}=x" in done.headers["Location"]


def test_a_deeply_nested_logged_body_is_shown_not_a_500(site: Site) -> None:
    """Regression: the detail page indented a JSON body nested thousands deep and recursed."""
    with site.app.app_context():
        (entry,) = site.logs.query(path_contains="/h/deep").items
    response = site.client.get(f"{LOGS}/{entry.id}?month={entry.month}")
    text = check_response(response, "deep body", frozenset({200}))
    assert "[[[[" in text


def test_the_html_check_would_catch_a_leak() -> None:
    with pytest.raises(AssertionError):
        check_html(f"<p>{MARKUP[0]}</p>", "leak")
    with pytest.raises(AssertionError):
        check_html('<a href="javascript:alert(1)">x</a>', "leak")
    with pytest.raises(AssertionError):
        check_html('<div onclick="x()">', "leak")
    check_html("<p>&lt;script&gt; onerror=alert(1) javascript:alert(1)</p>", "escaped")
