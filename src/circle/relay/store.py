"""Mailbox storage for a relay: one small protocol, two implementations.

A *mailbox* is a 16-byte id derived from a circle's epoch key; it holds the
circle's envelopes in arrival order. Each stored envelope gets a *cursor*: a
positive integer that only grows within one store (never reused, even after
expiry), so "everything after cursor N" is a complete, gap-free read.

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


class AuthResult(enum.Enum):
    OK = "ok"
    REGISTERED = "registered"  # first use: the token hash is now bound to the mailbox
    REFUSED = "refused"  # wrong token
    FULL = "full"  # unknown mailbox and the store has max_mailboxes already


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

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float) -> AuthResult: ...

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
        """Drop envelopes stored before now - ttl, and mailboxes idle and empty
        for that long. Returns how many envelopes were dropped."""
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


class MemoryStore:
    """Everything in dicts: for tests, and for a throwaway relay."""

    def __init__(self, limits: StoreLimits | None = None) -> None:
        self.limits = limits or StoreLimits()
        self._instance = os.urandom(INSTANCE_ID_LEN)
        self._boxes: dict[bytes, _MemMailbox] = {}
        self._next = 1
        self._total = 0
        self._count = 0

    def instance_id(self) -> bytes:
        return self._instance

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float) -> AuthResult:
        _check_mailbox(mailbox)
        box = self._boxes.get(mailbox)
        t = _coarse(now, self.limits.time_granularity)
        if box is None:
            if len(self._boxes) >= self.limits.max_mailboxes:
                return AuthResult.FULL
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
        cursor = self._next
        self._next += 1
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
            if not box.items and box.last_seen < cutoff:
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

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mailboxes (
    id BLOB PRIMARY KEY,
    token_hash BLOB NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS envelopes (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox BLOB NOT NULL,
    eid BLOB NOT NULL,
    stored_at INTEGER NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (mailbox, eid)
);
CREATE INDEX IF NOT EXISTS envelopes_by_mailbox ON envelopes (mailbox, cursor);
CREATE INDEX IF NOT EXISTS envelopes_by_time ON envelopes (stored_at);
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
            self._db.executescript(_SCHEMA)
            self._init_meta()
            row = self._db.execute("SELECT COALESCE(SUM(count),0), COALESCE(SUM(bytes),0) FROM mailboxes").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreCorrupt(f"relay database {self.path} cannot be opened: {e}") from None
        self._count, self._total = int(row[0]), int(row[1])

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

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float) -> AuthResult:
        _check_mailbox(mailbox)
        t = _coarse(now, self.limits.time_granularity)
        with self._tx():
            row = self._db.execute("SELECT token_hash, last_seen FROM mailboxes WHERE id=?", (mailbox,)).fetchone()
            if row is None:
                (n,) = self._db.execute("SELECT COUNT(*) FROM mailboxes").fetchone()
                if n >= self.limits.max_mailboxes:
                    return AuthResult.FULL
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
            box = self._db.execute("SELECT count, bytes FROM mailboxes WHERE id=?", (mailbox,)).fetchone()
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
            cur = self._db.execute(
                "INSERT INTO envelopes (mailbox, eid, stored_at, data) VALUES (?, ?, ?, ?)",
                (mailbox, eid, _coarse(now, self.limits.time_granularity), data),
            )
            self._db.execute(
                "UPDATE mailboxes SET count=count+1, bytes=bytes+?, last_seen=? WHERE id=?",
                (n, _coarse(now, self.limits.time_granularity), mailbox),
            )
            cursor = cur.lastrowid
        assert cursor is not None
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
            self._db.execute("DELETE FROM mailboxes WHERE count=0 AND last_seen < ?", (cutoff,))
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
