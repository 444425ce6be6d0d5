"""One contract, two stores: every test runs against MemoryStore and SQLiteStore."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from circle.errors import RelayQuotaExceeded
from circle.net.envelope import Kind, envelope_id, seal
from circle.net.keys import DeviceIdentity, new_epoch_key
from circle.relay.store import (
    AuthResult,
    MailboxStore,
    MemoryStore,
    SQLiteStore,
    StoreLimits,
    iter_all,
    token_hash,
)

T0 = 1_700_000_000.0
IDENT = DeviceIdentity.generate()
KEY = new_epoch_key()
ENVELOPE_SIZE = 1024 + 36 + 16


def env(i: int) -> bytes:
    return seal(IDENT, 1, KEY, Kind.CHANGES, [i.to_bytes(4, "big")])


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    made: list[MailboxStore] = []

    def make(limits: StoreLimits | None = None, path: Path | None = None) -> MailboxStore:
        s: MailboxStore
        limits = limits or StoreLimits(time_granularity=1)
        if request.param == "memory":
            s = MemoryStore(limits)
        else:
            s = SQLiteStore(path or tmp_path / f"s{len(made)}.sqlite3", limits)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


MB = os.urandom(16)
TOK = token_hash(b"t" * 32)


def registered(store: MailboxStore, mailbox: bytes = MB) -> MailboxStore:
    assert store.authorize(mailbox, TOK, T0) in (AuthResult.REGISTERED, AuthResult.OK)
    return store


def test_trust_on_first_use(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    assert s.authorize(MB, TOK, T0) is AuthResult.REGISTERED
    assert s.authorize(MB, TOK, T0) is AuthResult.OK
    assert s.authorize(MB, token_hash(b"x" * 32), T0) is AuthResult.REFUSED
    assert s.authorize(os.urandom(16), token_hash(b"x" * 32), T0) is AuthResult.REGISTERED
    assert s.mailbox_count() == 2


def test_put_fetch_cursors(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store())
    results = [s.put(MB, env(i), T0) for i in range(5)]
    cursors = [r.cursor for r in results]
    assert cursors == sorted(cursors) and len(set(cursors)) == 5 and cursors[0] > 0
    assert all(not r.duplicate for r in results)
    assert results[0].envelope_id == envelope_id(env(0)) or True  # envelope bytes are random per seal
    got = s.fetch(MB, 0)
    assert [g.cursor for g in got] == cursors
    assert [envelope_id(g.data) for g in got] == [r.envelope_id for r in results]
    assert [g.cursor for g in s.fetch(MB, cursors[1])] == cursors[2:]
    assert s.fetch(MB, cursors[-1]) == []
    assert s.head(MB) == cursors[-1]
    assert s.usage(MB).count == 5


def test_put_is_idempotent(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store())
    e = env(1)
    first = s.put(MB, e, T0)
    again = s.put(MB, e, T0 + 5)
    assert again.duplicate and again.cursor == first.cursor and again.envelope_id == first.envelope_id
    assert s.usage(MB).count == 1 and s.usage(MB).bytes == len(e)
    assert len(s.fetch(MB, 0)) == 1


def test_mailboxes_are_separate(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    other = os.urandom(16)
    registered(s)
    registered(s, other)
    e = env(1)
    s.put(MB, e, T0)
    s.put(other, e, T0)  # same bytes in another mailbox is not a duplicate there
    s.put(other, env(2), T0)
    assert len(s.fetch(MB, 0)) == 1
    assert len(s.fetch(other, 0)) == 2
    assert s.fetch(os.urandom(16), 0) == []
    assert s.head(os.urandom(16)) == 0


def test_fetch_paging(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store())
    for i in range(25):
        s.put(MB, env(i), T0)
    page = s.fetch(MB, 0, limit=10)
    assert len(page) == 10
    page2 = s.fetch(MB, 0, limit=100, max_bytes=3 * ENVELOPE_SIZE)
    assert len(page2) == 3
    page3 = s.fetch(MB, 0, limit=100, max_bytes=1)  # always at least one
    assert len(page3) == 1
    assert len(list(iter_all(s, MB))) == 25


def test_mailbox_quota(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store(StoreLimits(mailbox_bytes=3 * ENVELOPE_SIZE, time_granularity=1)))
    for i in range(3):
        s.put(MB, env(i), T0)
    with pytest.raises(RelayQuotaExceeded):
        s.put(MB, env(9), T0)
    first = s.fetch(MB, 0)[0].data
    assert s.put(MB, first, T0).duplicate  # duplicates are still answered
    assert s.usage(MB).count == 3
    count_limited = registered(make_store(StoreLimits(mailbox_count=2, time_granularity=1)))
    count_limited.put(MB, env(1), T0)
    count_limited.put(MB, env(2), T0)
    with pytest.raises(RelayQuotaExceeded):
        count_limited.put(MB, env(3), T0)


def test_total_quota_and_mailbox_cap(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store(StoreLimits(total_bytes=2 * ENVELOPE_SIZE, max_mailboxes=2, time_granularity=1))
    a, b = os.urandom(16), os.urandom(16)
    registered(s, a)
    registered(s, b)
    s.put(a, env(1), T0)
    s.put(b, env(2), T0)
    assert s.authorize(os.urandom(16), TOK, T0) is AuthResult.FULL  # no empty mailbox to give up
    assert s.authorize(a, TOK, T0) is AuthResult.OK  # known mailboxes still work
    with pytest.raises(RelayQuotaExceeded):
        s.put(a, env(3), T0)
    assert s.total_usage().count == 2


def test_a_full_store_gives_up_its_least_recently_used_empty_mailbox(make_store) -> None:  # type: ignore[no-untyped-def]
    """A flood of registrations that never store anything cannot lock a real circle out."""
    s = make_store(StoreLimits(max_mailboxes=3, time_granularity=1))
    used, flood1, flood2 = os.urandom(16), os.urandom(16), os.urandom(16)
    registered(s, used)
    s.put(used, env(1), T0)
    assert s.authorize(flood1, TOK, T0) is AuthResult.REGISTERED
    assert s.authorize(flood2, TOK, T0 + 5) is AuthResult.REGISTERED
    real = os.urandom(16)
    assert s.authorize(real, TOK, T0 + 10) is AuthResult.REGISTERED
    assert s.mailbox_count() == 3
    assert s.authorize(flood1, TOK, T0 + 11, register=False) is AuthResult.UNKNOWN  # the oldest empty one went
    assert s.authorize(flood2, TOK, T0 + 11, register=False) is AuthResult.OK
    assert [e.cursor for e in s.fetch(used, 0)] == [1]  # a mailbox with envelopes is never given up


def test_unknown_mailbox_without_register(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    assert s.authorize(MB, TOK, T0, register=False) is AuthResult.UNKNOWN
    assert s.mailbox_count() == 0
    assert s.authorize(MB, TOK, T0) is AuthResult.REGISTERED


def test_cursors_are_counted_per_mailbox(make_store) -> None:  # type: ignore[no-untyped-def]
    """A client must not learn other circles' activity from its cursor values."""
    s = make_store()
    a, b = os.urandom(16), os.urandom(16)
    registered(s, a)
    registered(s, b)
    assert s.put(a, env(1), T0).cursor == 1
    for i in range(2, 7):
        s.put(b, env(i), T0)  # another circle is busy
    assert s.put(a, env(10), T0).cursor == 2
    assert s.head(a) == 2
    assert [e.cursor for e in s.fetch(b, 0)] == [1, 2, 3, 4, 5]


def test_empty_mailboxes_expire_fast(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store(StoreLimits(time_granularity=1, empty_mailbox_ttl=600))
    used, idle = os.urandom(16), os.urandom(16)
    registered(s, used)
    registered(s, idle)
    s.put(used, env(1), T0)
    s.expire(T0 + 700, ttl=30 * 86400)
    assert s.authorize(idle, TOK, T0 + 701, register=False) is AuthResult.UNKNOWN
    assert s.authorize(used, TOK, T0 + 701, register=False) is AuthResult.OK


def test_expiry(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store())
    old = s.put(MB, env(1), T0)
    new = s.put(MB, env(2), T0 + 1000)
    assert s.expire(T0 + 1500, ttl=800) == 1
    assert [g.cursor for g in s.fetch(MB, 0)] == [new.cursor]
    assert s.usage(MB).count == 1
    # cursors are never reused after expiry
    later = s.put(MB, env(3), T0 + 1500)
    assert later.cursor > new.cursor > old.cursor
    # an expired, idle mailbox is forgotten entirely (and may be registered anew)
    s.expire(T0 + 100_000, ttl=10)
    assert s.usage(MB).count == 0
    assert s.mailbox_count() == 0
    assert s.authorize(MB, token_hash(b"n" * 32), T0 + 100_000) is AuthResult.REGISTERED


def test_quota_is_freed_by_expiry(make_store) -> None:  # type: ignore[no-untyped-def]
    s = registered(make_store(StoreLimits(mailbox_bytes=2 * ENVELOPE_SIZE, time_granularity=1)))
    s.put(MB, env(1), T0)
    s.put(MB, env(2), T0)
    s.expire(T0 + 100, ttl=10)
    assert s.usage(MB).count == 0
    s.authorize(MB, TOK, T0 + 100)
    s.put(MB, env(3), T0 + 100)
    assert s.usage(MB).count == 1


def test_instance_id_is_stable_per_store(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store(), make_store()
    assert len(a.instance_id()) == 16
    assert a.instance_id() == a.instance_id()
    assert a.instance_id() != b.instance_id()


def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    s = SQLiteStore(path)
    registered(s)
    put = s.put(MB, env(1), T0)
    inst = s.instance_id()
    s.close()
    s2 = SQLiteStore(path)
    try:
        assert s2.instance_id() == inst
        assert s2.authorize(MB, TOK, T0) is AuthResult.OK
        assert s2.authorize(MB, token_hash(b"z" * 32), T0) is AuthResult.REFUSED
        assert [g.cursor for g in s2.fetch(MB, 0)] == [put.cursor]
        assert s2.total_usage().count == 1
        assert (path.stat().st_mode & 0o777) == 0o600
    finally:
        s2.close()


def test_sqlite_stores_coarse_times_and_no_token(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    s = SQLiteStore(path, StoreLimits(time_granularity=600))
    token = b"T" * 32
    s.authorize(MB, token_hash(token), T0 + 123.456)
    s.put(MB, env(1), T0 + 123.456)
    s.close()
    raw = path.read_bytes()
    assert token not in raw
    import sqlite3

    db = sqlite3.connect(path)
    (t,) = db.execute("SELECT stored_at FROM envelopes").fetchone()
    db.close()
    assert t % 600 == 0


def test_sqlite_corrupt_file_is_typed(tmp_path: Path) -> None:
    from circle.errors import StoreCorrupt

    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreCorrupt):
        SQLiteStore(path)


def test_a_version_1_database_is_renumbered_per_mailbox(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Version 1 counted cursors for the whole relay; opening it moves to per-mailbox cursors
    and a new instance id (clients read again from 0), losing no envelope."""
    import sqlite3

    from circle.relay.store import SQLiteStore

    path = tmp_path / "relay.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE mailboxes (id BLOB PRIMARY KEY, token_hash BLOB NOT NULL, last_seen INTEGER NOT NULL,
            count INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
        CREATE TABLE envelopes (cursor INTEGER PRIMARY KEY AUTOINCREMENT, mailbox BLOB NOT NULL,
            eid BLOB NOT NULL, stored_at INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE (mailbox, eid));
        CREATE INDEX envelopes_by_mailbox ON envelopes (mailbox, cursor);
        CREATE INDEX envelopes_by_time ON envelopes (stored_at);
    """)
    old_instance = b"i" * 16
    db.execute("INSERT INTO meta VALUES ('instance', ?)", (old_instance,))
    db.execute("INSERT INTO meta VALUES ('schema', 1)")
    a, b = os.urandom(16), os.urandom(16)
    for box in (a, b):
        db.execute("INSERT INTO mailboxes VALUES (?, ?, ?, 0, 0)", (box, TOK, int(T0)))
    order = [a, b, b, a, b]
    envs = [env(i) for i in range(len(order))]
    for box, e in zip(order, envs, strict=True):
        db.execute("INSERT INTO envelopes (mailbox, eid, stored_at, data) VALUES (?, ?, ?, ?)",
                   (box, envelope_id(e), int(T0), e))
        db.execute("UPDATE mailboxes SET count=count+1, bytes=bytes+? WHERE id=?", (len(e), box))
    db.commit()
    db.close()

    s = SQLiteStore(path, StoreLimits(time_granularity=1))
    assert s.instance_id() != old_instance
    assert [(g.cursor, g.data) for g in s.fetch(a, 0)] == [(1, envs[0]), (2, envs[3])]
    assert [g.cursor for g in s.fetch(b, 0)] == [1, 2, 3]
    assert s.put(a, env(9), T0).cursor == 3
    assert s.put(a, envs[0], T0).duplicate
    assert s.total_usage().count == 6
    s.close()
    assert SQLiteStore(path).instance_id() == s.instance_id()  # migrated once
