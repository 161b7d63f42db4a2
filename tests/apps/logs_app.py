"""An app with the request logger, for the flask_sqlitelogs tests (and their child processes).

Its views cover what capture must handle: plain, JSON and form bodies, a view that raises, one
whose error an ``@app.errorhandler`` turns into a response, a streamed body, a file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, request, send_file, stream_with_context

from flask_sqlitelogs import SqliteRequestLogger


class Teapot(Exception):
    """Raised by ``/handled``; the app's error handler answers 418."""


def create_app(
    instance_path: str | Path,
    *,
    clock: Any = None,
    logs: SqliteRequestLogger | None = None,
    **config: Any,
) -> tuple[Flask, SqliteRequestLogger]:
    """A fresh app logging to ``instance_path``; ``config`` keys go in without the prefix."""
    app = Flask("logs_app", instance_path=str(instance_path), root_path=str(Path(__file__).parent))
    app.config.update(TESTING=True, SECRET_KEY="test-secret", SQLITELOGS_FLUSH_INTERVAL=0)
    app.config.update({f"SQLITELOGS_{key.upper()}": value for key, value in config.items()})
    app.stream_state: dict[str, int] = {"sent": 0}  # type: ignore[attr-defined]

    @app.get("/hello")
    def hello() -> str:
        return "Hello, World!"

    @app.route("/echo", methods=["POST", "PUT"])
    def echo() -> Response:
        return jsonify(
            got=request.get_json(silent=True),
            form=request.form.to_dict(),
            token="server-token-123",
            nested={"secret": "server-secret-456"},
        )

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Response:
        return jsonify(id=item_id)

    @app.get("/boom")
    def boom() -> str:
        raise ValueError("the view broke")

    @app.get("/handled")
    def handled() -> str:
        raise Teapot("no coffee here")

    @app.errorhandler(Teapot)
    def teapot(error: Teapot) -> tuple[str, int]:
        return f"handled: {error}", 418

    @app.get("/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.get("/stream")
    def stream() -> Response:
        state = app.stream_state  # type: ignore[attr-defined]

        def chunks() -> Iterator[str]:
            for index in range(3):
                state["sent"] = index + 1
                yield f"chunk {index}\n"

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @app.get("/file")
    def file() -> Response:
        return send_file(Path(__file__), mimetype="text/plain")

    @app.get("/binary")
    def binary() -> Response:
        return Response(bytes(range(256)), mimetype="application/octet-stream")

    if logs is None:
        logs = SqliteRequestLogger(app, clock=clock)
    else:
        logs.init_app(app)
    return app, logs


def main() -> None:
    """Child process: ``python -m tests.apps.logs_app INSTANCE COUNT [timer]``.

    Serves ``COUNT`` requests through the test client and exits without flushing: the atexit
    hook must write them. With ``timer`` the flush thread runs (with a long interval) too.
    """
    instance, count = sys.argv[1], int(sys.argv[2])
    timer = len(sys.argv) > 3 and sys.argv[3] == "timer"
    app, _logs = create_app(instance, flush_interval=60.0 if timer else 0)
    client = app.test_client()
    for number in range(count):
        assert client.get(f"/items/{number}").status_code == 200
    print("served", count, flush=True)


if __name__ == "__main__":
    main()
