"""Typed messages carried inside the encrypted channel (one message per frame).

Encoding: one type byte, then fixed fields in order. Integers are big-endian;
a string is a length (u8 or u16, noted per field) then UTF-8; a list of heads
is a u16 count then 32-byte hashes; a trailing `data` field takes the rest of
the frame. Decoding is strict: an unknown type, a short or over-long body, a
bad length, invalid UTF-8, a duplicate head or an out-of-range value raises
`RemoteProtocolError`. Nothing here trusts a length beyond the frame it came in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from circle.errors import LocalProtocolError, RemoteProtocolError

HASH_LEN = 32
MAX_HEADS = 4096
MAX_CAPABILITIES = 32


class MsgType(IntEnum):
    HELLO = 0x01
    SYNC = 0x02
    IDLE = 0x03
    SNAPSHOT_START = 0x04
    SNAPSHOT_CHUNK = 0x05
    PING = 0x06
    PONG = 0x07
    BYE = 0x08
    KEY_UPDATE = 0x09
    PROOFS = 0x0A
    SNAPSHOT_PLEASE = 0x0B
    SAVED = 0x0C
    SYNC_MORE = 0x0D
    URGENT = 0x0E


class Codec(IntEnum):
    RAW = 0
    ZLIB = 1


class ByeCode(IntEnum):
    NORMAL = 0
    SHUTTING_DOWN = 1
    PROTOCOL_ERROR = 2
    NOT_CONVERGING = 3
    TIMEOUT = 4
    INTERNAL_ERROR = 5
    REMOVED = 6  # you are no longer a member (the reason says who and when)


@dataclass(frozen=True)
class Hello:
    """First message each way: who I am and what I have."""

    version: int
    member_id: str
    capabilities: frozenset[str]
    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class SyncMsg:
    """One Automerge sync-protocol message."""

    data: bytes


@dataclass(frozen=True)
class Idle:
    """I have nothing more to send right now; these are my heads."""

    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class SnapshotStart:
    """A whole saved document follows in `SnapshotChunk`s totalling `size` bytes."""

    size: int
    codec: Codec
    raw_size: int
    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class SnapshotChunk:
    data: bytes


@dataclass(frozen=True)
class Ping:
    nonce: int


@dataclass(frozen=True)
class Pong:
    nonce: int


@dataclass(frozen=True)
class Bye:
    code: ByeCode
    reason: str = ""


@dataclass(frozen=True)
class KeyUpdate:
    """Opaque key-rotation payload (issue 4 defines its contents)."""

    data: bytes


@dataclass(frozen=True)
class Proofs:
    """Signatures of the changes that follow (node/authorship.py), one block."""

    data: bytes


@dataclass(frozen=True)
class SnapshotPlease:
    """I cannot converge by sync messages: send me your snapshot (I send mine).
    A snapshot is accepted only by a side that asked (or that is empty)."""


@dataclass(frozen=True)
class Saved:
    """These heads are durable on my device (written and fsynced). `reason`
    says, when not empty, why my last attempt to save what I hold failed
    ("the disk is full"). Only this counts as delivery (net/session.py)."""

    heads: tuple[bytes, ...]
    reason: str = ""


@dataclass(frozen=True)
class SyncMore:
    """The first pieces of one large sync message; the `SyncMsg` that follows
    carries the last piece (so an `Urgent` can pass between pieces)."""

    data: bytes


@dataclass(frozen=True)
class Urgent:
    """Changes to apply at once, ahead of any sync in progress (an alert):
    each written on top of heads every member holds (net/session.py rule 10)."""

    changes: tuple[bytes, ...]


MAX_URGENT_CHANGES = 64

Message: TypeAlias = (
    Hello | SyncMsg | Idle | SnapshotStart | SnapshotChunk | Ping | Pong | Bye | KeyUpdate
    | Proofs | SnapshotPlease | Saved | SyncMore | Urgent
)


# --- encoding --------------------------------------------------------------------


def _str(value: str, width: int) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) >= 1 << (8 * width):
        raise LocalProtocolError("string field too long")
    return len(raw).to_bytes(width, "big") + raw


def _heads(heads: tuple[bytes, ...]) -> bytes:
    if len(heads) > MAX_HEADS:
        raise LocalProtocolError("too many heads")
    if any(len(h) != HASH_LEN for h in heads):
        raise LocalProtocolError("heads must be 32-byte hashes")
    return len(heads).to_bytes(2, "big") + b"".join(heads)


def encode(msg: Message) -> bytes:
    if isinstance(msg, Hello):
        caps = sorted(msg.capabilities)
        if len(caps) > MAX_CAPABILITIES:
            raise LocalProtocolError("too many capabilities")
        return (
            bytes([MsgType.HELLO, msg.version])
            + _str(msg.member_id, 1)
            + bytes([len(caps)])
            + b"".join(_str(c, 1) for c in caps)
            + _heads(msg.heads)
        )
    if isinstance(msg, SyncMsg):
        return bytes([MsgType.SYNC]) + msg.data
    if isinstance(msg, Idle):
        return bytes([MsgType.IDLE]) + _heads(msg.heads)
    if isinstance(msg, SnapshotStart):
        return (
            bytes([MsgType.SNAPSHOT_START])
            + struct.pack(">QBQ", msg.size, msg.codec, msg.raw_size)
            + _heads(msg.heads)
        )
    if isinstance(msg, SnapshotChunk):
        return bytes([MsgType.SNAPSHOT_CHUNK]) + msg.data
    if isinstance(msg, Ping):
        return bytes([MsgType.PING]) + struct.pack(">Q", msg.nonce)
    if isinstance(msg, Pong):
        return bytes([MsgType.PONG]) + struct.pack(">Q", msg.nonce)
    if isinstance(msg, Bye):
        return bytes([MsgType.BYE, msg.code]) + _str(msg.reason, 2)
    if isinstance(msg, KeyUpdate):
        return bytes([MsgType.KEY_UPDATE]) + msg.data
    if isinstance(msg, Proofs):
        return bytes([MsgType.PROOFS]) + msg.data
    if isinstance(msg, SnapshotPlease):
        return bytes([MsgType.SNAPSHOT_PLEASE])
    if isinstance(msg, Saved):
        return bytes([MsgType.SAVED]) + _heads(msg.heads) + _str(msg.reason, 2)
    if isinstance(msg, SyncMore):
        return bytes([MsgType.SYNC_MORE]) + msg.data
    if isinstance(msg, Urgent):
        if not 0 < len(msg.changes) <= MAX_URGENT_CHANGES or not all(msg.changes):
            raise LocalProtocolError("an urgent message carries 1 to 64 non-empty changes")
        return bytes([MsgType.URGENT, len(msg.changes)]) + b"".join(
            len(c).to_bytes(4, "big") + c for c in msg.changes)
    raise LocalProtocolError(f"cannot encode {type(msg).__name__}")


# --- decoding --------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def fail(self, why: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"malformed {self._what} message from the peer: {why}")

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise self.fail("truncated")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def uint(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def string(self, width: int) -> str:
        raw = self.take(self.uint(width))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None

    def heads(self) -> tuple[bytes, ...]:
        count = self.uint(2)
        if count > MAX_HEADS:
            raise self.fail("too many heads")
        heads = tuple(self.take(HASH_LEN) for _ in range(count))
        if len(set(heads)) != len(heads):
            raise self.fail("duplicate heads")
        return heads

    def rest(self, *, nonempty: bool) -> bytes:
        out = self._data[self._pos :]
        self._pos = len(self._data)
        if nonempty and not out:
            raise self.fail("empty payload")
        return out

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail("trailing bytes")


def decode(frame: bytes) -> Message:
    if not frame:
        raise RemoteProtocolError("empty message from the peer")
    try:
        kind = MsgType(frame[0])
    except ValueError:
        raise RemoteProtocolError(f"unknown message type {frame[0]:#04x} from the peer") from None
    r = _Reader(frame[1:], kind.name.lower())
    msg: Message
    if kind is MsgType.HELLO:
        version = r.uint(1)
        member_id = r.string(1)
        ncaps = r.uint(1)
        if ncaps > MAX_CAPABILITIES:
            raise r.fail("too many capabilities")
        caps = [r.string(1) for _ in range(ncaps)]
        if len(set(caps)) != len(caps):
            raise r.fail("duplicate capabilities")
        msg = Hello(version, member_id, frozenset(caps), r.heads())
    elif kind is MsgType.SYNC:
        msg = SyncMsg(r.rest(nonempty=True))
    elif kind is MsgType.IDLE:
        msg = Idle(r.heads())
    elif kind is MsgType.SNAPSHOT_START:
        size, codec_raw, raw_size = struct.unpack(">QBQ", r.take(17))
        try:
            codec = Codec(codec_raw)
        except ValueError:
            raise r.fail(f"unknown codec {codec_raw}") from None
        msg = SnapshotStart(size, codec, raw_size, r.heads())
    elif kind is MsgType.SNAPSHOT_CHUNK:
        msg = SnapshotChunk(r.rest(nonempty=True))
    elif kind is MsgType.PING:
        msg = Ping(r.uint(8))
    elif kind is MsgType.PONG:
        msg = Pong(r.uint(8))
    elif kind is MsgType.BYE:
        code_raw = r.uint(1)
        try:
            code = ByeCode(code_raw)
        except ValueError:
            code = ByeCode.INTERNAL_ERROR
        msg = Bye(code, r.string(2))
    elif kind is MsgType.PROOFS:
        msg = Proofs(r.rest(nonempty=True))
    elif kind is MsgType.SNAPSHOT_PLEASE:
        msg = SnapshotPlease()
    elif kind is MsgType.SAVED:
        msg = Saved(r.heads(), r.string(2))
    elif kind is MsgType.SYNC_MORE:
        msg = SyncMore(r.rest(nonempty=True))
    elif kind is MsgType.URGENT:
        count = r.uint(1)
        if not 0 < count <= MAX_URGENT_CHANGES:
            raise r.fail("1 to 64 changes")
        changes = tuple(r.take(r.uint(4)) for _ in range(count))
        if not all(changes):
            raise r.fail("an empty change")
        msg = Urgent(changes)
    else:
        msg = KeyUpdate(r.rest(nonempty=True))
    r.end()
    return msg


__all__ = [
    "Bye", "ByeCode", "Codec", "Hello", "Idle", "KeyUpdate", "Message", "MsgType", "Ping",
    "Pong", "Proofs", "Saved", "SnapshotChunk", "SnapshotPlease", "SnapshotStart", "SyncMore", "SyncMsg",
    "Urgent", "decode", "encode",
]
