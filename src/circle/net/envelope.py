"""Envelopes: signed, encrypted, padded containers for Automerge bytes (sans-I/O).

An envelope carries either a list of Automerge change byte strings
(`Kind.CHANGES`) or one whole saved document (`Kind.SNAPSHOT`, for a member
who was away for long or has just joined). The payload is opaque bytes here:
this module never imports automerge.

Wire layout (all integers big-endian)::

    header (36 bytes, in the clear, authenticated as associated data)
        magic   b"CENV"
        version u8      = 2
        kind    u8      1 = changes, 2 = snapshot
        flags   u16     = 0 (reserved; anything else is refused)
        hint    4 bytes envelope_hint(epoch_key, nonce): which key sealed it,
                        for key holders only; different in every envelope
        nonce   24 random bytes (XChaCha20-Poly1305)
    ciphertext = XChaCha20-Poly1305(key = derive(epoch_key, ENVELOPE_KEY),
                                    ad = header[:12], plaintext)

    plaintext (padded to a size bucket, see `padded_size`)
        author     32 bytes  Ed25519 verify key of the author
        signature  64 bytes  Ed25519 over SIG_DOMAIN | binding | header[:12]
                             | author | block
        block_len  u32
        block      u32 count, then count x (u32 length, bytes)
        zeros      up to the bucket size (checked to be zero when opening)

`binding` is a value derived from the epoch key, so a signature made for one
circle cannot be lifted into another circle's envelope by someone who is a
member of both.

What this protects: only holders of the epoch key can read or write an
envelope; only a member's own key can sign as that member; any change to a
single bit is detected. No epoch number is on the wire (version 1 carried it
in clear, a quasi-identifier of the circle and a count of its removals): the
opener finds the key by recomputing the hint under each key it holds (a
keyed hash per key), and a 4-byte hint that matches by chance only costs one
failed decryption. Because the hint is a MAC of the random nonce, two
envelopes under one key share nothing in their headers, so a bundle or a
relay's store does not group envelopes by key. What it does not hide: the
kind, the size bucket and the time an envelope is stored. A replayed
envelope is byte-identical, so it has the same id and is dropped by
`EnvelopeInbox`; even if applied twice, Automerge changes are idempotent.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash

from circle.errors import (
    DecryptionFailed,
    EnvelopeRejected,
    LocalProtocolError,
    RemoteProtocolError,
    UnknownEpoch,
)
from circle.net import parts
from circle.net.keys import (
    DeviceIdentity,
    EpochKey,
    MemberId,
    Purpose,
    constant_time_equal,
    derive,
    envelope_hint,
    member_id_for,
    verify_signature,
)

MAGIC = b"CENV"
VERSION = 2
_HEADER = struct.Struct(">4sBBH4s")  # magic, version, kind, flags, hint
AD_LEN = _HEADER.size  # 12
NONCE_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_LEN = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
HEADER_LEN = AD_LEN + NONCE_LEN  # 36
_AUTHOR_LEN = 32
_SIG_LEN = 64
_INNER_FIXED = _AUTHOR_LEN + _SIG_LEN + 4

KIB = 1024
_SMALL_BUCKETS = (1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB)
LARGE_STEP = 256 * KIB
#: Largest padded plaintext. A saved document bigger than this cannot be sent
#: as one snapshot envelope (see docs/relay.md).
MAX_PLAINTEXT = 4 * 1024 * KIB
#: Largest envelope on the wire; relays size their frame cap from this.
MAX_ENVELOPE_SIZE = HEADER_LEN + MAX_PLAINTEXT + TAG_LEN
MIN_ENVELOPE_SIZE = HEADER_LEN + _SMALL_BUCKETS[0] + TAG_LEN
#: Largest payload bytes (sum of items plus their length prefixes) per envelope.
MAX_BLOCK = MAX_PLAINTEXT - _INNER_FIXED
ID_LEN = 32

SIG_DOMAIN = b"circle/envelope-signature/v1\0"
_BINDING_CONTEXT = b"signature-binding"
_ID_PERSON = b"circle/env-id".ljust(16, b"\0")


class Kind(IntEnum):
    CHANGES = 1
    SNAPSHOT = 2


@dataclass(frozen=True)
class EnvelopeHeader:
    kind: Kind
    hint: bytes  # opaque without the key; see envelope_hint


@dataclass(frozen=True)
class OpenedEnvelope:
    """A verified envelope: the author is an active member and signed it."""

    envelope_id: bytes
    kind: Kind
    epoch: int  # the number of the local key that opened it (never on the wire)
    author: bytes  # Ed25519 verify key
    payloads: tuple[bytes, ...]  # change bytes, or (saved document,) for a snapshot

    @property
    def author_id(self) -> MemberId:
        return member_id_for(self.author)


#: The keys an opener holds, or a callable returning them (read at each open).
EpochKeys = Mapping[int, EpochKey] | Callable[[], Mapping[int, EpochKey]]


def padded_size(n: int) -> int:
    """The bucket a plaintext of `n` bytes is padded to.

    1, 4, 16 and 64 KiB, then multiples of 256 KiB up to `MAX_PLAINTEXT`:
    a small change and a bigger one look alike, and large ones leak only
    their size to the nearest 256 KiB.
    """
    if n < 0:
        raise ValueError("negative size")
    for bucket in _SMALL_BUCKETS:
        if n <= bucket:
            return bucket
    size = -(-n // LARGE_STEP) * LARGE_STEP
    if size > MAX_PLAINTEXT:
        raise LocalProtocolError(
            f"envelope payload of {n} bytes is above the {MAX_PLAINTEXT // (1024 * KIB)} MiB limit"
        )
    return size


def is_bucket_size(n: int) -> bool:
    return n in _SMALL_BUCKETS or (
        n % LARGE_STEP == 0 and _SMALL_BUCKETS[-1] < n <= MAX_PLAINTEXT
    )


def envelope_id(data: bytes) -> bytes:
    """BLAKE2b-256 of the whole envelope: identical bytes, identical id (dedup)."""
    return nacl.hash.blake2b(
        data, digest_size=ID_LEN, person=_ID_PERSON, encoder=nacl.encoding.RawEncoder
    )


def _block_for(payloads: Sequence[bytes]) -> bytes:
    parts = [struct.pack(">I", len(payloads))]
    for p in payloads:
        parts.append(struct.pack(">I", len(p)))
        parts.append(bytes(p))
    return b"".join(parts)


def _block_cost(item: bytes) -> int:
    return 4 + len(item)


def _binding(epoch_key: EpochKey) -> bytes:
    return derive(epoch_key, Purpose.ENVELOPE_KEY, _BINDING_CONTEXT)


def seal(
    identity: DeviceIdentity,
    epoch: int,
    epoch_key: EpochKey,
    kind: Kind,
    payloads: Sequence[bytes],
) -> bytes:
    """One envelope holding `payloads` (raises LocalProtocolError if too big).

    `epoch` is checked for range only: it never goes on the wire."""
    if not 0 <= epoch < 2**32:
        raise LocalProtocolError("epoch number out of range")
    if kind is Kind.SNAPSHOT and len(payloads) != 1:
        raise LocalProtocolError("a snapshot envelope holds exactly one saved document")
    block = _block_for(payloads)
    if len(block) > MAX_BLOCK:
        raise LocalProtocolError(
            f"envelope payload of {len(block)} bytes is above the {MAX_BLOCK} byte limit"
        )
    nonce = os.urandom(NONCE_LEN)
    ad = _HEADER.pack(MAGIC, VERSION, int(kind), 0, envelope_hint(epoch_key, nonce))
    author = identity.verify_key
    signature = identity.sign(SIG_DOMAIN + _binding(epoch_key) + ad + author + block)
    inner = author + signature + struct.pack(">I", len(block)) + block
    inner += bytes(padded_size(len(inner)) - len(inner))
    key = derive(epoch_key, Purpose.ENVELOPE_KEY)
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(inner, ad, nonce, key)
    return ad + nonce + ct


def seal_changes(
    identity: DeviceIdentity,
    epoch: int,
    epoch_key: EpochKey,
    changes: Iterable[bytes],
    max_block: int = 60 * KIB,
) -> list[bytes]:
    """Seal change bytes into as few envelopes as fit `max_block` each.

    Changes keep their order. A change bigger than `max_block` gets an
    envelope of its own (up to `MAX_BLOCK`). An empty input gives [].
    """
    max_block = min(max_block, MAX_BLOCK)
    out: list[bytes] = []
    group: list[bytes] = []
    size = 4
    for change in changes:
        cost = _block_cost(change)
        if group and size + cost > max_block:
            out.append(seal(identity, epoch, epoch_key, Kind.CHANGES, group))
            group, size = [], 4
        group.append(change)
        size += cost
    if group:
        out.append(seal(identity, epoch, epoch_key, Kind.CHANGES, group))
    return out


def seal_snapshot(identity: DeviceIdentity, epoch: int, epoch_key: EpochKey, saved: bytes) -> bytes:
    """One envelope holding a whole saved document."""
    return seal(identity, epoch, epoch_key, Kind.SNAPSHOT, [saved])


def peek_header(data: bytes) -> EnvelopeHeader:
    """Check the clear header only (what a relay or a bundle reader can see)."""
    if len(data) < MIN_ENVELOPE_SIZE:
        raise RemoteProtocolError("envelope is too short")
    if len(data) > MAX_ENVELOPE_SIZE:
        raise RemoteProtocolError("envelope is too large")
    magic, version, kind, flags, hint = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError("not a circle envelope")
    if version != VERSION:
        raise RemoteProtocolError(f"unsupported envelope version {version}")
    if flags != 0:
        raise RemoteProtocolError("envelope has unknown flags")
    try:
        k = Kind(kind)
    except ValueError:
        raise RemoteProtocolError(f"unknown envelope kind {kind}") from None
    if not is_bucket_size(len(data) - HEADER_LEN - TAG_LEN):
        raise RemoteProtocolError("envelope size is not a padding bucket")
    return EnvelopeHeader(k, hint)


def _candidates(keys: EpochKeys, hint: bytes, nonce: bytes) -> list[tuple[int, EpochKey]]:
    """Held keys whose hint for this nonce matches (almost always one or none)."""
    held = keys() if callable(keys) else keys
    return [(n, k) for n, k in sorted(held.items(), reverse=True)
            if constant_time_equal(envelope_hint(k, nonce), hint)]


def _parse_block(block: bytes) -> tuple[bytes, ...]:
    if len(block) < 4:
        raise EnvelopeRejected("envelope payload is malformed")
    (count,) = struct.unpack_from(">I", block)
    pos = 4
    items: list[bytes] = []
    if count > (len(block) - 4) // 4:
        raise EnvelopeRejected("envelope payload is malformed")
    for _ in range(count):
        if pos + 4 > len(block):
            raise EnvelopeRejected("envelope payload is malformed")
        (n,) = struct.unpack_from(">I", block, pos)
        pos += 4
        if pos + n > len(block):
            raise EnvelopeRejected("envelope payload is malformed")
        items.append(block[pos : pos + n])
        pos += n
    if pos != len(block):
        raise EnvelopeRejected("envelope payload has trailing bytes")
    return tuple(items)


def open_envelope(
    data: bytes,
    epoch_keys: EpochKeys,
    is_active_member: Callable[[bytes], bool],
) -> OpenedEnvelope:
    """Decrypt and verify one envelope.

    Raises RemoteProtocolError for a malformed envelope, UnknownEpoch if no
    held key matches its hint (another circle, or a key this device does not
    hold yet), DecryptionFailed if it was altered, EnvelopeRejected if the
    signature is bad or the author is not an active member.
    """
    data = bytes(data)
    header = peek_header(data)
    ad = data[:AD_LEN]
    nonce = data[AD_LEN:HEADER_LEN]
    candidates = _candidates(epoch_keys, header.hint, nonce)
    if not candidates:
        raise UnknownEpoch(
            "envelope is sealed under a circle key this device does not hold "
            "(another circle's, or a newer one not received yet)"
        )
    found: tuple[int, bytes] | None = None
    for number, key in candidates:
        try:
            found = number, nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                data[HEADER_LEN:], ad, nonce, derive(key, Purpose.ENVELOPE_KEY)
            )
            break
        except nacl.exceptions.CryptoError:
            continue
    if found is None:
        raise DecryptionFailed("envelope failed authentication: it was altered after sealing")
    epoch, inner = found
    author = inner[:_AUTHOR_LEN]
    signature = inner[_AUTHOR_LEN : _AUTHOR_LEN + _SIG_LEN]
    (block_len,) = struct.unpack_from(">I", inner, _AUTHOR_LEN + _SIG_LEN)
    end = _INNER_FIXED + block_len
    if end > len(inner):
        raise EnvelopeRejected("envelope payload length is out of range")
    block = inner[_INNER_FIXED:end]
    if any(inner[end:]):
        raise EnvelopeRejected("envelope padding is not zero")
    if not verify_signature(author, SIG_DOMAIN + _binding(key) + ad + author + block, signature):
        raise EnvelopeRejected("envelope signature does not verify")
    if not is_active_member(author):
        raise EnvelopeRejected(
            f"envelope author {member_id_for(author)} is not an active member of this circle"
        )
    payloads = _parse_block(block)
    if header.kind is Kind.SNAPSHOT and len(payloads) != 1:
        raise EnvelopeRejected("snapshot envelope must hold exactly one document")
    return OpenedEnvelope(envelope_id(data), header.kind, epoch, author, payloads)


class EnvelopeInbox:
    """Open envelopes once each: dedupe by id, then verify.

    `seen` is the set of ids already applied; the caller may persist it (it
    is mutated in place). A duplicate returns None without decrypting. A
    rejected envelope raises and is *not* marked seen, so a later, honest
    copy is not shadowed by it (ids are hashes of the bytes, so a tampered
    copy has a different id anyway).
    """

    def __init__(
        self,
        epoch_keys: EpochKeys,
        is_active_member: Callable[[bytes], bool],
        seen: set[bytes] | None = None,
    ) -> None:
        self.epoch_keys = epoch_keys
        self.is_active_member = is_active_member
        self.seen: set[bytes] = seen if seen is not None else set()

    def accept(self, data: bytes) -> OpenedEnvelope | None:
        eid = envelope_id(bytes(data))
        if eid in self.seen:
            return None
        opened = open_envelope(data, self.epoch_keys, self.is_active_member)
        self.seen.add(eid)
        return opened


__all__ = [
    "EnvelopeHeader", "EnvelopeInbox", "EpochKeys", "Kind", "MAX_ENVELOPE_SIZE",
    "MAX_PLAINTEXT", "MIN_ENVELOPE_SIZE", "OpenedEnvelope", "envelope_id", "open_envelope",
    "padded_size", "peek_header", "seal", "seal_changes", "seal_snapshot", "seal_snapshot_parts",
]


#: Payload bytes per part of a split snapshot: each part's envelope pads to
#: the 1 MiB bucket (smaller than one envelope's 4 MiB: a refused or lost
#: part costs less to send again, and a relay's byte rate is not hit at once).
PART_BUCKET = 1024 * KIB


def part_capacity(meta_len: int) -> int:
    """Bytes of the payload one part carries with `meta_len` bytes of meta."""
    return PART_BUCKET - _INNER_FIXED - 8 - parts.HEAD_LEN - meta_len


def seal_snapshot_parts(identity: DeviceIdentity, epoch: int, epoch_key: EpochKey, saved: bytes,
                        meta: bytes = b"") -> Iterator[bytes]:
    """A whole saved document as envelopes: one snapshot envelope if it fits,
    else a set of part envelopes (see net/parts.py), sealed one at a time.
    Raises LocalProtocolError above `parts.MAX_SIZE`."""
    if 4 + 4 + len(saved) <= MAX_BLOCK:
        yield seal_snapshot(identity, epoch, epoch_key, saved)
        return
    for part in parts.split(saved, part_capacity(len(meta)), meta):
        yield seal(identity, epoch, epoch_key, Kind.SNAPSHOT, [part])
