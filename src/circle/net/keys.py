"""Device identity, circle epoch keys and every key derived from them.

Rules:
- A *device identity* is an Ed25519 signing key plus an X25519 box key.
  The member id is a short fingerprint of the Ed25519 public key.
- A *circle key* is 32 random bytes per epoch. Each removal starts a new epoch
  with a fresh random key; nothing is derived from an older epoch's key.
- Everything else (LAN advertisement tag, session PSK, relay mailbox id, relay token,
  envelope key) is BLAKE2b keyed by the epoch key with a distinct
  personalisation string per purpose (domain separation), so all of it
  rotates with the epoch and no derived value reveals another.
"""

from __future__ import annotations

import base64
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NewType

import nacl.encoding
import nacl.hash
import nacl.public
import nacl.signing

from circle.crdt.model import MemberId  # one MemberId type across layers

EpochKey = NewType("EpochKey", bytes)

KEY_LEN = 32
DEVICE_SECRET_LEN = 2 * KEY_LEN
_B32 = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: read aloud safely
MEMBER_ID_CHARS = 10


class Purpose(Enum):
    """Domain-separation labels (BLAKE2b `person`, at most 16 bytes)."""

    SESSION_PSK = b"circle/psk"
    RELAY_MAILBOX = b"circle/mailbox"
    RELAY_TOKEN = b"circle/token"
    ENVELOPE_KEY = b"circle/envelope"
    MEMBER_ID = b"circle/member"
    FINGERPRINT = b"circle/fpr"
    AT_REST = b"circle/at-rest"
    KEY_CHECK = b"circle/keycheck"
    INVITE = b"circle/invite"
    HS_KEY_ID = b"circle/hs-keyid"
    LAN_ADVERT = b"circle/lan-adv"
    ENVELOPE_HINT = b"circle/env-hint"


def _b32(data: bytes, chars: int) -> str:
    """Encode with an unambiguous 32-letter alphabet (5 bits per char)."""
    bits = int.from_bytes(data, "big")
    total = len(data) * 8
    out = []
    for i in range(chars):
        shift = total - 5 * (i + 1)
        if shift < 0:
            break
        out.append(_B32[(bits >> shift) & 31])
    return "".join(out)


def keyed_hash(key: bytes, purpose: Purpose, data: bytes = b"", size: int = KEY_LEN) -> bytes:
    """BLAKE2b(data, key=key, person=purpose): the one derivation primitive."""
    return nacl.hash.blake2b(
        data, digest_size=size, key=key, person=purpose.value.ljust(16, b"\0")[:16],
        encoder=nacl.encoding.RawEncoder,
    )


def derive(epoch_key: EpochKey, purpose: Purpose, context: bytes = b"", size: int = KEY_LEN) -> bytes:
    """A value for `purpose` derived from the epoch key (and optional context)."""
    if len(epoch_key) != KEY_LEN:
        raise ValueError("epoch key must be 32 bytes")
    return keyed_hash(epoch_key, purpose, context, size)


def key_check(epoch_key: EpochKey) -> bytes:
    """A public commitment to an epoch key (lets a holder confirm it has the right one)."""
    return derive(epoch_key, Purpose.KEY_CHECK, size=16)


def new_epoch_key() -> EpochKey:
    return EpochKey(os.urandom(KEY_LEN))


def member_id_for(verify_key: bytes) -> MemberId:
    """Short fingerprint of an Ed25519 public key, safe to read aloud."""
    digest = nacl.hash.blake2b(
        verify_key, digest_size=16, person=Purpose.MEMBER_ID.value.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )
    return MemberId(_b32(digest, MEMBER_ID_CHARS))


def fingerprint(*parts: bytes, groups: int = 4) -> str:
    """A read-aloud fingerprint over `parts`, e.g. "k3fa 9tqe 2mzx 7hbw"."""
    data = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    digest = nacl.hash.blake2b(
        data, digest_size=16, person=Purpose.FINGERPRINT.value.ljust(16, b"\0"),
        encoder=nacl.encoding.RawEncoder,
    )
    text = _b32(digest, groups * 4)
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def handshake_key_id(epoch_key: EpochKey) -> bytes:
    """Names an epoch key inside a handshake (encrypted there): lets two peers
    see that both hold a newer key than the one their session used."""
    return derive(epoch_key, Purpose.HS_KEY_ID, size=16)


def lan_advert_tag(
    epoch_key: EpochKey, nonce: bytes, window: int, port: int, addresses: Sequence[str], size: int = 16
) -> bytes:
    """MAC over one advertisement: its fresh nonce, time window, port and addresses.

    A new nonce per advertisement makes every device's tag (and every
    restart's) unrelated to the others for anyone without the key; covering
    the port and addresses stops a stranger from re-advertising a member's
    tag at its own address to see who dials it."""
    data = b"".join((
        len(nonce).to_bytes(1, "big"), nonce, window.to_bytes(8, "big", signed=True),
        port.to_bytes(2, "big"), ",".join(sorted(addresses)).encode("ascii"),
    ))
    return derive(epoch_key, Purpose.LAN_ADVERT, data, size)


def envelope_hint(epoch_key: EpochKey, nonce: bytes, size: int = 4) -> bytes:
    """Which key sealed an envelope, readable only by key holders: a MAC of the
    envelope's random nonce, so no two envelopes share it."""
    return derive(epoch_key, Purpose.ENVELOPE_HINT, nonce, size)


def constant_time_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class DeviceIdentity:
    """This device's long-term keys. Secret parts never leave the device."""

    signing_key: nacl.signing.SigningKey
    box_key: nacl.public.PrivateKey

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> DeviceIdentity:
        if len(data) != 2 * KEY_LEN:
            raise ValueError("identity secret must be 64 bytes")
        return cls(nacl.signing.SigningKey(data[:KEY_LEN]), nacl.public.PrivateKey(data[KEY_LEN:]))

    def secret_bytes(self) -> bytes:
        return bytes(self.signing_key) + bytes(self.box_key)

    @property
    def verify_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def box_public(self) -> bytes:
        return bytes(self.box_key.public_key)

    @property
    def member_id(self) -> MemberId:
        return member_id_for(self.verify_key)

    def sign(self, message: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature."""
        return self.signing_key.sign(message).signature

    def x25519_secret(self) -> bytes:
        return bytes(self.box_key)


def verify_signature(verify_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(verify_key).verify(message, signature)
    except Exception:
        return False
    return True


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_key(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal_to(box_public: bytes, message: bytes) -> bytes:
    """Anonymous sealed box to an X25519 public key (used for epoch keys)."""
    return bytes(nacl.public.SealedBox(nacl.public.PublicKey(box_public)).encrypt(message))


def unseal(identity: DeviceIdentity, sealed: bytes) -> bytes:
    return bytes(nacl.public.SealedBox(identity.box_key).decrypt(sealed))


__all__ = [
    "DeviceIdentity", "EpochKey", "MemberId", "Purpose", "derive", "fingerprint",
    "keyed_hash", "lan_advert_tag", "envelope_hint", "handshake_key_id", "member_id_for", "new_epoch_key", "seal_to", "unseal",
    "verify_signature", "constant_time_equal", "encode_key", "decode_key",
    "DEVICE_SECRET_LEN",
]
