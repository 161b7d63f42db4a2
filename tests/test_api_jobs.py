"""API jobs through the app's pipeline, user context, and reply_to notifications over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Blueprint, abort, g, jsonify, request
from flask_login import LoginManager, UserMixin, current_user, login_required

from flask_bgjobs import ApiJobError, InvalidJobError, JobState, UnknownCommandError, current_job

from .conftest import wait_until
from .hooks import HookServer


class User(UserMixin):
    def __init__(self, user_id: str, name: str) -> None:
        self.id = user_id
        self.name = name


USERS = {"1": User("1", "ada"), "2": User("2", "bob")}


def orders_blueprint() -> Blueprint:
    orders = Blueprint("orders", __name__, url_prefix="/orders")
    calls: list[str] = []

    @orders.before_request
    def only_known_users() -> None:
        calls.append("before")
        if not current_user.is_authenticated:
            abort(401)

    @orders.after_request
    def stamp(response: Any) -> Any:
        response.headers["X-Seen"] = "yes"
        calls.append("after")
        return response

    @orders.post("/<int:order_id>/ship")
    @login_required
    def ship(order_id: int) -> Any:
        body = request.get_json()
        return jsonify(order=order_id, carrier=body["carrier"], by=current_user.name,
                       job=current_job.id)  # fmt: skip

    @orders.get("/report")
    def report() -> str:
        return f"report for {current_user.name}, {request.args.get('month')}"

    @orders.post("/refuse")
    def refuse() -> Any:
        return jsonify(error="no stock"), 409

    @orders.post("/crash")
    def crash() -> Any:
        raise KeyError("boom")

    orders.calls = calls  # type: ignore[attr-defined]
    return orders


@pytest.fixture
def api_app(make_app: Any) -> Any:
    app, jobs = make_app(retry_limit=0)
    app.config["SECRET_KEY"] = "test"
    app.config["PROPAGATE_EXCEPTIONS"] = False  # errors become 500s, as in production
    login = LoginManager(app)
    login.user_loader(USERS.get)
    jobs.user_loader(USERS.get)
    blueprint = orders_blueprint()
    app.register_blueprint(blueprint)

    @app.errorhandler(KeyError)
    def key_error(error: KeyError) -> Any:
        return jsonify(handled=str(error)), 500

    return app, jobs, blueprint


def test_an_api_job_runs_the_view_through_the_pipeline_as_its_user(api_app: Any) -> None:
    app, jobs, blueprint = api_app
    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_api("orders.ship", {"carrier": "ups"}, view_args={"order_id": 7},
                               user_id=1)  # fmt: skip
        result = jobs.wait_for(ref.id)
    assert result.state is JobState.COMPLETED
    assert result.result == {"order": 7, "carrier": "ups", "by": "ada", "job": ref.id}
    assert blueprint.calls == ["before", "after"]
    assert result.summary.request_type == "api" and result.summary.command == "orders.ship"


def test_the_app_auth_refuses_an_api_job_without_a_user(api_app: Any) -> None:
    app, jobs, _ = api_app
    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_api("orders.ship", {"carrier": "ups"}, view_args={"order_id": 7})
        result = jobs.wait_for(ref.id)
    assert result.state is JobState.FAILED and result.failed.error_type == "ApiJobError"
    assert result.failed.error_message.startswith("orders.ship answered 401")


def test_get_requests_go_in_the_query_string(api_app: Any) -> None:
    app, jobs, _ = api_app
    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_api("orders.report", {"month": "2026-03"}, method="get", user_id="2")
        assert jobs.wait_for(ref.id).result == "report for bob, 2026-03"


def test_error_answers_fail_the_job_with_status_and_body(api_app: Any) -> None:
    app, jobs, _ = api_app
    with app.app_context():
        jobs.start()
        refused = jobs.wait_for(jobs.enqueue_api("orders.refuse", user_id=1).id)
        crashed = jobs.wait_for(jobs.enqueue_api("orders.crash", user_id=1).id)
    assert refused.failed.error_message == 'orders.refuse answered 409: {"error":"no stock"}\n'
    # The app's own error handler turned the exception into its answer.
    assert crashed.failed.error_message.startswith("orders.crash answered 500")
    assert "handled" in crashed.failed.error_message
    error = ApiJobError("x", 418, "teapot")
    assert (error.status, error.body) == (418, "teapot")


def test_endpoints_methods_and_view_args_are_checked_at_enqueue(api_app: Any) -> None:
    app, jobs, _ = api_app
    with app.app_context():
        with pytest.raises(UnknownCommandError, match=r"unknown endpoint 'orders\.missing'"):
            jobs.enqueue_api("orders.missing")
        with pytest.raises(InvalidJobError, match="does not accept DELETE"):
            jobs.enqueue_api("orders.refuse", method="DELETE")
        with pytest.raises(InvalidJobError, match=r"no URL of endpoint 'orders\.ship'"):
            jobs.enqueue_api("orders.ship", {"carrier": "x"})
        with pytest.raises(TypeError):
            jobs.enqueue_api("orders.refuse", colour="blue")
        assert jobs.list_jobs() == []


def test_current_job_user_comes_from_the_user_loader(make_app: Any) -> None:
    app, jobs = make_app()
    jobs.user_loader(USERS.get)
    names: list[str] = []

    @jobs.command
    def greet() -> None:
        names.append(current_job.user.name)
        g.seen = True

    with app.app_context():
        jobs.start()
        jobs.wait_for(jobs.enqueue_command("greet", user_id=2).id)
    assert names == ["bob"]


def test_completed_jobs_notify_their_reply_to_durably(
    make_app: Any,
    server: HookServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, jobs = make_app(notify_reply_to=True, retry_limit=2)
    monkeypatch.setenv("HOOK_TOKEN", "s3cret-token")
    jobs.command(lambda n: {"double": n * 2}, name="double")
    url = "$HOOK_TOKEN@" + server.url("/done")
    with app.app_context():
        jobs.start()
        server.status = 503  # the first delivery fails: the notification job retries
        ref = jobs.enqueue_command("double", 21, reply_to=url, args={"order": "7"})
        assert jobs.wait_for(ref.id).result == {"double": 42}
        notification = jobs.list_jobs(parent_id=ref.id)
        assert [n.command for n in notification] == ["bgjobs.reply_to"]
        wait_until(lambda: len(server.received) == 1)
        server.status = 200
        done = jobs.wait_for(notification[0].id, timeout=10)
        stored = jobs.get_job(notification[0].id).completed
    assert done.state is JobState.COMPLETED and done.completed.attempts == 2
    last = server.last
    assert last.method == "POST" and last.path == "/done"
    assert last.headers["Authorization"] == "Bearer s3cret-token"
    assert last.json() == {"id": ref.id, "ref_id": jobs_ref(app, jobs, ref.id), "command": "double",
                           "state": "completed", "result": {"double": 42},
                           "args": {"order": "7"}}  # fmt: skip
    # The notification's own record holds no copy of the URL or its secret.
    assert "s3cret" not in repr(stored) and "HOOK_TOKEN" not in repr(stored)


def jobs_ref(app: Any, jobs: Any, job_id: int) -> str:
    with app.app_context():
        return str(jobs.get_job(job_id).summary.ref_id)


def test_without_the_setting_no_notification_is_sent(make_app: Any, server: HookServer) -> None:
    app, jobs = make_app()
    jobs.command(lambda: 1, name="one")
    with app.app_context():
        jobs.start()
        ref = jobs.enqueue_command("one", reply_to=server.url())
        jobs.wait_for(ref.id)
        assert jobs.list_jobs(parent_id=ref.id) == []
    assert server.received == []
