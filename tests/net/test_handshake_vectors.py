"""Fixed-key transcript of the v2 handshake (test vectors; see docs/handshake.md).

Inputs: epoch key 00..1f under epoch number 7 (which never reaches the
wire), initiator identity secret 01*32 || 02*32, responder 03*32 || 04*32,
ephemeral secrets 05*32 (initiator) and 06*32 (responder). Every byte is
then fixed: Ed25519 signatures are deterministic and the AEAD nonces are
counters. A change to any of these values is a wire-format change: bump
PROTOCOL_VERSION and write new vectors, never edit them to make a test pass.

Message 1 is also recomputed here from the construction alone (hashlib and
the raw libsodium AEAD, none of the module's helpers), so the vectors are
checked against the document, not only against themselves.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium

from circle.net.handshake import PROTOCOL_NAME, PROTOCOL_VERSION, Handshake
from circle.net.keys import DeviceIdentity, EpochKey

KEY = EpochKey(bytes(range(32)))
INITIATOR = DeviceIdentity.from_secret_bytes(bytes([1]) * 32 + bytes([2]) * 32)
RESPONDER = DeviceIdentity.from_secret_bytes(bytes([3]) * 32 + bytes([4]) * 32)
E_I, E_R = bytes([5]) * 32, bytes([6]) * 32

MSG1 = "0250a61409b1ddd0325e9b16b700e719e9772c07000b1bd7786e907c653d20495d10c0c18c912f3d792af89b9edec4d07c"
MSG2 = "01f5b2d6e60f9477e310c2982daaa6c9136c108a1777c5947e448fa37d68174557dae71e09cf5d5eb0c4aea907bc2cadcfd58e19a08538211a2382c4272393d464cdba2a37a03d44b132345f834d360a52745ecb97beac14bec46c6c12c73db808a8f5deec13561b0a5e5bc14d7231d804cc8add3b09ec724c24a4b5d20100d16a824501acab20697a2009ea73e0c7628eecdc2c41b102be5284bd5ae6f28ab2bbf57c419fd1c8ca2b70120d1a13199c46"
MSG3 = "ed80ac80fae9ab13d320fb39470a4581dc6ef404e7e01191887801e37c99f7fc48acbdf028469d20bd97c0ce7a0e7fa0e4ac54abee548a6010060f67da86a7a25fb471bf995a0090e9df0ebb588777f9c693e6bc51edf625412e306d88a2d10c8983dbdb2ead47b7b4e8c421b221ed2be58f7c2b1f31e2f4eb81a2bbb5d7dd535651915edad36f7ce5020ebc590ff57b"
HASH = "9685d824cf533bc9945349d42efe22008f71f73e9d0067465d2f9cd2d1c090c0"
I2R = "b068a11efd594b9225712dded210969f14ecf38d265ee7faeeb07747452a2371"
R2I = "3fc858fd792d5eae96a8a2aebacebb67e7193a93c21acc296ec723b9f34b4bb9"
FPR = "vytn 762c g6mx 4d4i"


def _both(vk: bytes) -> bool:
    return vk in (INITIATOR.verify_key, RESPONDER.verify_key)


def test_fixed_key_transcript() -> None:
    init = Handshake.initiator(INITIATOR, {7: KEY}, _both, ephemeral_secret=E_I)
    resp = Handshake.responder(RESPONDER, {7: KEY}, _both, ephemeral_secret=E_R)
    m1 = init.start()
    m2 = resp.receive(m1)
    assert m2 is not None
    m3 = init.receive(m2)
    assert m3 is not None
    assert resp.receive(m3) is None
    assert (m1.hex(), m2.hex(), m3.hex()) == (MSG1, MSG2, MSG3)
    for result in (init.result, resp.result):
        assert result.handshake_hash.hex() == HASH
        assert result.fingerprint == FPR
        assert result.epoch == 7
    assert init.result.channel._send_key == resp.result.channel._recv_key == bytes.fromhex(I2R)
    assert init.result.channel._recv_key == resp.result.channel._send_key == bytes.fromhex(R2I)


def _h(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key, person=b"circle/hs".ljust(16, b"\0")).digest()


def test_message_one_follows_the_documented_construction() -> None:
    e_pub = sodium.crypto_scalarmult_base(E_I)
    h = _h(PROTOCOL_NAME)
    ck = h
    h = _h(h + bytes([PROTOCOL_VERSION]))
    psk = hashlib.blake2b(b"", digest_size=32, key=KEY, person=b"circle/psk".ljust(16, b"\0")).digest()
    temp = _h(psk, key=ck)  # HKDF(ck, psk) with 3 outputs: ck, temp_h, k
    ck = _h(b"\x01", key=temp)
    temp_h = _h(ck + b"\x02", key=temp)
    h = _h(h + temp_h)
    h = _h(h + e_pub)  # the psk0 rule: e is also mixed into the key
    temp = _h(e_pub, key=ck)
    ck = _h(b"\x01", key=temp)
    k = _h(ck + b"\x02", key=temp)
    tag = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(b"", h, bytes(24), k)
    assert (bytes([PROTOCOL_VERSION]) + e_pub + tag).hex() == MSG1
