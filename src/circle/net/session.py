"""Sans-I/O live sync session: handshake, then Automerge sync over a SecureChannel.

`Connection` is bytes in, events and bytes out (the h11 pattern). The driver
calls `receive_data()` with whatever arrived (b"" for EOF), drains
`next_event()`, and writes `data_to_send()` to the socket. The document is
touched only inside those calls, so whoever owns the document (one asyncio
task) must be the only caller.

Session rules:
1. Handshake (net/handshake.py) with a small frame cap; the initiator's
   message 1 is queued at construction. After it, the cap is raised and each
   frame is one secretstream ciphertext holding one message (net/messages.py).
2. Each side sends `Hello` (version, member id, capabilities, heads) first.
3. On the peer's Hello, using only the two Hello head lists (so both sides
   decide alike):
   - peer empty, we are not: send our compressed `save()` as a chunked
     snapshot (SnapshotStart + SnapshotChunk*). Automerge's own first sync
     sends several times more bytes.
   - we are empty, peer is not: wait for its snapshot.
   - equal heads: nothing to exchange; each side primes its SyncState with
     the peer's heads (see `_warm`) so later edits sync incrementally without
     a whole-document Bloom filter.
   - otherwise: run the Automerge sync protocol (one SyncState per session).
4. Whenever a side has nothing to send (generate_sync_message -> None) it
   sends `Idle(heads)` once per head set. `InSync` fires when we are idle,
   the last thing the peer said was `Idle` with our exact heads, and both
   sides hold them durably (rule 9).
5. `local_change()` pushes new local edits to the live peer at once.
6. Caps: more than `max_rounds` exchanges in a row in which neither side's
   heads moved and we still had more to say, or
   a sync message too big for one frame, falls back to snapshots once: we
   send `SnapshotPlease` and our snapshot; the peer answers with its own. A
   snapshot is accepted only by a side that asked for it (`SnapshotPlease`
   sent or received) or that is empty (rule 3); any other is a protocol
   error. A second failure ends the session (`RemoteProtocolError`). If
   both sides go idle with different heads (a stall: nobody would speak
   again), the SyncState is reset once, then the snapshot fallback applies.
7. Ending: `close()` drops queued messages not handed out yet (never
   sealed, so nothing is missing from the stream) and sends `Bye` sealed
   with TAG_FINAL. A received Bye is
   answered with our own Bye. EOF without the peer's final frame means the
   peer vanished or the stream was truncated: `PeerUnavailable`. Any protocol
   or crypto error sends a best-effort Bye and ends with a typed error. The
   local document is only ever changed by complete, valid sync messages, a
   complete, valid snapshot or complete urgent changes (automerge validates
   all of them before applying; the document's gate checks their proofs).
8. Authorship: before a sync message that carries changes, and before a
   snapshot's data, we send `Proofs` (the signatures the peer needs, from
   `doc.proofs_for_hashes` of the changes in that message, each sent once per session) when the
   document offers them (node/authorship.GatedDoc); received Proofs go to
   `doc.take_proofs`. The document checks them before anything is applied;
   a refusal ends the session with the reason.
9. Delivery means durable at the other end. `Saved(heads, reason)` says
   which heads a side holds *durably*; `InSync` (and `peer_has_all_ours`)
   need the peer's last `Saved` heads to equal ours, besides the `Idle`
   exchange. With `owner_persists` the owner (node/live.py) persists what
   the session applied and then calls `persisted(heads)` (sent as `Saved`),
   or `persist_failed(reason)` (sent as `Saved(old heads, reason)`: the
   peer shows "bo could not save our changes: its disk is full" and keeps counting our
   changes as undelivered). Without it (in-memory documents, tests) the
   document is its own durable copy. A side sends `Saved` again after each
   `Idle` or sync message it sends, and a received `Saved` counts only if
   its heads equal the heads the peer advertised last (Hello, Idle, sync
   message, snapshot): an ack sent ahead of the data ("I saved what you
   have not sent yet") is ignored. A `Saved` never feeds the Automerge sync
   state and nothing is dropped on its word: a peer that holds our changes
   in memory and claims to have saved them can only lie about itself, and
   every new session starts again from what the peer says it has (Hello),
   so anything it lacks is sent again.
10. Priority lane (issue 13: an alert reaches everyone at once, even while a
   large sync runs). Messages are queued unsealed and sealed in the order
   they leave (`data_to_send(limit)`): urgent ones first, then bulk ones, so
   anything pushed with `push_urgent(changes, proofs)` overtakes every bulk
   message not yet handed out. Bulk is cut small enough to be overtaken: a
   sync message above `SYNC_PIECE` goes as `SyncMore` pieces and a final
   `SyncMsg`; snapshots already go in chunks. Our Hello is sealed at once,
   so nothing ever precedes it. An `Urgent` carries changes written on top
   of heads every member holds (crdt/defence.py writes alerts that way), so
   the receiver can apply them before the bulk; its `Proofs` travel in the
   same lane just before it and the document's gate checks them as for any
   sync data. An urgent batch the receiver cannot apply or verify yet (it is
   still empty, say) is ignored, not an error: the same changes come with
   the ordinary sync, where a refusal ends the session.
"""

from __future__ import annotations

import os
import zlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeAlias

from circle.crdt.am import advertised_heads, sync_message_change_hashes, warm_sync_message
from circle.crdt.amscan import MAX_DOCUMENT
from circle.errors import (
    CircleError,
    HandshakeFailed,
    LocalProtocolError,
    MalformedDocument,
    PeerUnavailable,
    RemoteProtocolError,
)
from circle.net import messages as m
from circle.net.framing import FrameDecoder, encode_frame
from circle.net.handshake import (
    FIRST_FRAME_OVERHEAD,
    MAX_HANDSHAKE_MESSAGE,
    PROTOCOL_VERSION,
    Handshake,
    HandshakeResult,
    MemberCheck,
    Role,
)
from circle.net.keys import DeviceIdentity, EpochKey

MAX_FRAME = 4 << 20  # cap on one encrypted frame, checked before buffering it
SNAPSHOT_CHUNK = 256 << 10
#: Snapshots re-sent in one session when a sync message is above one frame
#: after the snapshot fallback (see `_fallback`).
_SNAPSHOT_RESENDS = 2
SYNC_PIECE = 64 << 10  # a larger sync message goes in pieces an urgent message can pass between
MAX_SNAPSHOT = MAX_DOCUMENT  # refuse a larger announced snapshot, compressed or raw (no circle can be larger)
MAX_ROUNDS = 64
CAP_SNAPSHOT_ZLIB = "snapshot-zlib"
CAPABILITIES = frozenset({CAP_SNAPSHOT_ZLIB})
_MAX_SYNC_BODY = MAX_FRAME - FIRST_FRAME_OVERHEAD - 1


class SyncDoc(Protocol):
    """The document operations a session needs (crdt.am.AmDoc provides them)."""

    def new_sync_state(self) -> Any: ...
    def generate_sync_message(self, state: Any) -> bytes | None: ...
    def receive_sync_message(self, state: Any, data: bytes) -> None: ...
    def save(self) -> bytes: ...
    def heads(self) -> list[bytes]: ...
    def merge_saved(self, data: bytes) -> None: ...
    def is_empty(self) -> bool: ...
    # Optional (GatedDoc): `proofs_for_hashes(hashes) -> list[bytes]`, `take_proofs(block)`,
    # `apply_changes(changes)` (urgent changes; verified like sync data).


# --- events ------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeDone:
    peer: HandshakeResult


@dataclass(frozen=True)
class PeerHello:
    hello: m.Hello


@dataclass(frozen=True)
class DocChanged:
    """The peer's data changed our document; `heads` are our new heads."""

    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class InSync:
    """Both sides are quiet and hold the same heads."""

    heads: tuple[bytes, ...]


@dataclass(frozen=True)
class Progress:
    direction: str  # "receive" or "send"
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class KeyUpdateReceived:
    data: bytes


@dataclass(frozen=True)
class Closed:
    """The session is over. `error` is None for a clean goodbye."""

    error: CircleError | None
    by_peer: bool


@dataclass(frozen=True)
class PeerSaved:
    """The peer told us what it holds durably; `reason` is why its last save
    failed ("" when it did not)."""

    heads: tuple[bytes, ...]
    reason: str


Event: TypeAlias = (
    HandshakeDone | PeerHello | DocChanged | InSync | Progress | KeyUpdateReceived | Closed | PeerSaved
)


@dataclass
class Stats:
    wire_bytes_in: int = 0
    wire_bytes_out: int = 0
    sync_messages_sent: int = 0
    sync_messages_received: int = 0
    sync_bytes_sent: int = 0
    sync_bytes_received: int = 0
    snapshot_bytes_sent: int = 0
    snapshot_bytes_received: int = 0
    flights_out: int = 0  # times we started sending after having received (≈ round trips)
    changes_applied: int = 0  # head-changing receipts
    snapshots_sent: int = 0
    snapshots_received: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Phase(Enum):
    HANDSHAKE = "handshake"
    HELLO = "hello"  # sent our Hello, waiting for the peer's
    ACTIVE = "active"
    CLOSED = "closed"


def _clean_reason(text: str) -> str:
    return "".join(ch for ch in text[:200] if ch.isprintable())


class Connection:
    """One live session with one peer. Use `Connection.initiator/responder`."""

    def __init__(
        self,
        role: Role,
        doc: SyncDoc,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        *,
        epoch: int | None = None,
        max_rounds: int = MAX_ROUNDS,
        max_snapshot: int = MAX_SNAPSHOT,
        snapshot_chunk: int = SNAPSHOT_CHUNK,
        compress: bool = True,
        owner_persists: bool = False,
    ) -> None:
        self.role = role
        self.doc = doc
        self.identity = identity
        self._hs = Handshake(role, identity, keyring, is_active_member, epoch=epoch)
        self._decoder = FrameDecoder(MAX_HANDSHAKE_MESSAGE)
        self._out = bytearray()  # bytes ready to go: handshake frames, our sealed Hello
        self._urgent: deque[bytes] = deque()  # message bodies, sealed when handed out (rule 10)
        self._bulk: deque[tuple[bytes, bool]] = deque()  # (body, final)
        self._final_queued = False
        self._urgent_waiting: list[tuple[Sequence[bytes], Sequence[bytes]]] = []  # pushed before our Hello
        self._sync_buf = bytearray()  # SyncMore pieces received so far
        self._events: deque[Event] = deque()
        self._phase = Phase.HANDSHAKE
        self._max_rounds = max_rounds
        self._max_snapshot = max_snapshot
        self._chunk = max(1, min(snapshot_chunk, _MAX_SYNC_BODY))
        self._compress = compress
        self.stats = Stats()
        self.peer: HandshakeResult | None = None
        self.peer_hello: m.Hello | None = None
        self.error: CircleError | None = None
        self._channel_ready = False
        self._received_since_send = True
        # sync state
        self._sync_state: Any = doc.new_sync_state()
        self._state_fresh = True
        self._our_hello_heads: tuple[bytes, ...] = ()
        self._awaiting_snapshot = False
        self._incoming: m.SnapshotStart | None = None
        self._incoming_buf = bytearray()
        self._idle_sent_for: frozenset[bytes] | None = None
        self._peer_idle: frozenset[bytes] | None = None
        self._in_sync_for: frozenset[bytes] | None = None
        self._rounds = 0
        self._peer_sync_heads: frozenset[bytes] | None = None
        self._stalls = 0
        self._fallback_used = False
        self._pending_local = False
        self._snapshot_asked = False  # we sent or received SnapshotPlease: a snapshot may come
        self._resent = 0  # snapshots sent again after the fallback (see `_fallback`)
        self._proofs_sent: set[bytes] = set()
        self.peer_heads: frozenset[bytes] | None = None  # last heads the peer told us
        # delivery (rule 9)
        self._owner_persists = owner_persists
        self._durable: frozenset[bytes] | None = None  # what the owner said is on disk
        self._save_error = ""
        self._saved_sent: tuple[frozenset[bytes], str] | None = None
        self.peer_saved: frozenset[bytes] | None = None  # what the peer says it holds durably
        self._peer_advertised: frozenset[bytes] | None = None  # heads the peer last said it holds
        self.peer_save_error = ""
        if role is Role.INITIATOR:
            self._out += encode_frame(self._hs.start(), MAX_HANDSHAKE_MESSAGE)

    @classmethod
    def initiator(
        cls,
        doc: SyncDoc,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        **kwargs: Any,
    ) -> Connection:
        return cls(Role.INITIATOR, doc, identity, keyring, is_active_member, **kwargs)

    @classmethod
    def responder(
        cls,
        doc: SyncDoc,
        identity: DeviceIdentity,
        keyring: Mapping[int, EpochKey],
        is_active_member: MemberCheck,
        **kwargs: Any,
    ) -> Connection:
        return cls(Role.RESPONDER, doc, identity, keyring, is_active_member, **kwargs)

    # --- public API -----------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def closed(self) -> bool:
        return self._phase is Phase.CLOSED

    @property
    def in_sync(self) -> bool:
        """True when the peer last reported exactly our current heads and we are idle."""
        heads = frozenset(self.doc.heads())
        return (
            self._phase is Phase.ACTIVE
            and self._peer_idle == heads
            and self._idle_sent_for == heads
            and self.peer_saved == heads
            and self._durable_set() == heads
        )

    @property
    def peer_has_all_ours(self) -> bool:
        """Whether the peer said it holds our exact heads durably (it has saved all our changes)."""
        return self.peer_saved is not None and self.peer_saved == frozenset(self.doc.heads())

    def persisted(self, heads: list[bytes] | tuple[bytes, ...]) -> None:
        """Owner: these heads are now durable on this device (after the store's fsync)."""
        self._durable = frozenset(heads)
        self._save_error = ""
        if self._phase is Phase.ACTIVE:
            self._guard(self._send_saved)
            self._check_in_sync()

    def persist_failed(self, reason: str) -> None:
        """Owner: saving what the session applied failed (the peer is told why)."""
        self._save_error = _clean_reason(reason) or "could not save"
        if self._phase is Phase.ACTIVE:
            self._guard(self._send_saved)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out or self._urgent or self._bulk)

    def data_to_send(self, limit: int | None = None) -> bytes:
        """The bytes to write now: urgent messages first, then bulk ones up to
        about `limit` bytes (all of them when None). Call again for the rest."""
        buf = bytearray(self._out)
        self._out.clear()
        channel = self.peer.channel if self.peer is not None else None
        if channel is not None:
            while self._urgent:
                body = self._urgent.popleft()
                if not channel.sent_final:
                    buf += encode_frame(channel.seal(body), MAX_FRAME)
            while self._bulk and (limit is None or len(buf) < limit):
                body, final = self._bulk.popleft()
                if not channel.sent_final:
                    buf += encode_frame(channel.seal_final(body) if final else channel.seal(body), MAX_FRAME)
        out = bytes(buf)
        if out:
            self.stats.wire_bytes_out += len(out)
            if self._received_since_send:
                self.stats.flights_out += 1
                self._received_since_send = False
        return out

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side (EOF)."""
        if self._phase is Phase.CLOSED:
            return
        if data:
            self.stats.wire_bytes_in += len(data)
            self._received_since_send = True
        try:
            if not data:
                self._on_eof()
                return
            view = data
            while view and self._phase is Phase.HANDSHAKE:
                frames, used = self._decoder.feed_some(view, 1)
                view = view[used:]
                for frame in frames:
                    self._on_handshake_frame(frame)
            if view and not self.closed:
                for frame in self._decoder.feed(view):
                    self._on_frame(frame)
                    if self.closed:
                        break
        except CircleError as exc:
            self._fail(exc)

    def push_urgent(self, changes: Sequence[bytes], proofs: Sequence[bytes] = ()) -> None:
        """Send these changes (and the proofs they need) ahead of everything
        queued (rule 10). Before our Hello is out they wait for it."""
        if self._phase is Phase.CLOSED or self._final_queued or not changes:
            return
        if self._phase is Phase.HANDSHAKE:
            self._urgent_waiting.append((list(changes), list(proofs)))
            return
        self._guard(lambda: self._queue_urgent(changes, proofs))

    def _queue_urgent(self, changes: Sequence[bytes], proofs: Sequence[bytes]) -> None:
        fresh = [p for p in proofs if len(p) == 96 and p[:32] not in self._proofs_sent]
        if fresh:
            self._proofs_sent.update(p[:32] for p in fresh)
            self._send(m.Proofs(b"CPRF" + b"".join(fresh)), urgent=True)
        for i in range(0, len(changes), m.MAX_URGENT_CHANGES):
            self._send(m.Urgent(tuple(changes[i : i + m.MAX_URGENT_CHANGES])), urgent=True)
        self.stats.extra["urgent_sent"] = self.stats.extra.get("urgent_sent", 0) + len(changes)

    def local_change(self) -> None:
        """Call after editing the document: pushes the new changes to the peer."""
        if self._phase is not Phase.ACTIVE or self._awaiting_snapshot or self._incoming:
            self._pending_local = True
            return
        self._rounds = 0
        self._guard(self._pump)

    def ping(self) -> None:
        if self._phase in (Phase.HELLO, Phase.ACTIVE):
            self._send(m.Ping(int.from_bytes(os.urandom(8), "big")))

    def send_key_update(self, data: bytes) -> None:
        if self._phase not in (Phase.HELLO, Phase.ACTIVE):
            raise LocalProtocolError("no established session to send a key update on")
        self._send(m.KeyUpdate(data))

    def close(self, reason: str = "", code: m.ByeCode = m.ByeCode.NORMAL) -> None:
        """End the session cleanly (sends Bye with the final tag when possible)."""
        if self._phase is Phase.CLOSED:
            return
        self._drop_unsent()
        self._send_bye(code, reason)
        self._end(None, by_peer=False)

    def abort(self, error: CircleError) -> None:
        """End the session with `error` (a driver's timeout, a lost socket...)."""
        self._fail(error)

    # --- internals: plumbing ---------------------------------------------------

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except CircleError as exc:
            self._fail(exc)

    def _send(self, msg: m.Message, final: bool = False, urgent: bool = False, now: bool = False) -> None:
        """Queue one message (sealed when handed out, rule 10); `now` seals it at once."""
        body = m.encode(msg)
        assert self.peer is not None
        if now:
            self._out += encode_frame(self.peer.channel.seal(body), MAX_FRAME)
        elif urgent:
            self._urgent.append(body)
        else:
            self._bulk.append((body, final))
            self._final_queued |= final

    def _drop_unsent(self) -> None:
        """Ending: what was queued but never sealed need not go (the goodbye goes next)."""
        self._urgent.clear()
        self._bulk = deque(item for item in self._bulk if item[1])

    def _send_bye(self, code: m.ByeCode, reason: str) -> None:
        if self.peer is not None and not self._final_queued and not self.peer.channel.sent_final:
            self._send(m.Bye(code, _clean_reason(reason)), final=True)

    def _end(self, error: CircleError | None, by_peer: bool) -> None:
        if self._phase is Phase.CLOSED:
            return
        self._phase = Phase.CLOSED
        self.error = error
        self._events.append(Closed(error, by_peer))

    def _fail(self, exc: CircleError) -> None:
        if self._phase is Phase.CLOSED:
            return
        if self._phase is Phase.HANDSHAKE:
            if self._hs.reject_reply is not None:
                self._out += encode_frame(self._hs.reject_reply, MAX_HANDSHAKE_MESSAGE)
        else:
            self._drop_unsent()
            code = m.ByeCode.PROTOCOL_ERROR
            if isinstance(exc, LocalProtocolError):
                code = m.ByeCode.INTERNAL_ERROR
            try:
                self._send_bye(code, str(exc))
            except CircleError:
                pass
        self._end(exc, by_peer=isinstance(exc, RemoteProtocolError | PeerUnavailable))

    def _on_eof(self) -> None:
        if self._phase is Phase.HANDSHAKE:
            raise HandshakeFailed(
                "the peer closed the connection during the handshake (it may not hold this "
                "circle's current key, or does not accept this device as a member)"
            )
        assert self.peer is not None
        if self.peer.channel.received_final:
            self._end(None, by_peer=True)
            return
        detail = ""
        if self._incoming is not None:
            detail = (
                f" in the middle of a snapshot ({len(self._incoming_buf)} of "
                f"{self._incoming.size} bytes)"
            )
        elif not self._decoder.at_boundary:
            detail = " in the middle of a frame"
        raise PeerUnavailable(f"the peer went away without saying goodbye{detail}")

    def _on_handshake_frame(self, frame: bytes) -> None:
        reply = self._hs.receive(frame)
        if reply is not None:
            self._out += encode_frame(reply, MAX_HANDSHAKE_MESSAGE)
        if self._hs.complete:
            self.peer = self._hs.result
            self._decoder.max_size = MAX_FRAME
            self._phase = Phase.HELLO
            self._events.append(HandshakeDone(self.peer))
            self._our_hello_heads = tuple(self.doc.heads())
            self._send(
                m.Hello(
                    PROTOCOL_VERSION,
                    str(self.identity.member_id),
                    CAPABILITIES,
                    self._our_hello_heads,
                ),
                now=True,  # sealed first: no urgent message may overtake it
            )
            for changes, proofs in self._urgent_waiting:
                self._queue_urgent(changes, proofs)
            self._urgent_waiting.clear()

    def _on_frame(self, frame: bytes) -> None:
        assert self.peer is not None
        plaintext = self.peer.channel.open(frame)
        msg = m.decode(plaintext)
        final = self.peer.channel.received_final
        if final and not isinstance(msg, m.Bye):
            raise RemoteProtocolError("the peer closed the channel without a goodbye message")
        if self._phase is Phase.HELLO and not isinstance(msg, m.Hello | m.Bye):
            raise RemoteProtocolError(f"expected Hello, got {type(msg).__name__}")
        if isinstance(msg, m.Hello):
            self._on_hello(msg)
        elif isinstance(msg, m.SyncMsg):
            self._on_sync(msg.data)
        elif isinstance(msg, m.SyncMore):
            self._on_sync_more(msg.data)
        elif isinstance(msg, m.Urgent):
            self._on_urgent(msg.changes)
        elif isinstance(msg, m.Idle):
            self._on_idle(msg.heads)
        elif isinstance(msg, m.SnapshotStart):
            self._on_snapshot_start(msg)
        elif isinstance(msg, m.SnapshotChunk):
            self._on_snapshot_chunk(msg.data)
        elif isinstance(msg, m.Ping):
            self._send(m.Pong(msg.nonce))
        elif isinstance(msg, m.Pong):
            pass
        elif isinstance(msg, m.KeyUpdate):
            self._events.append(KeyUpdateReceived(msg.data))
        elif isinstance(msg, m.Proofs):
            take = getattr(self.doc, "take_proofs", None)
            if take is not None:
                try:
                    take(msg.data)
                except MalformedDocument as exc:
                    raise RemoteProtocolError(f"the peer sent malformed proofs: {exc}") from None
        elif isinstance(msg, m.SnapshotPlease):
            self._on_snapshot_please()
        elif isinstance(msg, m.Saved):
            self._on_saved(msg)
        else:
            self._on_bye(msg)

    # --- internals: the sync protocol -----------------------------------------

    def _heads(self) -> tuple[bytes, ...]:
        return tuple(self.doc.heads())

    def _reset_state(self) -> None:
        self._sync_state = self.doc.new_sync_state()
        self._state_fresh = True

    def _warm(self, heads: tuple[bytes, ...]) -> None:
        if not self._state_fresh or not heads:
            return
        try:
            self.doc.receive_sync_message(self._sync_state, warm_sync_message(heads))
        except MalformedDocument:  # an Automerge without v1 messages: just stay cold
            self._reset_state()

    def _on_hello(self, hello: m.Hello) -> None:
        if self._phase is not Phase.HELLO:
            raise RemoteProtocolError("the peer sent Hello twice")
        if hello.version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"the peer speaks session version {hello.version}; this device speaks "
                f"{PROTOCOL_VERSION}"
            )
        assert self.peer is not None
        if hello.member_id != str(self.peer.peer_member_id):
            raise RemoteProtocolError("the peer's Hello names another member than its handshake")
        self.peer_hello = hello
        self.peer_heads = frozenset(hello.heads)
        self._peer_advertised = self.peer_heads
        self._phase = Phase.ACTIVE
        self._events.append(PeerHello(hello))
        self._send_saved()
        ours, theirs = self._our_hello_heads, hello.heads
        if ours and not theirs:
            self._send_snapshot()
        elif theirs and not ours:
            self._awaiting_snapshot = True  # local edits made meanwhile follow it
            return
        elif frozenset(ours) == frozenset(theirs) == frozenset(self._heads()):
            self._warm(theirs)
            self._pump(generate=False)
        else:
            self._pump()
        self._pending_local = False

    def _on_sync_more(self, data: bytes) -> None:
        if self._incoming is not None:
            raise RemoteProtocolError("the peer interleaved sync data with a snapshot")
        if len(self._sync_buf) + len(data) > _MAX_SYNC_BODY:
            raise RemoteProtocolError("the peer sent a sync message larger than the cap")
        self._sync_buf += data

    def _on_urgent(self, changes: tuple[bytes, ...]) -> None:
        apply = getattr(self.doc, "apply_changes", None)
        if apply is None:
            return
        before = self._heads()
        try:
            apply(list(changes))
        except MalformedDocument:
            # Not applicable or not verifiable here yet (rule 10): the ordinary sync brings it.
            self.stats.extra["urgent_ignored"] = self.stats.extra.get("urgent_ignored", 0) + len(changes)
            return
        self.stats.extra["urgent_received"] = self.stats.extra.get("urgent_received", 0) + len(changes)
        self._note_change(before)

    def _on_sync(self, data: bytes) -> None:
        if self._incoming is not None:
            raise RemoteProtocolError("the peer interleaved sync data with a snapshot")
        if self._sync_buf:
            if len(self._sync_buf) + len(data) > _MAX_SYNC_BODY:
                raise RemoteProtocolError("the peer sent a sync message larger than the cap")
            data = bytes(self._sync_buf) + data
            self._sync_buf = bytearray()
        self.stats.sync_messages_received += 1
        self.stats.sync_bytes_received += len(data)
        before = self._heads()
        try:
            self.doc.receive_sync_message(self._sync_state, data)
        except MalformedDocument as exc:
            raise RemoteProtocolError(f"the peer sent invalid sync data: {exc}") from None
        self._state_fresh = False
        self._peer_idle = None
        self._idle_sent_for = None
        # Progress: our heads moved, or the heads the peer advertises moved.
        advertised = advertised_heads(data)
        if advertised is not None:
            self._peer_advertised = advertised
        progress = self._note_change(before) or advertised != self._peer_sync_heads
        self._peer_sync_heads = advertised
        if progress:
            self._rounds = 0
            self._stalls = 0
        if self._awaiting_snapshot:
            return
        # A round without progress: the peer's message changed nothing here,
        # yet the exchange goes on (we answer with more sync data).
        self._pump(count_round=not progress)

    def _on_idle(self, heads: tuple[bytes, ...]) -> None:
        if self._incoming is not None or self._sync_buf:
            raise RemoteProtocolError("the peer sent Idle in the middle of a snapshot or sync message")
        peer = frozenset(heads)
        self._peer_idle = peer
        self.peer_heads = peer
        self._peer_advertised = peer
        if self._awaiting_snapshot:
            return
        ours = frozenset(self._heads())
        if peer == ours:
            self._warm(heads)
            self._pump(generate=False)
            return
        was_idle = self._idle_sent_for == ours
        sent_before = self.stats.sync_messages_sent
        self._pump()
        if was_idle and self.stats.sync_messages_sent == sent_before and not self.closed:
            self._on_stall()

    def _on_stall(self) -> None:
        """Both sides are idle with different heads: nobody would speak again."""
        self._stalls += 1
        if self._stalls == 1:
            # Automerge's own recovery: forget what we think the peer has.
            self._reset_state()
            self._idle_sent_for = None
            self._pump()
        else:
            self._fallback()

    def _note_change(self, before: tuple[bytes, ...]) -> bool:
        after = self._heads()
        if frozenset(after) == frozenset(before):
            return False
        self.stats.changes_applied += 1
        self._events.append(DocChanged(after))
        return True

    def _pump(self, generate: bool = True, count_round: bool = False) -> None:
        if self._phase is not Phase.ACTIVE or self._awaiting_snapshot or self._incoming:
            return
        if generate:
            data = self.doc.generate_sync_message(self._sync_state)
            if data is not None:
                self._state_fresh = False
                if count_round:
                    self._rounds += 1
                if len(data) > _MAX_SYNC_BODY or self._rounds > self._max_rounds:
                    self._fallback(too_big=len(data) > _MAX_SYNC_BODY)
                    return
                self._send_proofs(data)
                last = max(0, len(data) - 1) // SYNC_PIECE * SYNC_PIECE
                for pos in range(0, last, SYNC_PIECE):  # pieces an urgent message can pass (rule 10)
                    self._send(m.SyncMore(data[pos : pos + SYNC_PIECE]))
                self._send(m.SyncMsg(data[last:]))
                self._saved_sent = None  # new heads advertised: say again what is saved (rule 9)
                self.stats.sync_messages_sent += 1
                self.stats.sync_bytes_sent += len(data)
                self._idle_sent_for = None
                return
        heads = self._heads()
        hset = frozenset(heads)
        if self._idle_sent_for != hset:
            self._send(m.Idle(heads))
            self._idle_sent_for = hset
            self._saved_sent = None
        self._send_saved()
        self._check_in_sync()

    # --- internals: delivery (rule 9) ----------------------------------------------

    def _durable_set(self) -> frozenset[bytes] | None:
        return self._durable if self._owner_persists else frozenset(self._heads())

    def _send_saved(self) -> None:
        durable = self._durable_set()
        if durable is None or self._phase is not Phase.ACTIVE:
            return
        if self._saved_sent != (durable, self._save_error):
            self._saved_sent = (durable, self._save_error)
            self._send(m.Saved(tuple(sorted(durable)), self._save_error))

    def _on_saved(self, msg: m.Saved) -> None:
        heads, reason = frozenset(msg.heads), _clean_reason(msg.reason)
        valid = heads == self._peer_advertised
        if not valid and not reason:
            return  # an ack for heads the peer has not said it holds: not delivery (rule 9)
        saved = heads if valid else self.peer_saved  # a failure's words count; its heads only if valid
        if (saved, reason) != (self.peer_saved, self.peer_save_error):
            self.peer_saved, self.peer_save_error = saved, reason
            self._events.append(PeerSaved(tuple(sorted(saved or ())), reason))
        self._check_in_sync()

    def _check_in_sync(self) -> None:
        """InSync once per head set: both idle on our heads, both hold them durably."""
        heads = self._heads()
        hset = frozenset(heads)
        if (
            self._phase is Phase.ACTIVE
            and not self._awaiting_snapshot
            and self._incoming is None
            and self._idle_sent_for == hset
            and self._peer_idle == hset
            and self.peer_saved == hset
            and self._durable_set() == hset
            and self._in_sync_for != hset
        ):
            self._in_sync_for = hset
            self._rounds = 0
            self._stalls = 0
            self._events.append(InSync(heads))

    def _fallback(self, too_big: bool = False) -> None:
        if self._fallback_used and too_big and self._snapshot_asked and self._resent < _SNAPSHOT_RESENDS:
            # A sync message the peer sent before it had our snapshot (in flight
            # while snapshots crossed) says it lacks what the snapshot gave it, so
            # Automerge wants to send everything again, above one frame: send the
            # snapshot again instead (the peer accepts it, it asked for ours).
            self._resent += 1
            self._send_snapshot()
            return
        if self._fallback_used:
            raise RemoteProtocolError(
                f"the sync did not converge within {self._max_rounds} rounds, even after a snapshot"
            )
        self._fallback_used = True
        self._snapshot_asked = True
        self._send(m.SnapshotPlease())
        self._send_snapshot()

    def _on_snapshot_please(self) -> None:
        if self._snapshot_asked and self._fallback_used:
            return  # we asked first: our snapshot is on its way
        self._snapshot_asked = True
        self._fallback_used = True
        self._send_snapshot()

    def _send_proofs(self, sync_data: bytes) -> None:
        proofs_for = getattr(self.doc, "proofs_for_hashes", None)
        if proofs_for is None:
            return
        hashes = sync_message_change_hashes(sync_data)
        if hashes == []:
            return
        # None: a form we cannot read (e.g. a whole document chunk): send every
        # proof the peer may lack; the receiver checks whatever it gets.
        wanted = proofs_for(hashes) if hashes is not None else self._all_proofs()
        fresh = [p for p in wanted if p[:32] not in self._proofs_sent]
        if not fresh:
            return
        self._proofs_sent.update(p[:32] for p in fresh)
        # One frame each: stay well under MAX_FRAME whatever the count.
        per = (_MAX_SYNC_BODY - 16) // 96
        for i in range(0, len(fresh), per):
            self._send(m.Proofs(b"CPRF" + b"".join(fresh[i : i + per])))

    def _all_proofs(self) -> list[bytes]:
        since = getattr(self.doc, "proofs_since", None)
        return [] if since is None else list(since(sorted(self.peer_heads or ())))

    def _send_snapshot(self) -> None:
        raw = self.doc.save()
        heads = self._heads()
        codec = m.Codec.RAW
        data = raw
        assert self.peer_hello is not None
        if self._compress and CAP_SNAPSHOT_ZLIB in self.peer_hello.capabilities:
            packed = zlib.compress(raw, 6)
            if len(packed) < len(raw):
                codec, data = m.Codec.ZLIB, packed
        self._send(m.SnapshotStart(len(data), codec, len(raw), heads))
        for pos in range(0, len(data), self._chunk):
            self._send(m.SnapshotChunk(data[pos : pos + self._chunk]))
            self._events.append(Progress("send", min(pos + self._chunk, len(data)), len(data)))
        self.stats.snapshots_sent += 1
        self.stats.snapshot_bytes_sent += len(data)
        self._reset_state()
        self._peer_idle = None
        self._idle_sent_for = None
        self._rounds = 0

    def _on_snapshot_start(self, start: m.SnapshotStart) -> None:
        if self._sync_buf:
            raise RemoteProtocolError("the peer interleaved a snapshot with sync data")
        if not (self._awaiting_snapshot or self._snapshot_asked):
            raise RemoteProtocolError("the peer sent a snapshot nobody asked for")
        if self._incoming is not None:
            raise RemoteProtocolError("the peer started a second snapshot before finishing one")
        if start.size > self._max_snapshot or start.raw_size > self._max_snapshot:
            raise RemoteProtocolError(
                f"the peer announced a {max(start.size, start.raw_size)}-byte snapshot; "
                f"the cap is {self._max_snapshot}"
            )
        if start.size == 0 or (start.codec is m.Codec.RAW and start.size != start.raw_size):
            raise RemoteProtocolError("the peer announced an inconsistent snapshot")
        self._incoming = start
        self._incoming_buf = bytearray()
        self._peer_advertised = frozenset(start.heads)
        self._events.append(Progress("receive", 0, start.size))

    def _on_snapshot_chunk(self, data: bytes) -> None:
        start = self._incoming
        if start is None:
            raise RemoteProtocolError("the peer sent a snapshot chunk without a start")
        if len(self._incoming_buf) + len(data) > start.size:
            raise RemoteProtocolError("the peer sent more snapshot bytes than it announced")
        self._incoming_buf += data
        self._events.append(Progress("receive", len(self._incoming_buf), start.size))
        if len(self._incoming_buf) < start.size:
            return
        packed = bytes(self._incoming_buf)
        self._incoming = None
        self._incoming_buf = bytearray()
        raw = packed
        if start.codec is m.Codec.ZLIB:
            inflater = zlib.decompressobj()
            try:
                raw = inflater.decompress(packed, start.raw_size + 1)
            except zlib.error:
                raise RemoteProtocolError("the peer's snapshot does not decompress") from None
            if len(raw) != start.raw_size or not inflater.eof:
                raise RemoteProtocolError("the peer's snapshot has the wrong size")
        before = self._heads()
        try:
            self.doc.merge_saved(raw)
        except MalformedDocument as exc:
            raise RemoteProtocolError(f"the peer sent an invalid snapshot: {exc}") from None
        self.stats.snapshots_received += 1
        self.stats.snapshot_bytes_received += len(packed)
        self._note_change(before)
        self._awaiting_snapshot = False
        self._reset_state()
        self._peer_idle = None
        self._idle_sent_for = None
        self._rounds = 0
        equal = frozenset(self._heads()) == frozenset(start.heads)
        if equal:
            self._warm(start.heads)
        self._pump(generate=not equal or self._pending_local)
        self._pending_local = False

    def _on_bye(self, bye: m.Bye) -> None:
        assert self.peer is not None
        error: CircleError | None = None
        if bye.code not in (m.ByeCode.NORMAL, m.ByeCode.SHUTTING_DOWN):
            reason = _clean_reason(bye.reason) or bye.code.name.lower().replace("_", " ")
            error = RemoteProtocolError(f"the peer ended the session: {reason}")
        self._send_bye(m.ByeCode.NORMAL, "")
        self._end(error, by_peer=True)


__all__ = [
    "Closed", "Connection", "DocChanged", "Event", "HandshakeDone", "InSync", "KeyUpdateReceived",
    "MAX_FRAME", "PeerHello", "PeerSaved", "Phase", "Progress", "Stats", "SyncDoc",
]
