"""Clients and pools against real relay processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import pytest

from circle.errors import CircleError, DecryptionFailed, EnvelopeRejected
from circle.net.envelope import EnvelopeInbox, Kind, envelope_id, seal, seal_changes
from circle.net.keys import DeviceIdentity
from circle.net.relay_client import (
    Backoff,
    RelayConnection,
    RelayCursors,
    RelayPool,
)
from circle.relay.store import SQLiteStore

from .conftest import Circle, RelayProcess

FAST = Backoff(initial=0.05, maximum=0.3)
WAIT = 20.0  # a hang guard only; nothing asserts on time


class Member:
    """A member's device as the service would drive it: pool + inbox + applied payloads."""

    def __init__(self, circle: Circle, ident: DeviceIdentity, urls: list[str], cursors: str = "") -> None:
        self.circle = circle
        self.ident = ident
        self.inbox = EnvelopeInbox(circle.keys, circle.is_active)
        self.applied: list[bytes] = []
        self.errors: list[CircleError] = []
        self.resets: list[str] = []
        self.got = asyncio.Event()
        self.pool = RelayPool(urls, circle.creds, cursors=RelayCursors.from_json(cursors),
                              on_envelope=self.on_envelope, on_reset=self.resets.append, backoff=FAST)

    def on_envelope(self, data: bytes, url: str) -> None:
        try:
            opened = self.inbox.accept(data)
        except CircleError as e:
            self.errors.append(e)
            raise
        if opened is not None:
            self.applied.extend(opened.payloads)
            self.got.set()

    def edit(self, *changes: bytes) -> list[bytes]:
        envs = seal_changes(self.ident, self.circle.epoch, self.circle.key, list(changes), max_block=64)
        self.inbox.seen.update(envelope_id(e) for e in envs)
        self.applied.extend(changes)
        self.pool.push(envs)
        return envs

    async def wait_for(self, payloads: set[bytes]) -> None:
        async def loop() -> None:
            while not payloads <= set(self.applied):
                self.got.clear()
                await self.got.wait()
        await asyncio.wait_for(loop(), WAIT)


async def test_members_never_online_together(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    async with a.pool:
        a.edit(b"need: firewood", b"offer: ladder")
        assert (await a.pool.flush(WAIT)) == {relay.url: True}
    saved_a = a.pool.cursors.to_json()

    b = Member(circle, circle.members[1], [relay.url])
    async with b.pool:
        assert await b.pool.wait_caught_up(WAIT)
        await b.wait_for({b"need: firewood", b"offer: ladder"})
        b.edit(b"claim: firewood by B")
        await b.pool.flush(WAIT)
    assert b.errors == []

    # A comes back with its persisted cursors and its persisted set of applied ids
    a2 = Member(circle, circle.members[0], [relay.url], cursors=saved_a)
    a2.inbox.seen |= a.inbox.seen
    async with a2.pool:
        await a2.wait_for({b"claim: firewood by B"})
        assert await a2.pool.wait_caught_up(WAIT)
    assert a2.applied == [b"claim: firewood by B"]  # its own edits are not applied twice
    cur = RelayCursors.from_json(a2.pool.cursors.to_json()).get(relay.url)
    assert cur.cursor == 2 and len(cur.instance) == 32  # A wrote one envelope, B one


async def test_live_push_without_polling(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    b = Member(circle, circle.members[1], [relay.url])
    async with a.pool, b.pool:
        await a.pool.wait_caught_up(WAIT)
        await b.pool.wait_caught_up(WAIT)
        for i in range(5):
            a.edit(b"live %d" % i)
            await b.wait_for({b"live %d" % i})
    assert b.applied == [b"live %d" % i for i in range(5)]


async def test_two_relays_one_killed_one_wiped(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    r1, r2 = relay_factory(), relay_factory()
    urls = [r1.url, r2.url]
    a = Member(circle, circle.members[0], urls)
    snapshot = seal(a.ident, circle.epoch, circle.key, Kind.SNAPSHOT, [b"snapshot: everything so far"])

    def on_reset(url: str) -> None:  # what the service does: give the relay the whole state
        a.resets.append(url)
        a.pool.push_to(url, [snapshot])

    a.pool.on_reset = on_reset
    sent: set[bytes] = set()
    async with a.pool:
        for i in range(10):
            a.edit(b"batch1 %d" % i)
            sent.add(b"batch1 %d" % i)
        await a.pool.flush(WAIT)
        # r1 dies mid-stream
        for i in range(10):
            a.edit(b"batch2 %d" % i)
            sent.add(b"batch2 %d" % i)
            if i == 3:
                r1.kill()
        flushed = await a.pool.flush(WAIT, urls=[r2.url])
        assert flushed[r2.url] and not flushed[r1.url]  # r2 has everything, r1 is gone
        # r2 is wiped (all files deleted) and restarted; r1 comes back with its data
        await asyncio.to_thread(r2.wipe)  # in a thread: the pool must keep answering
        await asyncio.to_thread(r1.start)
        for i in range(5):
            a.edit(b"batch3 %d" % i)
            sent.add(b"batch3 %d" % i)
        assert await a.pool.flush(WAIT) == {r1.url: True, r2.url: True}
    assert r2.url in a.resets  # the wiped relay was noticed and given a snapshot

    # B reads from both relays and ends with everything, each envelope once
    b = Member(circle, circle.members[1], urls)
    async with b.pool:
        await b.wait_for(sent | {b"snapshot: everything so far"})
        await b.pool.wait_caught_up(WAIT)
    assert len(b.applied) == len(set(b.applied)) == len(sent) + 1
    assert b.errors == []

    # and a reader of only the wiped relay catches up from the snapshot
    c = Member(circle, circle.members[2], [r2.url])
    async with c.pool:
        await c.wait_for({b"snapshot: everything so far"} | {b"batch3 %d" % i for i in range(5)})


async def test_relay_down_then_back(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    async with a.pool:
        await a.pool.wait_caught_up(WAIT)
        await asyncio.to_thread(relay.stop)
        a.edit(b"written while the relay is down")
        assert (await a.pool.flush(0.5)) == {relay.url: False}
        assert a.pool.status()[0].pending == 1
        await asyncio.to_thread(relay.start)
        assert (await a.pool.flush(WAIT)) == {relay.url: True}
    b = Member(circle, circle.members[1], [relay.url])
    async with b.pool:
        await b.wait_for({b"written while the relay is down"})


def _sqlite(relay: RelayProcess) -> sqlite3.Connection:
    return sqlite3.connect(relay.data / SQLiteStore.FILENAME, timeout=10)


async def test_client_rejects_tampered_replayed_and_foreign(
    relay_factory: Callable[..., RelayProcess], circle: Circle
) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    async with a.pool:
        a.edit(b"one")
        a.edit(b"two")
        a.edit(b"three")
        await a.pool.flush(WAIT)

    # a malicious relay operator edits the database behind the relay's back
    db = _sqlite(relay)
    rows = db.execute("SELECT cursor, data, mailbox FROM envelopes ORDER BY cursor").fetchall()
    assert len(rows) == 3
    mailbox = rows[0][2]
    tampered = bytearray(rows[1][1])
    tampered[100] ^= 0xFF
    with db:
        db.execute("UPDATE envelopes SET data=? WHERE cursor=?", (bytes(tampered), rows[1][0]))
        other = Circle.new(1)
        foreign = seal(other.members[0], circle.epoch, other.key, Kind.CHANGES, [b"foreign"])
        outsider = seal(DeviceIdentity.generate(), circle.epoch, circle.key, Kind.CHANGES, [b"outsider"])
        for i, env in enumerate([foreign, outsider, rows[0][1]]):  # the last one is a replay
            db.execute("INSERT INTO envelopes (mailbox, cursor, eid, stored_at, data) VALUES (?, ?, ?, 0, ?)",
                       (mailbox, 4 + i, bytes([i]) * 32, env))
    db.close()

    b = Member(circle, circle.members[1], [relay.url])
    async with b.pool:
        await b.wait_for({b"one", b"three"})
        await b.pool.wait_caught_up(WAIT)
    assert b.applied == [b"one", b"three"]  # the replay of "one" was dropped, nothing else got in
    kinds = sorted(type(e).__name__ for e in b.errors)
    # the foreign one matches no key's hint (UnknownEpoch, a DecryptionFailed)
    assert kinds == ["DecryptionFailed", "EnvelopeRejected", "UnknownEpoch"]
    assert any(isinstance(e, DecryptionFailed) for e in b.errors)
    assert any(isinstance(e, EnvelopeRejected) for e in b.errors)
    assert b.pool.rejected == 3
    assert b.pool.status()[0].connected is False  # closed, but the pool kept going until then


async def test_sync_once(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    a.edit(b"via sync_once")
    assert await a.pool.sync_once(WAIT) == {relay.url: None}
    b = Member(circle, circle.members[1], [relay.url])
    assert await b.pool.sync_once(WAIT) == {relay.url: None}
    assert b.applied == [b"via sync_once"]
    assert await b.pool.sync_once(WAIT) == {relay.url: None}
    assert b.applied == [b"via sync_once"]  # reading again changes nothing
    dead = Member(circle, circle.members[1], ["ws://127.0.0.1:9/"])
    res = await dead.pool.sync_once(5)
    assert res["ws://127.0.0.1:9/"] is not None


HANDLE = b"Rosemary-Fox"
SECRETS = [HANDLE, b"insulin", b"Birchwood", b"wheelbarrow", b"north-zone"]


async def test_relay_db_and_log_hold_no_plaintext(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    b = Member(circle, circle.members[1], [relay.url])
    changes = [b"member handle=" + HANDLE + b" zone=north-zone",
               b"need title=insulin details=Birchwood pharmacy run",
               b"tool name=wheelbarrow steward=" + HANDLE]
    async with a.pool, b.pool:
        a.edit(*changes)
        a.pool.push([seal(a.ident, circle.epoch, circle.key, Kind.SNAPSHOT, [b"|".join(changes) * 50])])
        await a.pool.flush(WAIT)
        await b.wait_for(set(changes))
        await asyncio.sleep(0.7)  # let one summary log line be written
    relay.stop()
    blobs = {p.name: p.read_bytes() for p in relay.data.iterdir()}
    blobs["log"] = relay.log.read_bytes()
    assert any(len(v) > 0 for k, v in blobs.items() if k.endswith("sqlite3"))
    assert b"puts=" in blobs["log"]  # the log is there and has counts
    creds = circle.creds
    forbidden = SECRETS + [creds.token, creds.token.hex().encode(), circle.key]
    for name, blob in blobs.items():
        for secret in forbidden:
            assert secret not in blob, f"{secret!r} found in {name}"
    # the database must hold the mailbox id; the log must not, not even a prefix
    for secret in (creds.mailbox, creds.mailbox.hex().encode(), creds.mailbox.hex()[:8].encode()):
        assert secret not in blobs["log"]
    for m in circle.members:
        for name, blob in blobs.items():
            assert m.verify_key not in blob, name
            assert m.member_id.encode() not in blob, name


async def test_relay_connection_direct(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    envs = [seal(circle.members[0], 1, circle.key, Kind.CHANGES, [i.to_bytes(2, "big")]) for i in range(300)]
    async with await RelayConnection.open(relay.url, circle.creds) as conn:
        assert conn.registered
        results = await conn.push_many(envs)
        assert all(not isinstance(r, Exception) for r in results)
        items, nxt = await conn.fetch_all(0)  # more than one page
        assert [e for _, e in items] == envs and nxt == items[-1][0]
        again = await conn.push(envs[5])
        assert again.duplicate
    async with await RelayConnection.open(relay.url, circle.creds) as conn2:
        assert not conn2.registered and conn2.head == items[-1][0]
        await conn2.subscribe(items[-3][0])
        got = []
        async for cursor, env in conn2.pushed():
            got.append(env)
            if cursor == items[-1][0]:
                break
        assert got == envs[-2:]


@pytest.mark.parametrize("text", ["", "[]", '{"ws://x/": {"cursor": -1}}', "{nope"])
def test_cursor_json_rejects_garbage(text: str) -> None:
    if text == "":
        assert RelayCursors.from_json(text).by_url == {}
        return
    with pytest.raises(CircleError):
        RelayCursors.from_json(text)


def test_cursor_json_round_trip() -> None:
    c = RelayCursors()
    c.get("wss://relay.example/").cursor = 42
    c.get("wss://relay.example/").instance = "ab" * 16
    assert RelayCursors.from_json(c.to_json()) == c


async def test_urgent_envelopes_overtake_the_queued_outbox(
    relay_factory: Callable[..., RelayProcess], circle: Circle
) -> None:
    """Issue 13: an alert pushed while a backlog waits (relay unreachable, or a
    large push) is stored by the relay, and so read by everyone, before it."""
    relay = relay_factory()
    a = Member(circle, circle.members[0], [relay.url])
    backlog = [b"need %d" % i for i in range(40)]
    a.edit(*backlog)  # queued: the pool has not connected yet
    alert = seal_changes(a.ident, circle.epoch, circle.key, [b"ALERT: vans at 5th & Main"], max_block=64)
    a.pool.push(alert, urgent=True)
    async with a.pool:
        assert (await a.pool.flush(WAIT)) == {relay.url: True}
    b = Member(circle, circle.members[1], [relay.url])
    async with b.pool:
        await b.wait_for({b"ALERT: vans at 5th & Main", *backlog})
    assert b.applied[0] == b"ALERT: vans at 5th & Main"  # read first: the relay stored it first
