"""Issue 10: a relay that cannot be jammed. Each test is an attack on a real
relay process (or, for pure arithmetic, on the sans-I/O core)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import time
from collections.abc import Callable

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from circle.errors import LocalProtocolError, RelayAuthFailed, RelayError, UsageError
from circle.net import relay_protocol as P
from circle.net.envelope import Kind, seal
from circle.net.relay_client import (
    InsecureRelay,
    RelayConnection,
    RelayCredentials,
    RelayPool,
    check_relay_url,
)
from circle.relay import core as S
from circle.relay.store import MemoryStore

from .conftest import Circle, RelayProcess
from .rawws import RawClient, frame

# --- the token bucket's arithmetic --------------------------------------------


def admitted(bucket: S.TokenBucket, seconds: float, cost: float = 1.0) -> int:
    """Messages a client gets through in `seconds` if it waits exactly as told."""
    t, n = 0.0, 0
    while True:
        t += bucket.delay_for(t, cost)
        if t > seconds:
            return n
        n += 1


def test_token_bucket_limits_a_client_that_waits_as_told() -> None:
    # the documented 50 msg/s with a burst of 200: about 700 in 10 s, not 100,000
    n = admitted(S.TokenBucket(rate=50, burst=200), 10.0)
    assert 690 <= n <= 701
    assert admitted(S.TokenBucket(rate=1024, burst=4096), 10.0, cost=512) == pytest.approx(28, abs=1)


def test_token_bucket_debt_is_paid_before_the_next_take() -> None:
    b = S.TokenBucket(rate=10, burst=5)
    assert [b.delay_for(0.0) for _ in range(5)] == [0.0] * 5
    assert b.delay_for(0.0) == pytest.approx(0.1)  # one in debt
    assert b.delay_for(0.0) == pytest.approx(0.2)  # deeper: never refilled to the burst
    assert b.delay_for(0.2) == pytest.approx(0.1)  # 0.2 s paid 2 tokens back, took 1
    assert b.delay_for(100.0) == 0.0  # refilled, capped at the burst
    assert [b.delay_for(100.0) for _ in range(4)] == [0.0] * 4
    assert b.delay_for(100.0) > 0


def test_token_bucket_try_take_never_borrows() -> None:
    b = S.TokenBucket(rate=1, burst=2)
    assert b.try_take(0.0) and b.try_take(0.0)
    assert not b.try_take(0.0) and not b.try_take(0.5)
    assert b.try_take(1.0)
    assert not b.full(1.0) and b.full(10.0)


# --- registration costs a proof ---------------------------------------------------


def _needs_a_proof(bits: int) -> Circle:
    """A circle whose mailbox proof 0 does not already satisfy (1 in 2**bits do:
    the relay would then register it without a challenge)."""
    return next(c for c in (Circle.new(1) for _ in range(1000)) if not P.proof_ok(c.creds.mailbox, 0, bits))


def test_core_registration_needs_a_proof_and_the_token_behind_the_mailbox() -> None:
    store = MemoryStore()
    creds = _needs_a_proof(8).creds
    core = S.ServerCore(store, S.ServerLimits(registration_bits=8))
    out = core.receive(P.encode(P.Auth(creds.mailbox, creds.token)))
    assert P.decode_server_message(out.send[0]) == P.Challenge(8) and not out.close
    assert store.mailbox_count() == 0  # nothing registered for free
    proof = P.make_proof(creds.mailbox, 8)
    out = core.receive(P.encode(P.Auth(creds.mailbox, creds.token, proof=proof)))
    ok = P.decode_server_message(out.send[0])
    assert isinstance(ok, P.AuthOk) and ok.registered

    # a known mailbox costs no proof
    again = S.ServerCore(store, S.ServerLimits(registration_bits=8))
    assert isinstance(P.decode_server_message(again.receive(P.encode(P.Auth(creds.mailbox, creds.token))).send[0]),
                      P.AuthOk)

    # a wrong proof after the challenge is fatal
    other = _needs_a_proof(8).creds
    bad = S.ServerCore(store, S.ServerLimits(registration_bits=8))
    bad.receive(P.encode(P.Auth(other.mailbox, other.token)))
    wrong = next(p for p in range(1, 10_000) if not P.proof_ok(other.mailbox, p, 8))
    out = bad.receive(P.encode(P.Auth(other.mailbox, other.token, proof=wrong)))
    assert out.close and out.close_code == 1008
    assert store.mailbox_count() == 1

    # squatting: somebody else's mailbox id with a token of one's own
    squat = S.ServerCore(store, S.ServerLimits(registration_bits=0))
    out = squat.receive(P.encode(P.Auth(other.mailbox, os.urandom(32))))
    assert out.close and out.close_code == 1008
    assert P.decode_server_message(out.send[0]).code == P.ErrorCode.AUTH_FAILED  # type: ignore[union-attr]


def test_core_registration_limit_is_asked_only_for_new_mailboxes(circle: Circle) -> None:
    store = MemoryStore()
    asked: list[bool] = []

    def no() -> bool:
        asked.append(False)
        return False

    core = S.ServerCore(store, S.ServerLimits(registration_bits=0), may_register=no)
    out = core.receive(P.encode(P.Auth(circle.creds.mailbox, circle.creds.token)))
    assert out.close and out.close_code == 1013 and asked == [False]
    assert P.decode_server_message(out.send[0]).code == P.ErrorCode.RATE_LIMITED  # type: ignore[union-attr]
    S.ServerCore(store, S.ServerLimits(registration_bits=0)).receive(
        P.encode(P.Auth(circle.creds.mailbox, circle.creds.token)))
    known = S.ServerCore(store, S.ServerLimits(registration_bits=0), may_register=no)
    assert not known.receive(P.encode(P.Auth(circle.creds.mailbox, circle.creds.token))).close
    assert asked == [False]


# --- per-relay credentials, wss:// off loopback -----------------------------------


def test_every_relay_of_a_circle_gets_its_own_token_and_mailbox(circle: Circle) -> None:
    a = RelayCredentials.for_relay(circle.key, "wss://relay-a.example/")
    b = RelayCredentials.for_relay(circle.key, "wss://relay-b.example/")
    assert a.token != b.token and a.mailbox != b.mailbox
    assert RelayCredentials.for_relay(circle.key, "WSS://Relay-A.example") == a  # the same relay, typed differently
    assert P.mailbox_for_token(a.token) == a.mailbox
    assert RelayCredentials.for_relay(Circle.new(1).key, "wss://relay-a.example/") != a


@pytest.mark.parametrize("url", ["ws://127.0.0.1:7733/", "ws://127.8.9.10/", "ws://[::1]:7/x", "wss://relay.example/",
                                 "wss://10.1.2.3/"])
def test_relay_urls_allowed(url: str) -> None:
    assert check_relay_url(url).startswith(url.split(":", 1)[0])


@pytest.mark.parametrize("url", ["ws://10.1.2.3:7733/", "ws://relay.example/", "ws://localhost:7733/",
                                 "ws://[fe80::1]/", "ws://0.0.0.0/"])
def test_plain_ws_off_loopback_is_refused_in_words(url: str) -> None:
    with pytest.raises(InsecureRelay) as e:
        check_relay_url(url)
    assert "wss://" in e.value.message and "127.0.0.1" in e.value.message
    assert isinstance(e.value, UsageError) and isinstance(e.value, RelayError)


async def test_pool_reports_an_insecure_relay_and_keeps_the_others(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    pool = RelayPool([relay.url, "ws://192.0.2.1:7733/"], lambda u: RelayCredentials.for_relay(circle.key, u))
    results = await pool.sync_once(timeout=20)
    assert results[relay.url] is None
    assert "use wss://192.0.2.1:7733/" in (results["ws://192.0.2.1:7733/"] or "")


async def test_one_relay_cannot_spend_the_circles_credentials_at_another(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    """Relay A's operator saw the circle's credentials for A; at relay B they
    open nothing of the circle's."""
    relay_a, relay_b = relay_factory(), relay_factory()
    creds_b = RelayCredentials.for_relay(circle.key, relay_b.url)
    seen_at_a = RelayCredentials.for_relay(circle.key, relay_a.url)
    env = seal(circle.members[0], 1, circle.key, Kind.CHANGES, [b"secret"])
    async with await RelayConnection.open(relay_b.url, creds_b) as conn:
        await conn.push(env)
    async with await RelayConnection.open(relay_b.url, seen_at_a) as conn:
        items, _ = await conn.fetch_all(0)
        assert items == [] and conn.registered  # a separate, new mailbox
    with pytest.raises(RelayAuthFailed):  # and the circle's mailbox id with A's token is refused
        await RelayConnection.open(relay_b.url, RelayCredentials(creds_b.mailbox, seen_at_a.token))


# --- send buffers: a client that does not read ------------------------------------


def fill_mailbox(port: int, circle: Circle, n: int, size: int) -> RelayCredentials:
    async def go() -> RelayCredentials:
        creds = RelayCredentials.for_relay(circle.key, f"ws://127.0.0.1:{port}/")
        envs = [seal(circle.members[0], 1, circle.key, Kind.CHANGES, [os.urandom(size)]) for _ in range(n)]
        async with await RelayConnection.open(f"ws://127.0.0.1:{port}/", creds) as conn:
            results = await conn.push_many(envs)
        assert all(isinstance(r, P.PutAcked) for r in results)
        return creds
    return asyncio.run(go())


def log_count(relay: RelayProcess, name: str) -> int:
    found = re.findall(rf"{name}=(\d+)", relay.log.read_text())
    return int(found[-1]) if found else 0


def test_a_subscriber_that_never_reads_is_dropped_and_frees_its_slot(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory("--max-connections-per-ip", "2", "--send-timeout", "1", "--min-send-rate", "10000000")
    creds = fill_mailbox(relay.port, circle, 60, 100_000)  # 6 MB: more than any socket buffers
    stuck = []
    for _ in range(2):  # both of this address's slots
        c = RawClient(relay.port, source="127.0.0.3", rcvbuf=4096)
        c.send(P.encode(P.Auth(creds.mailbox, creds.token)))
        c.send(P.encode(P.Subscribe(0)))
        stuck.append(c)  # and never read again
    try:
        deadline = time.monotonic() + 30  # hang guard; the relay should need ~2 s
        while True:
            try:
                probe = RawClient(relay.port, source="127.0.0.3")
            except ConnectionError:
                probe = None
            if probe is not None and probe.status == 101:
                probe.close()
                break
            if probe is not None:
                probe.close()
            assert time.monotonic() < deadline, "the non-readers still hold the address's slots"
            time.sleep(0.2)
        time.sleep(1.0)
        assert log_count(relay, "slow_readers") >= 2
        assert relay.alive()
    finally:
        for c in stuck:
            c.close()


def test_a_fetcher_that_never_reads_the_replies_is_dropped(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory("--send-timeout", "1", "--min-send-rate", "10000000")
    creds = fill_mailbox(relay.port, circle, 60, 100_000)
    c = RawClient(relay.port, source="127.0.0.4", rcvbuf=4096)
    try:
        c.send(P.encode(P.Auth(creds.mailbox, creds.token)))
        for i in range(8):
            c.send(P.encode(P.Fetch(i + 1, 0, 1000)))
        deadline = time.monotonic() + 30
        while log_count(relay, "slow_readers") < 1:
            assert time.monotonic() < deadline, "the relay still waits for a client that does not read"
            time.sleep(0.2)
    finally:
        c.close()


# --- before authentication ----------------------------------------------------------


def test_pre_auth_large_frame_is_refused_before_it_is_buffered(
        relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    c = RawClient(relay.port)
    try:
        # announce a 4 MiB message and send only its first bytes: the relay
        # must close at the header, not wait for (and buffer) 4 MiB
        c.sock.sendall(frame(b"\x01" * 1000, length=4 * 1024 * 1024)[: 14 + 1000])
        assert c.close_code() == 1009
    finally:
        c.close()
    assert relay.alive()


def test_a_client_that_stalls_after_the_challenge_is_closed(relay_factory: Callable[..., RelayProcess]) -> None:
    """The auth timeout covers the whole authentication, not only the first message."""
    relay = relay_factory("--auth-timeout", "1")
    token = os.urandom(32)
    c = RawClient(relay.port)
    try:
        c.send(P.encode(P.Auth(P.mailbox_for_token(token), token)))
        op, reply = c.recv_frame()
        assert isinstance(P.decode_server_message(reply), P.Challenge)
        op, reply = c.recv_frame()  # ... never answer it (the socket's 5 s timeout is the hang guard)
        msg = P.decode_server_message(reply)
        assert isinstance(msg, P.Error) and msg.code == P.ErrorCode.AUTH_REQUIRED
        assert c.close_code() == 1008
    finally:
        c.close()


# --- close codes and HTTP answers -----------------------------------------------


async def test_standard_close_codes(relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory()
    async with connect(relay.url, compression=None) as ws:
        await ws.send("hello")  # a text frame
        msg = P.decode_server_message(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(msg, P.Error) and msg.fatal
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    async with connect(relay.url, compression=None) as ws:
        await ws.send(P.encode(P.Auth(circle.creds.mailbox, os.urandom(32))))  # not the mailbox's token
        msg = P.decode_server_message(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(msg, P.Error) and msg.code == P.ErrorCode.AUTH_FAILED
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with connect(relay.url, compression=None) as ws:
        await ws.send(os.urandom(40))  # garbage binary
        await ws.recv()
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1002, 1008)


def http(port: int, request: bytes) -> int | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, TimeoutError):
            return None
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
    (b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 400),
])
def test_every_http_request_gets_a_status(relay_factory: Callable[..., RelayProcess],
                                          request_bytes: bytes, status: int) -> None:
    relay = relay_factory()
    assert http(relay.port, request_bytes) == status


# --- rates: messages per connection and per address --------------------------------


async def count_replies(url: str, creds: RelayCredentials, seconds: float, source: str) -> int:
    """Pipeline Fetch requests as fast as the socket takes them; count replies in `seconds`."""
    n = 0
    ws = await connect(url, compression=None, max_size=None, local_addr=(source, 0))
    try:
        await ws.send(P.encode(P.Auth(creds.mailbox, creds.token)))
        await ws.recv()

        async def spam() -> None:
            req = 1
            while True:
                await ws.send(P.encode(P.Fetch(req, 0, 1)))
                req += 1
                await asyncio.sleep(0)

        async def count() -> None:
            nonlocal n
            async for _msg in ws:
                n += 1

        tasks = [asyncio.create_task(spam()), asyncio.create_task(count())]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        ws.transport.abort()  # no polite close: the relay still has our backlog
    return n


async def test_message_rate_is_limited_per_connection_and_per_address(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory("--messages-per-second", "50", "--message-burst", "20",
                          "--address-messages-per-second", "80", "--address-message-burst", "20")
    creds = RelayCredentials.for_relay(circle.key, relay.url)
    async with await RelayConnection.open(relay.url, creds):
        pass
    one = await count_replies(relay.url, creds, 2.0, "127.0.0.5")
    assert one <= 20 + 50 * 2 + 5  # a flood gets the rate, not 100,000 replies
    four = await asyncio.gather(*(count_replies(relay.url, creds, 2.0, "127.0.0.6") for _ in range(4)))
    assert sum(four) <= 20 + 80 * 2 + 8  # more connections from one address do not multiply it
    assert await count_replies(relay.url, creds, 1.0, "127.0.0.7") >= 20  # another address is not slowed


# --- registration flood ---------------------------------------------------------


async def register(url: str, source: str) -> str:
    """Register a fresh random mailbox from `source`; 'ok' or the error code."""
    token = os.urandom(32)
    mailbox = P.mailbox_for_token(token)
    async with connect(url, compression=None, local_addr=(source, 0)) as ws:
        await ws.send(P.encode(P.Auth(mailbox, token)))
        msg = P.decode_server_message(await ws.recv())  # type: ignore[arg-type]
        if isinstance(msg, P.Challenge):
            await ws.send(P.encode(P.Auth(mailbox, token, proof=P.make_proof(mailbox, msg.bits))))
            msg = P.decode_server_message(await ws.recv())  # type: ignore[arg-type]
        if isinstance(msg, P.AuthOk):
            return "ok"
        assert isinstance(msg, P.Error)
        return P.ErrorCode(msg.code).name


async def test_registration_flood_cannot_lock_a_real_circle_out(
        relay_factory: Callable[..., RelayProcess], circle: Circle) -> None:
    relay = relay_factory("--max-mailboxes", "30", "--registration-burst", "5", "--registrations-per-hour", "60",
                          "--registration-bits", "8")
    # one address: a burst of 5, then refused
    results = [await register(relay.url, "127.0.1.1") for _ in range(8)]
    assert results[:5] == ["ok"] * 5 and set(results[5:]) == {"RATE_LIMITED"}
    # many addresses fill the table with empty mailboxes
    for i in range(2, 10):
        for _ in range(5):
            await register(relay.url, f"127.0.1.{i}")
    # a real circle still gets its mailbox, and keeps it
    creds = RelayCredentials.for_relay(circle.key, relay.url)
    async with await RelayConnection.open(relay.url, creds) as conn:
        assert conn.registered
        await conn.push(seal(circle.members[0], 1, circle.key, Kind.CHANGES, [b"hello"]))
    for i in range(10, 20):
        for _ in range(5):
            await register(relay.url, f"127.0.1.{i}")
    async with await RelayConnection.open(relay.url, creds) as conn:
        assert not conn.registered
        items, _ = await conn.fetch_all(0)
        assert len(items) == 1


# --- cursors ---------------------------------------------------------------------


async def test_cursors_do_not_reveal_other_circles_activity(
        relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    quiet, busy = Circle.new(1), Circle.new(1)
    q = RelayCredentials.for_relay(quiet.key, relay.url)
    b = RelayCredentials.for_relay(busy.key, relay.url)
    async with await RelayConnection.open(relay.url, q) as conn:
        first = await conn.push(seal(quiet.members[0], 1, quiet.key, Kind.CHANGES, [b"1"]))
    async with await RelayConnection.open(relay.url, b) as conn:
        await conn.push_many([seal(busy.members[0], 1, busy.key, Kind.CHANGES, [bytes([i])]) for i in range(20)])
    async with await RelayConnection.open(relay.url, q) as conn:
        second = await conn.push(seal(quiet.members[0], 1, quiet.key, Kind.CHANGES, [b"2"]))
        assert conn.head == first.cursor == 1
    assert second.cursor == 2


def test_registration_proof_cost() -> None:
    """The client's side of the proof: found, checked, and bounded."""
    mailbox = os.urandom(16)
    p = P.make_proof(mailbox, 12)
    assert P.proof_ok(mailbox, p, 12)
    assert struct.pack(">Q", p)  # fits the wire field
    with pytest.raises(LocalProtocolError, match="most a client makes"):
        P.make_proof(mailbox, 40)
