"""Which store a relay runs on.

    --data DIR                      SQLite file DIR/relay.sqlite3 (one process, the default)
    --store sqlite:PATH             SQLite file PATH (or PATH/relay.sqlite3 if PATH is a directory)
    --store postgresql://...        PostgreSQL, shared by any number of relay processes

The PostgreSQL driver (the `postgres` extra: psycopg, psycopg_pool) is
imported only when that store is chosen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from circle.errors import UsageError
from circle.relay.store import MailboxStore, SQLiteStore, StoreLimits

PG_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class StoreSpec:
    kind: str  # "sqlite" | "postgresql"
    path: Path | None = None
    dsn: str | None = None

    def describe(self) -> str:
        """For logs and messages: never shows a password."""
        if self.kind == "sqlite":
            return f"sqlite:{self.path}"
        return redact_dsn(self.dsn or "")


def redact_dsn(dsn: str) -> str:
    """The connection string with any password replaced, for messages."""
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def parse_store(store: str | None, data_dir: Path | str | None = None) -> StoreSpec:
    if store is not None and data_dir is not None:
        raise UsageError("give either --data DIR or --store, not both")
    if store is None:
        if data_dir is None:
            raise UsageError("give --data DIR (SQLite) or --store sqlite:PATH | postgresql://...")
        return StoreSpec("sqlite", Path(data_dir) / SQLiteStore.FILENAME)
    if store.startswith(PG_SCHEMES):
        return StoreSpec("postgresql", dsn=store)
    if store.startswith("sqlite:"):
        raw = store[len("sqlite:"):]
        if not raw:
            raise UsageError("--store sqlite:PATH needs a path")
        path = Path(raw)
        if path.is_dir():
            path = path / SQLiteStore.FILENAME
        return StoreSpec("sqlite", path)
    raise UsageError("--store must be sqlite:PATH or a postgresql:// URL")


def open_store(spec: StoreSpec, limits: StoreLimits | None = None) -> MailboxStore:
    if spec.kind == "postgresql":
        try:
            from circle.relay.pgstore import PostgresStore
        except ImportError as e:
            if e.name not in ("psycopg", "psycopg_pool"):
                raise
            raise UsageError("the PostgreSQL driver is not installed: pip install 'circle[postgres]'") from None

        assert spec.dsn is not None
        return PostgresStore(spec.dsn, limits)
    assert spec.path is not None
    return SQLiteStore(spec.path, limits)
