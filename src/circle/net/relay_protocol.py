"""The relay protocol, sans-I/O: bytes in, events and bytes out.

One WebSocket binary message carries exactly one protocol message. The same
codec is used by the relay server (`circle.relay.core.ServerCore`) and the
client (`ClientCore` here); the asyncio drivers in `circle.relay.server` and
`relay_client.py` only move bytes.

Messages (integers big-endian; `rest` = the remainder of the message)::

    client -> relay
      0x01 Auth       version u8, mailbox 16, token 32, proof u64
      0x02 Put        req u32, envelope rest
      0x03 Fetch      req u32, since u64, limit u16
      0x04 Subscribe  since u64          (relay then pushes every envelope
                                          after `since`, now and as it arrives)
    relay -> client
      0x81 AuthOk     instance 16, head u64, registered u8
      0x82 Ack        req u32, envelope id 32, cursor u64, duplicate u8
      0x83 Batch      req u32, next u64, more u8, count u16,
                      count x (cursor u64, length u32, envelope)
      0x84 Pushed     cursor u64, envelope rest
      0x85 Error      req u32, code u16, fatal u8, length u16, text (UTF-8)
      0x86 Challenge  bits u8            (registering this mailbox needs a proof)

Authentication and registration (version 2):

- The mailbox id is the hash of the token (`mailbox_for_token`), so a relay
  can check that a client knows the token behind a mailbox id, and nobody can
  register somebody else's mailbox id with a token of their own.
- A mailbox the relay does not know yet is only created for an Auth whose
  `proof` makes `proof_ok(mailbox, proof, bits)` true: BLAKE2b over the
  mailbox and the proof has `bits` leading zero bits (about 2**bits hashes to
  find). A client first sends proof 0; a relay that wants a proof answers
  Challenge(bits) and waits for a second Auth with a proof; anything else
  is fatal. A known mailbox never costs a proof.
- Before authentication the relay accepts only small messages
  (`PRE_AUTH_FRAME_CAP`).

Decoding is strict: an unknown type, a wrong length, trailing bytes, an
out-of-range field or a message above the frame cap is a RemoteProtocolError.
The first client message must be Auth; anything else first is fatal.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

from circle.errors import (
    LocalProtocolError,
    RelayAuthFailed,
    RelayError,
    RelayQuotaExceeded,
    RemoteProtocolError,
    UsageError,
)
from circle.net.envelope import MAX_ENVELOPE_SIZE, envelope_id

#: Sizes of the fixed fields of Auth and AuthOk (also the relay store's keys).
MAILBOX_LEN = 16
TOKEN_LEN = 32
INSTANCE_ID_LEN = 16

PROTOCOL_VERSION = 2
#: Default cap on one protocol message: one largest envelope plus headers.
DEFAULT_FRAME_CAP = MAX_ENVELOPE_SIZE + 1024
#: Cap on a message before authentication: Auth is 58 bytes.
PRE_AUTH_FRAME_CAP = 256
#: Proof bits a relay asks for by default to register a new mailbox.
DEFAULT_REGISTRATION_BITS = 16
MAX_REGISTRATION_BITS = 28
MAX_ERROR_TEXT = 200
MAX_FETCH_LIMIT = 1000
ID_LEN = 32


class ErrorCode(enum.IntEnum):
    BAD_MESSAGE = 1
    UNSUPPORTED_VERSION = 2
    AUTH_REQUIRED = 3
    AUTH_FAILED = 4
    TOO_LARGE = 5
    QUOTA_EXCEEDED = 6
    BAD_ENVELOPE = 7
    SERVER_FULL = 8
    INTERNAL = 9
    RATE_LIMITED = 10


#: WebSocket close code the relay uses after a fatal error of each kind
#: (RFC 6455 section 7.4.1).
CLOSE_CODES: dict[int, int] = {
    ErrorCode.BAD_MESSAGE: 1002,  # protocol error
    ErrorCode.UNSUPPORTED_VERSION: 1002,
    ErrorCode.AUTH_REQUIRED: 1008,  # policy violation
    ErrorCode.AUTH_FAILED: 1008,
    ErrorCode.TOO_LARGE: 1009,  # message too big
    ErrorCode.QUOTA_EXCEEDED: 1008,
    ErrorCode.BAD_ENVELOPE: 1008,
    ErrorCode.SERVER_FULL: 1013,  # try again later
    ErrorCode.INTERNAL: 1011,
    ErrorCode.RATE_LIMITED: 1013,
}
#: A text frame is not part of the protocol.
CLOSE_UNSUPPORTED_DATA = 1003


# --- mailbox ids and registration proofs ----------------------------------------

_MAILBOX_PERSON = b"circle/mbox-id".ljust(16, b"\0")
_PROOF_PERSON = b"circle/reg-proof".ljust(16, b"\0")


def mailbox_for_token(token: bytes) -> bytes:
    """The mailbox id that belongs to a token (BLAKE2b, domain-separated)."""
    return hashlib.blake2b(token, digest_size=MAILBOX_LEN, person=_MAILBOX_PERSON).digest()


def _leading_zero_bits(digest: bytes) -> int:
    n = int.from_bytes(digest, "big")
    return len(digest) * 8 - n.bit_length()


def proof_ok(mailbox: bytes, proof: int, bits: int) -> bool:
    """True if `proof` is a registration proof of at least `bits` bits for `mailbox`."""
    if bits <= 0:
        return True
    h = hashlib.blake2b(mailbox + proof.to_bytes(8, "big"), digest_size=32, person=_PROOF_PERSON)
    return _leading_zero_bits(h.digest()) >= bits


def make_proof(mailbox: bytes, bits: int) -> int:
    """Find a registration proof (about 2**bits BLAKE2b calls; 16 bits ~ 0.1 s)."""
    if not 0 <= bits <= MAX_REGISTRATION_BITS:
        raise LocalProtocolError(f"relay asks for a {bits}-bit proof; the most a client makes is {MAX_REGISTRATION_BITS}")
    base = hashlib.blake2b(mailbox, digest_size=32, person=_PROOF_PERSON)
    proof = 1
    while True:
        h = base.copy()
        h.update(proof.to_bytes(8, "big"))
        if _leading_zero_bits(h.digest()) >= bits:
            return proof
        proof += 1


# --- relay URLs -----------------------------------------------------------------


def normalise_relay_url(url: str) -> str:
    """Lower-case scheme and host, a path ("/" if none); UsageError if not a ws(s) URL."""
    text = url.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss") or not text.lower().startswith(scheme + "://"):
        raise UsageError(f"relay URL must start with ws:// or wss://: {url!r}")
    try:
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise UsageError(f"relay URL has a bad port: {url!r}") from None
    if not host:
        raise UsageError(f"relay URL has no host: {url!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path or '/'}{query}"


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it could resolve anywhere


def check_relay_url(url: str) -> str:
    """A normalised ws:// or wss:// URL. Plain ws:// only to this machine
    (127.0.0.0/8 or ::1, as addresses): anywhere else the connection would
    carry the mailbox token in clear, so it must be wss://."""
    u = normalise_relay_url(url)
    if u.startswith("ws://"):
        host = urlsplit(u).hostname or ""
        if not _loopback(host):
            raise InsecureRelay(
                f"relay {u} is not on this machine: plain ws:// is only for 127.0.0.1 and ::1; "
                f"use wss://{u[len('ws://'):]}")
    return u


class InsecureRelay(RelayError, UsageError):
    """A ws:// URL for a relay that is not on this machine."""


# --- messages -----------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    mailbox: bytes
    token: bytes
    version: int = PROTOCOL_VERSION
    proof: int = 0


@dataclass(frozen=True)
class Put:
    req: int
    envelope: bytes


@dataclass(frozen=True)
class Fetch:
    req: int
    since: int
    limit: int = 100


@dataclass(frozen=True)
class Subscribe:
    since: int


@dataclass(frozen=True)
class AuthOk:
    instance: bytes
    head: int
    registered: bool


@dataclass(frozen=True)
class Ack:
    req: int
    envelope_id: bytes
    cursor: int
    duplicate: bool


@dataclass(frozen=True)
class Batch:
    req: int
    items: tuple[tuple[int, bytes], ...]
    next_cursor: int
    more: bool


@dataclass(frozen=True)
class Pushed:
    cursor: int
    envelope: bytes


@dataclass(frozen=True)
class Error:
    code: int
    text: str
    req: int = 0
    fatal: bool = False


@dataclass(frozen=True)
class Challenge:
    bits: int


ClientMessage = Auth | Put | Fetch | Subscribe
ServerMessage = AuthOk | Ack | Batch | Pushed | Error | Challenge
Message = ClientMessage | ServerMessage

_U32 = struct.Struct(">I")
_AUTH = struct.Struct(f">BB{MAILBOX_LEN}s{TOKEN_LEN}sQ")
_CHALLENGE = struct.Struct(">BB")
_FETCH = struct.Struct(">BIQH")
_SUB = struct.Struct(">BQ")
_PUT_HEAD = struct.Struct(">BI")
_AUTHOK = struct.Struct(f">B{INSTANCE_ID_LEN}sQB")
_ACK = struct.Struct(f">BI{ID_LEN}sQB")
_BATCH_HEAD = struct.Struct(">BIQBH")
_ITEM_HEAD = struct.Struct(">QI")
_PUSHED_HEAD = struct.Struct(">BQ")
_ERROR_HEAD = struct.Struct(">BIHBH")

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1


def _u(value: int, top: int, name: str) -> int:
    if not 0 <= value <= top:
        raise LocalProtocolError(f"{name} out of range")
    return value


def encode(msg: Message) -> bytes:
    """Serialise one message (raises LocalProtocolError on out-of-range fields)."""
    if isinstance(msg, Auth):
        if len(msg.mailbox) != MAILBOX_LEN or len(msg.token) != TOKEN_LEN:
            raise LocalProtocolError("mailbox must be 16 bytes and token 32 bytes")
        return _AUTH.pack(0x01, _u(msg.version, 255, "version"), msg.mailbox, msg.token,
                          _u(msg.proof, _U64_MAX, "proof"))
    if isinstance(msg, Put):
        return _PUT_HEAD.pack(0x02, _u(msg.req, _U32_MAX, "req")) + msg.envelope
    if isinstance(msg, Fetch):
        return _FETCH.pack(0x03, _u(msg.req, _U32_MAX, "req"), _u(msg.since, _U64_MAX, "since"),
                           _u(msg.limit, MAX_FETCH_LIMIT, "limit"))
    if isinstance(msg, Subscribe):
        return _SUB.pack(0x04, _u(msg.since, _U64_MAX, "since"))
    if isinstance(msg, AuthOk):
        if len(msg.instance) != INSTANCE_ID_LEN:
            raise LocalProtocolError("instance id must be 16 bytes")
        return _AUTHOK.pack(0x81, msg.instance, _u(msg.head, _U64_MAX, "head"), int(msg.registered))
    if isinstance(msg, Ack):
        if len(msg.envelope_id) != ID_LEN:
            raise LocalProtocolError("envelope id must be 32 bytes")
        return _ACK.pack(0x82, _u(msg.req, _U32_MAX, "req"), msg.envelope_id,
                         _u(msg.cursor, _U64_MAX, "cursor"), int(msg.duplicate))
    if isinstance(msg, Batch):
        parts = [_BATCH_HEAD.pack(0x83, _u(msg.req, _U32_MAX, "req"),
                                  _u(msg.next_cursor, _U64_MAX, "next"), int(msg.more),
                                  _u(len(msg.items), 65535, "count"))]
        for cursor, env in msg.items:
            parts.append(_ITEM_HEAD.pack(_u(cursor, _U64_MAX, "cursor"), len(env)))
            parts.append(env)
        return b"".join(parts)
    if isinstance(msg, Pushed):
        return _PUSHED_HEAD.pack(0x84, _u(msg.cursor, _U64_MAX, "cursor")) + msg.envelope
    if isinstance(msg, Error):
        text = msg.text.encode("utf-8")[:MAX_ERROR_TEXT]
        text = text.decode("utf-8", "ignore").encode("utf-8")
        return _ERROR_HEAD.pack(0x85, _u(msg.req, _U32_MAX, "req"), _u(msg.code, 65535, "code"),
                                int(msg.fatal), len(text)) + text
    if isinstance(msg, Challenge):
        return _CHALLENGE.pack(0x86, _u(msg.bits, MAX_REGISTRATION_BITS, "bits"))
    raise LocalProtocolError(f"cannot encode {type(msg).__name__}")


def _bool(v: int) -> bool:
    if v not in (0, 1):
        raise RemoteProtocolError("boolean field is not 0 or 1")
    return v == 1


def _exact(data: bytes, s: struct.Struct) -> tuple[int | bytes, ...]:
    if len(data) != s.size:
        raise RemoteProtocolError("message has the wrong length")
    return s.unpack(data)


def _check_cap(data: bytes, cap: int) -> None:
    if len(data) > cap:
        raise RemoteProtocolError(f"message of {len(data)} bytes is above the {cap} byte cap")
    if not data:
        raise RemoteProtocolError("empty message")


def decode_client_message(data: bytes, cap: int = DEFAULT_FRAME_CAP) -> ClientMessage:
    """Parse a message a client sent (used by the relay)."""
    _check_cap(data, cap)
    t = data[0]
    if t == 0x01:
        if len(data) >= 2 and data[1] != PROTOCOL_VERSION:
            # another version's Auth may have another length: let the relay say "version"
            return Auth(bytes(MAILBOX_LEN), bytes(TOKEN_LEN), data[1])
        _, version, mailbox, token, proof = _exact(data, _AUTH)
        assert isinstance(version, int) and isinstance(mailbox, bytes) and isinstance(token, bytes)
        assert isinstance(proof, int)
        return Auth(mailbox, token, version, proof)
    if t == 0x02:
        if len(data) < _PUT_HEAD.size:
            raise RemoteProtocolError("Put is too short")
        _, req = _PUT_HEAD.unpack_from(data)
        return Put(req, bytes(data[_PUT_HEAD.size :]))
    if t == 0x03:
        _, req, since, limit = _exact(data, _FETCH)
        assert isinstance(req, int) and isinstance(since, int) and isinstance(limit, int)
        if not 1 <= limit <= MAX_FETCH_LIMIT:
            raise RemoteProtocolError("Fetch limit out of range")
        return Fetch(req, since, limit)
    if t == 0x04:
        _, since = _exact(data, _SUB)
        assert isinstance(since, int)
        return Subscribe(since)
    raise RemoteProtocolError(f"unknown client message type {t:#x}")


def decode_server_message(data: bytes, cap: int = DEFAULT_FRAME_CAP) -> ServerMessage:
    """Parse a message a relay sent (used by the client)."""
    _check_cap(data, cap)
    t = data[0]
    if t == 0x81:
        _, instance, head, registered = _exact(data, _AUTHOK)
        assert isinstance(instance, bytes) and isinstance(head, int) and isinstance(registered, int)
        return AuthOk(instance, head, _bool(registered))
    if t == 0x82:
        _, req, eid, cursor, dup = _exact(data, _ACK)
        assert isinstance(req, int) and isinstance(eid, bytes) and isinstance(cursor, int)
        assert isinstance(dup, int)
        return Ack(req, eid, cursor, _bool(dup))
    if t == 0x83:
        if len(data) < _BATCH_HEAD.size:
            raise RemoteProtocolError("Batch is too short")
        _, req, nxt, more, count = _BATCH_HEAD.unpack_from(data)
        pos = _BATCH_HEAD.size
        items: list[tuple[int, bytes]] = []
        for _i in range(count):
            if pos + _ITEM_HEAD.size > len(data):
                raise RemoteProtocolError("Batch is truncated")
            cursor, n = _ITEM_HEAD.unpack_from(data, pos)
            pos += _ITEM_HEAD.size
            if pos + n > len(data):
                raise RemoteProtocolError("Batch is truncated")
            items.append((cursor, bytes(data[pos : pos + n])))
            pos += n
        if pos != len(data):
            raise RemoteProtocolError("Batch has trailing bytes")
        return Batch(req, tuple(items), nxt, _bool(more))
    if t == 0x84:
        if len(data) < _PUSHED_HEAD.size:
            raise RemoteProtocolError("Pushed is too short")
        _, cursor = _PUSHED_HEAD.unpack_from(data)
        return Pushed(cursor, bytes(data[_PUSHED_HEAD.size :]))
    if t == 0x85:
        if len(data) < _ERROR_HEAD.size:
            raise RemoteProtocolError("Error is too short")
        _, req, code, fatal, n = _ERROR_HEAD.unpack_from(data)
        if len(data) != _ERROR_HEAD.size + n or n > MAX_ERROR_TEXT:
            raise RemoteProtocolError("Error has the wrong length")
        try:
            text = data[_ERROR_HEAD.size :].decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("Error text is not UTF-8") from None
        return Error(code, text, req, _bool(fatal))
    if t == 0x86:
        _, bits = _exact(data, _CHALLENGE)
        assert isinstance(bits, int)
        if bits > MAX_REGISTRATION_BITS:
            raise RemoteProtocolError(f"relay asks for a {bits}-bit registration proof")
        return Challenge(bits)
    raise RemoteProtocolError(f"unknown relay message type {t:#x}")


# --- client core --------------------------------------------------------------


@dataclass(frozen=True)
class Authenticated:
    instance: bytes
    head: int
    registered: bool


@dataclass(frozen=True)
class PutAcked:
    req: int
    envelope_id: bytes
    cursor: int
    duplicate: bool


@dataclass(frozen=True)
class PutRefused:
    req: int
    error: RelayError


@dataclass(frozen=True)
class FetchResult:
    req: int
    items: tuple[tuple[int, bytes], ...]
    next_cursor: int
    more: bool


@dataclass(frozen=True)
class EnvelopePushed:
    cursor: int
    envelope: bytes


@dataclass(frozen=True)
class ProofRequired:
    """The relay does not know the mailbox yet: registering it needs a proof."""

    bits: int


@dataclass(frozen=True)
class RelayFailed:
    """A fatal error from the relay: the connection is over."""

    error: RelayError


ClientEvent = Authenticated | PutAcked | PutRefused | FetchResult | EnvelopePushed | RelayFailed | ProofRequired


def error_for(code: int, text: str) -> RelayError:
    safe = "".join(ch for ch in text if ch.isprintable())[:MAX_ERROR_TEXT]
    if code == ErrorCode.AUTH_FAILED:
        return RelayAuthFailed(f"relay refused the mailbox token: {safe}")
    if code == ErrorCode.QUOTA_EXCEEDED:
        return RelayQuotaExceeded(f"relay quota: {safe}")
    return RelayError(f"relay error {code}: {safe}")


class ClientCore:
    """A client's view of one relay connection: tracks requests, checks replies."""

    def __init__(self, frame_cap: int = DEFAULT_FRAME_CAP) -> None:
        self.frame_cap = frame_cap
        self.state = "new"  # new -> authenticating [-> challenged -> authenticating] -> ready -> closed
        self._next_req = 1
        self._pending_puts: dict[int, bytes] = {}  # req -> expected envelope id
        self._pending_fetches: dict[int, int] = {}  # req -> since
        self.subscribed = False
        self._last_pushed = -1

    def auth(self, mailbox: bytes, token: bytes, proof: int = 0) -> bytes:
        if self.state not in ("new", "challenged"):
            raise LocalProtocolError("auth must be the first message")
        self.state = "authenticating"
        return encode(Auth(mailbox, token, proof=proof))

    def _req(self) -> int:
        req = self._next_req
        self._next_req = self._next_req + 1 if self._next_req < _U32_MAX else 1
        return req

    def _check_open(self) -> None:
        if self.state not in ("authenticating", "ready"):
            raise LocalProtocolError("not connected")

    def put(self, envelope: bytes) -> tuple[int, bytes]:
        self._check_open()
        req = self._req()
        self._pending_puts[req] = envelope_id(envelope)
        return req, encode(Put(req, envelope))

    def fetch(self, since: int, limit: int = 100) -> tuple[int, bytes]:
        self._check_open()
        req = self._req()
        self._pending_fetches[req] = since
        return req, encode(Fetch(req, since, limit))

    def subscribe(self, since: int) -> bytes:
        self._check_open()
        if self.subscribed:
            raise LocalProtocolError("already subscribed")
        self.subscribed = True
        self._last_pushed = since
        return encode(Subscribe(since))

    def receive(self, data: bytes) -> ClientEvent:
        """Parse one relay message; raises RemoteProtocolError if the relay misbehaves."""
        if self.state == "closed":
            raise LocalProtocolError("connection is closed")
        try:
            msg = decode_server_message(data, self.frame_cap)
            return self._handle(msg)
        except RemoteProtocolError:
            self.state = "closed"
            raise

    def _handle(self, msg: ServerMessage) -> ClientEvent:
        if isinstance(msg, Error):
            err = error_for(msg.code, msg.text)
            if msg.fatal or msg.req == 0:
                self.state = "closed"
                return RelayFailed(err)
            if self._pending_puts.pop(msg.req, None) is not None:
                return PutRefused(msg.req, err)
            if self._pending_fetches.pop(msg.req, None) is not None:
                self.state = "closed"
                return RelayFailed(err)
            raise RemoteProtocolError("relay answered a request that was not made")
        if self.state == "authenticating" and isinstance(msg, Challenge):
            self.state = "challenged"
            return ProofRequired(msg.bits)
        if self.state == "authenticating":
            if not isinstance(msg, AuthOk):
                raise RemoteProtocolError("relay did not answer the auth first")
            self.state = "ready"
            return Authenticated(msg.instance, msg.head, msg.registered)
        if self.state != "ready" or isinstance(msg, (AuthOk, Challenge)):
            raise RemoteProtocolError("unexpected message from relay")
        if isinstance(msg, Ack):
            expected = self._pending_puts.pop(msg.req, None)
            if expected is None:
                raise RemoteProtocolError("relay acknowledged a put that was not made")
            if expected != msg.envelope_id:
                raise RemoteProtocolError("relay acknowledged a different envelope")
            return PutAcked(msg.req, msg.envelope_id, msg.cursor, msg.duplicate)
        if isinstance(msg, Batch):
            since = self._pending_fetches.pop(msg.req, None)
            if since is None:
                raise RemoteProtocolError("relay answered a fetch that was not made")
            last = since
            for cursor, _env in msg.items:
                if cursor <= last:
                    raise RemoteProtocolError("relay sent cursors out of order")
                last = cursor
            if msg.items and msg.next_cursor != last:
                raise RemoteProtocolError("relay sent an inconsistent next cursor")
            return FetchResult(msg.req, msg.items, msg.next_cursor if msg.items else since, msg.more)
        if isinstance(msg, Pushed):
            if not self.subscribed:
                raise RemoteProtocolError("relay pushed without a subscription")
            if msg.cursor <= self._last_pushed:
                raise RemoteProtocolError("relay pushed cursors out of order")
            self._last_pushed = msg.cursor
            return EnvelopePushed(msg.cursor, msg.envelope)
        raise AssertionError("unreachable")


__all__ = [
    "Ack", "Auth", "AuthOk", "Authenticated", "Batch", "Challenge", "ClientCore", "ClientEvent",
    "DEFAULT_FRAME_CAP", "DEFAULT_REGISTRATION_BITS", "InsecureRelay", "check_relay_url", "normalise_relay_url", "PRE_AUTH_FRAME_CAP", "ProofRequired", "EnvelopePushed", "Error", "ErrorCode", "Fetch", "FetchResult", "Pushed",
    "Put", "PutAcked", "PutRefused", "RelayFailed", "Subscribe", "decode_client_message", "decode_server_message",
    "encode", "mailbox_for_token", "make_proof", "proof_ok",
]
