"""Hostile values given to enqueue (issue #8): a clear error or a stored job that reads back
equal, never a corrupted or half-written row.

After every refused call the database is checked: no row was added to the queue or the
summaries. After every accepted one, the stored JSON is strict JSON and reads back equal to what
was given (tuples come back as lists: JSON has no tuple). The same holds for the options, for
``recurring_command`` and for ``enqueue_api``, and for what a running job reports (its error,
log and status), which SQLite must be able to store.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from flask_bgjobs import BackgroundJobs, InvalidJobError, JobState, Schedule, current_job
from flask_bgjobs.errors import BgJobsError, UnknownCommandError

from .hostile import MARKUP, SETTINGS

pytestmark = pytest.mark.chaos

TEN_MB = 10 * 1024 * 1024


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Broken:
    """A dataclass whose fields cannot be copied: reading it raises."""

    value: Any


class Unreadable(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("this dict cannot be read")

    def __iter__(self) -> Any:
        raise RuntimeError("this dict cannot be read")


class NoCopy:
    def __deepcopy__(self, memo: Any) -> Any:
        raise RuntimeError("no copies")


class Site:
    def __init__(self, root: Path) -> None:
        self.app = Flask("hostile-enqueue", instance_path=str(root))
        self.app.config.update(TESTING=True, BGJOBS_AUTOSTART=False, BGJOBS_EAGER=False)
        self.jobs = BackgroundJobs(self.app)
        self.database = root / "jobs" / "jobs.db"

        @self.jobs.command
        def echo(req: Any = None) -> Any:
            return req

        @self.jobs.command
        def point(req: Point) -> None: ...

        @self.app.post("/api/items/<int:item_id>")
        def item(item_id: int) -> dict[str, Any]:
            return {"id": item_id}

        with self.app.app_context():
            self.jobs.enqueue_command("echo", "first")  # creates the files

    def rows(self) -> tuple[int, int, int]:
        with sqlite3.connect(self.database) as db:
            return (
                db.execute("SELECT count(*) FROM background_job").fetchone()[0],
                db.execute("SELECT count(*) FROM job_summary").fetchone()[0],
                db.execute("SELECT count(*) FROM scheduled_task").fetchone()[0],
            )

    def stored(self, job_id: int) -> dict[str, Any]:
        """The raw queue row: every JSON column must be strict JSON."""
        with sqlite3.connect(self.database) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM background_job WHERE id = ?", (job_id,)).fetchone()
        assert row is not None
        for name in ("request", "args", "options", "history"):
            if row[name] is not None:
                strict(row[name])
        return dict(row)

    def attempt(self, call: Callable[[], Any]) -> Any:
        """Run ``call``; a refusal must be a clear error that left no row behind."""
        before = self.rows()
        with self.app.app_context():
            try:
                done = call()
                note_event("stored")
                return done
            except BgJobsError as error:
                note_event(f"refused: {type(error).__name__}")
                assert isinstance(error, (InvalidJobError, UnknownCommandError)), repr(error)
                assert str(error).strip(), "an error without a message"
                assert len(str(error)) < 2000, "an error that repeats a huge value"
                assert self.rows() == before, f"a refused call wrote rows: {error}"
                return error


def note_event(text: str) -> None:
    """Count it in hypothesis's statistics (``--hypothesis-show-statistics``)."""
    if currently_in_test_context():
        event(text)


def strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} stored in JSON")

    return json.loads(text, parse_constant=refuse)


def as_json(value: Any) -> Any:
    """What JSON gives back for ``value`` (tuples become lists; dataclasses objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    made = Site(tmp_path_factory.mktemp("hostile-enqueue"))
    yield made
    with made.app.app_context():
        made.jobs.store().dispose()


# -- the request -----------------------------------------------------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**4000), max_value=10**4000),
    st.floats(),  # NaN and infinities included: refused
    st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates included
    st.sampled_from(MARKUP),
    st.binary(max_size=4),  # refused
    st.sets(st.integers(), max_size=2),  # refused
    st.just(Decimal("1.5")),  # refused
    st.just(date(2026, 3, 15)),  # refused
)
json_like = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(
            st.text(st.characters(exclude_categories=()), max_size=8), children, max_size=4
        ),
        st.dictionaries(
            st.one_of(st.integers(), st.none(), st.booleans()), children, min_size=1, max_size=2
        ),  # refused: keys that are not strings
    ),
    max_leaves=12,
)


@settings(SETTINGS, max_examples=300)
@given(request=json_like)
def test_any_request_is_refused_clearly_or_stored_exactly(site: Site, request: Any) -> None:
    outcome = site.attempt(lambda: site.jobs.enqueue_command("echo", request))
    if isinstance(outcome, BgJobsError):
        assert "request must be JSON-serialisable" in str(outcome)
        return
    site.stored(outcome.id)
    with site.app.app_context():
        found = site.jobs.get_job(outcome.id)
    assert found is not None and found.job is not None
    assert found.job.request == as_json(request)


@pytest.mark.parametrize(
    ("request_", "refused"),
    [
        pytest.param(float("nan"), "Out of range float", id="nan"),
        pytest.param({"x": [math.inf]}, "Out of range float", id="infinity"),
        pytest.param({1: "x"}, "keys must be strings", id="int-key"),
        pytest.param({("a", "b"): 1}, "keys must be strings", id="tuple-key"),
        pytest.param(b"\xff\xfe", "bytes is not JSON serializable", id="bytes"),
        pytest.param({"s": {1, 2}}, "set is not JSON serializable", id="set"),
        pytest.param(datetime(2026, 3, 15), "datetime is not JSON serializable", id="datetime"),
        pytest.param(object(), "object is not JSON serializable", id="object"),
        pytest.param(10**5000, "Exceeds the limit", id="int-of-5000-digits"),
        pytest.param(Unreadable(a=1), "this dict cannot be read", id="dict-that-raises"),
        pytest.param(Broken(NoCopy()), "no copies", id="dataclass-that-raises"),
    ],
)
def test_values_json_cannot_hold_are_refused(site: Site, request_: Any, refused: str) -> None:
    outcome = site.attempt(lambda: site.jobs.enqueue_command("echo", request_))
    assert isinstance(outcome, InvalidJobError), outcome
    assert refused in str(outcome)


def nested(levels: int, inner: Any = "bottom") -> Any:
    """``levels`` lists, one in the other."""
    value = inner
    for _ in range(levels):
        value = [value]
    return value


def test_deep_nesting_is_refused_past_200_levels(site: Site) -> None:
    """Regression: 985 levels were stored (the encoder fitted in the stack) but could not be
    read back (``get_job`` and the admin page raised RecursionError): a row that broke reads."""
    for levels in (201, 985, 10_000):
        outcome = site.attempt(lambda n=levels: site.jobs.enqueue_command("echo", nested(n)))
        assert isinstance(outcome, InvalidJobError), levels
        assert "deeper than 200 levels" in str(outcome)
    ref = site.attempt(lambda: site.jobs.enqueue_command("echo", nested(200)))
    with site.app.app_context():
        found = site.jobs.get_job(ref.id)
    assert found is not None and found.job is not None and found.job.request == nested(200)


def test_a_request_that_contains_itself_is_refused_not_a_hang(site: Site) -> None:
    """Regression: the check of dict keys walked a self-containing list forever."""
    loop: list[Any] = []
    loop.append(loop)
    knot: dict[str, Any] = {}
    knot["self"] = knot
    for value in (loop, knot, {"a": [1, {"b": loop}]}):
        outcome = site.attempt(lambda v=value: site.jobs.enqueue_command("echo", v))
        assert isinstance(outcome, InvalidJobError)


def test_big_values_are_stored_whole(site: Site) -> None:
    big = "<hx>" * (TEN_MB // 4)
    cases = [
        lambda: site.jobs.enqueue_command("echo", big),
        lambda: site.jobs.enqueue_command("echo", {"list": list(range(500_000))}),
        lambda: site.jobs.enqueue_command("echo", None, args={"blob": big}),
        lambda: site.jobs.enqueue_command("echo", {"\ud800": "\udfff" * 1000}),
        lambda: site.jobs.enqueue_command("echo", 10**4000),
        lambda: site.jobs.enqueue_command("echo", [5e-324, -0.0, 1.7976931348623157e308]),
    ]
    for call in cases:
        ref = site.attempt(call)
        assert not isinstance(ref, BaseException), ref
        site.stored(ref.id)
        with site.app.app_context():
            found = site.jobs.get_job(ref.id)
        assert found is not None and found.job is not None
    assert found.job.request == [5e-324, -0.0, 1.7976931348623157e308]
    with site.app.app_context():
        args_job = site.jobs.list_jobs(args={"blob": big}, limit=1)
    assert len(args_job) == 1


def test_a_dataclass_request_that_does_not_fit_is_refused(site: Site) -> None:
    for request_ in ({"x": 1}, {"x": 1, "y": 2, "z": 3}, [1, 2], "point", {"\ud800": 1}):
        outcome = site.attempt(lambda r=request_: site.jobs.enqueue_command("point", r))
        assert isinstance(outcome, InvalidJobError), request_
    ref = site.attempt(lambda: site.jobs.enqueue_command("point", Point(1, 2)))
    with site.app.app_context():
        found = site.jobs.get_job(ref.id)
    assert found is not None and found.job is not None and found.job.request == {"x": 1, "y": 2}


# -- the options -----------------------------------------------------------------------------------

texts = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=30),
    st.sampled_from([*MARKUP, "", " ", "\x00", "\ud800", "a" * 200, "a" * 201, "é" * 300]),
    st.integers(),
    st.floats(),
    st.binary(max_size=4),
    st.none(),
)
#: Mostly text an option may hold (any character but a lone surrogate, 1 to 200 of them).
names = st.one_of(st.text(min_size=1, max_size=200), st.sampled_from(MARKUP), texts)
options = st.fixed_dictionaries(
    {},
    optional={
        "tag": names,
        "batch_id": names,
        "created_by": names,
        "user_id": names,
        "worker": names,
        "ref_id": names,
        "reply_to": st.one_of(
            texts,
            st.sampled_from(
                [
                    "https://hooks.example.org/x",
                    "PUT u:pw@https://h/x?token=t",
                    "tok@https://h/",
                    "$HOOK_TOKEN@https://h/",
                    "https://u:pw@h/x",
                    "ftp://h/x",
                    "https://h/" + "x" * 3000,
                ]
            ),
        ),
        "args": st.one_of(
            st.dictionaries(st.text(), st.text(), max_size=3),
            st.dictionaries(texts, texts, max_size=3),
            st.lists(texts, max_size=2),
            texts,
        ),
        "retry_limit": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats()),
        "timeout": st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70)),
        "depends_on": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), texts),
        "parent_id": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), texts),
        "run_after": st.one_of(
            st.datetimes(), st.datetimes(timezones=st.just(timezone.utc)), texts
        ),
        "on_conflict": texts,
        "callback": texts,
    },
)


@settings(SETTINGS, max_examples=300)
@given(chosen=options)
def test_any_options_are_refused_clearly_or_stored_exactly(
    site: Site, chosen: dict[str, Any]
) -> None:
    check_options(site, chosen)


def check_options(site: Site, chosen: dict[str, Any]) -> None:
    if isinstance(chosen.get("ref_id"), str):
        chosen["ref_id"] = f"{chosen['ref_id']}-{site.rows()[1]}"  # unique, or it is a duplicate
    outcome = site.attempt(lambda: site.jobs.enqueue_command("echo", {"o": 1}, **chosen))
    if isinstance(outcome, BgJobsError):
        assert "u:pw" not in str(outcome) and "tok@" not in str(outcome)
        return
    row = site.stored(outcome.id)
    with site.app.app_context():
        found = site.jobs.get_job(outcome.id)
    assert found is not None and found.job is not None
    job = found.job
    for name in ("tag", "batch_id", "created_by", "worker", "reply_to"):
        if chosen.get(name) is not None:
            assert getattr(job, name) == chosen[name], name
    if chosen.get("user_id") is not None:
        assert job.user_id == str(chosen["user_id"])
    if chosen.get("args"):
        assert job.args == chosen["args"]
    if chosen.get("ref_id") is not None:
        assert row["ref_id"] == chosen["ref_id"]


text_options = st.fixed_dictionaries(
    {},
    optional={
        **{key: st.one_of(st.text(min_size=1, max_size=200), st.sampled_from(MARKUP))
           for key in ("tag", "batch_id", "created_by", "user_id", "worker", "ref_id")},
        "args": st.dictionaries(st.text(), st.text(), max_size=3),
    },
)  # fmt: skip


@settings(SETTINGS, max_examples=200)
@given(chosen=text_options)
def test_any_text_in_the_options_is_stored_exactly(site: Site, chosen: dict[str, Any]) -> None:
    """Any text (control characters, NUL, markup, any script) of 1 to 200 characters."""
    check_options(site, chosen)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("tag", "x\ud800", "lone surrogate"),
        ("ref_id", "\udfff", "lone surrogate"),
        ("user_id", "u\ud800", "lone surrogate"),
        ("created_by", "\ud800", "lone surrogate"),
        ("reply_to", "https://h/\ud800", "lone surrogate"),
        ("retry_limit", 2**64, "2**63"),
        ("depends_on", 2**63, "job id"),
        ("parent_id", 2**70, "job id"),
        ("timeout", math.inf, "finite"),
        ("timeout", math.nan, "positive number"),
        ("tag", "t" * TEN_MB, "10,485,760 characters"),
        ("args", "a" * TEN_MB, "args must be a dict of str to str, not 'aaa"),
    ],
)
def test_options_sqlite_cannot_hold_are_refused(
    site: Site, option: str, value: Any, message: str
) -> None:
    """Regressions: lone surrogates failed with UnicodeEncodeError and integers past 2**63
    with OverflowError, both from inside the store; an infinite timeout was stored and sent
    to the JSON API as ``Infinity``; a 10 MB tag was repeated whole in the error."""
    outcome = site.attempt(lambda: site.jobs.enqueue_command("echo", None, **{option: value}))
    assert isinstance(outcome, InvalidJobError), outcome
    assert message in str(outcome)


def test_a_long_reply_to_is_refused_without_showing_its_secret(site: Site) -> None:
    """Regression: the message repeated the whole value, credentials and all."""
    url = "ci:hunter2-secret@https://hooks.example.org/" + "x" * 3000 + "?token=tok-secret"
    outcome = site.attempt(lambda: site.jobs.enqueue_command("echo", None, reply_to=url))
    assert isinstance(outcome, InvalidJobError)
    assert "hunter2" not in str(outcome) and "tok-secret" not in str(outcome)
    assert "2,000 characters" in str(outcome)
    ok = site.attempt(lambda: site.jobs.enqueue_command("echo", None, reply_to=url[:1990]))
    assert not isinstance(ok, BaseException)


# -- recurring tasks and API jobs ------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(request=json_like, name=texts, chosen=options)
def test_recurring_tasks_refuse_clearly_or_store_exactly(
    site: Site, request: Any, name: Any, chosen: dict[str, Any]
) -> None:
    for refused_here in ("ref_id", "depends_on", "run_after", "on_conflict"):
        chosen.pop(refused_here, None)
    outcome = site.attempt(lambda: site.jobs.recurring_command(
        "echo", Schedule.every_minute, request, name=name, **chosen))  # fmt: skip
    if isinstance(outcome, BgJobsError):
        return
    name = "echo" if name is None else name
    assert outcome == name
    with site.app.app_context():
        (task,) = [t for t in site.jobs.recurring_tasks() if t.name == name]
        assert (strict(task.request) if task.request else None) == as_json(request)
        ref = site.jobs.run_now(name)
        found = site.jobs.get_job(ref.id)
        site.jobs.remove_recurring(name)
    assert found is not None and found.job is not None
    assert found.job.request == as_json(request)


@pytest.mark.parametrize(
    ("name", "message"),
    [("t\ud800", "lone surrogate"), ("n" * 201, "200 characters"), (5, "not 5"), ("", "not ''")],
)
def test_recurring_task_names_sqlite_or_the_admin_cannot_hold_are_refused(
    site: Site, name: Any, message: str
) -> None:
    """Regression: a surrogate failed in the store; a 201-character name could never be run
    or switched from the admin page (its forms take 200); a number was stored as a name."""
    outcome = site.attempt(
        lambda: site.jobs.recurring_command("echo", Schedule.hourly, None, name=name)
    )
    assert isinstance(outcome, InvalidJobError), outcome
    assert message in str(outcome)


@settings(SETTINGS, max_examples=150)
@given(
    request=json_like,
    view_args=st.one_of(
        st.fixed_dictionaries({"item_id": st.integers(min_value=0, max_value=2**70)}),
        st.dictionaries(
            st.sampled_from(["item_id", "x"]),
            st.one_of(st.integers(), texts, st.sets(st.integers())),
            max_size=2,
        ),
        texts,
    ),
    method=st.sampled_from(["POST", "post", " post ", "GET", "PO\x00ST", "\ud800"]),
)
def test_api_jobs_refuse_clearly_or_store_exactly(
    site: Site, request: Any, view_args: Any, method: str
) -> None:
    outcome = site.attempt(lambda: site.jobs.enqueue_api(
        "item", request, method=method, view_args=view_args))  # fmt: skip
    if isinstance(outcome, BgJobsError):
        return
    site.stored(outcome.id)
    with site.app.app_context():
        found = site.jobs.get_job(outcome.id)
    assert found is not None and found.job is not None
    assert found.job.request == as_json(request)
    assert found.job.options["view_args"] == view_args


def test_view_args_that_do_not_build_a_url_are_refused(site: Site) -> None:
    """Regression: a converter's TypeError or ValueError came out of ``enqueue_api`` raw."""
    for view_args in ({"item_id": {1}}, {"item_id": "\ud800"}, {"item_id": "x"}, {"nope": 1}):
        outcome = site.attempt(lambda v=view_args: site.jobs.enqueue_api("item", {}, view_args=v))
        assert isinstance(outcome, InvalidJobError), view_args
        assert "fits view_args" in str(outcome)


# -- what a running job reports ----------------------------------------------------------------


def reporting_jobs(jobs: BackgroundJobs) -> None:
    @jobs.command(retry_limit=0)
    def fails_oddly(req: str) -> None:
        raise ValueError(f"broken: {req}")

    @jobs.command
    def reports_oddly(req: str) -> Any:
        current_job.log.info("log line %s", req)
        current_job.update_status(progress=0.5, status=f"status {req}")
        return {"result": req}


ODD_REPORTS = ["\ud800", "a\udfffb\ud83d", MARKUP[0], "\x00", "é" * 10_000]


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "threads"])
def test_errors_logs_and_statuses_sqlite_cannot_hold_are_stored_replaced(
    make_app: Callable[..., tuple[Flask, BackgroundJobs]], eager: bool
) -> None:
    """Regression: an exception message, log line or status with a lone surrogate could never be
    recorded (UTF-8 refused it): in eager mode ``enqueue`` raised UnicodeEncodeError after the
    job was stored; with threads the run was retried forever and the job showed as running.
    Now the surrogate is stored as U+FFFD."""
    app, jobs = make_app(eager=eager)
    reporting_jobs(jobs)
    with app.app_context():
        if not eager:
            jobs.start()
        refs = [(jobs.enqueue_command("fails_oddly", text), text) for text in ODD_REPORTS]
        refs += [(jobs.enqueue_command("reports_oddly", text), text) for text in ODD_REPORTS]
        for ref, text in refs:
            found = jobs.wait_for(ref.id, timeout=10)
            job = found.job
            assert job is not None
            shown = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            if found.state is JobState.FAILED:
                assert job.error_message == f"broken: {shown}"
            else:
                assert found.state is JobState.COMPLETED
                assert found.result == {"result": text}  # JSON keeps it, escaped
                assert f"log line {shown}" in job.logs
                assert job.status == f"status {shown}"
        client = app.test_client()
        for ref, _text in refs:
            page = client.get(f"/admin/jobs/job/{ref.id}")
            assert page.status_code == 200
            page.get_data(as_text=True).encode("utf-8")


def test_run_after_at_the_ends_of_time(site: Site) -> None:
    for moment in (datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59), datetime(1970, 1, 1)):
        ref = site.attempt(lambda m=moment: site.jobs.enqueue_command("echo", None, run_after=m))
        assert not isinstance(ref, BaseException)
    with site.app.app_context():
        client = site.app.test_client()
        for path in ("/admin/jobs/queue", "/admin/jobs/api/queue", "/admin/jobs/"):
            assert client.get(path).status_code == 200
