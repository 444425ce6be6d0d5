from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circle.errors import (
    DecryptionFailed,
    EnvelopeRejected,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownEpoch,
)
from circle.net import envelope as E
from circle.net.keys import DeviceIdentity, new_epoch_key

from .conftest import Circle


def test_round_trip_changes(circle: Circle) -> None:
    a = circle.members[0]
    changes = [b"change-one", b"", b"x" * 5000]
    [env] = E.seal_changes(a, circle.epoch, circle.key, changes)
    opened = E.open_envelope(env, circle.keys, circle.is_active)
    assert opened.payloads == tuple(changes)
    assert opened.kind is E.Kind.CHANGES
    assert opened.author == a.verify_key
    assert opened.author_id == a.member_id
    assert opened.epoch == circle.epoch
    assert opened.envelope_id == E.envelope_id(env)


def test_snapshot_round_trip(circle: Circle) -> None:
    saved = bytes(range(256)) * 1000
    env = E.seal_snapshot(circle.members[1], circle.epoch, circle.key, saved)
    opened = E.open_envelope(env, lambda: {circle.epoch: circle.key}, circle.is_active)
    assert opened.kind is E.Kind.SNAPSHOT
    assert opened.payloads == (saved,)


def test_sizes_are_padded_to_buckets(circle: Circle) -> None:
    a = circle.members[0]
    sizes = {len(E.seal(a, 1, circle.key, E.Kind.CHANGES, [b"x" * n])) for n in (0, 1, 100, 700)}
    assert len(sizes) == 1  # all small changes look alike
    overhead = E.HEADER_LEN + E.TAG_LEN
    assert sizes == {1024 + overhead}
    mid = E.seal(a, 1, circle.key, E.Kind.CHANGES, [b"x" * 2000])
    assert len(mid) == 4096 + overhead
    big = E.seal(a, 1, circle.key, E.Kind.CHANGES, [b"x" * 300_000])
    assert len(big) == 512 * 1024 + overhead
    assert E.padded_size(64 * 1024 + 1) == 256 * 1024


def test_too_big_is_a_local_error(circle: Circle) -> None:
    with pytest.raises(LocalProtocolError):
        E.seal_snapshot(circle.members[0], 1, circle.key, b"x" * (E.MAX_PLAINTEXT + 1))


def test_seal_changes_groups_and_keeps_order(circle: Circle) -> None:
    changes = [bytes([i]) * 1000 for i in range(200)]
    envs = E.seal_changes(circle.members[0], circle.epoch, circle.key, changes, max_block=16 * 1024)
    assert len(envs) > 1
    got: list[bytes] = []
    for env in envs:
        got.extend(E.open_envelope(env, circle.keys, circle.is_active).payloads)
    assert got == changes
    assert E.seal_changes(circle.members[0], circle.epoch, circle.key, []) == []


def test_same_content_different_ids(circle: Circle) -> None:
    a = circle.members[0]
    e1 = E.seal(a, 1, circle.key, E.Kind.CHANGES, [b"same"])
    e2 = E.seal(a, 1, circle.key, E.Kind.CHANGES, [b"same"])
    assert e1 != e2 and E.envelope_id(e1) != E.envelope_id(e2)


def test_plaintext_not_visible(circle: Circle) -> None:
    secret = b"Alice needs insulin at 12 Rosemary Lane"
    env = E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [secret])
    assert secret not in env
    assert b"insulin" not in env
    assert circle.members[0].verify_key not in env  # the author is hidden too


@pytest.mark.parametrize("pos", [0, 5, 12, 20, E.HEADER_LEN, E.HEADER_LEN + 50, -1])
def test_tampered_byte_is_rejected(circle: Circle, pos: int) -> None:
    env = bytearray(E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [b"hello"]))
    env[pos] ^= 0x01
    with pytest.raises(RemoteProtocolError):
        E.open_envelope(bytes(env), circle.keys, circle.is_active)


def test_tampered_ciphertext_is_decryption_failed(circle: Circle) -> None:
    env = bytearray(E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [b"hello"]))
    env[E.HEADER_LEN + 10] ^= 0x80
    with pytest.raises(DecryptionFailed):
        E.open_envelope(bytes(env), circle.keys, circle.is_active)


def test_truncated_envelope(circle: Circle) -> None:
    env = E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [b"hello"])
    for cut in (0, 10, E.HEADER_LEN, len(env) - 1):
        with pytest.raises(RemoteProtocolError):
            E.open_envelope(env[:cut], circle.keys, circle.is_active)


def test_foreign_circle(circle: Circle) -> None:
    other = Circle.new()
    env = E.seal(other.members[0], circle.epoch, other.key, E.Kind.CHANGES, [b"theirs"])
    with pytest.raises(DecryptionFailed):
        E.open_envelope(env, circle.keys, lambda vk: True)


def test_wrong_or_unknown_epoch(circle: Circle) -> None:
    # the epoch number is not on the wire: the opener finds its key by the hint
    env = E.seal(circle.members[0], 2, circle.key, E.Kind.CHANGES, [b"x"])
    assert E.open_envelope(env, {7: circle.key}, circle.is_active).epoch == 7
    with pytest.raises(UnknownEpoch):
        E.open_envelope(env, {2: new_epoch_key()}, circle.is_active)
    # an old epoch key that was rotated away cannot open the new epoch's envelopes
    new_key = new_epoch_key()
    env3 = E.seal(circle.members[0], 3, new_key, E.Kind.CHANGES, [b"x"])
    with pytest.raises(UnknownEpoch):
        E.open_envelope(env3, {3: circle.key}, circle.is_active)
    # the hint is authenticated: a header with another hint does not open
    bad = bytearray(env)
    bad[8] ^= 1
    with pytest.raises(DecryptionFailed):
        E.open_envelope(bytes(bad), {2: circle.key}, circle.is_active)


def test_non_member_and_removed_member(circle: Circle) -> None:
    outsider = DeviceIdentity.generate()
    env = E.seal(outsider, 1, circle.key, E.Kind.CHANGES, [b"x"])
    with pytest.raises(EnvelopeRejected):
        E.open_envelope(env, circle.keys, circle.is_active)
    gone = circle.members[2]
    env2 = E.seal(gone, 1, circle.key, E.Kind.CHANGES, [b"x"])
    assert E.open_envelope(env2, circle.keys, circle.is_active).author == gone.verify_key
    circle.removed.add(gone.verify_key)
    with pytest.raises(EnvelopeRejected):
        E.open_envelope(env2, circle.keys, circle.is_active)


def test_signature_binds_the_circle() -> None:
    """A member of two circles cannot move another author's signed payload across."""
    import struct

    import nacl.bindings

    from circle.net.keys import Purpose, derive, envelope_hint

    c1, c2 = Circle.new(), Circle.new()
    author = c1.members[0]
    c2.members.append(author)
    env = E.seal(author, 1, c1.key, E.Kind.CHANGES, [b"payload"])
    ad, nonce = env[: E.AD_LEN], env[E.AD_LEN : E.HEADER_LEN]
    inner = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        env[E.HEADER_LEN :], ad, nonce, derive(c1.key, Purpose.ENVELOPE_KEY))
    # re-encrypt the same signed inner plaintext under circle 2's key (with
    # circle 2's hint, which a member of both can compute)
    nonce2 = bytes(24)
    ad2 = ad[:8] + envelope_hint(c2.key, nonce2)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(inner, ad2, nonce2, derive(c2.key, Purpose.ENVELOPE_KEY))
    forged = ad2 + nonce2 + ct
    assert struct.unpack(">I", inner[96:100])[0] > 0
    with pytest.raises(EnvelopeRejected, match="signature"):
        E.open_envelope(forged, c2.keys, c2.is_active)


def test_forged_author_is_rejected(circle: Circle) -> None:
    """Swapping in another member's verify key breaks the signature."""
    import nacl.bindings

    from circle.net.keys import Purpose, derive

    env = E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [b"x"])
    ad, nonce = env[: E.AD_LEN], env[E.AD_LEN : E.HEADER_LEN]
    key = derive(circle.key, Purpose.ENVELOPE_KEY)
    inner = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(env[E.HEADER_LEN :], ad, nonce, key)
    inner = circle.members[1].verify_key + inner[32:]
    forged = ad + nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(inner, ad, nonce, key)
    with pytest.raises(EnvelopeRejected):
        E.open_envelope(forged, circle.keys, circle.is_active)


def test_inbox_dedupes_replays(circle: Circle) -> None:
    inbox = E.EnvelopeInbox(circle.keys, circle.is_active)
    env = E.seal(circle.members[0], 1, circle.key, E.Kind.CHANGES, [b"x"])
    assert inbox.accept(env) is not None
    assert inbox.accept(env) is None  # replay: dropped without applying
    bad = bytearray(env)
    bad[-3] ^= 1
    with pytest.raises(DecryptionFailed):
        inbox.accept(bytes(bad))
    assert len(inbox.seen) == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_garbage_never_crashes(data: bytes) -> None:
    key = new_epoch_key()
    with pytest.raises(RemoteProtocolError):
        E.open_envelope(data, {1: key}, lambda vk: True)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=20))
def test_round_trip_property(changes: list[bytes]) -> None:
    c = Circle.new(1)
    envs = E.seal_changes(c.members[0], 7, c.key, changes, max_block=4096)
    got = [p for env in envs for p in E.open_envelope(env, {7: c.key}, c.is_active).payloads]
    assert got == changes
