"""Named write locks, and app code serialising its own SQLite writes with them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from flask_bgjobs.locks import bind_lock, db_lock, sqlite_file_lock


def test_one_name_one_lock_and_reentrant() -> None:
    lock = db_lock("app")
    assert db_lock("app") is lock
    assert db_lock("other") is not lock
    with lock, db_lock("app"):  # re-entrant in one thread
        got: list[bool] = []
        thread = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
        thread.start()
        thread.join()
        assert got == [False]  # another thread must wait


def test_file_locks_are_keyed_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_file_lock("a.db") is sqlite_file_lock(tmp_path / "a.db")
    assert sqlite_file_lock("a.db") is not sqlite_file_lock("b.db")


def make_app(tmp_path: Path) -> tuple[Flask, SQLAlchemy, type]:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    app.config["SQLALCHEMY_BINDS"] = {"memory": "sqlite://"}
    db = SQLAlchemy(app)

    class Counter(db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        value: Mapped[int]

    with app.app_context():
        db.create_all()
        db.session.add(Counter(id=1, value=0))
        db.session.commit()
    return app, db, Counter


def test_flask_sqlalchemy_writers_serialised_by_bind_lock(tmp_path: Path) -> None:
    app, db, counter = make_app(tmp_path)
    errors: list[BaseException] = []

    def increment(times: int) -> None:
        try:
            with app.app_context():
                lock = bind_lock(db)
                for _ in range(times):
                    # Read-modify-write: without the lock, two threads read the same value
                    # (lost update) or fail upgrading to a write ("database is locked").
                    with lock:
                        row = db.session.get(counter, 1)
                        row.value = row.value + 1
                        db.session.commit()
        except BaseException as error:  # reported after every thread is joined
            errors.append(error)

    threads = [threading.Thread(target=increment, args=(50,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        assert db.session.get(counter, 1).value == 400
        assert bind_lock(db) is sqlite_file_lock(tmp_path / "app.db")
        with pytest.raises(ValueError, match="not an on-disk SQLite file"):
            bind_lock(db, "memory")
        db.engine.dispose()
