"""``send_json_callback`` and the reply_to URL syntax, end to end against a local HTTP server."""

from __future__ import annotations

import base64
import pickle
import socket
import threading
import time
import traceback
from pathlib import Path

import pytest

from flask_bgjobs import callbacks
from flask_bgjobs.callbacks import (
    ReplyTo,
    ReplyToError,
    parse_reply_to,
    redact_reply_to,
    send_json_callback,
)
from flask_bgjobs.errors import BgJobsError, InvalidJobError

from .hooks import HookServer


@pytest.fixture(autouse=True)
def _no_proxy(no_proxy_for_localhost: None) -> None:
    """Every test here talks to the local server."""


def basic(user: str, password: str) -> str:
    raw = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def closed_port() -> int:
    """A port on 127.0.0.1 on which nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def messages(exc: BaseException) -> str:
    """Every message and repr of ``exc`` and of the exceptions chained to it."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *traceback.format_exception_only(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret!r} leaked into: {text}"


# -- every URL form, as the server receives it ---------------------------------------------------


def test_default_is_post_with_a_json_body(server: HookServer) -> None:
    payload = {"job": 7, "result": [1, 2.5, None, True], "text": "Grüße"}
    response = send_json_callback(server.url("/hooks/7?x=1&y=two"), payload)

    assert response.status_code == 200
    assert response.json() == {"received": True}
    got = server.last
    assert got.method == "POST"
    assert got.path == "/hooks/7?x=1&y=two"
    assert got.headers["Content-Type"] == "application/json"
    assert got.json() == payload
    assert "Authorization" not in got.headers
    assert "Cookie" not in got.headers


@pytest.mark.parametrize(
    ("prefix", "method"),
    [
        ("GET", "GET"),
        ("POST", "POST"),
        ("PUT", "PUT"),
        ("PATCH", "PATCH"),
        ("DELETE", "DELETE"),
        ("put", "PUT"),
        ("Patch", "PATCH"),
        ("delete\t ", "DELETE"),
    ],
)
def test_method_prefix(server: HookServer, prefix: str, method: str) -> None:
    sep = "" if prefix[-1].isspace() else " "
    send_json_callback(f"{prefix}{sep}{server.url()}", {"n": 1})

    assert server.last.method == method
    assert server.last.path == "/hook"
    assert server.last.json() == {"n": 1}
    assert server.last.headers["Content-Type"] == "application/json"


def test_basic_auth(server: HookServer) -> None:
    send_json_callback(f"ci-bot:hunter2@{server.url()}", {"ok": True})

    assert server.last.method == "POST"
    assert server.last.headers["Authorization"] == basic("ci-bot", "hunter2")
    assert server.last.json() == {"ok": True}


def test_basic_auth_with_method_prefix(server: HookServer) -> None:
    send_json_callback(f"PUT ci-bot:hunter2@{server.url('/put/here')}", [1, 2])

    assert server.last.method == "PUT"
    assert server.last.path == "/put/here"
    assert server.last.headers["Authorization"] == basic("ci-bot", "hunter2")
    assert server.last.json() == [1, 2]


def test_header_credential(server: HookServer) -> None:
    send_json_callback(f"http.X-API-Key:k-123-abc@{server.url()}", {"ok": 1})

    assert server.last.headers["X-Api-Key"] == "k-123-abc"
    assert "Authorization" not in server.last.headers
    assert server.last.headers["Content-Type"] == "application/json"


def test_bearer_token(server: HookServer) -> None:
    send_json_callback(f"PATCH tok.en-123_XYZ@{server.url()}", {"ok": 1})

    assert server.last.method == "PATCH"
    assert server.last.headers["Authorization"] == "Bearer tok.en-123_XYZ"


def test_token_from_environment(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", "env-token-value")
    send_json_callback(f"$HOOK_TOKEN@{server.url()}", {})

    assert server.last.headers["Authorization"] == "Bearer env-token-value"


def test_password_from_environment(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_PASSWORD", "env:pass@word")
    send_json_callback(f"DELETE deployer:$HOOK_PASSWORD@{server.url()}", {"id": 3})

    assert server.last.method == "DELETE"
    assert server.last.headers["Authorization"] == basic("deployer", "env:pass@word")
    assert server.last.json() == {"id": 3}


def test_header_value_from_environment(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "env-header-value")
    send_json_callback(f"http.X-API-Key:$API_KEY@{server.url()}", {})

    assert server.last.headers["X-Api-Key"] == "env-header-value"


def test_url_encoded_basic_auth(server: HookServer) -> None:
    # '@' and ':' in the password, '@' in the user name, and a UTF-8 character.
    send_json_callback(f"us%40er:p%40ss%3Aw%3Ard%C3%A4@{server.url()}", {})

    assert server.last.headers["Authorization"] == basic("us@er", "p@ss:w:rdä")


def test_raw_colon_in_password_belongs_to_the_password(server: HookServer) -> None:
    send_json_callback(f"user:pa:ss@{server.url()}", {})

    assert server.last.headers["Authorization"] == basic("user", "pa:ss")


def test_url_encoded_header_and_token(server: HookServer) -> None:
    send_json_callback(f"http.X%2DKey:v%40l%3Aue+1@{server.url()}", {})
    assert server.last.headers["X-Key"] == "v@l:ue+1"

    send_json_callback(f"t%40k%3Aen%2F1@{server.url()}", {})
    assert server.last.headers["Authorization"] == "Bearer t@k:en/1"


def test_encoded_dollar_is_literal(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_AN_ENV", raising=False)
    send_json_callback(f"%24NOT_AN_ENV@{server.url()}", {})

    assert server.last.headers["Authorization"] == "Bearer $NOT_AN_ENV"


def test_query_string_and_https_form_parse(server: HookServer) -> None:
    parsed = parse_reply_to("PUT tok@HTTPS://example.org:8443/a/b?c=d#frag")
    assert parsed.method == "PUT"
    assert parsed.url == "HTTPS://example.org:8443/a/b?c=d#frag"
    assert parsed.headers == {"Authorization": "Bearer tok"}
    assert parsed.auth is None


def test_2xx_answers_are_returned(server: HookServer) -> None:
    for status in (200, 201, 202, 204):
        server.status = status
        assert send_json_callback(server.url(), {"s": status}).status_code == status
    assert len(server.received) == 4


def test_server_cookies_are_not_kept(server: HookServer) -> None:
    server.extra_headers = [("Set-Cookie", "session=abc; Path=/")]
    send_json_callback(server.url(), {})
    send_json_callback(server.url(), {})

    assert "Cookie" not in server.received[1].headers


def test_netrc_does_not_replace_the_bearer_token(
    server: HookServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    send_json_callback(f"the-token@{server.url()}", {})
    assert server.last.headers["Authorization"] == "Bearer the-token"

    send_json_callback(server.url(), {})
    assert "Authorization" not in server.last.headers


def test_threads_share_one_session(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callbacks, "_session", None)
    sessions: list[object] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def send(n: int) -> None:
        try:
            start.wait(timeout=5)
            sessions.append(callbacks._get_session())
            for i in range(5):
                send_json_callback(f"tok{n}@{server.url(f'/t{n}/{i}')}", {"n": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)

    assert errors == []
    assert len({id(session) for session in sessions}) == 1
    assert len(server.received) == 20
    for got in server.received:
        body = got.json()
        assert got.path == f"/t{body['n']}/{body['i']}"
        assert got.headers["Authorization"] == f"Bearer tok{body['n']}"


# -- failed deliveries ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 404, 409, 500, 503])
def test_non_2xx_raises_with_the_status(server: HookServer, status: int) -> None:
    server.status = status
    with pytest.raises(ReplyToError) as caught:
        send_json_callback(f"PUT user:pw-secret@{server.url()}", {"x": 1})

    exc = caught.value
    assert isinstance(exc, BgJobsError)
    assert exc.status == status
    assert exc.url == f"PUT {server.url()}"
    assert str(status) in str(exc)
    assert server.url() in str(exc)
    assert_no_secret(messages(exc), "pw-secret", "user:")


def test_redirects_are_not_followed(server: HookServer) -> None:
    server.status = 302
    with pytest.raises(ReplyToError) as caught:
        send_json_callback(f"http.X-API-Key:key-secret@{server.url()}", {})

    assert caught.value.status == 302
    assert [got.path for got in server.received] == ["/hook"]


def test_connection_refused_raises() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    with pytest.raises(ReplyToError) as caught:
        send_json_callback(f"tok-secret@{url}", {}, timeout=2)

    assert caught.value.status is None
    assert caught.value.url == f"POST {url}"
    assert "could not be reached" in str(caught.value)
    assert_no_secret(messages(caught.value), "tok-secret")


def test_timeout_raises(server: HookServer) -> None:
    server.hold = 5.0  # released by the fixture's teardown
    started = time.monotonic()
    with pytest.raises(ReplyToError) as caught:
        send_json_callback(f"u:pw-secret@{server.url()}", {}, timeout=0.2)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert caught.value.status is None
    assert "0.2 s" in str(caught.value)
    assert len(server.received) == 1  # the request did arrive
    assert_no_secret(messages(caught.value), "pw-secret")


def test_payload_that_is_not_json_is_refused_before_sending(server: HookServer) -> None:
    with pytest.raises(InvalidJobError, match="JSON"):
        send_json_callback(server.url(), {"when": object()})
    with pytest.raises(InvalidJobError, match="JSON"):
        send_json_callback(server.url(), {"x": float("nan")})
    assert server.received == []


def test_reply_to_error_pickles() -> None:
    exc = ReplyToError("reply_to POST http://h/x answered 500", url="POST http://h/x", status=500)
    copy = pickle.loads(pickle.dumps(exc))

    assert isinstance(copy, ReplyToError)
    assert (str(copy), copy.url, copy.status) == (str(exc), exc.url, exc.status)


# -- malformed values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("example.org/hook", "no 'http://'"),
        ("tok@example.org/hook", "no 'http://'"),
        ("//example.org/hook", "no 'http://'"),
        ("ftp://example.org/hook", "only http and https"),
        ("tok@ftp://example.org/hook", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("@https://example.org/hook", "nothing before '@'"),
        ("PUT @https://example.org/hook", "nothing before '@'"),
        ("FETCH https://example.org/hook", "unknown method"),
        ("HEAD https://example.org/hook", "unknown method"),
        ("https://", "no host"),
        ("https:///path", "no host"),
        ("https://example.org:port/x", "malformed"),
        ("https://example.org/a b", "whitespace"),
        ("https://user:pw@example.org/x", "before the scheme"),
        ("http.X-Key@https://example.org/x", "name and a value"),
        ("http.:value@https://example.org/x", "name and a value"),
        ("http.X-Key:@https://example.org/x", "empty"),
        ("http.Bad Name:v@https://example.org/x", "not a valid HTTP header name"),
        ("http.X-Key:a%0Ab@https://example.org/x", "characters a header cannot carry"),
        ("a%0Db@https://example.org/x", "characters a header cannot carry"),
        ("%C3%A4@https://example.org/x", "characters a header cannot carry"),
        (":@https://example.org/x", "both the Basic auth user and password are empty"),
        ("u%3Ax:pw@https://example.org/x", "cannot contain ':'"),
        ("$@https://example.org/x", "names no environment variable"),
    ],
)
def test_malformed_values_are_rejected(url: str, problem: str) -> None:
    with pytest.raises(InvalidJobError) as caught:
        parse_reply_to(url)
    assert problem in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "expected '[METHOD ][credentials@]http(s)://host/path'" in str(caught.value)


def test_malformed_value_is_rejected_by_send_without_a_request(server: HookServer) -> None:
    with pytest.raises(InvalidJobError, match="unknown method"):
        send_json_callback(f"FETCH {server.url()}", {})
    assert server.received == []


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_HOOK_TOKEN", raising=False)
    for url in (
        "$NO_SUCH_HOOK_TOKEN@https://example.org/x",
        "user:$NO_SUCH_HOOK_TOKEN@https://example.org/x",
        "http.X-Key:$NO_SUCH_HOOK_TOKEN@https://example.org/x",
    ):
        with pytest.raises(InvalidJobError, match=r"'NO_SUCH_HOOK_TOKEN'.*is not set"):
            parse_reply_to(url)


def test_environment_value_a_header_cannot_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAD_TOKEN", "line-secret\n")
    with pytest.raises(InvalidJobError, match="cannot carry") as caught:
        parse_reply_to("$BAD_TOKEN@https://example.org/x")
    assert_no_secret(messages(caught.value), "line-secret")


# -- parsing without a network -------------------------------------------------------------------


def test_parse_forms() -> None:
    env = {"TOKEN": "from-env", "PW": "pw-env"}
    assert parse_reply_to("http://h/x", environ=env) == ReplyTo("POST", "http://h/x", {}, None)
    assert parse_reply_to("  get   https://h/x  ", environ=env) == ReplyTo("GET", "https://h/x")
    assert parse_reply_to("a:b@http://h/x", environ=env) == ReplyTo(
        "POST", "http://h/x", {}, ("a", "b")
    )
    assert parse_reply_to("a:$PW@http://h/x", environ=env).auth == ("a", "pw-env")
    assert parse_reply_to(":only-pw@http://h/x", environ=env).auth == ("", "only-pw")
    assert parse_reply_to("only-user:@http://h/x", environ=env).auth == ("only-user", "")
    assert parse_reply_to("$TOKEN@http://h/x", environ=env).headers == {
        "Authorization": "Bearer from-env"
    }
    assert parse_reply_to("http.X-A:$TOKEN@http://h/x", environ=env).headers == {"X-A": "from-env"}
    # The user name is never read from the environment.
    assert parse_reply_to("$TOKEN:pw@http://h/x", environ=env).auth == ("$TOKEN", "pw")
    # An unencoded '@' in a password: the credentials end at the '@' before the scheme.
    assert parse_reply_to("u:p@ss@http://h/x", environ=env).auth == ("u", "p@ss")
    # An '@' later in the URL is the URL's own.
    assert parse_reply_to("http://h/x?to=a@http://evil/", environ=env) == ReplyTo(
        "POST", "http://h/x?to=a@http://evil/"
    )


def test_reply_to_repr_masks_secrets() -> None:
    env = {"K": "env-secret"}
    for url in ("u:pw-secret@http://h/x", "tok-secret@http://h/x", "http.X-K:$K@http://h/x"):
        shown = repr(parse_reply_to(url, environ=env))
        assert_no_secret(shown, "pw-secret", "tok-secret", "env-secret", "u:")
        assert "http://h/x" in shown


# -- no secret in messages, reprs and redacted values --------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h/x", "https://h/x"),
        ("PUT https://h/x", "PUT https://h/x"),
        ("user:hunter2@https://h/x", "***@https://h/x"),
        ("PUT user:hunter2@https://h/x", "PUT ***@https://h/x"),
        ("http.X-API-Key:k-secret@https://h/x?a=b", "***@https://h/x?a=b"),
        ("tok-secret@http://h:8080/x", "***@http://h:8080/x"),
        ("$HOOK_TOKEN@https://h/x", "***@https://h/x"),
        ("u%40x:p%40ss%3Aword@https://h/x", "***@https://h/x"),
        ("u:p@ss@https://h/x", "***@https://h/x"),
        ("https://user:hunter2@h/x", "https://***@h/x"),
        ("tok-secret@https://user:hunter2@h/x", "***@https://***@h/x"),
        ("https://h/x?to=a@b", "https://h/x?to=a@b"),
        ("tok-secret@ftp://h/x", "***@ftp://h/x"),
        ("tok-secret@h/x", "***@h/x"),
        ("FETCH user:hunter2@h/x", "FETCH ***@h/x"),
        ("", ""),
    ],
)
def test_redact_reply_to(url: str, shown: str) -> None:
    assert redact_reply_to(url) == shown


def test_no_secret_in_any_error(server: HookServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = ("hunter2", "tok-secret", "hdr-secret", "env-secret", "p@ss:word")
    monkeypatch.setenv("HOOK_SECRET", "env-secret")
    monkeypatch.delenv("HOOK_MISSING", raising=False)
    dead = f"http://127.0.0.1:{closed_port()}/hook"
    server.status = 500
    forms = [
        "ci:hunter2@{}",
        "PUT tok-secret@{}",
        "http.X-API-Key:hdr-secret@{}",
        "$HOOK_SECRET@{}",
        "ci:$HOOK_SECRET@{}",
        "http.X-API-Key:$HOOK_SECRET@{}",
        "ci:p%40ss%3Aword@{}",
    ]
    errors: list[BaseException] = []
    for form in forms:
        for target in (server.url(), dead):
            with pytest.raises(ReplyToError) as caught:
                send_json_callback(form.format(target), {"x": 1}, timeout=2)
            errors.append(caught.value)
    malformed = [
        "FETCH ci:hunter2@http://h/x",
        "tok-secret@ftp://h/x",
        "tok-secret@h/x",
        "ci:hunter2@http://h:port/x",
        "ci:hunter2@https://",
        "http.X-Key:hdr-secret@https://h/a b",
        "http.Bad Key:hdr-secret@https://h/x",
        "https://ci:hunter2@h/x",
        "tok-secret@https://ci:hunter2@h/x",
        "ci:$HOOK_MISSING@http://h/x",
        "http.X-Key:hdr-secret%0A@http://h/x",
    ]
    for url in malformed:
        with pytest.raises(InvalidJobError) as caught_invalid:
            send_json_callback(url, {})
        errors.append(caught_invalid.value)

    assert len(errors) == 2 * len(forms) + len(malformed)
    for exc in errors:
        assert_no_secret(messages(exc), *secrets)
    for url in [form.format(server.url()) for form in forms] + malformed:
        assert_no_secret(redact_reply_to(url), *secrets)
