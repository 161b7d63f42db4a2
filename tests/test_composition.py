"""Job composition: dependencies, callbacks, delayed runs, queries, idempotent enqueue."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from flask_bgjobs import DuplicateRefIdError, InvalidJobError, JobState, current_job
from flask_bgjobs.clock import utcnow


def test_a_dependent_runs_after_its_parent_and_sees_it(make_app: Any) -> None:
    app, jobs = make_app()
    gate = threading.Event()
    seen: dict[str, Any] = {}

    @jobs.command
    def parent() -> dict[str, int]:
        gate.wait(10)
        return {"rows": 3}

    @jobs.command
    def child() -> None:
        found = current_job.parent
        seen.update(parent_id=current_job.parent_id, result=found.result, state=found.state)

    with app.app_context():
        jobs.start()
        first = jobs.enqueue_command("parent")
        second = jobs.enqueue_command("child", depends_on=first.id)
        assert jobs.get_job(second.id).state is JobState.WAITING
        with pytest.raises(TimeoutError):
            jobs.wait_for(second.id, timeout=0.1)
        gate.set()
        assert jobs.wait_for(second.id).state is JobState.COMPLETED
    assert seen == {"parent_id": first.id, "result": {"rows": 3}, "state": JobState.COMPLETED}


def test_a_failure_in_the_middle_of_a_chain_cancels_the_rest(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=1)
    ran: list[str] = []

    @jobs.command
    def step(name: str) -> None:
        ran.append(name)
        if name == "b":
            raise RuntimeError("b breaks")

    with app.app_context():
        jobs.start()
        a = jobs.enqueue_command("step", "a")
        b = jobs.enqueue_command("step", "b", depends_on=a.id)
        c = jobs.enqueue_command("step", "c", depends_on=b.id)
        d = jobs.enqueue_command("step", "d", depends_on=c.id)
        results = {
            name: jobs.wait_for(ref.id) for name, ref in zip("abcd", (a, b, c, d), strict=True)
        }
    assert ran == ["a", "b", "b"]  # b retried once, then failed for good; c and d never ran
    assert [results[n].state for n in "abcd"] == [
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.CANCELLED,
    ]
    assert results["c"].failed.error_message == f"job {b.id}, which it depends on, failed"
    assert results["d"].failed.error_message == f"job {c.id}, which it depends on, cancelled"


def test_a_missing_parent_is_refused_and_a_finished_one_is_honoured(make_app: Any) -> None:
    app, jobs = make_app(eager=True, retry_limit=0)
    jobs.command(lambda: "ok", name="fine")

    @jobs.command
    def broken() -> None:
        raise ValueError("no")

    with app.app_context():
        with pytest.raises(InvalidJobError, match="depends_on=999: no job has this id"):
            jobs.enqueue_command("fine", depends_on=999)
        done = jobs.enqueue_command("fine")
        after_done = jobs.enqueue_command("fine", depends_on=done.id)
        assert jobs.get_job(after_done.id).state is JobState.COMPLETED
        failed = jobs.enqueue_command("broken")
        after_failed = jobs.enqueue_command("fine", depends_on=failed.id)
        jobs.start()  # the runner's sweep cancels a dependent of a job that failed already
        assert jobs.wait_for(after_failed.id).state is JobState.CANCELLED


def test_a_command_builds_an_atomic_batch_of_dependents(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=1)
    ran: list[str] = []

    @jobs.command
    def batch() -> None:
        for n in range(3):
            jobs.enqueue_command("part", f"{current_job.attempt}-{n}", depends_on=current_job.id)
        if current_job.attempt == 1:
            raise RuntimeError("the first attempt fails after enqueueing its parts")

    @jobs.command
    def part(name: str) -> None:
        ran.append(name)

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("batch")
        assert jobs.wait_for(ref.id).state is JobState.COMPLETED
        parts = jobs.list_jobs(command="part")
        for summary in parts:
            jobs.wait_for(summary.id)
        states = sorted((s.id, jobs.get_job(s.id).state) for s in parts)
    assert sorted(ran) == ["2-0", "2-1", "2-2"]  # the parts of the failed attempt never ran
    assert [state for _, state in states] == [JobState.CANCELLED] * 3 + [JobState.COMPLETED] * 3


def test_requeueing_a_parent_resurrects_dependents_only_when_asked(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=0)
    fail = [True]
    ran: list[str] = []

    @jobs.command
    def parent() -> None:
        if fail[0]:
            raise RuntimeError("down")

    @jobs.command
    def child(name: str) -> None:
        ran.append(name)

    with app.app_context():
        jobs.start()
        p = jobs.enqueue_command("parent")
        c1 = jobs.enqueue_command("child", "one", depends_on=p.id)
        c2 = jobs.enqueue_command("child", "two", depends_on=c1.id)
        assert jobs.wait_for(c2.id).state is JobState.CANCELLED
        jobs.requeue_job(p.id)  # still failing: nothing to resurrect either way
        assert jobs.wait_for(p.id).state is JobState.FAILED
        fail[0] = False
        jobs.requeue_job(p.id)
        assert jobs.wait_for(p.id).state is JobState.COMPLETED
        assert jobs.get_job(c1.id).state is JobState.CANCELLED  # not asked
        fail[0] = True
        q = jobs.enqueue_command("parent")
        d1 = jobs.enqueue_command("child", "three", depends_on=q.id)
        d2 = jobs.enqueue_command("child", "four", depends_on=d1.id)
        assert jobs.wait_for(d2.id).state is JobState.CANCELLED
        fail[0] = False
        jobs.requeue_job(q.id, dependents=True)
        assert jobs.wait_for(d2.id).state is JobState.COMPLETED
    assert ran == ["three", "four"]


def test_a_callback_gets_the_result_and_is_retried(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=3)
    calls: list[Any] = []

    @jobs.command
    def fetch() -> dict[str, int]:
        return {"count": 42}

    @jobs.command
    def store_count(result: dict[str, int]) -> str:
        calls.append((current_job.attempt, result, current_job.parent_id))
        if current_job.attempt < 3:
            raise ConnectionError("store is down")
        return "stored"

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("fetch", callback="store_count")
        assert jobs.wait_for(ref.id).state is JobState.COMPLETED
        callbacks = jobs.list_jobs(parent_id=ref.id)
        assert [c.command for c in callbacks] == ["store_count"]
        done = jobs.wait_for(callbacks[0].id)
    assert done.result == "stored" and done.completed.attempts == 3
    assert calls == [(n, {"count": 42}, ref.id) for n in (1, 2, 3)]
    with app.app_context():
        assert jobs.get_job(ref.id).state is JobState.COMPLETED


def test_a_callback_that_fails_for_good_fails_its_job(make_app: Any) -> None:
    app, jobs = make_app(retry_limit=1)

    @jobs.command
    def produce() -> int:
        return 1

    @jobs.command
    def consume(value: int) -> None:
        raise ValueError(f"cannot use {value}")

    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("produce", callback="consume")
        jobs.wait_for(ref.id)
        callback = jobs.list_jobs(parent_id=ref.id)[0]
        assert jobs.wait_for(callback.id).state is JobState.FAILED
        result = jobs.get_job(ref.id)
    assert result.state is JobState.FAILED and result.completed is None
    assert result.failed.error_type == "ValueError"
    assert "its callback 'consume'" in result.failed.error_message
    assert result.failed.result == 1  # its own result is kept


def test_run_after_wakes_the_runner_in_time_without_polling(make_app: Any) -> None:
    app, jobs = make_app(poll_interval=30)  # polling alone would take half a minute
    started: list[float] = []
    jobs.command(lambda: started.append(time.monotonic()), name="later")
    with app.app_context():
        jobs.start()
        begin = time.monotonic()
        ref = jobs.enqueue_command("later", run_after=utcnow() + timedelta(seconds=0.3))
        jobs.wait_for(ref.id, timeout=5)
    assert 0.25 <= started[0] - begin < 2


def test_idempotent_enqueue_by_ref_id(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda n: n, name="echo")
    with app.app_context():
        first = jobs.enqueue_command("echo", 1, ref_id="order-1")
        again = jobs.enqueue_command("echo", 2, ref_id="order-1", on_conflict="return_existing")
        assert again == first
        with pytest.raises(DuplicateRefIdError):
            jobs.enqueue_command("echo", 3, ref_id="order-1")
        with pytest.raises(InvalidJobError, match="on_conflict"):
            jobs.enqueue_command("echo", 3, ref_id="order-2", on_conflict="ignore")
        assert len(jobs.list_jobs()) == 1


def test_jobs_are_found_by_their_metadata(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with app.app_context():
        a = jobs.enqueue_command("x", tag="t1", batch_id="b1", created_by="alice",
                                 args={"tenant": "acme", "kind": "a"}, user_id=7)  # fmt: skip
        b = jobs.enqueue_command("x", tag="t2", batch_id="b1", created_by="bob",
                                 args={"tenant": "acme"})  # fmt: skip
        c = jobs.enqueue_command("x", tag="t1", batch_id="b2", args={"tenant": "other"})

        def ids(**filters: Any) -> list[int]:
            return [s.id for s in jobs.list_jobs(**filters)]

        assert ids(batch_id="b1") == [b.id, a.id]
        assert ids(tag="t1") == [c.id, a.id]
        assert ids(created_by="alice") == [a.id]
        assert ids(user_id=7) == [a.id]
        assert ids(args={"tenant": "acme"}) == [b.id, a.id]
        assert ids(args={"tenant": "acme", "kind": "a"}) == [a.id]
        assert ids(args={"tenant": "nobody"}) == []
        assert jobs.get_job_by_ref_id(jobs.get_job(c.id).summary.ref_id).id == c.id
        assert jobs.list_jobs(batch_id="b1")[0].args == {"tenant": "acme"}


def test_eager_mode_runs_callbacks_and_dependents_too(make_app: Any) -> None:
    app, jobs = make_app(eager=True)
    ran: list[str] = []
    jobs.command(lambda: ran.append("main") or 5, name="main")
    jobs.command(lambda value: ran.append(f"callback {value}"), name="after")
    with app.app_context():
        ref = jobs.enqueue_command("main", callback="after")
        assert jobs.get_job(ref.id).state is JobState.COMPLETED
    assert ran == ["main", "callback 5"]


def test_the_fan_out_of_a_thousand_dependents(make_app: Any) -> None:
    app, jobs = make_app(max_threads=4)
    gate = threading.Event()
    done: list[int] = []
    jobs.command(lambda: gate.wait(10), name="root")
    jobs.command(lambda n: done.append(n), name="leaf")
    with app.app_context():
        jobs.start()
        root = jobs.enqueue_command("root")
        leaves = [jobs.enqueue_command("leaf", n, depends_on=root.id) for n in range(1000)]
        assert jobs.list_jobs(state="waiting", limit=2000).__len__() == 1000
        gate.set()
        jobs.wait_for(leaves[-1].id, timeout=30)
        for ref in leaves:
            jobs.wait_for(ref.id, timeout=30)
    assert sorted(done) == list(range(1000))


def test_a_malformed_reply_to_is_refused_at_enqueue_without_echoing_secrets(
    make_app: Any,
) -> None:
    app, jobs = make_app()
    jobs.command(lambda: None, name="x")
    with app.app_context():
        with pytest.raises(InvalidJobError) as caught:
            jobs.enqueue_command("x", reply_to="user:topsecret@ftp://example.org/hook")
        assert "topsecret" not in str(caught.value)
        # A $VARIABLE is read when the reply is sent, not at enqueue: it need not exist yet.
        ref = jobs.enqueue_command("x", reply_to="$NOT_SET_YET@https://example.org/hook")
        assert jobs.get_job(ref.id).queued.reply_to == "$NOT_SET_YET@https://example.org/hook"
