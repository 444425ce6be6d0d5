"""A relay `MailboxStore` on PostgreSQL, shared by any number of relay processes.

Rules that keep several processes correct at once:

- **Cursors** are counted per mailbox (`next_cursor`, as in the SQLite
  store: a client learns nothing of other circles from them). A put takes
  the mailbox's row lock (`FOR UPDATE`), draws the next cursor and keeps the
  lock until commit, so within one mailbox cursor order is commit order: a
  reader that has seen cursor N can never later meet a newly committed
  envelope below N ("everything after N" stays a complete, gap-free read
  across processes).
- **Quotas.** The per-mailbox quota is checked and counted under that row
  lock: exact across processes. The whole-store byte total lives in
  `relay_usage`, spread over `USAGE_SHARDS` rows by mailbox so that puts in
  different circles rarely wait on each other; the check sums the shards,
  so it may be passed by at most the puts that are in flight at that moment.
- **Durability.** A put is one transaction (one round trip: `relay_put()`
  in the schema) committed with PostgreSQL's default `synchronous_commit`:
  the Ack is sent after the commit is on disk, so killing a relay process
  at any moment loses no acknowledged envelope. `put_many` stores a batch
  in one transaction.
- **Live push across processes.** After a put commits, the mailbox is
  queued for this process's notifier, which sends
  `NOTIFY circle_relay, '<process>:<mailbox>,<mailbox>...'` for everything
  queued meanwhile on its own connection; every process LISTENs
  (`follow()`) and wakes its own subscribers of those mailboxes. The notify
  is not part of the put's transaction: a NOTIFY inside it would take
  PostgreSQL's database-wide notify lock through the commit's disk flush
  and serialize every put of every process, and would cost the put a
  round trip. Delivery is cursor-driven, so a lost notification (a process
  killed between commit and notify) only delays a push until the next
  envelope in that mailbox, or the member's repeated put (duplicates are
  announced too); a listener that reconnects wakes every subscriber once.
- **Expiry** runs in one process at a time (an advisory lock), one short
  transaction per mailbox, taking locks in the same order as a put
  (mailbox row, then usage shard) so the two cannot deadlock.

The schema is created and upgraded by the migrations in `pgschema.py`
(applied under an advisory lock, so processes starting together do not
race). The database
holds what the SQLite store holds: mailbox ids, token hashes, ciphertext,
sizes and coarse times. Never the token, never a client address.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from circle.errors import RelayQuotaExceeded, StoreCorrupt, StoreError
from circle.net.envelope import envelope_id
from circle.net.relay_protocol import INSTANCE_ID_LEN, MAILBOX_LEN
from circle.relay.pgschema import LOCK_EXPIRE, migrate
from circle.relay.store import AuthResult, PutResult, StoredEnvelope, StoreLimits, Usage

log = logging.getLogger("circle.relay")

_T = TypeVar("_T")

CHANNEL = "circle_relay"
USAGE_SHARDS = 64


def _check_mailbox(mailbox: bytes) -> None:
    if len(mailbox) != MAILBOX_LEN:
        raise ValueError("mailbox id must be 16 bytes")


def _coarse(now: float, granularity: int) -> int:
    t = int(now)
    return t - t % granularity if granularity > 1 else t


def _shard(mailbox: bytes) -> int:
    return mailbox[0] % USAGE_SHARDS


class PostgresStore:
    """`MailboxStore` over a PostgreSQL database (a `postgresql://` URL).

    Thread-safe: every call takes its own connection from the pool, so the
    relay runs calls in worker threads (`concurrent = True`) and one slow
    query or commit does not hold up the event loop.
    """

    concurrent = True

    def __init__(self, dsn: str, limits: StoreLimits | None = None, pool_size: int = 8,
                 connect_timeout: float = 10.0) -> None:
        self.limits = limits or StoreLimits()
        self.dsn = dsn
        self.pool_size = pool_size
        #: Random per process: our own notifications are not echoed back to us.
        self.process_id = os.urandom(8)
        # mailboxes with new envelopes, waiting for the notifier (see follow())
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._follower: tuple[asyncio.AbstractEventLoop | None, asyncio.Event | None] = (None, None)
        try:  # one plain connection first: its error says why (the pool's only says "timeout")
            psycopg.connect(dsn, connect_timeout=max(1, int(connect_timeout))).close()
        except psycopg.Error as e:
            raise StoreError(f"cannot connect to the relay database: {_reason(e)}") from None
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, open=False, name="circle-relay",
                                    kwargs={"autocommit": True}, timeout=connect_timeout)
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._instance = self._run(_setup)
        except BaseException as e:
            self._pool.close()
            if isinstance(e, psycopg.Error):
                raise StoreError(f"cannot connect to the relay database: {_reason(e)}") from None
            raise

    # --- plumbing ---------------------------------------------------------

    def _run(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """`fn` on a pooled connection; a database failure becomes a StoreError.

        A connection that turns out to be dead (the database restarted or
        failed over since it was pooled) is replaced and `fn` tried once
        more: every operation here is safe to repeat (a put is idempotent by
        envelope id). This costs nothing on the normal path, unlike checking
        each connection before use."""
        for attempt in (1, 2):
            used: psycopg.Connection[Any] | None = None
            try:
                with self._pool.connection() as conn:
                    used = conn
                    return fn(conn)
            except psycopg.Error as e:
                if attempt == 1 and used is not None and used.broken:
                    continue
                raise StoreError(f"relay database failed: {_reason(e)}") from None
        raise AssertionError("unreachable")

    def instance_id(self) -> bytes:
        return self._instance

    # --- MailboxStore -----------------------------------------------------

    def authorize(self, mailbox: bytes, token_hash: bytes, now: float, register: bool = True) -> AuthResult:
        _check_mailbox(mailbox)
        t = _coarse(now, self.limits.time_granularity)

        def run(conn: psycopg.Connection[Any]) -> AuthResult:
            for _ in range(2):
                row = conn.execute(
                    "SELECT token_hash, last_seen FROM relay_mailboxes WHERE id = %s", (mailbox,)
                ).fetchone()
                if row is not None:
                    if not hmac.compare_digest(bytes(row[0]), token_hash):
                        return AuthResult.REFUSED
                    if row[1] < t:
                        conn.execute("UPDATE relay_mailboxes SET last_seen = %s WHERE id = %s AND last_seen < %s",
                                     (t, mailbox, t))
                    return AuthResult.OK
                if not register:
                    return AuthResult.UNKNOWN
                (n,) = conn.execute("SELECT COUNT(*) FROM relay_mailboxes").fetchone() or (0,)
                if n >= self.limits.max_mailboxes:
                    # give up the least recently used empty mailbox (never one
                    # with envelopes; one being written to is locked: skipped)
                    gone = conn.execute(
                        "DELETE FROM relay_mailboxes WHERE id = (SELECT id FROM relay_mailboxes"
                        " WHERE count = 0 ORDER BY last_seen LIMIT 1 FOR UPDATE SKIP LOCKED)"
                        " AND count = 0 RETURNING id").fetchone()
                    if gone is None:
                        return AuthResult.FULL
                made = conn.execute(
                    "INSERT INTO relay_mailboxes (id, token_hash, last_seen) VALUES (%s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id", (mailbox, token_hash, t),
                ).fetchone()
                if made is not None:
                    return AuthResult.REGISTERED
                # another process registered it between our SELECT and INSERT: compare with theirs
            raise StoreError("mailbox registration did not settle")

        return self._run(run)

    def put(self, mailbox: bytes, data: bytes, now: float) -> PutResult:
        (res,) = self._put(mailbox, [data], now, raise_first=True)
        assert isinstance(res, PutResult)
        return res

    def put_many(self, mailbox: bytes, items: Sequence[bytes], now: float) -> list[PutResult | RelayQuotaExceeded]:
        """Store a batch in one transaction: all of it is durable, or none.

        An envelope over quota is answered with its RelayQuotaExceeded in
        place; the others are still stored."""
        return self._put(mailbox, items, now, raise_first=False)

    def _put(self, mailbox: bytes, items: Sequence[bytes], now: float,
             raise_first: bool) -> list[PutResult | RelayQuotaExceeded]:
        _check_mailbox(mailbox)
        lim = self.limits
        t = _coarse(now, lim.time_granularity)
        calls = []
        for raw in items:
            data = bytes(raw)
            calls.append((mailbox, envelope_id(data), t, data, _shard(mailbox),
                          lim.mailbox_count, lim.mailbox_bytes, lim.total_bytes))

        def run(conn: psycopg.Connection[Any]) -> list[tuple[int, bool, str | None]]:
            # One envelope: one round trip, one implicit transaction. A batch:
            # one explicit transaction, its statements pipelined.
            if len(calls) == 1:
                r = conn.execute(_PUT_SQL, calls[0]).fetchone()
                rows = [r]
            else:
                with conn.pipeline(), conn.transaction():
                    curs = [conn.execute(_PUT_SQL, c) for c in calls]
                rows = [cur.fetchone() for cur in curs]
            return [(int(r[0]), bool(r[1]), r[2]) for r in rows if r is not None]

        out: list[PutResult | RelayQuotaExceeded] = []
        for (_, eid, *_rest), (cursor, duplicate, refused) in zip(calls, self._run(run), strict=True):
            if refused == "unregistered":
                raise StoreError("mailbox is not registered")
            if refused is not None:
                err = RelayQuotaExceeded("the mailbox quota on this relay is used up"
                                         if refused == "mailbox" else "this relay is full")
                if raise_first:
                    raise err
                out.append(err)
                continue
            out.append(PutResult(eid, cursor, duplicate))
        if any(isinstance(r, PutResult) for r in out):
            # also for duplicates: a put repeated after a relay died between
            # its commit and its notify still wakes the other processes
            self._announce(mailbox)
        return out

    def fetch(
        self, mailbox: bytes, since: int, limit: int = 100, max_bytes: int = 8 * 1024 * 1024
    ) -> list[StoredEnvelope]:
        _check_mailbox(mailbox)
        # The running total is computed on the small `size` column; `data` is
        # only sent for the rows that are returned.
        rows = self._run(lambda conn: conn.execute(
            "SELECT cursor, data FROM ("
            "  SELECT cursor, data, size, SUM(size) OVER (ORDER BY cursor) AS run FROM ("
            "    SELECT cursor, data, size FROM relay_envelopes"
            "     WHERE mailbox = %s AND cursor > %s ORDER BY cursor LIMIT %s) page"
            ") totals WHERE run - size = 0 OR run <= %s ORDER BY cursor",
            (mailbox, since, max(1, limit), max_bytes)).fetchall())
        return [StoredEnvelope(int(c), bytes(d)) for c, d in rows]

    def head(self, mailbox: bytes) -> int:
        _check_mailbox(mailbox)
        row = self._run(lambda conn: conn.execute(
            "SELECT COALESCE(MAX(cursor), 0) FROM relay_envelopes WHERE mailbox = %s", (mailbox,)).fetchone())
        return int(row[0]) if row else 0

    def expire(self, now: float, ttl: float) -> int:
        cutoff = int(now - ttl)
        empty_cutoff = int(now - min(ttl, self.limits.empty_mailbox_ttl))
        return self._run(lambda conn: _expire(conn, cutoff, empty_cutoff))

    def usage(self, mailbox: bytes) -> Usage:
        _check_mailbox(mailbox)
        row = self._run(lambda conn: conn.execute(
            "SELECT count, bytes FROM relay_mailboxes WHERE id = %s", (mailbox,)).fetchone())
        return Usage(int(row[0]), int(row[1])) if row else Usage(0, 0)

    def total_usage(self) -> Usage:
        row = self._run(lambda conn: conn.execute(
            "SELECT COALESCE(SUM(count), 0), COALESCE(SUM(bytes), 0) FROM relay_usage").fetchone())
        return Usage(int(row[0]), int(row[1])) if row else Usage(0, 0)

    def mailbox_count(self) -> int:
        row = self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM relay_mailboxes").fetchone())
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._pool.close()

    # --- operator stats (relay/stats.py) ---------------------------------

    def publish_counters(self, process: bytes, started: int, now: int, counters_json: str) -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "INSERT INTO relay_processes (id, started_at, updated_at, counters) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, counters = EXCLUDED.counters",
                (process, started, now, counters_json))
            # forget processes that stopped reporting a day ago
            conn.execute("DELETE FROM relay_processes WHERE updated_at < %s", (now - 86400,))

        self._run(run)

    def read_counters(self) -> list[tuple[int, int, dict[str, int]]]:
        """(started_at, updated_at, counters) for every process that reported."""
        rows = self._run(lambda conn: conn.execute(
            "SELECT started_at, updated_at, counters FROM relay_processes").fetchall())
        return [(int(a), int(b), dict(c)) for a, b, c in rows]

    def forget_process(self, process: bytes) -> None:
        self._run(lambda conn: conn.execute("DELETE FROM relay_processes WHERE id = %s", (process,)))

    # --- live push across processes --------------------------------------

    def _announce(self, mailbox: bytes) -> None:
        """Queue a NOTIFY for `mailbox` (called from worker threads)."""
        loop, wake = self._follower
        if loop is None or wake is None:
            return  # no follow() running: nobody to tell
        with self._lock:
            first = not self._pending
            self._pending.add(mailbox)
        if first:
            loop.call_soon_threadsafe(wake.set)

    async def follow(self, on_stored: Callable[[bytes | None], None], retry: float = 1.0) -> None:
        """Tell other processes about our puts, and hear about theirs.

        Runs two tasks until cancelled, each on its own connection and
        reconnecting on failure: one LISTENs and calls `on_stored(mailbox)`
        for envelopes stored by other processes (`on_stored(None)`, "wake
        everyone", whenever it (re)connects, since notifications sent while
        it was away are gone); one sends the NOTIFYs that puts queued, all
        mailboxes queued meanwhile in one statement."""
        wake = asyncio.Event()
        self._follower = (asyncio.get_running_loop(), wake)
        tasks = [asyncio.create_task(self._listen(on_stored, retry)),
                 asyncio.create_task(self._notify_loop(wake, retry))]
        try:
            await asyncio.gather(*tasks)
        finally:
            self._follower = (None, None)
            for t in tasks:
                t.cancel()

    async def _listen(self, on_stored: Callable[[bytes | None], None], retry: float) -> None:
        own = self.process_id.hex() + ":"
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as aconn:
                    await aconn.execute(f"LISTEN {CHANNEL}")
                    on_stored(None)
                    async for note in aconn.notifies():
                        if note.payload.startswith(own):
                            continue
                        for hexbox in note.payload.partition(":")[2].split(","):
                            try:
                                mailbox = bytes.fromhex(hexbox)
                            except ValueError:
                                continue
                            if len(mailbox) == MAILBOX_LEN:
                                on_stored(mailbox)
            except psycopg.Error as e:
                log.warning("relay listener lost its database connection: %s", type(e).__name__)
                await asyncio.sleep(retry)

    async def _notify_loop(self, wake: asyncio.Event, retry: float) -> None:
        prefix = self.process_id.hex() + ":"
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as aconn:
                    while True:
                        await wake.wait()
                        wake.clear()
                        with self._lock:
                            boxes, self._pending = sorted(self._pending), set()
                        payloads = [prefix + ",".join(b.hex() for b in boxes[i:i + _PER_NOTIFY])
                                    for i in range(0, len(boxes), _PER_NOTIFY)]
                        try:
                            await aconn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                                                (CHANNEL, payloads))
                        except psycopg.Error:
                            with self._lock:
                                self._pending.update(boxes)  # send them after reconnecting
                            wake.set()
                            raise
            except psycopg.Error as e:
                log.warning("relay notifier lost its database connection: %s", type(e).__name__)
                await asyncio.sleep(retry)


#: Mailboxes per NOTIFY payload (33 characters each; a payload must stay under 8000 bytes).
_PER_NOTIFY = 200
_PUT_SQL = ("SELECT o_cursor, o_duplicate, o_refused FROM relay_put(%s, %s, %s, %s, %s, %s, %s, %s)")


def _setup(conn: psycopg.Connection[Any]) -> bytes:
    migrate(conn)
    return _init_instance(conn)


def _expire(conn: psycopg.Connection[Any], cutoff: int, empty_cutoff: int) -> int:
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_EXPIRE,)).fetchone()
    if not got or not got[0]:
        return 0  # another process is expiring right now
    dropped = 0
    try:
        boxes = [bytes(r[0]) for r in conn.execute(
            "SELECT DISTINCT mailbox FROM relay_envelopes WHERE stored_at < %s", (cutoff,))]
        for mailbox in boxes:  # one short transaction per mailbox, locks taken as a put takes them
            with conn.transaction():
                if conn.execute("SELECT 1 FROM relay_mailboxes WHERE id = %s FOR UPDATE",
                                (mailbox,)).fetchone() is None:
                    continue
                row = conn.execute(
                    "WITH gone AS (DELETE FROM relay_envelopes WHERE mailbox = %s AND stored_at < %s"
                    " RETURNING size) SELECT COUNT(*), COALESCE(SUM(size), 0) FROM gone",
                    (mailbox, cutoff)).fetchone()
                n, size = (int(row[0]), int(row[1])) if row else (0, 0)
                if n:
                    conn.execute("UPDATE relay_mailboxes SET count = count - %s, bytes = bytes - %s"
                                 " WHERE id = %s", (n, size, mailbox))
                    conn.execute("UPDATE relay_usage SET count = count - %s, bytes = bytes - %s"
                                 " WHERE shard = %s", (n, size, _shard(mailbox)))
                dropped += n
        # A put holds the row lock and raises count before it commits; this
        # DELETE re-checks the row after waiting, so it never drops a mailbox
        # that just got an envelope.
        conn.execute("DELETE FROM relay_mailboxes WHERE count = 0 AND last_seen < %s", (empty_cutoff,))
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_EXPIRE,))
    return dropped


def _reason(e: psycopg.Error) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def _init_instance(conn: psycopg.Connection[Any]) -> bytes:
    conn.execute("INSERT INTO relay_meta (key, value) VALUES ('instance', %s) ON CONFLICT (key) DO NOTHING",
                 (os.urandom(INSTANCE_ID_LEN),))
    row = conn.execute("SELECT value FROM relay_meta WHERE key = 'instance'").fetchone()
    if row is None or len(row[0]) != INSTANCE_ID_LEN:
        raise StoreCorrupt("the relay database has no valid instance id")
    return bytes(row[0])


__all__ = ["CHANNEL", "PostgresStore"]
