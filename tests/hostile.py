"""Shared by the hostile-input tests (``tests/test_hostile_*.py``): payloads, hypothesis
strategies, and the checks every admin response must pass.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from werkzeug.routing import Map, Rule

#: Reproducible and modest: the same examples on every run, no example database.
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

#: Values that would run, or break a page, if a page showed them unescaped.
MARKUP = [
    '<script>alert("hx")</script>',
    '"><img src=x onerror=alert(1)>',
    "'><svg/onload=alert(1)>",
    "</textarea><script>hx()</script>",
    "</title><hx-mark>",
    "<!--<hx-mark>-->",
    "javascript:alert(1)",
]
#: Values aimed at the SQL, the parsers, the encoders and the layout.
ODD = [
    "1; DROP TABLE job_summary;--",
    "' OR '1'='1",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "%_%",
    "\x00",
    "a\x00b",
    "\r\nSet-Cookie: hx=1",
    "\x1b[31m",
    "\u202eevil\u202c",
    "\u200b",
    "\ufeff",
    "\U0001d573\U0001d59d",  # mathematical letters
    "\ud800",
    "a\udfffb",
    "-1",
    "0",
    "-0",
    "+1",
    "1.5",
    "1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "9" * 40,
    "-" + "9" * 400,
    "0x10",
    "\uff12",  # a full-width 2
    "2026-13",
    "2026-02-30",
    "0000-00",
    "9999-12",
    "2026-03-15T25:61",
    "9999-12-31T23:59:59.999999+14:00",
    "0001-01-01",
    "--date",
    "-date",
    "duration",
    "-duration_ms",
    "timestamp;DROP",
    "true",
    "yes",
    "[]",
    "{}",
    "null",
    "../../etc/passwd",
    "//evil.example/x",
    "https://evil.example/",
    " ",
    "",
]
PAYLOADS = MARKUP + ODD

#: Every query parameter the admin pages of both extensions read (and a few they do not).
PARAMS = [
    "month", "command", "tag", "batch_id", "created_by", "user_id", "state", "q", "sort", "page",
    "per_page", "limit", "notice", "job", "n", "skipped", "task", "since", "until", "method",
    "status", "status_class", "path", "endpoint", "user", "ip", "trace_id", "min_ms", "errors",
    "flushed", "next", "name", "enabled", "dependents", "x", "csrf_token",
]  # fmt: skip
#: Notices whose text takes values from the query string.
NOTICES = ["cancelled", "not-cancelled", "requeued", "bulk-requeued", "bulk-more", "ran", "enabled"]


def encode(value: str | bytes) -> str:
    """Percent-encode a value for a URL; lone surrogates go as the bytes a broken encoder sends."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return quote_from_bytes(data, safe="")


def values() -> st.SearchStrategy[str | bytes]:
    """Hostile parameter values."""
    return st.one_of(
        st.sampled_from(PAYLOADS),
        st.sampled_from(NOTICES),
        st.text(max_size=30),
        st.text(st.characters(exclude_categories=()), max_size=10),  # surrogates too
        st.integers(min_value=-(2**80), max_value=2**80).map(str),
        st.floats().map(repr),
        st.builds(
            lambda char, count: char * count,
            st.sampled_from(["A", "9", "%", "<", "é"]),
            st.integers(min_value=150, max_value=5000),
        ),
        st.binary(max_size=24),
    )


def queries() -> st.SearchStrategy[str]:
    """Query strings: known and unknown names, repeated names, hostile values."""
    names = st.one_of(st.sampled_from(PARAMS), st.sampled_from(PAYLOADS), st.text(max_size=8))
    pairs = st.lists(st.tuples(names, values()), max_size=6)
    return pairs.map(lambda items: "&".join(f"{encode(k)}={encode(v)}" for k, v in items))


def route_paths(
    rules: list[Rule], good: dict[str, list[Any]]
) -> st.SearchStrategy[tuple[Rule, str]]:
    """A rule and a path for it: each argument a value that exists (``good``) or a hostile one."""

    def path_of(rule: Rule) -> st.SearchStrategy[tuple[Rule, str]]:
        names = re.findall(r"<(?:[^:>]+:)?([^>]+)>", rule.rule)
        choices = [
            st.one_of(
                st.sampled_from([encode(str(v)) for v in good_values(rule, name, good)]),
                st.sampled_from(PAYLOADS).map(encode),
                st.integers(min_value=-(2**70), max_value=2**70).map(str),
                st.binary(min_size=1, max_size=12).map(encode),
            )
            for name in names
        ]
        return st.tuples(*choices).map(lambda parts: (rule, fill(rule, list(parts))))

    return st.sampled_from(rules).flatmap(path_of)


def good_values(rule: Rule, name: str, good: dict[str, list[Any]]) -> list[Any]:
    """The values of ``good`` for argument ``name`` of ``rule`` (``blueprint.name`` first)."""
    return good.get(f"{rule.endpoint.split('.')[0]}.{name}", good.get(name, [1]))


def fill(rule: Rule, parts: list[str]) -> str:
    """``rule``'s path with its arguments replaced, in order, by ``parts`` (already encoded)."""
    pieces = iter(parts)
    return re.sub(r"<[^>]+>", lambda _match: next(pieces), rule.rule)


def admin_rules(url_map: Map, *blueprints: str, method: str = "GET") -> list[Rule]:
    """The rules of the admin blueprints that answer ``method``, in a stable order."""
    found = [
        rule
        for rule in url_map.iter_rules()
        if rule.endpoint.split(".", 1)[0] in blueprints and method in (rule.methods or ())
    ]
    return sorted(found, key=lambda rule: (rule.rule, rule.endpoint))


# -- checks ----------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    """The real tags of a page (text and attribute values stay text, however they read)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _value in attrs}
        shown = f"<{tag} {attrs}>"[:200]
        if tag == "script" and "src" not in names:
            self.problems.append(f"an inline script: {shown}")
        if tag.startswith("hx-") or tag in ("iframe", "object", "embed"):
            self.problems.append(f"a payload's tag: {shown}")
        if tag == "img" and ("src", "x") in attrs:
            self.problems.append(f"a payload's tag: {shown}")
        for name, value in attrs:
            if name.startswith("on") or "/" in tag:
                self.problems.append(f"an event handler: {shown}")
            if name in ("href", "src", "action", "formaction") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.problems.append(f"a javascript: URL: {shown}")

    def handle_comment(self, data: str) -> None:
        if "<" in data:
            self.problems.append(f"a comment a payload opened: {data[:200]!r}")


def check_html(text: str, where: str) -> None:
    """No payload shows unescaped: no raw markup payload, no tag a payload could have made."""
    for payload in MARKUP:
        if "<" in payload:
            assert payload not in text, f"{where}: unescaped {payload!r}"
    parser = _Tags()
    parser.feed(text)
    parser.close()
    assert not parser.problems, f"{where}: {parser.problems[:3]}"


def check_json(text: str, where: str) -> Any:
    """Strict JSON (no NaN or Infinity, which browsers refuse); returns the document."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{where}: {constant} in JSON")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError as error:
        raise AssertionError(f"{where}: invalid JSON ({error}): {text[:300]!r}") from None


#: Statuses an admin response may have; anything else (a 500 above all) fails.
ALLOWED = frozenset({200, 303, 304, 308, 400, 403, 404, 405, 409})


def check_response(
    response: Any, where: str, allowed: frozenset[int] = ALLOWED, *, head: bool = False
) -> str:
    """The checks every admin response passes (``head``: an answer to HEAD, without a body);
    returns its text."""
    status = response.status_code
    body = response.get_data()
    response.close()
    text = body.decode("utf-8")  # a response that is not UTF-8 fails here
    assert status in allowed, f"{where}: {status}: {text[:1500]}"
    assert response.headers.get("Content-Security-Policy", "").startswith("default-src 'none'"), (
        f"{where}: {status} without CSP"
    )
    assert response.headers.get("X-Content-Type-Options") == "nosniff", where
    mimetype = response.mimetype or ""
    if head:
        assert not text, where
    elif mimetype == "text/html":
        check_html(text, where)
    elif mimetype == "application/json":
        check_json(text, where)
    elif mimetype == "application/x-ndjson":
        for line in text.splitlines():
            check_json(line, where)
    location = response.headers.get("Location")
    if location is not None:
        assert location.startswith("/admin/") or location.startswith("http://localhost/admin/"), (
            f"{where}: redirect out of the admin: {location!r}"
        )
    return text
