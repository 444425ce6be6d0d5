from __future__ import annotations

import pytest

from circle.errors import (
    DecryptionFailed,
    EpochMismatch,
    HandshakeFailed,
    LocalProtocolError,
    PeerNotMember,
    RemoteProtocolError,
    SelfConnection,
)
from circle.net.handshake import (
    MSG1_LEN,
    MSG2_LEN,
    MSG3_LEN,
    Handshake,
    HandshakeResult,
    SecureChannel,
)
from circle.net.keys import DeviceIdentity, EpochKey, new_epoch_key

ALICE = DeviceIdentity.generate()
BOB = DeviceIdentity.generate()
MALLORY = DeviceIdentity.generate()
KEY = new_epoch_key()


def members(*ids: DeviceIdentity):  # type: ignore[no-untyped-def]
    allowed = {i.verify_key for i in ids}
    return lambda vk: vk in allowed


def run(
    init: Handshake, resp: Handshake
) -> tuple[HandshakeResult, HandshakeResult]:
    m2 = resp.receive(init.start())
    assert m2 is not None
    m3 = init.receive(m2)
    assert m3 is not None
    assert resp.receive(m3) is None
    return init.result, resp.result


def pair(keys_i: dict[int, EpochKey] | None = None, keys_r: dict[int, EpochKey] | None = None):  # type: ignore[no-untyped-def]
    check = members(ALICE, BOB)
    init = Handshake.initiator(ALICE, keys_i or {0: KEY}, check)
    resp = Handshake.responder(BOB, keys_r or {0: KEY}, check)
    return init, resp


def test_happy_path_both_sides_agree() -> None:
    i, r = run(*pair())
    assert i.peer_verify_key == BOB.verify_key
    assert r.peer_verify_key == ALICE.verify_key
    assert i.peer_member_id == BOB.member_id
    assert i.fingerprint == r.fingerprint and len(i.fingerprint) == 19
    assert i.handshake_hash == r.handshake_hash
    assert i.epoch == r.epoch == 0
    # Channels work both ways, including the clean close.
    assert r.channel.open(i.channel.seal(b"hi bob")) == b"hi bob"
    assert i.channel.open(r.channel.seal(b"hi alice")) == b"hi alice"
    assert r.channel.open(i.channel.seal(b"second")) == b"second"
    assert i.channel.open(r.channel.seal_final(b"bye")) == b"bye"
    assert i.channel.received_final


def test_each_session_has_fresh_keys() -> None:
    a, _ = run(*pair())
    b, _ = run(*pair())
    assert a.handshake_hash != b.handshake_hash
    assert a.fingerprint != b.fingerprint


def test_wrong_epoch_key_gets_a_decoy_then_fails_and_learns_nothing() -> None:
    # Old behaviour: the responder fell silent for a stranger but answered a
    # member (161 bytes): a "same circle?" oracle. Now everyone gets a message
    # 2 of the same length, and the handshake fails on message 3.
    init = Handshake.initiator(MALLORY, {0: new_epoch_key()}, lambda vk: True)
    resp = Handshake.responder(BOB, {0: KEY}, members(ALICE, BOB))
    msg1 = init.start()
    assert len(msg1) == MSG1_LEN
    assert MALLORY.verify_key not in msg1
    decoy = resp.receive(msg1)
    assert decoy is not None and len(decoy) == MSG2_LEN
    assert resp.reject_reply is None and not resp.failed
    assert BOB.verify_key not in decoy
    # the initiator cannot open it, and says so as a key it was not accepted
    with pytest.raises(EpochMismatch) as err:
        init.receive(decoy)
    assert err.value.peer_epoch is None
    # the responder waits for message 3 like any responder, then fails
    with pytest.raises(HandshakeFailed, match="does not hold a circle key"):
        resp.receive(bytes(MSG3_LEN))
    assert resp.failed
    with pytest.raises(LocalProtocolError):
        resp.receive(msg1)


def test_responder_with_wrong_key_cannot_learn_initiator() -> None:
    # A fake responder holding another key can only send a decoy, so the
    # initiator's identity (only in message 3) is never sent.
    init = Handshake.initiator(ALICE, {0: KEY}, members(ALICE, BOB))
    fake = Handshake.responder(MALLORY, {0: new_epoch_key()}, lambda vk: True)
    decoy = fake.receive(init.start())
    assert decoy is not None
    with pytest.raises(EpochMismatch):
        init.receive(decoy)
    assert init.failed


def test_non_member_responder_is_refused_before_initiator_reveals_itself() -> None:
    init = Handshake.initiator(ALICE, {0: KEY}, members(ALICE, BOB))
    resp = Handshake.responder(MALLORY, {0: KEY}, lambda vk: True)
    m2 = resp.receive(init.start())
    assert m2 is not None
    with pytest.raises(PeerNotMember):
        init.receive(m2)


def test_non_member_initiator_is_refused() -> None:
    init = Handshake.initiator(MALLORY, {0: KEY}, lambda vk: True)
    resp = Handshake.responder(BOB, {0: KEY}, members(ALICE, BOB))
    m3 = init.receive(resp.receive(init.start()) or b"")
    assert m3 is not None
    with pytest.raises(PeerNotMember):
        resp.receive(m3)
    with pytest.raises(LocalProtocolError):
        _ = resp.result


def test_self_connection_is_detected() -> None:
    init = Handshake.initiator(ALICE, {0: KEY}, lambda vk: True)
    resp = Handshake.responder(ALICE, {0: KEY}, lambda vk: True)
    with pytest.raises(SelfConnection):
        init.receive(resp.receive(init.start()) or b"")


def test_epoch_mismatch_is_typed_for_the_initiator_only() -> None:
    # The initiator offers a key the responder lacks: it learns that much (an
    # EpochMismatch without the peer's epoch) and the responder tells nothing.
    init, resp = pair(keys_i={0: KEY, 1: new_epoch_key()}, keys_r={0: KEY})
    assert init.epoch == 1
    decoy = resp.receive(init.start())
    assert decoy is not None and resp.reject_reply is None
    with pytest.raises(EpochMismatch) as i_err:
        init.receive(decoy)
    assert i_err.value.offered_epoch == 1 and i_err.value.peer_epoch is None


def test_initiator_may_offer_an_older_epoch() -> None:
    old = new_epoch_key()
    init = Handshake.initiator(ALICE, {0: old, 1: KEY}, members(ALICE, BOB), epoch=0)
    resp = Handshake.responder(BOB, {0: old}, members(ALICE, BOB))
    i, r = run(init, resp)
    assert i.epoch == r.epoch == 0


def test_version_mismatch() -> None:
    init, resp = pair()
    msg1 = bytearray(init.start())
    msg1[0] = 99
    with pytest.raises(HandshakeFailed, match="version 99"):
        resp.receive(bytes(msg1))
    assert resp.reject_reply is not None
    with pytest.raises(HandshakeFailed, match="version"):
        init.receive(resp.reject_reply)


@pytest.mark.parametrize("which", [1, 2, 3])
def test_any_flipped_bit_in_any_handshake_message_fails(which: int) -> None:
    init, resp = pair()
    m1 = init.start()
    if which == 1:
        for pos in (1, 10, len(m1) - 1):  # ephemeral, ephemeral, tag
            _, r1 = pair()
            bad = bytearray(m1)
            bad[pos] ^= 1
            decoy = r1.receive(bytes(bad))  # not accepted: a decoy, then failure
            assert decoy is not None
            with pytest.raises(HandshakeFailed):
                r1.receive(bytes(MSG3_LEN))
        return
    m2 = resp.receive(m1)
    assert m2 is not None
    if which == 2:
        for pos in (1, 40, len(m2) - 1):
            i2, r2 = pair()
            m2b = bytearray(r2.receive(i2.start()) or b"")
            m2b[pos] ^= 0x10
            with pytest.raises(HandshakeFailed):
                i2.receive(bytes(m2b))
        return
    m3 = bytearray(init.receive(m2) or b"")
    m3[len(m3) // 2] ^= 1
    with pytest.raises(HandshakeFailed):
        resp.receive(bytes(m3))


def test_truncated_or_extended_messages_fail() -> None:
    init, resp = pair()
    m1 = init.start()
    with pytest.raises(HandshakeFailed):
        resp.receive(m1[:-1])
    init, resp = pair()
    with pytest.raises(HandshakeFailed):
        resp.receive(init.start() + b"\0")


def test_low_order_ephemeral_is_refused() -> None:
    init, resp = pair()
    m2 = bytearray(resp.receive(init.start()) or b"")
    m2[1:33] = bytes(32)  # the all-zero point
    with pytest.raises(HandshakeFailed):
        init.receive(bytes(m2))


def test_api_misuse_is_local_error() -> None:
    init, resp = pair()
    with pytest.raises(LocalProtocolError):
        resp.start()
    with pytest.raises(LocalProtocolError):
        init.receive(b"x")
    with pytest.raises(LocalProtocolError):
        Handshake.initiator(ALICE, {}, lambda vk: True)


# --- the channel ----------------------------------------------------------------


def channels() -> tuple[SecureChannel, SecureChannel]:
    i, r = run(*pair())
    return i.channel, r.channel


def test_replayed_frame_fails() -> None:
    a, b = channels()
    f1 = a.seal(b"one")
    assert b.open(f1) == b"one"
    with pytest.raises(DecryptionFailed):
        b.open(f1[24:])  # the same ciphertext again (without the stream header)


def test_reordered_frames_fail() -> None:
    a, b = channels()
    f1, f2 = a.seal(b"one"), a.seal(b"two")
    with pytest.raises(DecryptionFailed):
        b.open(f1[:24] + f2)  # frame 2 delivered first


def test_bit_flip_fails_and_channel_stays_dead() -> None:
    a, b = channels()
    f1 = bytearray(a.seal(b"payload"))
    f1[-3] ^= 4
    with pytest.raises(DecryptionFailed):
        b.open(bytes(f1))
    with pytest.raises(DecryptionFailed):
        b.open(a.seal(b"next"))


def test_reflected_frame_fails() -> None:
    a, _ = channels()
    frame = a.seal(b"to myself")
    with pytest.raises(DecryptionFailed):
        a.open(frame)


def test_data_after_final_is_refused() -> None:
    a, b = channels()
    assert b.open(a.seal_final()) == b""
    assert b.received_final
    with pytest.raises(LocalProtocolError):
        a.seal(b"more")
    with pytest.raises(RemoteProtocolError):
        b.open(b"\0" * 40)


def test_frames_from_another_session_fail() -> None:
    a1, _ = channels()
    _, b2 = channels()
    with pytest.raises(DecryptionFailed):
        b2.open(a1.seal(b"cross"))
