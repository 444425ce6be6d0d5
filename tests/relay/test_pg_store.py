"""PostgresStore on a real PostgreSQL server: what the shared contract
(test_relay_store_contract.py) cannot see: several stores (as several relay
processes would hold) on one database at once, migrations, batches, the
index, and what the database holds."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from circle.errors import RelayQuotaExceeded, StoreCorrupt, StoreError
from circle.net.envelope import Kind, envelope_id, seal
from circle.net.keys import DeviceIdentity, new_epoch_key
from circle.relay.backends import redact_dsn
from circle.relay.pgschema import MIGRATIONS
from circle.relay.pgstore import PostgresStore
from circle.relay.store import AuthResult, StoreLimits, iter_all, token_hash

T0 = 1_700_000_000.0
IDENT = DeviceIdentity.generate()
KEY = new_epoch_key()
TOK = token_hash(b"t" * 32)


def env(payload: bytes = b"") -> bytes:
    return seal(IDENT, 1, KEY, Kind.CHANGES, [payload or os.urandom(16)])


@pytest.fixture
def stores(pg_dsn: str) -> Callable[..., PostgresStore]:
    made: list[PostgresStore] = []

    def make(limits: StoreLimits | None = None) -> PostgresStore:
        s = PostgresStore(pg_dsn, limits or StoreLimits(time_granularity=1))
        made.append(s)
        return s

    yield make  # type: ignore[misc]
    for s in made:
        s.close()


def test_processes_share_instance_and_mailboxes(stores: Callable[..., PostgresStore]) -> None:
    a, b = stores(), stores()
    assert a.instance_id() == b.instance_id()  # clients may switch process without a reset
    mb = os.urandom(16)
    assert a.authorize(mb, TOK, T0) is AuthResult.REGISTERED
    assert b.authorize(mb, TOK, T0) is AuthResult.OK
    assert b.authorize(mb, token_hash(b"x" * 32), T0) is AuthResult.REFUSED
    put = a.put(mb, env(), T0)
    assert [e.cursor for e in b.fetch(mb, 0)] == [put.cursor]
    assert b.put(mb, b.fetch(mb, 0)[0].data, T0).duplicate  # dedupe is shared too


def test_concurrent_writers_never_let_a_reader_skip(stores: Callable[..., PostgresStore]) -> None:
    """Attack on "everything after cursor N is complete": writers in two
    processes race into one mailbox while a reader follows by cursor. If a
    cursor could commit after a higher one, the reader would step over it."""
    a, b, reader = stores(), stores(), stores()
    mb = os.urandom(16)
    a.authorize(mb, TOK, T0)
    per_writer = 60
    envs = [[env() for _ in range(per_writer)] for _ in range(6)]
    done = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        since = 0
        while True:
            finished = done.is_set()
            page = reader.fetch(mb, since)
            for item in page:
                seen.append(item.cursor)
                since = item.cursor
            if finished and not page:
                return

    def write(store: PostgresStore, batch: list[bytes]) -> None:
        for e in batch:
            store.put(mb, e, T0)

    t = threading.Thread(target=follow)
    t.start()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(write, [a, b, a, b, a, b], envs))
    done.set()
    t.join(60)
    stored = [e.cursor for e in iter_all(reader, mb)]
    assert len(stored) == 6 * per_writer
    assert seen == stored  # nothing skipped, nothing twice, in cursor order


def test_registration_race_has_one_winner(stores: Callable[..., PostgresStore]) -> None:
    a, b = stores(), stores()
    for _ in range(20):
        mb = os.urandom(16)
        tokens = [token_hash(os.urandom(32)) for _ in range(2)]
        barrier = threading.Barrier(2)

        def claim(store: PostgresStore, tok: bytes, mb: bytes = mb,
                  barrier: threading.Barrier = barrier) -> AuthResult:
            barrier.wait()
            return store.authorize(mb, tok, T0)

        with ThreadPoolExecutor(2) as pool:
            results = sorted(r.value for r in pool.map(claim, [a, b], tokens))
        assert results == ["refused", "registered"]


def test_mailbox_quota_is_exact_across_processes(stores: Callable[..., PostgresStore]) -> None:
    limits = StoreLimits(mailbox_count=25, time_granularity=1)
    a, b = stores(limits), stores(limits)
    mb = os.urandom(16)
    a.authorize(mb, TOK, T0)

    def push(store: PostgresStore) -> tuple[int, int]:
        ok = refused = 0
        for _ in range(20):
            try:
                store.put(mb, env(), T0)
                ok += 1
            except RelayQuotaExceeded:
                refused += 1
        return ok, refused

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(push, [a, b, a, b]))
    assert sum(ok for ok, _ in results) == 25
    assert sum(r for _, r in results) == 80 - 25
    assert a.usage(mb).count == b.usage(mb).count == 25 == len(list(iter_all(a, mb)))


def test_total_usage_matches_rows_after_concurrent_puts_and_expiry(stores: Callable[..., PostgresStore],
                                                                   pg_dsn: str) -> None:
    a, b = stores(), stores()
    boxes = [os.urandom(16) for _ in range(8)]
    for mb in boxes:
        a.authorize(mb, TOK, T0)

    def fill(i: int) -> None:
        store = a if i % 2 else b
        for j in range(10):
            store.put(boxes[i], env(), T0 + (0 if j < 5 else 1000))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fill, range(8)))
    with ThreadPoolExecutor(2) as pool:  # two processes expire at once: one does it
        dropped = list(pool.map(lambda s: s.expire(T0 + 1500, 800), [a, b]))
    assert sum(dropped) == 40  # each expired envelope dropped (and uncounted) exactly once
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT COUNT(*), SUM(size) FROM relay_envelopes").fetchone()
        per_box = conn.execute("SELECT COUNT(*) FROM relay_mailboxes m WHERE m.count <> "
                               "(SELECT COUNT(*) FROM relay_envelopes e WHERE e.mailbox = m.id)").fetchone()
    assert rows is not None and per_box is not None
    assert a.total_usage().count == rows[0] == 40
    assert b.total_usage().bytes == rows[1]
    assert per_box[0] == 0


def test_put_many_is_one_transaction(stores: Callable[..., PostgresStore], pg_dsn: str) -> None:
    s = stores(StoreLimits(mailbox_count=4, time_granularity=1))
    mb = os.urandom(16)
    s.authorize(mb, TOK, T0)
    batch = [env() for _ in range(6)]
    results = s.put_many(mb, batch[:3] + [batch[0]] + batch[3:], T0)
    assert [type(r).__name__ for r in results] == ["PutResult"] * 5 + ["RelayQuotaExceeded"] * 2
    assert results[3].duplicate  # type: ignore[union-attr]
    with psycopg.connect(pg_dsn) as conn:
        xids = conn.execute("SELECT COUNT(DISTINCT xmin::text) FROM relay_envelopes").fetchone()
    assert xids == (1,)  # every envelope of the batch committed in the same transaction
    assert [envelope_id(e.data) for e in s.fetch(mb, 0)] == [envelope_id(e) for e in batch[:4]]
    with pytest.raises(StoreError):
        s.put_many(os.urandom(16), [env()], T0)  # unregistered: nothing stored, clear error


def test_fetch_uses_the_mailbox_cursor_index(stores: Callable[..., PostgresStore], pg_dsn: str) -> None:
    s = stores()
    boxes = [os.urandom(16) for _ in range(20)]
    for mb in boxes:
        s.authorize(mb, TOK, T0)
        s.put_many(mb, [env() for _ in range(50)], T0)
    since = s.head(boxes[3]) - 5  # a member a few envelopes behind: the common case
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("ANALYZE relay_envelopes")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT cursor, data FROM relay_envelopes WHERE mailbox = %s AND cursor > %s "
            "ORDER BY cursor LIMIT 100", (boxes[3], since)))
    assert "Seq Scan" not in plan and "relay_envelopes_pkey" in plan, plan
    cond = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any("mailbox =" in c and "cursor >" in c for c in cond), plan  # both columns bound the scan


def test_migrations_race_and_refuse_a_newer_schema(pg_dsn: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: PostgresStore(pg_dsn), range(4)))
    assert len({s.instance_id() for s in opened}) == 1
    for s in opened:
        s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT MAX(version) FROM relay_schema").fetchone() == (MIGRATIONS[-1][0],)
        conn.execute("INSERT INTO relay_schema (version) VALUES (999)")
    with pytest.raises(StoreCorrupt, match="newer than this relay"):
        PostgresStore(pg_dsn)


def test_unreachable_database_is_one_sentence_without_password() -> None:
    dsn = "postgresql://relay:hunter2secret@127.0.0.1:1/circle?connect_timeout=2"
    with pytest.raises(StoreError) as info:
        PostgresStore(dsn, connect_timeout=2)
    assert "hunter2secret" not in str(info.value) and "cannot connect" in str(info.value)
    assert redact_dsn("host=x password=abc user=y") == "host=x password=*** user=y"
    assert redact_dsn("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"


def test_database_holds_no_token_and_coarse_times(pg_server, pg_dsn: str) -> None:  # type: ignore[no-untyped-def]
    s = PostgresStore(pg_dsn, StoreLimits(time_granularity=600))
    token = b"T" * 32
    mb = os.urandom(16)
    s.authorize(mb, token_hash(token), T0 + 123.4)
    plain = b"firewood for the Birchwood street shed"
    s.put(mb, env(plain), T0 + 123.4)
    s.close()
    dump = subprocess.run([str(pg_server.bindir / "pg_dump"), "--data-only", pg_dsn],
                          capture_output=True, check=True).stdout
    assert token not in dump and token.hex().encode() not in dump
    assert plain not in dump and plain.hex().encode() not in dump
    with psycopg.connect(pg_dsn) as conn:
        times = conn.execute("SELECT stored_at FROM relay_envelopes UNION ALL "
                             "SELECT last_seen FROM relay_mailboxes").fetchall()
    assert times and all(t % 600 == 0 for (t,) in times)


def test_store_calls_fail_typed_when_the_database_goes_away(stores: Callable[..., PostgresStore],
                                                            pg_server, pg_dsn: str) -> None:  # type: ignore[no-untyped-def]
    s = stores()
    mb = os.urandom(16)
    s.authorize(mb, TOK, T0)
    s.put(mb, env(), T0)
    dbname = pg_dsn.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:  # cut every session to the database
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
    deadline = time.time() + 30
    errors = 0
    while True:  # broken pooled connections fail typed once each, then the pool reconnects
        try:
            assert len(s.fetch(mb, 0)) == 1
            break
        except StoreError:
            errors += 1
            assert time.time() < deadline
    assert errors <= s.pool_size
