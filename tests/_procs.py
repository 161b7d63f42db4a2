"""Functions run in child processes by the tests (importable, so spawn can find them)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, Text

from flask_bgjobs.sqlite import Database, Schema

metadata = MetaData()
rows = Table(
    "row",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("writer", Text, nullable=False),
    Column("seq", Integer, nullable=False),
)
SCHEMA = Schema(metadata)


def write_rows(path: str, writer: str, count: int) -> None:
    """Write ``count`` single-row transactions into the ``row`` table of ``path``."""
    database = Database(path, SCHEMA)
    for seq in range(count):
        with database.write() as tx:
            tx.execute("INSERT INTO row (writer, seq) VALUES (?, ?)", (writer, seq))
    database.dispose()
