"""Mailbox storage for a relay: one small protocol, two implementations.

A *mailbox* is a 16-byte id derived from a circle's epoch key (and the
relay's URL); it holds the circle's envelopes in arrival order. Each stored
envelope gets a *cursor*: a positive integer counted per mailbox (1, 2, 3,
...; never reused while the mailbox exists, even after expiry), so
"everything after cursor N" is a complete, gap-free read. Cursors are per
mailbox so that a client learns nothing about other mailboxes' activity
from the numbers it sees.

Room: when `max_mailboxes` are registered, a new registration evicts the
empty mailbox that was used least recently (never one holding envelopes), so
a flood of registrations cannot lock a real circle out; empty mailboxes also
expire after `empty_mailbox_ttl`.

Access is trust-on-first-use: the first client to authenticate a mailbox
registers the BLAKE2b hash of its token; later clients must present a token
with the same hash (compared in constant time). The store never sees the
token itself and keeps no plaintext: envelopes are already ciphertext.

Both `MemoryStore` and `SQLiteStore` satisfy `MailboxStore` and pass the same
contract tests (tests/relay/test_relay_store_contract.py).
"""

from __future__ import annotations

import enum
import hmac
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import nacl.encoding
import nacl.hash

from circle.errors import RelayQuotaExceeded, StoreCorrupt, StoreError
from circle.net.envelope import envelope_id
from circle.net.relay_protocol import INSTANCE_ID_LEN, MAILBOX_LEN

_TOKEN_PERSON = b"circle/tok-hash".ljust(16, b"\0")


def token_hash(token: bytes) -> bytes:
    """What a relay stores instead of a mailbox token."""
    return nacl.hash.blake2b(
        token, digest_size=32, person=_TOKEN_PERSON, encoder=nacl.encoding.RawEncoder
    )


@dataclass(frozen=True)
class StoreLimits:
    """Per-mailbox and whole-store limits, enforced by `put` and `authorize`."""

    mailbox_bytes: int = 64 * 1024 * 1024
    mailbox_count: int = 20_000
    total_bytes: int = 4 * 1024 * 1024 * 1024
    max_mailboxes: int = 10_000
    #: Timestamps are stored rounded down to this many seconds, so the
    #: database on disk keeps only coarse timing.
    time_granularity: int = 600
    #: A mailbox without envelopes is dropped after this long unused (seconds).
    empty_mailbox_ttl: float = 3600.0


class AuthResult(enum.Enum):
    OK = "ok"
    REGISTERED = "registered"  # first use: the token hash is now bound to the mailbox
    REFUSED = "refused"  # wrong token
    FULL = "full"  # unknown mailbox, max_mailboxes reached and none of them empty
    UNKNOWN = "unknown"  # unknown mailbox and `register=False`


@dataclass(frozen=True)
class PutResult:
    envelope_id: bytes
    cursor: int
    duplicate: bool


@dataclass(frozen=True)
class StoredEnvelope:
    cursor: int
    data: bytes


@dataclass(frozen=True)
class Usage:
    count: int
    bytes: int


class MailboxStore(Protocol):
    limits: StoreLimits

    def instance_id(self) -> bytes:
        """Random id made when the store was created; a wiped relay gets a new one."""
        ...

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float, register: bool = True) -> AuthResult:
        """Check a token against a mailbox. An unknown mailbox is registered
        (evicting the least recently used empty one if the store is full)
        when `register` is true, else UNKNOWN is returned."""
        ...

    def put(self, mailbox: bytes, data: bytes, now: float) -> PutResult:
        """Store an envelope (idempotent by envelope id). Raises RelayQuotaExceeded."""
        ...

    def fetch(
        self, mailbox: bytes, since: int, limit: int = 100, max_bytes: int = 8 * 1024 * 1024
    ) -> list[StoredEnvelope]:
        """Envelopes with cursor > since, oldest first; at least one if any, at
        most `limit`, and stopping before `max_bytes` is passed."""
        ...

    def head(self, mailbox: bytes) -> int:
        """Highest cursor in the mailbox, 0 if empty."""
        ...

    def expire(self, now: float, ttl: float) -> int:
        """Drop envelopes stored before now - ttl, and mailboxes that are empty
        and unused for `limits.empty_mailbox_ttl` (or ttl if shorter).
        Returns how many envelopes were dropped."""
        ...

    def usage(self, mailbox: bytes) -> Usage: ...

    def total_usage(self) -> Usage: ...

    def mailbox_count(self) -> int: ...

    def close(self) -> None: ...


def _check_mailbox(mailbox: bytes) -> None:
    if len(mailbox) != MAILBOX_LEN:
        raise ValueError("mailbox id must be 16 bytes")


def _coarse(now: float, granularity: int) -> int:
    t = int(now)
    return t - t % granularity if granularity > 1 else t


# --- in memory ----------------------------------------------------------------


@dataclass
class _MemMailbox:
    token_hash: bytes
    last_seen: int
    items: dict[int, tuple[bytes, int, bytes]] = field(default_factory=dict)  # cursor -> (id, t, data)
    by_id: dict[bytes, int] = field(default_factory=dict)
    bytes: int = 0
    next_cursor: int = 1


class MemoryStore:
    """Everything in dicts: for tests, and for a throwaway relay."""

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self._instance = os.urandom(INSTANCE_ID_LEN)
        self._boxes: dict[bytes, _MemMailbox] = {}
        self._total = 0
        self._count = 0

    def instance_id(self) -> bytes:
        return self._instance

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float, register: bool = True) -> AuthResult:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        t = _coarse(now, self.limits.time_granularity)
        if box is None:
            if not register:
                return AuthResult.UNKNOWN
            if len(self._boxes) >= self.limits.max_mailboxes:
                empty = [(b.last_seen, m) for m, b in self._boxes.items() if not b.items]
                if not empty:
                    return AuthResult.FULL
                del self._boxes[min(empty)[1]]
            self._boxes[mailbox] = _MemMailbox(token_hash, t)
            return AuthResult.REGISTERED
        if not hmac.compare_digest(box.token_hash, token_hash):
            return AuthResult.REFUSED
        box.last_seen = t
        return AuthResult.OK

    def _box(self, mailbox: bytes) -> _MemMailbox:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        if box is None:
            raise StoreError("mailbox is not registered")
        return box

    def put(self, mailbox: bytes, data: bytes, now: float) -> PutResult:
        box = self._box(mailbox)
        eid = envelope_id(data)
        existing = box.by_id.get(eid)
        if existing is not None:
            return PutResult(eid, existing, True)
        n = len(data)
        if len(box.items) + 1 > self.limits.mailbox_count or box.bytes + n > self.limits.mailbox_bytes:
            raise RelayQuotaExceeded("the mailbox quota on this relay is used up")
        if self._total + n > self.limits.total_bytes:
            raise RelayQuotaExceeded("this relay is full")
        cursor = box.next_cursor
        box.next_cursor += 1
        box.items[cursor] = (eid, _coarse(now, self.limits.time_granularity), bytes(data))
        box.by_id[eid] = cursor
        box.bytes += n
        box.last_seen = _coarse(now, self.limits.time_granularity)
        self._total += n
        self._count += 1
        return PutResult(eid, cursor, False)

    def fetch(
        self, mailbox: bytes, since: int, limit: int = 100, max_bytes: int = 8 * 1024 * 1024
    ) -> list[StoredEnvelope]:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        if box is None:
            return []
        out: list[StoredEnvelope] = []
        size = 0
        for cursor in sorted(c for c in box.items if c > since):
            data = box.items[cursor][2]
            if out and (len(out) >= limit or size + len(data) > max_bytes):
                break
            out.append(StoredEnvelope(cursor, data))
            size += len(data)
        return out

    def head(self, mailbox: bytes) -> int:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        return max(box.items, default=0) if box else 0

    def expire(self, now: float, ttl: float) -> int:
        cutoff = now - ttl
        empty_cutoff = now - min(ttl, self.limits.empty_mailbox_ttl)
        dropped = 0
        for mailbox, box in list(self._boxes.items()):
            for cursor, (eid, t, data) in list(box.items.items()):
                if t < cutoff:
                    del box.items[cursor]
                    del box.by_id[eid]
                    box.bytes -= len(data)
                    self._total -= len(data)
                    self._count -= 1
                    dropped += 1
            if not box.items and box.last_seen < empty_cutoff:
                del self._boxes[mailbox]
        return dropped

    def usage(self, mailbox: bytes) -> Usage:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        return Usage(len(box.items), box.bytes) if box else Usage(0, 0)

    def total_usage(self) -> Usage:
        return Usage(self._count, self._total)

    def mailbox_count(self) -> int:
        return len(self._boxes)

    def close(self) -> None:
        pass


# --- SQLite -------------------------------------------------------------------

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes (
    id BLOB PRIMARY KEY,
    token_hash BLOB NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    next_cursor INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes (
    mailbox BLOB NOT NULL,
    cursor INTEGER NOT NULL,
    eid BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (mailbox, cursor),
    UNIQUE (mailbox, eid)
);
CREATE INDEX IF NOT EXISTS envelopes_by_time ON envelopes (stored_at);
CREATE INDEX IF NOT EXISTS empty_mailboxes ON mailboxes (count, last_seen);
"""

#: Version 1 numbered envelopes with one counter for the whole relay. The
#: move renumbers each mailbox 1, 2, 3, ... and takes a new instance id, so
#: clients read their mailbox again from the start.
_MIGRATE_1_TO_2 = """
ALTER TABLE mailboxes RENAME TO mailboxes_v1;
ALTER TABLE envelopes RENAME TO envelopes_v1;
DROP INDEX IF EXISTS envelopes_by_mailbox;
DROP INDEX IF EXISTS envelopes_by_time;
""" + _SCHEMA + """
INSERT INTO mailboxes (id, token_hash, last_seen, count, bytes, next_cursor)
    SELECT id, token_hash, last_seen, count, bytes, count + 1 FROM mailboxes_v1;
INSERT INTO envelopes (mailbox, cursor, eid, stored_at, data)
    SELECT mailbox, ROW_NUMBER() OVER (PARTITION BY mailbox ORDER BY cursor), eid, stored_at, data
    FROM envelopes_v1;
DROP TABLE envelopes_v1;
DROP TABLE mailboxes_v1;
"""


class SQLiteStore:
    """One SQLite file in WAL mode. One relay process owns it at a time.

    Each put is one short transaction (synchronous=NORMAL in WAL mode: an
    acknowledged envelope survives a crash of the relay process; a power cut
    may lose the last moments, which clients repair by pushing again).
    """

    FILENAME = "relay.sqlite3"

    def __init__(self, path: Path | str, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=OFF")
            self._migrate()
            self._db.executescript(_SCHEMA)
            self._init_meta()
            row = self._db.execute("SELECT COALESCE(SUM(count),0), COALESCE(SUM(bytes),0) FROM mailboxes").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreCorrupt(f"relay database {self.path} cannot be opened: {e}") from None
        self._count, self._total = int(row[0]), int(row[1])

    def _migrate(self) -> None:
        has_meta = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if has_meta is None:
            return
        version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None or int(version[0]) != 1:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _MIGRATE_1_TO_2.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._db.execute("UPDATE meta SET value=? WHERE key='instance'", (os.urandom(INSTANCE_ID_LEN),))
            self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (_SCHEMA_VERSION,))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _init_meta(self) -> None:
        cur = self._db.execute("SELECT value FROM meta WHERE key='instance'").fetchone()
        if cur is None:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('instance', ?)", (os.urandom(INSTANCE_ID_LEN),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            self._db.execute("COMMIT")
        version = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is None or int(version[0]) != _SCHEMA_VERSION:
            raise StoreCorrupt(f"relay database {self.path} has an unknown schema version")
        self._instance = bytes(self._db.execute("SELECT value FROM meta WHERE key='instance'").fetchone()[0])

    def instance_id(self) -> bytes:
        return self._instance

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float, register: bool = True) -> AuthResult:
        _check_mailbox(mailbox)
        t = _coarse(now, self.limits.time_granularity)
        with self._tx():
            row = self._db.execute("SELECT token_hash, last_seen FROM mailboxes WHERE id=?", (mailbox,)).fetchone()
            if row is None:
                if not register:
                    return AuthResult.UNKNOWN
                (n,) = self._db.execute("SELECT COUNT(*) FROM mailboxes").fetchone()
                if n >= self.limits.max_mailboxes:
                    victim = self._db.execute(
                        "SELECT id FROM mailboxes WHERE count=0 ORDER BY last_seen LIMIT 1").fetchone()
                    if victim is None:
                        return AuthResult.FULL
                    self._db.execute("DELETE FROM mailboxes WHERE id=?", (victim[0],))
                self._db.execute(
                    "INSERT INTO mailboxes (id, token_hash, last_seen) VALUES (?, ?, ?)",
                    (mailbox, token_hash, t),
                )
                return AuthResult.REGISTERED
            if not hmac.compare_digest(bytes(row[0]), token_hash):
                return AuthResult.REFUSED
            if row[1] != t:
                self._db.execute("UPDATE mailboxes SET last_seen=? WHERE id=?", (t, mailbox))
            return AuthResult.OK

    def put(self, mailbox: bytes, data: bytes, now: float) -> PutResult:
        _check_mailbox(mailbox)
        data = bytes(data)
        eid = envelope_id(data)
        n = len(data)
        with self._tx():
            box = self._db.execute(
                "SELECT count, bytes, next_cursor FROM mailboxes WHERE id=?", (mailbox,)).fetchone()
            if box is None:
                raise StoreError("mailbox is not registered")
            row = self._db.execute(
                "SELECT cursor FROM envelopes WHERE mailbox=? AND eid=?", (mailbox, eid)
            ).fetchone()
            if row is not None:
                return PutResult(eid, int(row[0]), True)
            if box[0] + 1 > self.limits.mailbox_count or box[1] + n > self.limits.mailbox_bytes:
                raise RelayQuotaExceeded("the mailbox quota on this relay is used up")
            if self._total + n > self.limits.total_bytes:
                raise RelayQuotaExceeded("this relay is full")
            cursor = int(box[2])
            self._db.execute(
                "INSERT INTO envelopes (mailbox, cursor, eid, stored_at, data) VALUES (?, ?, ?, ?, ?)",
                (mailbox, cursor, eid, _coarse(now, self.limits.time_granularity), data),
            )
            self._db.execute(
                "UPDATE mailboxes SET count=count+1, bytes=bytes+?, last_seen=?, next_cursor=? WHERE id=?",
                (n, _coarse(now, self.limits.time_granularity), cursor + 1, mailbox),
            )
        self._total += n
        self._count += 1
        return PutResult(eid, int(cursor), False)

    def fetch(
        self, mailbox: bytes, since: int, limit: int = 100, max_bytes: int = 8 * 1024 * 1024
    ) -> list[StoredEnvelope]:
        _check_mailbox(mailbox)
        out: list[StoredEnvelope] = []
        size = 0
        rows = self._db.execute(
            "SELECT cursor, data FROM envelopes WHERE mailbox=? AND cursor>? ORDER BY cursor LIMIT ?",
            (mailbox, since, max(1, limit)),
        )
        for cursor, data in rows:
            if out and size + len(data) > max_bytes:
                break
            out.append(StoredEnvelope(int(cursor), bytes(data)))
            size += len(data)
        rows.close()
        return out

    def head(self, mailbox: bytes) -> int:
        _check_mailbox(mailbox)
        (h,) = self._db.execute(
            "SELECT COALESCE(MAX(cursor), 0) FROM envelopes WHERE mailbox=?", (mailbox,)
        ).fetchone()
        return int(h)

    def expire(self, now: float, ttl: float) -> int:
        cutoff = now - ttl
        with self._tx():
            gone = self._db.execute(
                "SELECT mailbox, COUNT(*), SUM(LENGTH(data)) FROM envelopes WHERE stored_at < ? GROUP BY mailbox",
                (cutoff,),
            ).fetchall()
            self._db.execute("DELETE FROM envelopes WHERE stored_at < ?", (cutoff,))
            dropped = 0
            for mailbox, count, size in gone:
                self._db.execute(
                    "UPDATE mailboxes SET count=count-?, bytes=bytes-? WHERE id=?", (count, size, mailbox)
                )
                dropped += int(count)
            self._db.execute("DELETE FROM mailboxes WHERE count=0 AND last_seen < ?",
                             (now - min(ttl, self.limits.empty_mailbox_ttl),))
            row = self._db.execute("SELECT COALESCE(SUM(count),0), COALESCE(SUM(bytes),0) FROM mailboxes").fetchone()
        self._count, self._total = int(row[0]), int(row[1])
        if dropped:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return dropped

    def usage(self, mailbox: bytes) -> Usage:
        _check_mailbox(mailbox)
        row = self._db.execute("SELECT count, bytes FROM mailboxes WHERE id=?", (mailbox,)).fetchone()
        return Usage(int(row[0]), int(row[1])) if row else Usage(0, 0)

    def total_usage(self) -> Usage:
        return Usage(self._count, self._total)

    def mailbox_count(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM mailboxes").fetchone()
        return int(n)

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def iter_all(store: MailboxStore, mailbox: bytes, since: int = 0) -> Iterator[StoredEnvelope]:
    """Every envelope after `since`, page by page."""
    while True:
        page = store.fetch(mailbox, since)
        if not page:
            return
        yield from page
        since = page[-1].cursor


__all__ = [
    "AuthResult", "MailboxStore", "MemoryStore", "PutResult", "SQLiteStore", "StoreLimits",
    "StoredEnvelope", "Usage", "iter_all", "token_hash",
]
