"""No secret leaks anywhere (issue #8): the whole flow of an app with both extensions, watched.

Jobs with ``reply_to`` URLs carrying credentials in every form (Basic, Bearer, a header, a
``$VARIABLE``, a ``?token=`` in the query string) run on real worker threads and notify a local
server that fails, then one that does not exist; recurring tasks carry them too; HTTP requests
carry ``Authorization`` headers, cookies and passwords in bodies and query strings. Python
logging is captured at DEBUG from the start. Then no secret may appear in: a log line, any admin
page or API answer of both extensions, any job record (but the ``reply_to`` column of the job
that owns it), any exception message or traceback, ``flask jobs list/show/schedule`` or
``flask sqlitelogs stats``, or the bytes of the request-log files.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request
from werkzeug.wrappers import Response

from flask_bgjobs import BackgroundJobs, InvalidJobError, Schedule, send_json_callback
from flask_bgjobs.callbacks import ReplyToError, redact_reply_to
from flask_sqlitelogs import SqliteRequestLogger

from .hooks import HookServer
from .hostile import admin_rules, check_response, fill

pytestmark = pytest.mark.chaos

PW, TOKEN, HEADER, ENV, QUERY = "pw-zq1", "tok-zq2", "hdr-zq3", "env-zq4", "qry-zq5"
BEARER, COOKIE, BODY_PW, FORM_PW, URL_PW = "brr-zq6", "ck-zq7", "bdy-zq8", "frm-zq9", "url-zq0"
SECRETS = (PW, TOKEN, HEADER, ENV, QUERY, BEARER, COOKIE, BODY_PW, FORM_PW, URL_PW)


def reply_tos(base: str) -> list[str]:
    """Every credential form of ``reply_to``, aimed at ``base`` (a URL ending in /hook)."""
    return [
        f"ci:{PW}@{base}",
        f"PUT {TOKEN}@{base}",
        f"http.X-API-Key:{HEADER}@{base}",
        f"$HOOK_ZQ_TOKEN@{base}",
        f"ci:$HOOK_ZQ_TOKEN@{base}",
        f"{base}?token={QUERY}&plain=1",
        f"{base}?api_key={QUERY}",
    ]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def leaks(text: str, allowed: tuple[str, ...] = ()) -> list[str]:
    return [secret for secret in SECRETS if secret in text and secret not in allowed]


@pytest.fixture
def flow(
    tmp_path: Path,
    server: HookServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[dict[str, Any]]:
    """Run the whole flow; yield what it made (apps, ids, errors)."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HOOK_ZQ_TOKEN", ENV)
    app = Flask("secrets", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="k",
        PROPAGATE_EXCEPTIONS=False,
        BGJOBS_AUTOSTART=False,
        BGJOBS_NOTIFY_REPLY_TO=True,
        BGJOBS_RETRY_LIMIT=1,
        BGJOBS_RETRY_BACKOFF=0.01,
        BGJOBS_POLL_INTERVAL=0.01,
        SQLITELOGS_FLUSH_INTERVAL=0,
        SQLITELOGS_ENABLE_REQUEST_BODY_TRACKING=True,
        SQLITELOGS_ENABLE_RESPONSE_TRACKING=True,
    )
    jobs = BackgroundJobs(app)
    logs = SqliteRequestLogger(app)

    @jobs.command
    def work(req: Any = None) -> Any:
        return {"done": req}

    @jobs.command(retry_limit=0)
    def fails(req: Any = None) -> None:
        raise ValueError("it failed, as planned")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Response:
        response = jsonify(ok=True, got=request.get_json(silent=True), token=TOKEN)
        response.set_cookie("session", COOKIE)
        return response

    made: dict[str, Any] = {"app": app, "jobs": jobs, "logs": logs, "errors": []}
    server.status = 500
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    try:
        with app.app_context():
            jobs.start()
            refs = []
            for target in (server.url(), dead):
                for url in reply_tos(target):
                    refs.append(jobs.enqueue_command("work", {"n": len(refs)}, reply_to=url))
                    refs.append(jobs.enqueue_command("fails", None, reply_to=url))
            for number, url in enumerate(reply_tos(server.url())):
                jobs.recurring_command("work", Schedule.hourly, name=f"hook {number}",
                                       reply_to=url)  # fmt: skip
                refs.append(jobs.run_now(f"hook {number}"))
            refused_urls = [
                f"FETCH ci:{PW}@{dead}", f"ci:{PW}@https://h:port/x", f"https://ci:{URL_PW}@h/x",
                f"{TOKEN}@ftp://h/x", f"http.X-Key:{HEADER}%0A@http://h/x",
                f"ci:{PW}@{dead}/" + "x" * 2000,
            ]  # fmt: skip
            for bad in refused_urls:
                with pytest.raises(InvalidJobError) as refused:
                    jobs.enqueue_command("work", None, reply_to=bad)
                made["errors"].append(refused.value)
            for url in reply_tos(dead)[:3]:
                with pytest.raises(ReplyToError) as failed:
                    send_json_callback(url, {"x": 1}, timeout=2)
                made["errors"].append(failed.value)
            # A $VARIABLE is read when the notification runs: it fails then, naming it only.
            missing = f"ci:$HOOK_ZQ_MISSING@{server.url()}"
            refs.append(jobs.enqueue_command("work", None, reply_to=missing))
            for ref in refs:
                jobs.wait_for(ref.id, timeout=20)
            notified = jobs.list_jobs(command="bgjobs.reply_to", limit=1000)
            for summary in notified:
                jobs.wait_for(summary.id, timeout=30)
            made["ids"] = sorted({ref.id for ref in refs} | {s.id for s in notified})
            assert len(notified) >= len(reply_tos(dead)) * 2  # one per completed job
            client = app.test_client()
            client.set_cookie("session", COOKIE)
            headers = {"Authorization": f"Bearer {BEARER}", "X-Api-Key": HEADER}
            client.post(f"/login?password={URL_PW}", json={"password": BODY_PW}, headers=headers)
            client.post("/login", data={"password": FORM_PW, "user": "ann"}, headers=headers)
            client.get(f"/login?next=/x&token={QUERY}", headers=headers)
            client.get(f"/admin/jobs/?token={QUERY}", headers=headers)
            logs.flush()
        yield made
    finally:
        with app.app_context():
            jobs.stop(timeout=5)
            jobs.store().dispose()
            logs.stop()
            logs.store().dispose()


def test_no_secret_anywhere(flow: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """One flow, every place a secret could go."""
    check_log_lines(caplog)
    check_job_records(flow)
    check_exceptions(flow)
    check_admin_pages(flow)
    check_cli(flow)
    check_request_log_files(flow)


def check_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Every record of every logger, formatted with its traceback. urllib3 alone (at DEBUG)
    writes the path and query string of each request it sends: the ``?token=`` form of
    ``reply_to`` shows there, and only there (docs/composition.md says so)."""
    records = caplog.get_records("setup") + caplog.get_records("call")
    assert len(records) > 20, "too little was logged: the capture is not working"
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        line = formatter.format(record)
        allowed = (QUERY,) if record.name.startswith("urllib3") else ()
        assert leaks(line, allowed) == [], line[:2000]


def check_job_records(flow: dict[str, Any]) -> None:
    app, jobs = flow["app"], flow["jobs"]
    owners = 0
    with app.app_context():
        for job_id in flow["ids"]:
            found = jobs.get_job(job_id)
            assert found is not None and found.job is not None
            record = {k: v for k, v in asdict(found.job).items() if k != "future"}
            summary = asdict(found.summary)
            reply_to = record.pop("reply_to", None)
            summary.pop("reply_to", None)
            text = json.dumps([record, summary], default=str)
            assert leaks(text) == [], (job_id, leaks(text))
            if reply_to is not None:
                owners += 1
                assert ENV not in reply_to  # a $VARIABLE is stored as its name
        notifications = jobs.list_jobs(command="bgjobs.reply_to", limit=1000)
        failed = [jobs.get_job(s.id) for s in notifications if s.state.value == "failed"]
    assert owners >= 2 * len(reply_tos("x"))
    assert failed, "no notification failed: the flow did not exercise the errors"
    kinds = {result.failed.error_type for result in failed if result and result.failed}
    assert "ReplyToError" in kinds, kinds
    assert "InvalidJobError" in kinds, kinds  # the unset $VARIABLE


def check_exceptions(flow: dict[str, Any]) -> None:
    for error in flow["errors"]:
        chain: list[BaseException] = []
        current: BaseException | None = error
        while current is not None and current not in chain:
            chain.append(current)
            current = current.__cause__ or current.__context__
        for one in chain:
            text = f"{one} {one!r} {getattr(one, 'url', '')}"
            assert leaks(text) == [], text


def check_admin_pages(flow: dict[str, Any]) -> None:
    app = flow["app"]
    client = app.test_client()
    with app.app_context():
        entries = flow["logs"].query(limit=1000).items
    assert len(entries) >= 4
    good = {"job_id": flow["ids"], "entry_id": [entry.id for entry in entries],
            "kind": ["csv", "jsonl"]}  # fmt: skip
    seen = 0
    for rule in admin_rules(app.url_map, "bgjobs", "sqlitelogs"):
        if rule.endpoint.endswith(".static"):
            continue
        names = list(rule.arguments)
        choices = good[names[0]] if names else [None]
        for value in choices:
            url = fill(rule, [str(value)] if names else [])
            for suffix in ("", "?month=" + entries[0].month, "?per_page=200"):
                response = client.get(url + suffix)
                text = check_response(response, url + suffix, frozenset({200, 404}))
                assert leaks(text) == [], (url, leaks(text))
                seen += 1
    assert seen > 3 * len(flow["ids"])


def check_cli(flow: dict[str, Any]) -> None:
    app = flow["app"]
    runner = app.test_cli_runner()
    commands = [
        ["jobs", "list", "--limit", "1000"],
        ["jobs", "list", "--json", "--limit", "1000"],
        ["jobs", "schedule"],
        ["sqlitelogs", "stats"],
        ["sqlitelogs", "stats", "--json"],
    ]
    for job_id in flow["ids"]:
        commands += [["jobs", "show", str(job_id)], ["jobs", "show", str(job_id), "--json"]]
    for args in commands:
        result = runner.invoke(args=args)
        assert result.exit_code == 0, (args, result.output)
        assert leaks(result.output) == [], (args, leaks(result.output))
    shown = runner.invoke(args=["jobs", "show", str(flow["ids"][0])]).output
    assert "reply_to: ***@" in shown or "reply_to: " in shown


def check_request_log_files(flow: dict[str, Any]) -> None:
    folder = Path(flow["app"].instance_path) / "requests"
    stored = b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())
    assert leaks(stored.decode("latin-1")) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h/x?token=abc&a=1", "https://h/x?token=***&a=1"),
        ("PUT u:p@https://h/x?api_key=1;sig=2#frag", "PUT ***@https://h/x?api_key=***;sig=***#frag"),
        ("https://h/x?X-Amz-Signature=s&monkey=1&key=k", "https://h/x?X-Amz-Signature=***&monkey=1&key=***"),
        ("https://h/x?pass%77ord=1&to=a@b", "https://h/x?pass%77ord=***&to=a@b"),
        ("https://h/x?access_token=", "https://h/x?access_token=***"),
        ("https://h/x?token", "https://h/x?token"),
    ],
)  # fmt: skip
def test_reply_to_query_secrets_are_redacted(url: str, shown: str) -> None:
    """Regression: ``redact_reply_to`` masked credentials but showed ``?token=`` values."""
    assert redact_reply_to(url) == shown
