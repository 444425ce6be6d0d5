"""Thin asyncio TCP driver around the sans-I/O `Connection`.

Rules:
- Everything runs on one asyncio event loop, and every call into a
  `Connection` (and so into the document) happens in plain synchronous code
  between awaits. The loop is the document's one owner: no threads, no
  executor, and `on_event` callbacks run on the loop. The caller must make
  its own edits on the same loop and then call `SyncNode.local_change()`.
- The driver only moves bytes: read -> `receive_data` -> events ->
  `data_to_send` -> write. All protocol decisions live in the core.
  Writes go in slices of `WRITE_SLICE` bytes from a flush task that yields
  to the loop between slices, so a message the core puts in its urgent lane
  meanwhile (an alert) leaves before the rest of a large sync (session.py
  rule 10); after each read the reader yields once too, so the owner can
  act on what arrived (show an alert) before the next piece is handled.
- Timeouts: the handshake must finish within `handshake_timeout`; a silent
  peer gets one Ping after `idle_timeout` and is dropped (`PeerUnavailable`)
  if still silent after another `idle_timeout`; a write that cannot drain
  within `write_timeout` (peer stopped reading) ends the session too. A lost
  socket ends that session with `PeerUnavailable`. The node, its other
  sessions and the document are unaffected.
- At most one session per peer: when a second session to the same member
  completes its handshake, both sides keep the one whose initiator has the
  smaller verify key and close the other. A session that loses this race is
  never a failure: `sync_once` then waits for the winning session with that
  member (or for any other session from that host still in its handshake).
- `keep_connected()` redials a manual/discovered peer with exponential
  backoff and jitter.
- Keys (see `session_keyrings`): a responder accepts the current epoch key
  and, for `previous_grace` seconds after this device adopted the current
  one, the previous key; never older ones. An initiator offers the current
  key and, if the peer did not accept it, the previous one once; the
  handshake's key check refuses to complete on the previous key when both
  sides hold the current one (no downgrade).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from circle.errors import CircleError, EpochMismatch, HandshakeFailed, PeerUnavailable
from circle.net.handshake import MemberCheck, Role
from circle.net.keys import DeviceIdentity, EpochKey, MemberId
from circle.net.messages import ByeCode
from circle.net.session import (
    Closed,
    Connection,
    Event,
    HandshakeDone,
    InSync,
    PeerSaved,
    Stats,
    SyncDoc,
)

READ_SIZE = 256 << 10
WRITE_SLICE = 64 << 10
MAX_EPOCH_TRIES = 3
#: How long a responder still accepts the previous epoch key after this
#: device adopted a new one: members who missed a removal can still reach
#: us for that long, and a removed member (who holds the old key) can learn
#: for that long which device answers at an address. Three days covers a
#: weekend away; after that stragglers catch up through a relay, a bundle or
#: by being dialled (an initiator may still offer the previous key).
PREVIOUS_KEY_GRACE_S = 72 * 3600.0
Keyring = Mapping[int, EpochKey] | Callable[[], Mapping[int, EpochKey]]
EventHandler = Callable[["PeerSession", Event], None]


def previous_epoch(keys: Mapping[int, EpochKey], current: int) -> int | None:
    """The newest held epoch older than `current` (the one it replaced)."""
    older = [n for n in keys if n < current]
    return max(older) if older else None


def session_keyrings(
    keys: Mapping[int, EpochKey], current: int, adopted_at: float, now: float,
    grace: float = PREVIOUS_KEY_GRACE_S,
) -> tuple[dict[int, EpochKey], dict[int, EpochKey]]:
    """(keys an initiator may offer, keys a responder accepts).

    Both hold at most the current key and the previous one; the responder
    drops the previous one `grace` seconds after `adopted_at` (when this
    device made `current` its current epoch)."""
    if current not in keys:
        raise KeyError(f"no key for the current epoch {current}")
    initiator = {current: keys[current]}
    responder = dict(initiator)
    prev = previous_epoch(keys, current)
    if prev is not None:
        initiator[prev] = keys[prev]
        if now - adopted_at < grace:
            responder[prev] = keys[prev]
    return initiator, responder


def _why(exc: OSError, connect_timeout: float) -> str:
    """A failed connect in words (not "[Errno 111] Connect call failed")."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {connect_timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "nothing is listening there (circle is not running, or on another port)"
    if isinstance(exc, socket.gaierror):
        return "that host name is unknown"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "that address is unreachable from this network"
    return exc.strerror or str(exc) or type(exc).__name__


@dataclass
class Timeouts:
    connect: float = 5.0
    handshake: float = 10.0
    idle: float = 15.0
    write: float = 30.0


class PeerSession:
    """One live session with one peer, driven by its own task on the loop."""

    def __init__(
        self,
        node: SyncNode,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: tuple[str, int],
    ) -> None:
        self.node = node
        self.conn = conn
        self.address = address
        self._reader = reader
        self._writer = writer
        self.started = time.time()
        self.last_seen = time.time()
        self._in_sync = asyncio.Event()
        self._done = asyncio.Event()
        self._not_saved = asyncio.Event()  # the peer said it could not save (ends a one-shot wait)
        self._more = asyncio.Event()  # the core holds more to write than one slice
        self.task: asyncio.Task[None] | None = None
        self.superseded = False  # closed because another session with this peer won

    # --- what the service layer reads -------------------------------------------

    @property
    def role(self) -> Role:
        return self.conn.role

    @property
    def peer_verify_key(self) -> bytes | None:
        return self.conn.peer.peer_verify_key if self.conn.peer else None

    @property
    def peer_member_id(self) -> MemberId | None:
        return self.conn.peer.peer_member_id if self.conn.peer else None

    @property
    def fingerprint(self) -> str | None:
        return self.conn.peer.fingerprint if self.conn.peer else None

    @property
    def stats(self) -> Stats:
        return self.conn.stats

    @property
    def error(self) -> CircleError | None:
        return self.conn.error

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    @property
    def in_sync(self) -> bool:
        return self.conn.in_sync

    @property
    def peer_has_all_ours(self) -> bool:
        return self.conn.peer_has_all_ours

    @property
    def peer_save_error(self) -> str:
        """Why the peer could not save what it holds ("" when it could)."""
        return self.conn.peer_save_error

    async def wait_in_sync(self, timeout: float | None = None, *, until_not_saved: bool = False) -> bool:
        """Wait until the first InSync (True) or the session ends/times out (False);
        with `until_not_saved`, also stop (False) when the peer says it cannot save."""
        waits = {asyncio.ensure_future(self._in_sync.wait()), asyncio.ensure_future(self._done.wait())}
        if until_not_saved:
            waits.add(asyncio.ensure_future(self._not_saved.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        return self._in_sync.is_set()

    async def wait_closed(self) -> CircleError | None:
        await self._done.wait()
        return self.conn.error

    def close(self, reason: str = "", code: ByeCode = ByeCode.NORMAL) -> None:
        """Say goodbye; the session task flushes it and ends."""
        self.conn.close(reason, code)
        self._pump()

    # --- internals ----------------------------------------------------------------

    def _pump(self) -> None:
        """Deliver events and queue outgoing bytes (synchronous: safe anywhere on the loop)."""
        while (event := self.conn.next_event()) is not None:
            if isinstance(event, InSync):
                self._in_sync.set()
                self.node._member_in_sync(self)
            if isinstance(event, PeerSaved):
                if event.reason:
                    self._not_saved.set()
                else:
                    self._not_saved.clear()
            self.node._emit(self, event)
            if isinstance(event, HandshakeDone):
                self.node._on_handshake(self)  # may close this session (duplicate)
            if isinstance(event, Closed):
                self._done.set()
        data = self.conn.data_to_send(WRITE_SLICE)
        if data and not self._writer.is_closing():
            self._writer.write(data)
        if self.conn.has_data_to_send:
            self._more.set()

    async def _flush_loop(self) -> None:
        """Write what the core holds, one slice at a time, yielding between slices."""
        while True:
            await self._more.wait()
            self._more.clear()
            while self.conn.has_data_to_send and not self._writer.is_closing():
                await self._drain()
                await asyncio.sleep(0)  # urgent pushes and the owner run between slices
                self._pump()

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self._writer.drain(), self.node.timeouts.write)
        except TimeoutError:
            self.conn.abort(PeerUnavailable("the peer stopped reading (write timed out)"))
        except (ConnectionError, OSError):
            self.conn.receive_data(b"")

    async def run(self) -> None:
        t = self.node.timeouts
        pinged = False
        flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        try:
            self._pump()
            await self._drain()
            self._pump()
            handshake_deadline = time.monotonic() + t.handshake
            while not self.conn.closed:
                if self.conn.peer is None:
                    timeout = max(0.0, handshake_deadline - time.monotonic())
                else:
                    timeout = t.idle
                try:
                    data = await asyncio.wait_for(self._reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    if self.conn.peer is None:
                        self.conn.abort(HandshakeFailed("the peer did not complete the handshake in time"))
                    elif not pinged:
                        pinged = True
                        self.conn.ping()
                    else:
                        self.conn.abort(PeerUnavailable("the peer stalled (no data, no answer to ping)"))
                    self._pump()
                    await self._drain()
                    self._pump()
                    continue
                except (ConnectionError, OSError):
                    data = b""
                if data:
                    pinged = False
                    self.last_seen = time.time()
                self.conn.receive_data(data)
                self._pump()
                await self._drain()
                self._pump()
                await asyncio.sleep(0)  # the owner handles what arrived before the next read
        except asyncio.CancelledError:
            if not self.conn.closed:
                self.conn.close("shutting down", ByeCode.SHUTTING_DOWN)
                self._pump()
            raise
        finally:
            flusher.cancel()
            self._pump()
            if not self._writer.is_closing():
                self._writer.write(self.conn.data_to_send())  # the rest, with our goodbye
            self._done.set()
            with contextlib.suppress(Exception):
                if not self._writer.is_closing() and self._writer.can_write_eof():
                    self._writer.write_eof()
            self._writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            self.node._forget(self)


@dataclass
class SyncReport:
    address: tuple[str, int]
    peer_member_id: MemberId | None
    in_sync: bool
    error: CircleError | None
    stats: Stats
    seconds: float
    superseded: bool = False  # our session lost a duplicate race; another one carried the sync
    peer_verify_key: bytes | None = None  # the peer device's key, once the handshake got that far


@dataclass
class SyncNode:
    """Live sync for one circle on this device: a server, clients, their sessions.

    `keyring` may be a mapping or a zero-argument callable returning the
    current mapping (read at each new session, so key rotation applies to new
    sessions). `current_epoch()` names the current one (default: the newest
    held) and `adopted_at(epoch)` says when this device made it current (for
    the previous key's grace; default: when this node first saw it).
    `is_active_member(verify_key)` is asked at each handshake.
    """

    doc: SyncDoc
    identity: DeviceIdentity
    keyring: Keyring
    is_active_member: MemberCheck
    on_event: EventHandler | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    session_options: dict[str, int | bool] = field(default_factory=dict)
    sessions: set[PeerSession] = field(default_factory=set)
    current_epoch: Callable[[], int] | None = None
    adopted_at: Callable[[int], float] | None = None
    previous_grace: float = PREVIOUS_KEY_GRACE_S
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _first_seen: dict[int, float] = field(default_factory=dict)
    _member_synced: dict[bytes, float] = field(default_factory=dict)
    _member_wakeup: asyncio.Event | None = None
    #: The owner persists what sessions apply and reports it (`persisted`,
    #: `persist_failed`); peers count our changes delivered only on that word.
    owner_persists: bool = False
    _durable: tuple[bytes, ...] | None = None
    _save_error: str = ""

    # --- serving and dialing ------------------------------------------------------

    async def start_server(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen for peers; returns the bound (host, port)."""
        self._server = await asyncio.start_server(self._accept, host, port)
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def connect(self, host: str, port: int, epoch: int | None = None) -> PeerSession:
        """Dial a peer and start a session (runs in its own task).

        `epoch` picks which circle key to offer (default: the current one)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), self.timeouts.connect
            )
        except (TimeoutError, OSError) as exc:
            raise PeerUnavailable(f"cannot reach {host}:{port}: {_why(exc, self.timeouts.connect)}") from None
        return self._start(Role.INITIATOR, reader, writer, (host, port), epoch)

    def fallback_epoch(self, error: CircleError | None, tried: set[int]) -> int | None:
        """After a handshake the peer did not accept, which key to offer next.

        The epoch the peer proved to hold (a newer one we hold too), else the
        previous key once; never anything older (see `session_keyrings`)."""
        if not isinstance(error, EpochMismatch):
            return None
        keys = self._keyrings()[0]
        tried.add(error.offered_epoch)
        if error.peer_epoch is not None and error.peer_epoch in keys:
            return error.peer_epoch if error.peer_epoch not in tried else None
        untried = [k for k in keys if k not in tried]
        return max(untried) if untried else None

    async def sync_once(self, host: str, port: int, timeout: float = 30.0) -> SyncReport:
        """Connect, sync until both sides are quiet (or timeout), say goodbye, report.

        In sync means: some session with that peer reached sync during this
        call, ours or one the peer opened to us (a duplicate race winner)."""
        started = time.monotonic()
        since = time.time()
        deadline = started + timeout
        epoch: int | None = None
        tried: set[int] = set()
        superseded = False
        for _attempt in range(MAX_EPOCH_TRIES):
            try:
                session = await self.connect(host, port, epoch)
            except PeerUnavailable as exc:
                return SyncReport((host, port), None, False, exc, Stats(), time.monotonic() - started)
            ok = await session.wait_in_sync(max(0.1, deadline - time.monotonic()), until_not_saved=True)
            if not ok and session.error is None and session.peer_verify_key is not None:
                # Closed cleanly before sync: we lost a duplicate race (here or
                # at the peer), and the other session carries the sync.
                ok = await self._wait_member(session, since, deadline)
                superseded = ok
            if not session.closed:
                session.close("sync complete" if ok else "timed out")
            await asyncio.wait_for(session.wait_closed(), self.timeouts.write)
            epoch = None if ok else self.fallback_epoch(session.error, tried)
            if epoch is None:
                break
        error = session.error if not ok else None
        if not ok and error is None:
            if session.peer_save_error:
                error = PeerUnavailable(
                    f"the peer could not save our changes ({session.peer_save_error}); they stay here and "
                    "are sent again at the next sync")
            elif session.peer_verify_key is None:
                error = PeerUnavailable(f"{host}:{port} did not finish the handshake within {timeout:g} s")
            elif time.monotonic() >= deadline:
                error = PeerUnavailable(f"{host}:{port} answered but did not finish syncing within {timeout:g} s")
            else:
                error = PeerUnavailable(f"{host}:{port} closed the session before syncing finished")
        return SyncReport(
            (host, port), session.peer_member_id, ok, error, session.stats,
            time.monotonic() - started, superseded, session.peer_verify_key,
        )

    def member_synced_since(self, verify_key: bytes, since: float) -> bool:
        """Did any session with this member reach sync at or after unix time `since`?"""
        return self._member_synced.get(verify_key, -1.0) >= since

    async def _wait_member(self, session: PeerSession, since: float, deadline: float) -> bool:
        """Wait for another session with `session`'s peer to reach sync.

        Gives up as soon as no candidate is left: no open session with that
        member, and none from that host still in its handshake."""
        vk = session.peer_verify_key
        assert vk is not None
        while True:
            if self.member_synced_since(vk, since) or any(
                    s.peer_verify_key == vk and s.in_sync and not s.closed for s in self.sessions):
                return True  # (a session it opened before ours may have been in sync all along)
            candidates = [
                s for s in self.sessions
                if s is not session and not s.closed and (
                    s.peer_verify_key == vk
                    or (s.peer_verify_key is None and s.address[0] == session.address[0]))
            ]
            left = deadline - time.monotonic()
            if not candidates or left <= 0:
                return False
            wakeup = self._wakeup()
            waits: list[asyncio.Future[object]] = [asyncio.ensure_future(wakeup.wait())]
            waits += [asyncio.ensure_future(s.wait_closed()) for s in candidates]
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _wakeup(self) -> asyncio.Event:
        if self._member_wakeup is None or self._member_wakeup.is_set():
            self._member_wakeup = asyncio.Event()
        return self._member_wakeup

    def _member_in_sync(self, session: PeerSession) -> None:
        if session.peer_verify_key is not None:
            self._member_synced[session.peer_verify_key] = time.time()
        if self._member_wakeup is not None:
            self._member_wakeup.set()

    async def keep_connected(
        self, host: str, port: int, *, min_backoff: float = 1.0, max_backoff: float = 60.0
    ) -> None:
        """Keep one session to host:port alive, redialling with backoff. Cancel to stop.

        Each wait is at most `max_backoff` (jitter included), so a peer that
        comes back is redialled within that time. If our session lost to a
        duplicate (the peer dialled us too), wait for the winning session to
        end instead of redialling into another duplicate."""
        backoff = min_backoff
        epoch: int | None = None
        tried: set[int] = set()
        while True:
            started = time.monotonic()
            try:
                session = await self.connect(host, port, epoch)
                error = await session.wait_closed()
                epoch = self.fallback_epoch(error, tried)
                if epoch is not None:
                    continue  # an immediate retry with another key, no backoff
                tried.clear()
                winner = self._live_session_with(session.peer_verify_key)
                if winner is not None:
                    await winner.wait_closed()
                    backoff = min_backoff
                    continue
            except PeerUnavailable:
                epoch = None
                tried.clear()
            if time.monotonic() - started > 2 * max_backoff:
                backoff = min_backoff
            await asyncio.sleep(min(max_backoff, backoff * (0.5 + random.random())))
            backoff = min(max_backoff, backoff * 2)

    def _live_session_with(self, verify_key: bytes | None) -> PeerSession | None:
        if verify_key is None:
            return None
        for s in self.sessions:
            if s.peer_verify_key == verify_key and not s.closed:
                return s
        return None

    def persisted(self, heads: list[bytes] | tuple[bytes, ...]) -> None:
        """Owner (on the loop): these heads are durable here; every session tells its peer."""
        self._durable, self._save_error = tuple(heads), ""
        for session in list(self.sessions):
            if not session.closed:
                session.conn.persisted(heads)
                session._pump()

    def persist_failed(self, reason: str) -> None:
        """Owner (on the loop): saving failed; every session tells its peer why."""
        self._save_error = reason
        for session in list(self.sessions):
            if not session.closed:
                session.conn.persist_failed(reason)
                session._pump()

    def push_urgent(self, changes: list[bytes], proofs: list[bytes]) -> None:
        """Call (on the loop): send these changes to every live peer ahead of all else."""
        for session in list(self.sessions):
            if not session.closed:
                session.conn.push_urgent(changes, proofs)
                session._pump()

    def local_change(self) -> None:
        """Call (on the loop) after editing the document: pushes to every live peer."""
        for session in list(self.sessions):
            if not session.closed:
                session.conn.local_change()
                session._pump()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for session in list(self.sessions):
            if not session.closed:
                session.close("shutting down", ByeCode.SHUTTING_DOWN)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # --- internals ----------------------------------------------------------------

    def _keys(self) -> Mapping[int, EpochKey]:
        return self.keyring() if callable(self.keyring) else self.keyring

    def _keyrings(self) -> tuple[dict[int, EpochKey], dict[int, EpochKey]]:
        """(initiator keys, responder keys) under the rules in the module docstring."""
        keys = self._keys()
        current = self.current_epoch() if self.current_epoch is not None else max(keys)
        if current not in keys:  # a config mid-update: never fail a session over it
            current = max(keys)
        if self.adopted_at is not None:
            adopted = self.adopted_at(current)
        else:
            adopted = self._first_seen.setdefault(current, time.time())
        return session_keyrings(keys, current, adopted, time.time(), self.previous_grace)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        session = self._start(Role.RESPONDER, reader, writer, (str(peer[0]), int(peer[1])))
        with contextlib.suppress(asyncio.CancelledError):
            await session.wait_closed()

    def _start(
        self,
        role: Role,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: tuple[str, int],
        epoch: int | None = None,
    ) -> PeerSession:
        initiator_keys, responder_keys = self._keyrings()
        keys = initiator_keys if role is Role.INITIATOR else responder_keys
        conn = Connection(
            role, self.doc, self.identity, keys, self.is_active_member,
            epoch=epoch if epoch in keys else None,
            owner_persists=self.owner_persists,
            **self.session_options,  # type: ignore[arg-type]
        )
        if self._durable is not None:
            conn.persisted(self._durable)
        if self._save_error:
            conn.persist_failed(self._save_error)
        session = PeerSession(self, conn, reader, writer, address)
        self.sessions.add(session)
        task = asyncio.get_running_loop().create_task(session.run())
        session.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return session

    def _forget(self, session: PeerSession) -> None:
        self.sessions.discard(session)

    def _emit(self, session: PeerSession, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(session, event)

    def _on_handshake(self, session: PeerSession) -> None:
        vk = session.peer_verify_key
        mine = self.identity.verify_key

        def initiator_key(s: PeerSession) -> bytes:
            return mine if s.role is Role.INITIATOR else (s.peer_verify_key or b"")

        for other in list(self.sessions):
            if other is session or other.closed or other.peer_verify_key != vk:
                continue
            loser = max((session, other), key=initiator_key)
            if initiator_key(session) == initiator_key(other):
                loser = session  # same direction twice: keep the older one
            loser.superseded = True
            loser.close("duplicate session")
            return


__all__ = [
    "PREVIOUS_KEY_GRACE_S", "PeerSession", "SyncNode", "SyncReport", "Timeouts", "previous_epoch",
    "session_keyrings",
]
