"""The rolling-monthly SQLite engine, on real files, threads and processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select, text

from flask_bgjobs import (
    DatabaseBusyError,
    DatabaseDamagedError,
    ManualClock,
    SchemaVersionError,
    StorageError,
)
from flask_bgjobs.sqlite import (
    Database,
    MonthlyDatabase,
    Schema,
    SqliteOptions,
    check_month,
    months_before,
)

from ._procs import SCHEMA, rows, write_rows


def count(database: Database, writer: str | None = None) -> int:
    query = select(func.count()).select_from(rows)
    if writer is not None:
        query = query.where(rows.c.writer == writer)
    with database.read() as conn:
        return int(conn.execute(query).scalar_one())


def insert(tx: object, writer: str = "t", seq: int = 0) -> None:
    tx.execute("INSERT INTO row (writer, seq) VALUES (?, ?)", (writer, seq))  # type: ignore[attr-defined]


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = Database(tmp_path / "plain.db", SCHEMA)
    yield db
    db.dispose()


@pytest.fixture
def monthly(tmp_path: Path, clock: ManualClock) -> MonthlyDatabase:
    family = MonthlyDatabase(tmp_path / "logs", "requests", SCHEMA, clock=clock)
    yield family
    family.dispose()


# -- monthly files ---------------------------------------------------------------------------


def test_month_file_appears_on_first_write_only(monthly: MonthlyDatabase) -> None:
    assert monthly.months() == []
    assert monthly.existing("2026-03") is None
    assert not monthly.path_for("2026-03").exists()
    with monthly.write() as tx:
        insert(tx)
    assert monthly.path_for("2026-03").exists()
    assert monthly.months() == ["2026-03"]
    db = monthly.existing("2026-03")
    assert db is not None and count(db) == 1


def test_last_second_of_month_and_next_second_land_in_two_files(
    monthly: MonthlyDatabase, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 3, 31, 23, 59, 59, tzinfo=timezone.utc))
    with monthly.write() as tx:
        insert(tx, "march")
    clock.advance(seconds=1)
    with monthly.write() as tx:
        insert(tx, "april")
    assert monthly.months() == ["2026-04", "2026-03"]
    march, april = monthly.existing("2026-03"), monthly.existing("2026-04")
    assert march is not None and april is not None
    assert (count(march, "march"), count(march, "april")) == (1, 0)
    assert (count(april, "march"), count(april, "april")) == (0, 1)


def test_month_follows_utc_not_local_offset(monthly: MonthlyDatabase, clock: ManualClock) -> None:
    from datetime import timedelta

    # 00:30 on April 1st at UTC+02:00 is still March 31st in UTC.
    clock.set(datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))))
    assert monthly.current_month() == "2026-03"


def test_months_lists_newest_first_and_ignores_strangers(
    monthly: MonthlyDatabase, clock: ManualClock
) -> None:
    for month in (1, 11, 5):
        clock.set(datetime(2025, month, 2, tzinfo=timezone.utc))
        with monthly.write() as tx:
            insert(tx)
    (monthly.directory / "requests_2025-13.db").touch()
    (monthly.directory / "other_2025-02.db").touch()
    (monthly.directory / "requests_2025-02.db.bak").touch()
    assert monthly.months() == ["2025-11", "2025-05", "2025-01"]


def test_prune_deletes_or_archives_old_months(
    monthly: MonthlyDatabase, clock: ManualClock, tmp_path: Path
) -> None:
    for month in range(1, 7):
        clock.set(datetime(2026, month, 10, tzinfo=timezone.utc))
        with monthly.write() as tx:
            insert(tx, f"m{month}")
    assert monthly.prune(keep_months=4) == ["2026-02", "2026-01"]
    assert monthly.months() == ["2026-06", "2026-05", "2026-04", "2026-03"]
    assert not list(monthly.directory.glob("requests_2026-0[12].db*"))

    archive = tmp_path / "archive"
    assert monthly.prune(keep_months=3, archive_dir=archive) == ["2026-03"]
    archived = Database(archive / "requests_2026-03.db", SCHEMA)
    assert count(archived, "m3") == 1
    archived.dispose()
    assert monthly.prune(keep_months=3) == []

    # A pruned month's file comes back at its next write, empty but for the new row.
    clock.set(datetime(2026, 1, 20, tzinfo=timezone.utc))
    with monthly.write() as tx:
        insert(tx, "again")
    db = monthly.existing("2026-01")
    assert db is not None and count(db) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_prune_refuses_a_bad_keep_months(monthly: MonthlyDatabase, bad: object) -> None:
    with pytest.raises(ValueError, match="keep_months"):
        monthly.prune(keep_months=bad)  # type: ignore[arg-type]


def test_month_strings_are_checked() -> None:
    assert check_month("2026-12") == "2026-12"
    for bad in ("2026-13", "2026-1", "26-01", "2026-00", "", "2026-01; drop table"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            check_month(bad)
    assert months_before("2026-03", 0) == "2026-03"
    assert months_before("2026-03", 3) == "2025-12"
    assert months_before("2026-03", 27) == "2023-12"


# -- connections, pragmas, transactions --------------------------------------------------------


def test_every_connection_has_the_pragmas(database: Database) -> None:
    with database.write() as tx:
        insert(tx)
        assert tx.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conns = [database.engine.connect() for _ in range(6)]  # distinct pooled connections
    try:
        assert len({id(c.connection.driver_connection) for c in conns}) == 6
        for conn in conns:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        for conn in conns:
            conn.close()


def test_synchronous_is_configurable_and_checked(tmp_path: Path) -> None:
    db = Database(tmp_path / "full.db", SCHEMA, SqliteOptions(synchronous="full"))
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    db.dispose()
    with pytest.raises(ValueError, match="NORMAL"):
        SqliteOptions(synchronous="fast")
    with pytest.raises(ValueError, match="busy_timeout"):
        SqliteOptions(busy_timeout=0)


def test_write_begins_immediate_and_reads_stay_deferred(database: Database, tmp_path: Path) -> None:
    with database.write() as tx:
        insert(tx)
    other = sqlite3.connect(tmp_path / "plain.db", isolation_level=None, timeout=0)
    try:
        with database.write() as tx:
            # The write lock is taken at BEGIN: a second writer is refused before any statement.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            # A reader is not blocked.
            assert other.execute("SELECT count(*) FROM row").fetchone()[0] == 1
        with database.read() as conn:
            conn.execute(select(rows))
            assert other.execute("BEGIN IMMEDIATE") is not None  # reads hold no write lock
            other.execute("ROLLBACK")
    finally:
        other.close()


def test_failed_block_rolls_back_and_the_next_write_works(database: Database) -> None:
    with pytest.raises(ZeroDivisionError):
        with database.write() as tx:
            insert(tx, "lost")
            tx.conn.execute(rows.insert().values(writer="lost", seq=1))
            1 / 0  # noqa: B018
    with database.write() as tx:
        tx.conn.execute(rows.insert().values(writer="kept", seq=1))
        insert(tx, "kept", 2)
    assert count(database, "lost") == 0
    assert count(database, "kept") == 2


def test_nested_write_in_one_thread_is_refused(database: Database) -> None:
    with database.write() as tx:
        insert(tx)
        with pytest.raises(RuntimeError, match="already open"):
            with database.write():
                pass
    assert count(database) == 1


def test_a_locked_database_raises_busy_after_the_bound_and_loses_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "busy.db", SCHEMA, SqliteOptions(busy_timeout=0.2))
    with db.write() as tx:
        insert(tx, "before")
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusyError, match="locked by another connection"):
            with db.write() as tx:
                insert(tx, "blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with db.write() as tx:
        insert(tx, "after")
    assert (count(db, "before"), count(db, "blocked"), count(db, "after")) == (1, 0, 1)
    db.dispose()


def test_storage_errors_are_named(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db", SCHEMA)
    with pytest.raises(StorageError):
        with db.write() as tx:
            tx.raw.execute("PRAGMA query_only = ON")
            try:
                insert(tx)
            finally:
                tx.raw.execute("PRAGMA query_only = OFF")
    db.dispose()


def test_dispose_closes_and_next_use_reopens(database: Database) -> None:
    with database.write() as tx:
        insert(tx)
    database.dispose()
    with database.write() as tx:
        insert(tx)
    assert count(database) == 2


# -- schema versions ---------------------------------------------------------------------------


def test_schema_is_versioned_and_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "versioned.db"
    v1 = Database(path, SCHEMA)
    with v1.write() as tx:
        insert(tx, "old")
    v1.dispose()

    metadata = MetaData()
    Table(
        "row",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("writer", Text, nullable=False),
        Column("seq", Integer, nullable=False),
        Column("note", Text),
    )

    def add_note(conn: object) -> None:
        conn.execute(text("ALTER TABLE row ADD COLUMN note TEXT"))  # type: ignore[attr-defined]

    v2 = Database(path, Schema(metadata, version=2, migrations={2: add_note}))
    with v2.write() as tx:
        tx.execute("INSERT INTO row (writer, seq, note) VALUES ('new', 1, 'hi')")
    with v2.read() as conn:
        assert conn.exec_driver_sql("PRAGMA user_version").scalar() == 2
        assert conn.exec_driver_sql("SELECT writer, note FROM row ORDER BY id").all() == [
            ("old", None),
            ("new", "hi"),
        ]
    v2.dispose()

    again_v1 = Database(path, SCHEMA)
    with pytest.raises(SchemaVersionError, match="newer"):
        with again_v1.write():
            pass
    again_v1.dispose()


def test_schema_needs_every_migration() -> None:
    with pytest.raises(ValueError, match="lacks migrations"):
        Schema(MetaData(), version=3, migrations={2: lambda conn: None})


# -- concurrency -------------------------------------------------------------------------------


def test_eight_threads_writing_lose_nothing(database: Database) -> None:
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for seq in range(500):
                with database.write() as tx:
                    insert(tx, name, seq)
        except BaseException as error:  # reported below, after every thread is joined
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count(database) == 4000
    with database.read() as conn:
        per_writer = conn.execute(
            select(rows.c.writer, func.count(), func.count(func.distinct(rows.c.seq))).group_by(
                rows.c.writer
            )
        ).all()
    assert sorted(per_writer) == [(f"w{i}", 500, 500) for i in range(8)]


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_two_processes_writing_one_file_lose_nothing(database: Database, start_method: str) -> None:
    # The parent holds open connections before forking: children must not reuse them.
    with database.write() as tx:
        insert(tx, "parent")
    context = multiprocessing.get_context(start_method)
    procs = [
        context.Process(target=write_rows, args=(str(database.path), f"p{i}", 500))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    with database.write() as tx:
        insert(tx, "parent", 1)
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert (count(database, "p0"), count(database, "p1"), count(database, "parent")) == (
        500,
        500,
        2,
    )


# -- the review of the damage checks ----------------------------------------------------------


def test_a_refused_first_write_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A newer schema refused at the first write must not keep the file's write lock."""
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    old = Database(path, SCHEMA)
    try:
        for _ in range(2):  # the same clear error every time, not "within a transaction"
            with pytest.raises(SchemaVersionError, match="newer"):
                with old.write():
                    pass
        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # the lock is free
            other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        old.dispose()


def test_a_statement_error_that_says_malformed_is_not_damage(database: Database) -> None:
    with database.write() as tx:
        insert(tx)
    with pytest.raises(StorageError) as refused:
        with database.write() as tx:
            tx.execute("SELECT json('{not json')")
    assert not isinstance(refused.value, DatabaseDamagedError)
    with database.write() as tx:  # no suspicion left behind, and the file is kept
        insert(tx, seq=1)
    assert count(database) == 2


def test_a_file_deleted_while_another_connection_holds_it_is_started_anew(
    tmp_path: Path,
) -> None:
    """The other connection keeps the old -wal and -shm; the new file must not pair with them."""
    path = tmp_path / "held.db"
    database = Database(path, SCHEMA, recreate_damaged=True)
    holder = None
    try:
        with database.write() as tx:
            insert(tx)
        holder = sqlite3.connect(path)
        holder.execute("PRAGMA journal_mode = WAL")
        holder.execute("SELECT count(*) FROM row").fetchone()  # it has the file, -wal and -shm
        path.unlink()
        for seq in range(3):
            with database.write() as tx:
                insert(tx, seq=seq)
        assert count(database) == 3
        assert sorted(p.name.split(".orphan-")[0] for p in tmp_path.glob("*.orphan-*")) == [
            "held.db-shm",
            "held.db-wal",
        ]
    finally:
        if holder is not None:
            holder.close()
        database.dispose()


def test_a_month_damaged_past_its_header_is_set_aside_by_a_fresh_process(tmp_path: Path) -> None:
    path = tmp_path / "month.db"
    first = Database(path, SCHEMA)
    with first.write() as tx:
        insert(tx)
    first.dispose()
    with open(path, "r+b") as garbled:  # a sound header, then an impossible page size
        garbled.seek(16)
        garbled.write(b"\x00\x03")
    fresh = Database(path, SCHEMA, recreate_damaged=True)
    try:
        with fresh.write() as tx:
            insert(tx, writer="after")
        assert count(fresh) == 1
        moved = [p.name for p in tmp_path.glob("month.db.corrupt-*")]
        assert len([name for name in moved if not name.endswith(("-wal", "-shm"))]) == 1
    finally:
        fresh.dispose()
