"""Signed membership statements: the wire format (sans-I/O, no document access).

A statement is one signed fact about who is in the circle: founding, adding a
member, linking a device, removing a member or device (leaving is removing
oneself), a profile, a new epoch with its key grants, a grant to a joiner.
Each is an immutable blob stored in the document's `statements` map under its
own id, so concurrent statements all survive a merge (a grow-only set).

Encoding (integers big-endian, `b` = u16 length + bytes)::

    magic "cst1" | kind u8 | circle b | device 32 | member 32 | at u64 |
    deps u16 count x 32 | body (kind-specific, below) | signature 64

`device` signs everything before the signature (domain: the magic). `member`
is the member key the device belongs to (equal to `device` for a member's
first device). `deps` are the ids of the statements the author had seen: the
statement DAG that `membership_rules` walks. The id is BLAKE2b-256 of the
whole blob, so a statement cannot be altered without changing its id.

Every field is range-checked when decoding; anything else raises
`RemoteProtocolError` and the statement is ignored (and reported) by the
derivation — it never raises past it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

import nacl.encoding
import nacl.hash

from circle.errors import RemoteProtocolError
from circle.net.keys import DeviceIdentity, verify_signature

MAGIC = b"cst1"
ID_LEN = 32
KEY = 32
SIG = 64
MAX_STATEMENT = 64 * 1024
MAX_DEPS = 256
MAX_TEXT = 200
MAX_GRANTS = 1024
MAX_EPOCH_NUMBER = (1 << 31) - 1
MAX_SEEN = 4096


class Kind(IntEnum):
    FOUND = 1  # genesis: the founder's first device and profile
    ADD_MEMBER = 2  # an active member adds a new member (invite accepted)
    ADD_DEVICE = 3  # a member links another device (certified by the member key)
    REMOVE = 4  # remove a member (all devices) or one device; self = leave
    PROFILE = 5  # a member's handle and zone
    EPOCH = 6  # a new circle key, sealed to each active device
    GRANT = 7  # an existing epoch's key sealed to one more device


@dataclass(frozen=True)
class Statement:
    kind: Kind
    circle: str
    device: bytes  # signing device key
    member: bytes  # the member key it belongs to
    at: int  # author's clock, ms (informative only: never trusted for order)
    deps: tuple[bytes, ...]
    # bodies (unused fields stay empty)
    subject: bytes = b""  # member or device key the statement is about
    box: bytes = b""  # X25519 key of the subject device (ADD_*, FOUND)
    cert: bytes = b""  # ADD_DEVICE: member key's signature over the device
    handle: str = ""
    zone: str = ""
    number: int = 0  # EPOCH/GRANT: epoch number
    check: bytes = b""  # EPOCH: key check
    epoch: bytes = b""  # GRANT: id of the epoch statement
    grants: tuple[tuple[bytes, bytes], ...] = ()  # (device key, sealed key)
    seen: tuple[tuple[bytes, int], ...] = ()  # REMOVE: (actor, max op) the remover had
    signature: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def id(self) -> bytes:
        return statement_id(self.raw)


def statement_id(raw: bytes) -> bytes:
    return nacl.hash.blake2b(raw, digest_size=ID_LEN, person=b"circle/statement",
                             encoder=nacl.encoding.RawEncoder)


def device_cert_message(circle: str, device: bytes, box: bytes) -> bytes:
    """What a member key signs to certify one of its devices."""
    c = circle.encode()
    return b"circle-device-cert-v1" + struct.pack(">H", len(c)) + c + device + box


# --- encoding -----------------------------------------------------------------


def _b(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("field too long")
    return struct.pack(">H", len(data)) + data


def _t(text: str) -> bytes:
    return _b(text.encode("utf-8"))


def _body(s: Statement) -> bytes:
    k = s.kind
    if k in (Kind.FOUND, Kind.ADD_MEMBER):
        return s.subject + s.box + _t(s.handle) + _t(s.zone)
    if k is Kind.ADD_DEVICE:
        return s.subject + s.box + s.cert
    if k is Kind.REMOVE:
        out = s.subject + struct.pack(">H", len(s.seen))
        for actor, op in s.seen:
            out += _b(actor) + struct.pack(">Q", op)
        return out
    if k is Kind.PROFILE:
        return _t(s.handle) + _t(s.zone)
    if k is Kind.EPOCH:
        out = struct.pack(">I", s.number) + s.check + struct.pack(">H", len(s.grants))
        for device, sealed in s.grants:
            out += device + _b(sealed)
        return out
    if k is Kind.GRANT:
        device, sealed = s.grants[0]
        return s.epoch + struct.pack(">I", s.number) + device + _b(sealed)
    raise ValueError(f"unknown kind {k}")


def _unsigned(s: Statement) -> bytes:
    deps = b"".join(sorted(s.deps))
    return (MAGIC + bytes([s.kind]) + _t(s.circle) + s.device + s.member
            + struct.pack(">QH", s.at, len(s.deps)) + deps + _body(s))


def sign(identity: DeviceIdentity, s: Statement) -> Statement:
    """Fill in `device`, signature and raw bytes (the device key must match)."""
    s = Statement(**{**s.__dict__, "device": identity.verify_key, "deps": tuple(sorted(set(s.deps)))})
    unsigned = _unsigned(s)
    sig = identity.sign(unsigned)
    raw = unsigned + sig
    if len(raw) > MAX_STATEMENT:
        raise ValueError("statement too large")
    return Statement(**{**s.__dict__, "signature": sig, "raw": raw})


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RemoteProtocolError("statement is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        value: int = struct.unpack(fmt, self.take(size))[0]
        return value

    def b(self, cap: int) -> bytes:
        n = self.u(">H")
        if n > cap:
            raise RemoteProtocolError("statement field too long")
        return self.take(n)

    def text(self) -> str:
        raw = self.b(MAX_TEXT * 4)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("statement text is not UTF-8") from None
        if len(text) > MAX_TEXT or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text):
            raise RemoteProtocolError("statement text is too long or holds control characters")
        return text


def decode(raw: bytes) -> Statement:
    """Parse and check the signature. Raises RemoteProtocolError."""
    if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_STATEMENT:
        raise RemoteProtocolError("statement is not bytes or too large")
    raw = bytes(raw)
    r = _Reader(raw)
    if r.take(4) != MAGIC:
        raise RemoteProtocolError("not a circle statement")
    try:
        kind = Kind(r.u(">B"))
    except ValueError:
        raise RemoteProtocolError("unknown statement kind") from None
    circle = r.text()
    device, member = r.take(KEY), r.take(KEY)
    at = r.u(">Q")
    ndeps = r.u(">H")
    if ndeps > MAX_DEPS:
        raise RemoteProtocolError("statement has too many deps")
    deps = tuple(r.take(ID_LEN) for _ in range(ndeps))
    if list(deps) != sorted(set(deps)):
        raise RemoteProtocolError("statement deps are not canonical")
    f: dict[str, object] = {}
    if kind in (Kind.FOUND, Kind.ADD_MEMBER):
        f.update(subject=r.take(KEY), box=r.take(KEY), handle=r.text(), zone=r.text())
    elif kind is Kind.ADD_DEVICE:
        f.update(subject=r.take(KEY), box=r.take(KEY), cert=r.take(SIG))
    elif kind is Kind.REMOVE:
        subject = r.take(KEY)
        n = r.u(">H")
        if n > MAX_SEEN:
            raise RemoteProtocolError("removal lists too many actors")
        seen = tuple((r.b(64), r.u(">Q")) for _ in range(n))
        f.update(subject=subject, seen=seen)
    elif kind is Kind.PROFILE:
        f.update(handle=r.text(), zone=r.text())
    elif kind is Kind.EPOCH:
        number = r.u(">I")
        check = r.take(16)
        n = r.u(">H")
        if n > MAX_GRANTS:
            raise RemoteProtocolError("epoch has too many grants")
        grants = tuple((r.take(KEY), r.b(256)) for _ in range(n))
        f.update(number=number, check=check, grants=grants)
    elif kind is Kind.GRANT:
        epoch = r.take(ID_LEN)
        number = r.u(">I")
        f.update(epoch=epoch, number=number, grants=((r.take(KEY), r.b(256)),))
    unsigned_len = r.pos
    signature = r.take(SIG)
    if r.pos != len(raw):
        raise RemoteProtocolError("statement has trailing bytes")
    if kind in (Kind.EPOCH, Kind.GRANT) and not 0 < int(f["number"]) <= MAX_EPOCH_NUMBER:  # type: ignore[call-overload]
        raise RemoteProtocolError("epoch number out of range")
    if not verify_signature(device, raw[:unsigned_len], signature):
        raise RemoteProtocolError("statement signature does not verify")
    return Statement(kind, circle, device, member, at, deps, signature=signature, raw=raw, **f)  # type: ignore[arg-type]


__all__ = ["Kind", "Statement", "decode", "device_cert_message", "sign", "statement_id"]
