"""The relay protocol core (sans-I/O pairs) and a real relay process under hostile clients."""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.request
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from circle.errors import (
    LocalProtocolError,
    PeerUnavailable,
    RelayAuthFailed,
    RelayError,
    RelayQuotaExceeded,
    RemoteProtocolError,
)
from circle.net import relay_protocol as P
from circle.net.envelope import Kind, seal
from circle.net.relay_client import RelayConnection, RelayCredentials
from circle.relay import core as S
from circle.relay.store import MemoryStore, StoreLimits

from .conftest import Circle, RelayProcess

# --- sans-I/O: a client core and a server core wired back to back ------------


class Pair:
    def __init__(self, store: MemoryStore, circle: Circle) -> None:
        self.server = S.ServerCore(store, S.ServerLimits(registration_bits=0), clock=lambda: 1_700_000_000.0)
        self.client = P.ClientCore()
        self.creds = circle.creds

    def send(self, data: bytes) -> list[P.ClientEvent]:
        out = self.server.receive(data)
        return [self.client.receive(b) for b in out.send]


def test_core_pair_auth_put_fetch_subscribe(circle: Circle) -> None:
    store = MemoryStore()
    a = Pair(store, circle)
    [ev] = a.send(a.client.auth(a.creds.mailbox, a.creds.token))
    assert isinstance(ev, P.Authenticated) and ev.registered and ev.head == 0
    envs = [seal(circle.members[0], 1, circle.key, Kind.CHANGES, [bytes([i])]) for i in range(3)]
    acks = []
    for e in envs:
        _req, data = a.client.put(e)
        out = a.server.receive(data)
        assert out.stored_in == a.creds.mailbox
        [ack] = [a.client.receive(b) for b in out.send]
        assert isinstance(ack, P.PutAcked) and not ack.duplicate
        acks.append(ack)
    _req, data = a.client.put(envs[0])
    [dup] = a.send(data)
    assert isinstance(dup, P.PutAcked) and dup.duplicate and dup.cursor == acks[0].cursor

    b = Pair(store, circle)
    [ev] = b.send(b.client.auth(b.creds.mailbox, b.creds.token))
    assert isinstance(ev, P.Authenticated) and not ev.registered and ev.head == acks[-1].cursor
    _req, data = b.client.fetch(acks[0].cursor)
    [batch] = b.send(data)
    assert isinstance(batch, P.FetchResult)
    assert [c for c, _ in batch.items] == [acks[1].cursor, acks[2].cursor]
    assert batch.next_cursor == acks[2].cursor and not batch.more
    assert b.send(b.client.subscribe(0)) == []
    pushed = [b.client.receive(x) for x in b.server.pending_pushes()]
    assert [p.envelope for p in pushed if isinstance(p, P.EnvelopePushed)] == envs
    assert b.server.pending_pushes() == []


def test_core_requires_auth_first(circle: Circle) -> None:
    a = Pair(MemoryStore(), circle)
    data = P.encode(P.Fetch(1, 0, 10))
    out = a.server.receive(data)
    assert out.close
    msg = P.decode_server_message(out.send[0])
    assert isinstance(msg, P.Error) and msg.code == P.ErrorCode.AUTH_REQUIRED and msg.fatal


def test_core_wrong_token_and_version(circle: Circle) -> None:
    store = MemoryStore()
    a = Pair(store, circle)
    a.send(a.client.auth(a.creds.mailbox, a.creds.token))
    b = Pair(store, circle)
    [ev] = b.send(b.client.auth(a.creds.mailbox, os.urandom(32)))
    assert isinstance(ev, P.RelayFailed) and isinstance(ev.error, RelayAuthFailed)
    assert b.server.closed
    c = S.ServerCore(store)
    out = c.receive(P.encode(P.Auth(a.creds.mailbox, a.creds.token, version=9)))
    assert out.close and P.decode_server_message(out.send[0]).code == P.ErrorCode.UNSUPPORTED_VERSION  # type: ignore[union-attr]


def test_core_refuses_non_envelopes_and_quota(circle: Circle) -> None:
    store = MemoryStore(StoreLimits(mailbox_bytes=3000))
    a = Pair(store, circle)
    a.send(a.client.auth(a.creds.mailbox, a.creds.token))
    _req, data = a.client.put(b"not an envelope at all")
    [ev] = a.send(data)
    assert isinstance(ev, P.PutRefused) and not a.server.closed
    results = []
    for i in range(4):
        _req, data = a.client.put(seal(circle.members[0], 1, circle.key, Kind.CHANGES, [bytes([i])]))
        results.extend(a.send(data))
    assert isinstance(results[-1], P.PutRefused)
    assert isinstance(results[-1].error, RelayQuotaExceeded)
    assert isinstance(results[0], P.PutAcked)


def test_core_frame_cap(circle: Circle) -> None:
    core = S.ServerCore(MemoryStore(), S.ServerLimits(frame_cap=1000, registration_bits=0))
    out = core.receive(P.encode(P.Auth(circle.creds.mailbox, circle.creds.token)))
    assert not out.close
    out = core.receive(b"\x02" + bytes(2000))
    assert out.close and out.close_code == 1009
    assert P.decode_server_message(out.send[0]).code == P.ErrorCode.TOO_LARGE  # type: ignore[union-attr]


def test_core_small_frame_cap_before_auth(circle: Circle) -> None:
    """Before authenticating, a client cannot make the relay take big messages."""
    core = S.ServerCore(MemoryStore())
    out = core.receive(b"\x02" + bytes(P.PRE_AUTH_FRAME_CAP))
    assert out.close and out.close_code == 1009
    assert P.decode_server_message(out.send[0]).code == P.ErrorCode.TOO_LARGE  # type: ignore[union-attr]


def test_client_core_rejects_a_lying_relay(circle: Circle) -> None:
    c = P.ClientCore()
    c.auth(circle.creds.mailbox, circle.creds.token)
    with pytest.raises(RemoteProtocolError):  # anything but AuthOk first
        c.receive(P.encode(P.Pushed(1, b"x")))
    c = P.ClientCore()
    c.auth(circle.creds.mailbox, circle.creds.token)
    c.receive(P.encode(P.AuthOk(bytes(16), 0, False)))
    with pytest.raises(RemoteProtocolError):  # ack for a put never made
        c.receive(P.encode(P.Ack(7, bytes(32), 1, False)))
    c = P.ClientCore()
    c.auth(circle.creds.mailbox, circle.creds.token)
    c.receive(P.encode(P.AuthOk(bytes(16), 0, False)))
    req, _ = c.put(b"envelope")
    with pytest.raises(RemoteProtocolError):  # ack names another envelope
        c.receive(P.encode(P.Ack(req, bytes(32), 1, False)))
    c = P.ClientCore()
    c.auth(circle.creds.mailbox, circle.creds.token)
    c.receive(P.encode(P.AuthOk(bytes(16), 0, False)))
    c.subscribe(0)
    c.receive(P.encode(P.Pushed(5, b"a")))
    with pytest.raises(RemoteProtocolError):  # cursors must grow
        c.receive(P.encode(P.Pushed(5, b"b")))
    c = P.ClientCore()
    c.auth(circle.creds.mailbox, circle.creds.token)
    c.receive(P.encode(P.AuthOk(bytes(16), 0, False)))
    req, _ = c.fetch(10)
    with pytest.raises(RemoteProtocolError):  # batch going backwards
        c.receive(P.encode(P.Batch(req, ((3, b"x"),), 3, False)))
    with pytest.raises(LocalProtocolError):
        P.ClientCore().put(b"x")  # not connected


ALL_MESSAGES: list[P.Message] = [
    P.Auth(bytes(16), bytes(range(32))), P.Auth(bytes(16), bytes(32), proof=2**63 + 5), P.Challenge(20),
    P.Put(5, b"env"), P.Fetch(3, 2**40, 7), P.Subscribe(9),
    P.AuthOk(b"i" * 16, 12, True), P.Ack(1, b"e" * 32, 99, False),
    P.Batch(4, ((1, b"a"), (2, b"bb")), 2, True), P.Batch(4, (), 0, False), P.Pushed(8, b"zz"),
    P.Error(6, "quota \u00e9", 3, False),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_codec_round_trip(msg: P.Message) -> None:
    data = P.encode(msg)
    decode = P.decode_client_message if data[0] < 0x80 else P.decode_server_message
    assert decode(data) == msg
    if not isinstance(msg, (P.Put, P.Pushed)):  # those end in an opaque remainder
        with pytest.raises(RemoteProtocolError):
            decode(data + b"\0")
        with pytest.raises(RemoteProtocolError):
            decode(data[:-1])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_only_raise_protocol_errors(data: bytes) -> None:
    for decode in (P.decode_client_message, P.decode_server_message):
        try:
            decode(data)
        except RemoteProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_server_core_survives_garbage(frames: list[bytes]) -> None:
    core = S.ServerCore(MemoryStore())
    for f in frames:
        if core.closed:
            break
        out = core.receive(f)
        for b in out.send:
            P.decode_server_message(b)


def test_token_bucket() -> None:
    b = S.TokenBucket(rate=10, burst=5)
    assert [b.delay_for(0.0) for _ in range(5)] == [0.0] * 5
    assert b.delay_for(0.0) == pytest.approx(0.1)
    assert b.delay_for(10.0) == 0.0  # refilled (capped at burst)


# --- a real relay process -----------------------------------------------------

HOSTILE_ARGS = ("--frame-cap", "70000", "--mailbox-quota-bytes", "12000", "--max-connections", "40",
                "--max-connections-per-ip", "25", "--auth-timeout", "1")


async def honest_round_trip(url: str, circle: Circle) -> None:
    """An honest client can still authenticate, write and read."""
    creds = RelayCredentials.for_epoch(circle.key)
    e = seal(circle.members[0], 1, circle.key, Kind.CHANGES, [os.urandom(8)])
    async with await RelayConnection.open(url, creds) as conn:
        ack = await conn.push(e)
        items, _ = await conn.fetch_all(ack.cursor - 1)
        assert items == [(ack.cursor, e)]


async def test_relay_process_basic(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    await honest_round_trip(relay.url, circle)
    with urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/healthz", timeout=5) as r:
        assert r.status == 200


async def test_relay_behind_a_path(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory("--path", "/circle-relay")
    await honest_round_trip(f"ws://127.0.0.1:{relay.port}/circle-relay", circle)
    with pytest.raises(PeerUnavailable):
        await RelayConnection.open(f"ws://127.0.0.1:{relay.port}/elsewhere", circle.creds)


async def test_hostile_clients(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory(*HOSTILE_ARGS)
    url = relay.url
    await honest_round_trip(url, circle)  # registers the mailbox with the right token

    # oversized frame: the relay closes that connection (1009) and carries on
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(P.encode(P.Auth(circle.creds.mailbox, circle.creds.token)))
        await ws.recv()
        await ws.send(b"\x02" + bytes(200_000))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    # garbage binary first message, and a text frame
    for bad in (os.urandom(64), "hello"):
        async with connect(url, compression=None) as ws:
            await ws.send(bad)
            reply = await ws.recv()
            assert isinstance(reply, bytes)
            msg = P.decode_server_message(reply)
            assert isinstance(msg, P.Error) and msg.fatal
            with pytest.raises(ConnectionClosed):
                await ws.recv()

    # not even HTTP
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.sendall(os.urandom(4096) + b"\r\n\r\n")
        s.settimeout(5)
        try:
            s.recv(1024)
        except (ConnectionResetError, TimeoutError):
            pass

    # wrong mailbox token: refused, the mailbox's content untouched
    wrong = RelayCredentials(circle.creds.mailbox, os.urandom(32))
    with pytest.raises(RelayAuthFailed):
        await RelayConnection.open(url, wrong)

    # quota exhaustion in one mailbox does not affect another
    greedy = Circle.new(1)
    async with await RelayConnection.open(url, greedy.creds) as conn:
        results = await conn.push_many(
            [seal(greedy.members[0], 1, greedy.key, Kind.CHANGES, [bytes([i])]) for i in range(20)])
    assert any(isinstance(r, RelayQuotaExceeded) for r in results)
    assert isinstance(results[0], P.PutAcked)

    # connected but never authenticating: closed after the auth timeout
    async with connect(url, compression=None) as ws:
        reply = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(reply, bytes)
        assert P.decode_server_message(reply).code == P.ErrorCode.AUTH_REQUIRED  # type: ignore[union-attr]

    assert relay.alive()
    await honest_round_trip(url, circle)
    async with await RelayConnection.open(url, circle.creds) as conn:
        items, _ = await conn.fetch_all(0)
        assert len(items) == 2  # the two honest envelopes, nothing from the attackers


async def test_connection_flood(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory(*HOSTILE_ARGS)
    refused = 0
    opened = []
    for _ in range(35):  # bounded flood from one address (per-address cap is 25)
        try:
            ws = await connect(relay.url, compression=None, open_timeout=5)
            opened.append(ws)
        except InvalidStatus as e:
            assert e.response.status_code == 503
            refused += 1
    raw = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(20)]
    try:
        assert refused >= 10
        assert len(opened) <= 25
        assert relay.alive()
    finally:
        for ws in opened:
            await ws.close()
        for s in raw:
            s.close()
    # once the flood is gone an honest client is served
    for _ in range(50):
        try:
            await honest_round_trip(relay.url, circle)
            break
        except (PeerUnavailable, RelayError):
            await asyncio.sleep(0.1)
    else:
        pytest.fail("relay did not serve an honest client after the flood")
