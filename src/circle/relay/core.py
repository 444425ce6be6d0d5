"""The relay server's protocol state, sans-I/O: one connection's messages in,
replies and pushes out, over a `MailboxStore`. The asyncio driver in
`server.py` only moves bytes; the codec is `circle.net.relay_protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from circle.errors import LocalProtocolError, RelayQuotaExceeded, RemoteProtocolError, StoreError
from circle.net.envelope import peek_header
from circle.net.relay_protocol import (
    CLOSE_CODES,
    DEFAULT_FRAME_CAP,
    DEFAULT_REGISTRATION_BITS,
    PRE_AUTH_FRAME_CAP,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    AuthOk,
    Batch,
    Challenge,
    ClientMessage,
    Error,
    ErrorCode,
    Fetch,
    Pushed,
    Put,
    Subscribe,
    decode_client_message,
    encode,
    mailbox_for_token,
    proof_ok,
)
from circle.relay.store import AuthResult, MailboxStore, token_hash

# --- rate limiting ------------------------------------------------------------


@dataclass
class TokenBucket:
    """Classic token bucket with debt; time is passed in (sans-I/O).

    The bucket starts full. Each take subtracts its cost even if that drives
    the level below zero (a debt), and the caller must wait until the debt is
    paid back at `rate` before acting: `delay_for` returns that wait. So over
    any interval of T seconds at most `burst + rate * T` (plus one take) is
    admitted, however the calls are spaced.
    """

    rate: float  # tokens per second
    burst: float
    tokens: float | None = None  # None: not used yet (full)
    stamp: float = 0.0

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.stamp = now
            return self.burst
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def delay_for(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens; return how long the caller must wait first (0 if none)."""
        self.tokens = self._refill(now) - cost
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def try_take(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens only if they are there now (no debt)."""
        level = self._refill(now)
        self.tokens = level
        if level < cost:
            return False
        self.tokens = level - cost
        return True

    def full(self, now: float) -> bool:
        """True if the bucket is back at its burst (nothing to remember)."""
        return self._refill(now) >= self.burst


# --- server core --------------------------------------------------------------


@dataclass(frozen=True)
class ServerLimits:
    frame_cap: int = DEFAULT_FRAME_CAP
    #: Largest message before the connection has authenticated.
    pre_auth_frame_cap: int = PRE_AUTH_FRAME_CAP
    fetch_page_items: int = 200
    fetch_page_bytes: int = 4 * 1024 * 1024
    #: Proof bits a new mailbox costs (0 = free).
    registration_bits: int = DEFAULT_REGISTRATION_BITS


@dataclass
class ServerOutput:
    """What the driver must do after feeding one message to `ServerCore`."""

    send: list[bytes] = field(default_factory=list)
    #: the mailbox received a new envelope: wake its subscribers
    stored_in: bytes | None = None
    #: close the connection after sending `send`
    close: bool = False
    #: the WebSocket close code to use when `close`
    close_code: int = 1000


@dataclass
class ServerStats:
    puts: int = 0
    duplicates: int = 0
    fetches: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    auth_failures: int = 0
    quota_refusals: int = 0
    registrations: int = 0
    registrations_refused: int = 0


class ServerCore:
    """One relay connection's protocol state over a `MailboxStore`."""

    def __init__(
        self,
        store: MailboxStore,
        limits: ServerLimits | None = None,
        clock: Callable[[], float] | None = None,
        stats: ServerStats | None = None,
        may_register: Callable[[], bool] | None = None,
    ) -> None:
        """`may_register` is asked before a new mailbox is created (the
        driver's per-address registration limit); None = always."""
        self.store = store
        self.limits = limits or ServerLimits()
        self.clock = clock or time.time
        self.stats = stats or ServerStats()
        self.mailbox: bytes | None = None
        self.subscribed_since: int | None = None
        self.closed = False
        self._may_register = may_register
        self._challenged = False

    @property
    def authenticated(self) -> bool:
        return self.mailbox is not None

    def _fatal(self, code: ErrorCode, text: str, req: int = 0) -> ServerOutput:
        self.closed = True
        self.stats.errors += 1
        return ServerOutput([encode(Error(code, text, req, True))], None, True, CLOSE_CODES.get(code, 1008))

    @property
    def frame_cap(self) -> int:
        """The largest message accepted now (small until authenticated)."""
        return self.limits.frame_cap if self.authenticated else self.limits.pre_auth_frame_cap

    def receive(self, data: bytes) -> ServerOutput:
        if self.closed:
            raise LocalProtocolError("connection is closed")
        self.stats.bytes_in += len(data)
        cap = self.frame_cap
        if len(data) > cap:
            return self._fatal(ErrorCode.TOO_LARGE, "message is above the frame cap")
        try:
            msg = decode_client_message(data, cap)
        except RemoteProtocolError as e:
            return self._fatal(ErrorCode.BAD_MESSAGE, e.message)
        try:
            out = self._handle(msg)
        except StoreError:
            return self._fatal(ErrorCode.INTERNAL, "relay storage failed")
        self.stats.bytes_out += sum(len(b) for b in out.send)
        return out

    def _handle(self, msg: ClientMessage) -> ServerOutput:
        if isinstance(msg, Auth):
            return self._auth(msg)
        if self.mailbox is None:
            return self._fatal(ErrorCode.AUTH_REQUIRED, "authenticate first")
        if isinstance(msg, Put):
            try:
                peek_header(msg.envelope)
            except RemoteProtocolError as e:
                self.stats.errors += 1
                return ServerOutput([encode(Error(ErrorCode.BAD_ENVELOPE, e.message, msg.req))])
            try:
                res = self.store.put(self.mailbox, msg.envelope, self.clock())
            except RelayQuotaExceeded as e:
                self.stats.quota_refusals += 1
                return ServerOutput([encode(Error(ErrorCode.QUOTA_EXCEEDED, e.message, msg.req))])
            if res.duplicate:
                self.stats.duplicates += 1
            else:
                self.stats.puts += 1
            ack = Ack(msg.req, res.envelope_id, res.cursor, res.duplicate)
            return ServerOutput([encode(ack)], None if res.duplicate else self.mailbox)
        if isinstance(msg, Fetch):
            self.stats.fetches += 1
            items = self.store.fetch(self.mailbox, msg.since, min(msg.limit, self.limits.fetch_page_items),
                                     self.limits.fetch_page_bytes)
            nxt = items[-1].cursor if items else msg.since
            more = bool(items) and bool(self.store.fetch(self.mailbox, nxt, 1, 1))
            batch = Batch(msg.req, tuple((i.cursor, i.data) for i in items), nxt, more)
            return ServerOutput([encode(batch)])
        if isinstance(msg, Subscribe):
            if self.subscribed_since is not None:
                return self._fatal(ErrorCode.BAD_MESSAGE, "already subscribed")
            self.subscribed_since = msg.since
            return ServerOutput()
        raise AssertionError("unreachable")

    def _auth(self, msg: Auth) -> ServerOutput:
        if self.mailbox is not None:
            return self._fatal(ErrorCode.BAD_MESSAGE, "already authenticated")
        if msg.version != PROTOCOL_VERSION:
            return self._fatal(ErrorCode.UNSUPPORTED_VERSION,
                               f"relay speaks protocol version {PROTOCOL_VERSION}")
        if mailbox_for_token(msg.token) != msg.mailbox:
            self.stats.auth_failures += 1
            return self._fatal(ErrorCode.AUTH_FAILED, "the token does not belong to this mailbox")
        now = self.clock()
        th = token_hash(msg.token)
        result = self.store.authorize(msg.mailbox, th, now, register=False)
        if result is AuthResult.UNKNOWN:
            bits = self.limits.registration_bits
            if not proof_ok(msg.mailbox, msg.proof, bits):
                if self._challenged:
                    self.stats.auth_failures += 1
                    return self._fatal(ErrorCode.AUTH_FAILED, "the registration proof is wrong")
                self._challenged = True
                return ServerOutput([encode(Challenge(bits))])
            if self._may_register is not None and not self._may_register():
                self.stats.registrations_refused += 1
                return self._fatal(ErrorCode.RATE_LIMITED,
                                   "too many new mailboxes from this address; try again later")
            result = self.store.authorize(msg.mailbox, th, now, register=True)
        if result is AuthResult.REFUSED:
            self.stats.auth_failures += 1
            return self._fatal(ErrorCode.AUTH_FAILED, "wrong token for this mailbox")
        if result is AuthResult.FULL:
            return self._fatal(ErrorCode.SERVER_FULL, "relay has no room for a new mailbox")
        if result is AuthResult.REGISTERED:
            self.stats.registrations += 1
        self.mailbox = msg.mailbox
        ok = AuthOk(self.store.instance_id(), self.store.head(msg.mailbox), result is AuthResult.REGISTERED)
        return ServerOutput([encode(ok)])

    def pending_pushes(self, max_items: int | None = None) -> list[bytes]:
        """Pushed messages for everything after the subscription cursor (one page).

        The driver calls this after subscribing and whenever the mailbox got
        a new envelope, until it returns []. Delivery is driven by cursors, not
        by notifications, so nothing is lost between a fetch and a wake-up.
        """
        if self.mailbox is None or self.subscribed_since is None or self.closed:
            return []
        items = self.store.fetch(self.mailbox, self.subscribed_since,
                                 max_items or self.limits.fetch_page_items,
                                 self.limits.fetch_page_bytes)
        if items:
            self.subscribed_since = items[-1].cursor
        out = [encode(Pushed(i.cursor, i.data)) for i in items]
        self.stats.bytes_out += sum(len(b) for b in out)
        return out
