"""What a database file holds: its tables and the version stamped in ``PRAGMA user_version``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, MetaData

#: A migration brings a file from version ``n - 1`` to ``n``, inside the write transaction.
Migration = Callable[[Connection], None]


@dataclass(frozen=True)
class Schema:
    """The tables of one kind of database file, and how to upgrade older files in place.

    ``version`` is written to ``PRAGMA user_version`` when a file is created. Opening a file whose
    version is lower runs ``migrations[v]`` for every ``v`` above it; a higher version means the
    file belongs to a newer release and is refused.
    """

    metadata: MetaData
    version: int = 1
    migrations: Mapping[int, Migration] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError("a schema version starts at 1 (0 means 'no schema yet')")
        missing = [v for v in range(2, self.version + 1) if v not in self.migrations]
        if missing:
            raise ValueError(f"schema version {self.version} lacks migrations to {missing}")
