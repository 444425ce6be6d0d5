"""Invite codes and the sans-I/O join protocol.

An invite code carries: the circle id, a one-time 16-byte secret, the
inviter's member id, an expiry time, where to reach the inviter (LAN
addresses) and the circle's relays, plus a 4-byte checksum so a mistyped code
is caught before any network traffic. The text form is base32 in groups of
four, prefixed "circle:", and the same text is shown as a QR code.

Join protocol (joiner = initiator, inviter = responder):

    handshake   the live-session handshake (net/handshake.py) with the
                invite key derived from the secret as its PSK (filed under a
                reserved epoch number derived from the secret, which never
                goes on the wire). Without the secret nobody gets past
                message 1 (the inviter answers with a decoy); the joiner accepts only
                the inviter named in the code; the inviter accepts any
                identity (knowing the secret is the proof).
    -> Request  {handle, zone, box_key}               joiner's profile
    <- Accepted {circle_id, name, epoch, keys} + doc  or  Refused {reason}

Rules:
- Every message after the handshake travels in the handshake's secretstream
  channel, inside length-prefixed frames capped before allocation.
- The inviter marks an invite used when it accepts; a second use fails the
  handshake (its key is gone from the inviter's keyring), as does an expired
  code or a code for another circle.
- `InviteCode.fingerprint` (derived from the code) is kept for tools; the
  screens compare each member's safety number instead.
- The secret is checkable offline from a recorded message 1 (it keys the
  PSK), which is fine at 128 bits. A short code to read aloud never keys
  anything here: net/shortcode.py trades it for this code in a PAKE.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import nacl.encoding
import nacl.hash

from circle.errors import (
    CircleError,
    EpochMismatch,
    HandshakeFailed,
    InviteError,
    LocalProtocolError,
    RemoteProtocolError,
)
from circle.net.framing import FrameDecoder, encode_frame
from circle.net.handshake import MAX_HANDSHAKE_MESSAGE, Handshake, HandshakeResult, Role
from circle.net.keys import (
    DeviceIdentity,
    EpochKey,
    MemberId,
    Purpose,
    fingerprint,
    keyed_hash,
    member_id_for,
)

CODE_PREFIX = "circle:"
CODE_VERSION = 1
SECRET_LEN = 16
INVITE_EPOCH_BASE = 0xF000_0000  # above any membership epoch number
MAX_JOIN_FRAME = 64 * 1024 * 1024
MAX_ADDRESSES = 8
_CHECK_PERSON = b"circle/invite-ck".ljust(16, b"\0")


def _checksum(payload: bytes) -> bytes:
    return nacl.hash.blake2b(payload, digest_size=4, person=_CHECK_PERSON, encoder=nacl.encoding.RawEncoder)


def _put_str(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise LocalProtocolError("an invite field is too long")
    out += bytes([len(raw)]) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise InviteError("this invite code is incomplete")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def text(self) -> str:
        try:
            return self.take(self.take(1)[0]).decode("utf-8")
        except UnicodeDecodeError:
            raise InviteError("this invite code is not valid") from None


@dataclass(frozen=True)
class InviteCode:
    circle_id: str
    secret: bytes
    inviter: MemberId
    expires_at: int  # unix seconds
    addresses: tuple[str, ...] = ()
    relays: tuple[str, ...] = ()

    @classmethod
    def new(cls, circle_id: str, inviter: MemberId, expires_at: int,
            addresses: tuple[str, ...] = (), relays: tuple[str, ...] = ()) -> InviteCode:
        return cls(circle_id, os.urandom(SECRET_LEN), inviter, expires_at, addresses, relays)

    # --- text form -----------------------------------------------------------

    def encode(self) -> str:
        out = bytearray([CODE_VERSION])
        _put_str(out, self.circle_id)
        out += self.secret
        _put_str(out, self.inviter)
        out += struct.pack(">Q", self.expires_at)
        for items in (self.addresses, self.relays):
            out.append(len(items))
            for item in items:
                _put_str(out, item)
        text = base64.b32encode(bytes(out) + _checksum(bytes(out))).decode().rstrip("=").lower()
        return CODE_PREFIX + "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    @classmethod
    def parse(cls, text: str) -> InviteCode:
        """Decode and verify a code; a mistyped one fails here, offline."""
        body = text.strip()
        if body.lower().startswith(CODE_PREFIX):
            body = body[len(CODE_PREFIX) :]
        body = "".join(ch for ch in body if ch not in "- \t\r\n").upper()
        if not body:
            raise InviteError("the invite code is empty")
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raise InviteError("this invite code has characters that cannot appear in a code; check for typos") from None
        if len(raw) < 5 or _checksum(raw[:-4]) != raw[-4:]:
            raise InviteError("this invite code is mistyped (its checksum does not match); check it character by character")
        r = _Reader(raw[:-4])
        if r.take(1)[0] != CODE_VERSION:
            raise InviteError("this invite code is from a newer version of circle")
        circle_id = r.text()
        secret = r.take(SECRET_LEN)
        inviter = MemberId(r.text())
        (expires_at,) = struct.unpack(">Q", r.take(8))
        lists: list[tuple[str, ...]] = []
        for _ in range(2):
            count = r.take(1)[0]
            if count > MAX_ADDRESSES:
                raise InviteError("this invite code lists too many addresses")
            lists.append(tuple(r.text() for _ in range(count)))
        if r.pos != len(r.data):
            raise InviteError("this invite code has trailing data")
        return cls(circle_id, secret, inviter, expires_at, lists[0], lists[1])

    # --- derived values --------------------------------------------------------

    @property
    def key(self) -> EpochKey:
        return EpochKey(keyed_hash(self.secret, Purpose.INVITE, self.circle_id.encode()))

    @property
    def epoch(self) -> int:
        """The reserved handshake epoch number for this invite."""
        tag = keyed_hash(self.secret, Purpose.INVITE, b"epoch", size=4)
        return INVITE_EPOCH_BASE | (int.from_bytes(tag, "big") & 0x0FFF_FFFF)

    @property
    def invite_id(self) -> str:
        return keyed_hash(self.secret, Purpose.INVITE, b"id", size=8).hex()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.circle_id.encode(), self.secret, self.inviter.encode(), groups=3)


# --- join messages -----------------------------------------------------------------


class _Kind(Enum):
    REQUEST = 1
    ACCEPTED = 2
    REFUSED = 3


@dataclass(frozen=True)
class JoinRequest:
    handle: str
    zone: str
    box_key: bytes
    verify_key: bytes  # from the handshake, not from the message

    @property
    def member_id(self) -> MemberId:
        return member_id_for(self.verify_key)


@dataclass(frozen=True)
class JoinAccepted:
    circle_id: str
    name: str
    epoch: int
    keys: dict[int, EpochKey]
    document: bytes


@dataclass(frozen=True)
class JoinRefused:
    reason: str


@dataclass(frozen=True)
class Connected:
    """The handshake completed: the peer holds the code (and, for the joiner, is the inviter)."""

    result: HandshakeResult


@dataclass(frozen=True)
class JoinFailed:
    error: CircleError


JoinEvent = Connected | JoinRequest | JoinAccepted | JoinRefused | JoinFailed


def _json_body(kind: _Kind, obj: dict[str, object], tail: bytes = b"") -> bytes:
    head = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return bytes([kind.value]) + struct.pack(">I", len(head)) + head + tail


def _parse_body(data: bytes) -> tuple[_Kind, dict[str, object], bytes]:
    if len(data) < 5:
        raise RemoteProtocolError("a join message is too short")
    try:
        kind = _Kind(data[0])
    except ValueError:
        raise RemoteProtocolError(f"unknown join message type {data[0]}") from None
    (length,) = struct.unpack(">I", data[1:5])
    if 5 + length > len(data):
        raise RemoteProtocolError("a join message is truncated")
    try:
        obj = json.loads(data[5 : 5 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RemoteProtocolError("a join message is not valid") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError("a join message is not valid")
    return kind, obj, data[5 + length :]


def _text(obj: dict[str, object], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise RemoteProtocolError(f"join message field '{key}' is invalid")
    return value


def _b64(obj: dict[str, object], key: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(_text(obj, key, 200), validate=True)
    except ValueError:
        raise RemoteProtocolError(f"join message field '{key}' is invalid") from None
    if len(raw) != size:
        raise RemoteProtocolError(f"join message field '{key}' has the wrong size")
    return raw


class _JoinConnection:
    """Common framing, handshake and channel plumbing for both roles."""

    def __init__(self, role: Role, identity: DeviceIdentity, code: InviteCode,
                 accept_peer: Callable[[bytes], bool]) -> None:
        self.code = code
        self._hs = Handshake(role, identity, {code.epoch: code.key}, accept_peer, epoch=code.epoch)
        self._decoder = FrameDecoder(MAX_HANDSHAKE_MESSAGE)
        self._out = bytearray()
        self._events: deque[JoinEvent] = deque()
        self.result: HandshakeResult | None = None
        self.closed = False

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def next_event(self) -> JoinEvent | None:
        return self._events.popleft() if self._events else None

    def _fail(self, error: CircleError) -> None:
        if not self.closed:
            self.closed = True
            self._events.append(JoinFailed(error))

    def _send(self, body: bytes, final: bool = False) -> None:
        assert self.result is not None
        channel = self.result.channel
        sealed = channel.seal_final(body) if final else channel.seal(body)
        self._out += encode_frame(sealed, MAX_JOIN_FRAME)
        if final:
            self.closed = True

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            if self.result is None:
                # An inviter with no matching pending invite just hangs up.
                self._fail(InviteError(
                    "the inviter hung up before accepting this code: it was already used, has expired, "
                    "or is for another circle"))
            else:
                self._fail(RemoteProtocolError("the other side closed the connection before the join finished"))
            return
        try:
            # One frame at a time while the handshake runs: the joiner sends its
            # last handshake message and its (larger) profile in one write, and
            # the cap may only grow once the handshake is complete.
            while data:
                frames, used = self._decoder.feed_some(data, 1 if self.result is None else None)
                data = data[used:]
                for frame in frames:
                    if self.result is None:
                        self._on_handshake_message(frame)
                    else:
                        self._on_message(self.result.channel.open(frame))
                    if self.closed:
                        return
        except EpochMismatch:
            self._fail(InviteError(
                "the inviter does not recognise this code: it was already used, has expired, "
                "or is for another circle"))
        except HandshakeFailed as exc:
            self._fail(InviteError(f"the join handshake failed: {exc}"))
        except CircleError as exc:
            self._fail(exc)

    def _on_handshake_message(self, frame: bytes) -> None:
        try:
            reply = self._hs.receive(frame)
        except CircleError:
            if self._hs.reject_reply is not None:
                self._out += encode_frame(self._hs.reject_reply, MAX_HANDSHAKE_MESSAGE)
            raise
        if reply is not None:
            self._out += encode_frame(reply, MAX_HANDSHAKE_MESSAGE)
        if self._hs.complete:
            self.result = self._hs.result
            self._decoder.max_size = MAX_JOIN_FRAME
            self._events.append(Connected(self.result))
            self._on_connected()

    def _on_connected(self) -> None:
        pass

    def _on_message(self, body: bytes) -> None:
        raise NotImplementedError


class JoinerConnection(_JoinConnection):
    """The new member's side: prove the code, send a profile, receive the circle."""

    def __init__(self, identity: DeviceIdentity, code: InviteCode, handle: str, zone: str = "") -> None:
        super().__init__(Role.INITIATOR, identity, code, lambda vk: member_id_for(vk) == code.inviter)
        self._request = _json_body(_Kind.REQUEST, {
            "handle": handle, "zone": zone,
            "box_key": base64.b64encode(identity.box_public).decode(),
        })
        self._out += encode_frame(self._hs.start(), MAX_HANDSHAKE_MESSAGE)

    def _on_connected(self) -> None:
        self._send(self._request)

    def _on_message(self, body: bytes) -> None:
        kind, obj, tail = _parse_body(body)
        if kind is _Kind.ACCEPTED:
            raw_keys = obj.get("keys")
            if not isinstance(raw_keys, dict) or not raw_keys or len(raw_keys) > 64:
                raise RemoteProtocolError("the inviter sent no circle keys")
            keys: dict[int, EpochKey] = {}
            for number, encoded in raw_keys.items():
                if not isinstance(number, str) or not number.isdigit():
                    raise RemoteProtocolError("the inviter sent a malformed key list")
                keys[int(number)] = EpochKey(_b64({"k": encoded}, "k", 32))
            epoch = obj.get("epoch")
            if not isinstance(epoch, int) or epoch not in keys:
                raise RemoteProtocolError("the inviter sent no key for the current epoch")
            circle_id = _text(obj, "circle_id", 64)
            if circle_id != self.code.circle_id:
                raise RemoteProtocolError("the inviter answered for a different circle than the code names")
            self._events.append(JoinAccepted(circle_id, _text(obj, "name", 200), epoch, keys, tail))
            self.closed = True
        elif kind is _Kind.REFUSED:
            self._events.append(JoinRefused(_text(obj, "reason", 500)))
            self.closed = True
        else:
            raise RemoteProtocolError("unexpected join message from the inviter")


class InviterConnection(_JoinConnection):
    """The inviting member's side: any identity that proves a pending code may
    ask to join. Several invites can be pending at once; the handshake tries
    the joiner's first message under each pending code's key, and `code` is
    set to the one that matched once the handshake completes."""

    def __init__(self, identity: DeviceIdentity, codes: list[InviteCode]) -> None:
        if not codes:
            raise LocalProtocolError("no pending invite to serve")
        super().__init__(Role.RESPONDER, identity, codes[0], lambda vk: True)
        self._codes = {c.epoch: c for c in codes}
        self._hs = Handshake(Role.RESPONDER, identity, {c.epoch: c.key for c in codes}, lambda vk: True)

    def _on_connected(self) -> None:
        assert self.result is not None
        self.code = self._codes[self.result.epoch]

    def _on_message(self, body: bytes) -> None:
        kind, obj, _ = _parse_body(body)
        if kind is not _Kind.REQUEST or self.result is None:
            raise RemoteProtocolError("unexpected join message from the joiner")
        self._events.append(JoinRequest(
            _text(obj, "handle", 40), _text(obj, "zone", 60), _b64(obj, "box_key", 32),
            self.result.peer_verify_key,
        ))

    def accept(self, accepted: JoinAccepted) -> None:
        self._send(_json_body(_Kind.ACCEPTED, {
            "circle_id": accepted.circle_id, "name": accepted.name, "epoch": accepted.epoch,
            "keys": {str(n): base64.b64encode(k).decode() for n, k in accepted.keys.items()},
        }, accepted.document), final=True)

    def refuse(self, reason: str) -> None:
        self._send(_json_body(_Kind.REFUSED, {"reason": reason[:500]}), final=True)

