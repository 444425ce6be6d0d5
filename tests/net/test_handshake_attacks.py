"""The handshake as a prober, a replayer, a removed member and an on-path forger see it.

Each test is an attack from issue 10 ("The handshake talks to strangers"):
a responder must answer members, strangers and old keys alike; no epoch
number may appear in clear; a forged reply must never move an initiator to
an older key; a removed member's old keys must get it nothing.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from net_helpers import make_doc

from circle.crdt.am import AmDoc
from circle.errors import EpochMismatch, HandshakeFailed
from circle.net.framing import HEADER_LEN
from circle.net.handshake import MAX_HANDSHAKE_MESSAGE, Handshake
from circle.net.keys import DeviceIdentity, EpochKey, new_epoch_key
from circle.net.session import Connection
from circle.net.tcp import SyncNode, Timeouts

ALICE, BOB, CAROL, DAVE = (DeviceIdentity.generate() for _ in range(4))
KEY = new_epoch_key()
CIRCLE = {ALICE.verify_key, BOB.verify_key, CAROL.verify_key}
HOST = "127.0.0.1"
FAST = Timeouts(connect=2.0, handshake=0.6, idle=5.0, write=2.0)
EPOCH = 0x5A17C0DE  # a recognisable epoch number to look for on the wire


def member(vk: bytes) -> bool:
    return vk in CIRCLE


def _epoch_forms(n: int) -> list[bytes]:
    return [n.to_bytes(4, "big"), n.to_bytes(4, "little"), str(n).encode()]  # str: only for EPOCH


def test_a_replayed_first_message_gets_the_same_answer_from_members_and_strangers() -> None:
    msg1 = Handshake.initiator(ALICE, {EPOCH: KEY}, member).start()
    same_circle = Handshake.responder(CAROL, {EPOCH: KEY}, member)
    other_circle = Handshake.responder(DAVE, {EPOCH: new_epoch_key()}, lambda vk: True)
    r_same, r_other = same_circle.receive(msg1), other_circle.receive(msg1)
    assert r_same is not None and r_other is not None
    assert len(r_same) == len(r_other), "reply length tells a prober whether it is the same circle"
    assert r_same[0] == r_other[0]
    assert same_circle.reject_reply is None and other_circle.reject_reply is None
    assert not same_circle.failed and not other_circle.failed
    for reply in (r_same, r_other):  # the ephemeral in both is a real X25519 public key
        assert reply[1 + 31] & 0x80 == 0
    # the replayer cannot produce message 3: both fail the same way
    junk = os.urandom(144)
    for resp in (same_circle, other_circle):
        with pytest.raises(HandshakeFailed) as err:
            resp.receive(junk)
        assert type(err.value) is HandshakeFailed


def test_no_epoch_number_in_clear_in_any_handshake_message() -> None:
    init = Handshake.initiator(ALICE, {EPOCH: KEY}, member)
    resp = Handshake.responder(BOB, {EPOCH: KEY}, member)
    m1 = init.start()
    m2 = resp.receive(m1)
    assert m2 is not None
    m3 = init.receive(m2)
    assert m3 is not None
    resp.receive(m3)
    assert init.result.epoch == resp.result.epoch == EPOCH
    stranger = Handshake.responder(BOB, {EPOCH: KEY}, member)
    decoy = stranger.receive(Handshake.initiator(DAVE, {7: new_epoch_key()}, member).start())
    wrong_version = Handshake.responder(BOB, {EPOCH: KEY}, member)
    with pytest.raises(HandshakeFailed):
        wrong_version.receive(b"\x01" + bytes(53))  # a version-1 message 1
    reject = wrong_version.reject_reply
    assert reject is not None
    for msg in (m1, m2, m3, decoy, reject):
        assert msg is not None
        for form in _epoch_forms(EPOCH):
            assert form not in msg, f"the epoch number is in clear in {msg.hex()}"
    # two first messages under the same key share nothing but the version byte
    other = Handshake.initiator(CAROL, {EPOCH: KEY}, member).start()
    assert m1[0] == other[0]
    assert all(m1[i : i + 4] != other[i : i + 4] for i in range(1, len(m1) - 4))


@pytest.mark.parametrize("keyrings", [
    ({EPOCH: KEY}, {0x01020304: new_epoch_key()}),
    ({EPOCH: KEY, EPOCH - 5: new_epoch_key()},
     {0x11223344: new_epoch_key(), 0x11223355: new_epoch_key(), 0x7EADBEEF: new_epoch_key()}),
])
def test_a_prober_gets_replies_that_do_not_depend_on_the_responders_keys(
    keyrings: tuple[dict[int, EpochKey], dict[int, EpochKey]],
) -> None:
    probes = [bytes([2]) + os.urandom(48), bytes([2]) + bytes(48), b"\x01" + os.urandom(53), b"\xff"]
    for probe in probes:
        lengths = []
        for keys in keyrings:
            resp = Handshake.responder(BOB, keys, member)
            try:
                reply = resp.receive(probe)
            except HandshakeFailed:
                reply = resp.reject_reply
            lengths.append(None if reply is None else len(reply))
            for form in (f for n in keys for f in _epoch_forms(n)[:2]):
                assert reply is None or form not in reply
        assert lengths[0] == lengths[1], f"probe {probe[:4].hex()}: {lengths}"


def test_a_forged_reject_never_moves_the_initiator_to_another_key() -> None:
    old = new_epoch_key()
    for forged in (bytes([2, 2, 1]) + (0).to_bytes(4, "big"),  # version-1 "epoch reject: I am on 0"
                   bytes([2, 1, 1]),  # "I only speak version 1"
                   bytes([2, 9, 2])):
        init = Handshake.initiator(ALICE, {0: old, 1: KEY}, member)
        init.start()
        with pytest.raises(HandshakeFailed) as err:
            init.receive(forged)
        assert not isinstance(err.value, EpochMismatch), "a forged reject named an epoch to fall back to"
        node = SyncNode(AmDoc.new(), ALICE, {0: old, 1: KEY}, member)
        assert node.fallback_epoch(err.value, set()) is None


def test_a_session_on_the_previous_key_is_refused_when_both_hold_the_current_one() -> None:
    # An on-path attacker breaks the first attempt, so the initiator retries
    # with its previous key, which the responder still accepts (grace).
    old = new_epoch_key()
    init = Handshake.initiator(ALICE, {1: old, 2: KEY}, member, epoch=1)
    resp = Handshake.responder(BOB, {1: old, 2: KEY}, member)
    m2 = resp.receive(init.start())
    assert m2 is not None
    with pytest.raises(EpochMismatch) as err:
        init.receive(m2)
    assert err.value.offered_epoch == 1 and err.value.peer_epoch == 2
    node = SyncNode(AmDoc.new(), ALICE, {1: old, 2: KEY}, member)
    assert node.fallback_epoch(err.value, {2}) is None  # 2 failed already: stop, never go lower
    assert node.fallback_epoch(err.value, set()) == 2


def test_the_responder_also_refuses_a_downgrade_the_initiator_cannot_see() -> None:
    old, newest = new_epoch_key(), new_epoch_key()
    init = Handshake.initiator(ALICE, {1: old, 2: KEY}, member, epoch=1)
    resp = Handshake.responder(BOB, {1: old, 2: KEY, 3: newest}, member)
    m2 = resp.receive(init.start())
    assert m2 is not None
    m3 = init.receive(m2)  # the responder's newest key is unknown here: no alarm
    assert m3 is not None
    with pytest.raises(EpochMismatch) as err:
        resp.receive(m3)
    assert err.value.peer_epoch == 2


def test_a_peer_that_missed_a_rotation_still_gets_a_session_on_the_shared_key() -> None:
    old = new_epoch_key()
    init = Handshake.initiator(ALICE, {1: old}, member)  # behind: knows only the old key
    resp = Handshake.responder(BOB, {1: old, 2: KEY}, member)  # grace for the previous key
    m2 = resp.receive(init.start())
    m3 = init.receive(m2 or b"")
    resp.receive(m3 or b"")
    assert init.result.epoch == resp.result.epoch == 1


def test_session_keyrings_hold_current_and_previous_only_and_the_grace_ends() -> None:
    from circle.net.tcp import session_keyrings

    keys = {1: new_epoch_key(), 5: new_epoch_key(), 9: KEY}
    now = 1_000_000.0
    init, resp = session_keyrings(keys, 9, adopted_at=now - 3600, now=now, grace=72 * 3600)
    assert set(init) == {9, 5} and set(resp) == {9, 5}
    init, resp = session_keyrings(keys, 9, adopted_at=now - 73 * 3600, now=now, grace=72 * 3600)
    assert set(init) == {9, 5} and set(resp) == {9}
    init, resp = session_keyrings({3: KEY}, 3, adopted_at=now, now=now)
    assert set(init) == set(resp) == {3}


# --- over real loopback TCP ---------------------------------------------------------


async def _probe(port: int, frame: bytes, watch: float) -> tuple[int, float | None]:
    """Send one frame; (bytes received, seconds until the server hung up or None)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(frame)
    await writer.drain()
    got, start, closed_after = 0, time.monotonic(), None
    try:
        while time.monotonic() - start < watch:
            try:
                data = await asyncio.wait_for(reader.read(4096), watch - (time.monotonic() - start))
            except TimeoutError:
                break
            if not data:
                closed_after = time.monotonic() - start
                break
            got += len(data)
    finally:
        writer.close()
    return got, closed_after


async def test_over_tcp_a_replayed_first_message_is_no_same_circle_oracle() -> None:
    captured = Connection.initiator(make_doc(0), ALICE, {0: KEY}, member).data_to_send()
    assert 0 < len(captured) <= HEADER_LEN + MAX_HANDSHAKE_MESSAGE
    same = SyncNode(make_doc(3), CAROL, {0: KEY}, member, timeouts=FAST)
    other = SyncNode(make_doc(3), DAVE, {0: new_epoch_key()}, lambda vk: True, timeouts=FAST)
    _, p_same = await same.start_server(HOST, 0)
    _, p_other = await other.start_server(HOST, 0)
    try:
        early = await asyncio.gather(_probe(p_same, captured, 0.3), _probe(p_other, captured, 0.3))
        assert early[0][0] == early[1][0] > 0, f"reply sizes differ: {early}"
        assert early[0][1] is None and early[1][1] is None, f"one side hung up at once: {early}"
        late = await asyncio.gather(_probe(p_same, captured, 5.0), _probe(p_other, captured, 5.0))
        assert late[0][0] == late[1][0]
        for _, closed_after in late:  # both give up at the handshake timeout, not before
            assert closed_after is not None and closed_after >= FAST.handshake * 0.8
    finally:
        await same.close()
        await other.close()


async def test_over_tcp_a_removed_members_old_key_learns_nobody() -> None:
    k1, k5 = new_epoch_key(), new_epoch_key()
    now = time.time()
    server = SyncNode(make_doc(3), BOB, {1: k1, 5: k5, 9: KEY}, member, timeouts=FAST,
                      current_epoch=lambda: 9, adopted_at=lambda n: now - 3600)
    _, port = await server.start_server(HOST, 0)
    try:
        # a removed member (DAVE) kept key 1: two rotations old
        removed = SyncNode(AmDoc.new(), DAVE, {1: k1}, member, timeouts=FAST)
        report = await removed.sync_once(HOST, port, timeout=5)
        assert not report.in_sync
        assert report.peer_member_id is None, "the responder revealed who it is to an old key"
        # a member who missed the last rotation (key 5 only) gets in during the grace
        behind = SyncNode(AmDoc.new(), ALICE, {5: k5}, member, timeouts=FAST)
        assert (await behind.sync_once(HOST, port, timeout=5)).in_sync
        # after the grace, key 5 learns nothing either
        server.adopted_at = lambda n: now - 4 * 24 * 3600
        late = await behind.sync_once(HOST, port, timeout=5)
        assert not late.in_sync and late.peer_member_id is None
    finally:
        await server.close()
