"""Live sync for one circle on this device: TCP sessions + LAN discovery.

`LiveSync` wires the sans-I/O sessions (via `net.tcp.SyncNode`) and mDNS
discovery (`net.discovery`) to a `CircleService`. Everything runs on one
asyncio loop, which is the document's only owner (automerge is not
thread-safe): the refresh timer that follows other processes' edits, the
sessions applying peers' changes, and local edits made by the CLI or TUI on
the same loop.

Delivery (issue 16 case 4): a peer counts our changes as delivered only when
we tell it they are on disk. After every persist (a remote burst, a local
edit, the refresh timer, which also retries a save that failed) the heads
the store holds are passed to the sessions (`SyncNode.persisted`), and a
failed save is passed on in words (`persist_failed`: "the disk holding ...
is full"). Our side shows, per peer, what it could not save
(`PeerStatus.undelivered`), in `circle status` too.

Alerts first (issue 13): after an edit on this device (this process or
another one: "local" and "disk"), changes written on top of the collections
change alone (a raised alert, crdt/defence.py) are pushed to every session
in the urgent lane (`SyncNode.push_urgent`, net/session.py rule 10) with
their proofs, before the ordinary push.

What a peer sees is recorded in `PeerStatus` and persisted (throttled) in the
circle's settings, so `circle status` can show peers even when nothing runs.
A LAN peer leaves `peers` when discovery loses it (a goodbye, or its
advertisement fell silent: net/discovery.py), unless a session with it is
still open.

One-shot rounds (`sync_round`, `circle sync`) report per *member*: a member
is in sync if any session with it reached sync during the round, ours or one
it opened to us; a session that lost the duplicate race is not a failure.
mDNS browsing stops as soon as every other active member is in sync, or once
the peers found are done and the browse has had time for a second query
(`browse_finished`), instead of a fixed wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from circle.crdt.am import change_hash
from circle.crdt.defence import COLLECTIONS_CHANGE, COLLECTIONS_CHANGE_HASH
from circle.errors import CircleError, UsageError
from circle.net.discovery import ALL_INTERFACES, Discovery, PeerFound, PeerLost, parse_manual_peer
from circle.net.keys import member_id_for
from circle.net.messages import ByeCode
from circle.net.session import Closed, DocChanged, Event, HandshakeDone, InSync, PeerSaved, Progress
from circle.net.tcp import PeerSession, SyncNode, SyncReport
from circle.node.authorship import GatedDoc
from circle.node.membership import removal_notice
from circle.node.relays import RelayRoundResult, RelaySync
from circle.node.service import CircleService

REFRESH_S = 0.25
PERSIST_PEERS_S = 5.0
LAN_MAX_BACKOFF_S = 10.0
MIN_BROWSE_S = 1.3  # zeroconf's second browse query goes out ~1 s after the first
EPOCH_ADOPTED = "epoch_adopted"  # settings: when this device made its current epoch current


def browse_finished(elapsed: float, discover_for: float, others_left: int, found: int, pending: int) -> bool:
    """Whether a one-shot round can stop browsing mDNS.

    Stop when every other active member is already in sync (nobody left to
    find), or when peers were found, all of them are done and the browse has
    run past its second query, or at `discover_for` whatever happened."""
    if others_left <= 0 or elapsed >= discover_for:
        return True
    return found > 0 and pending == 0 and elapsed >= MIN_BROWSE_S


@dataclass
class MemberSync:
    """One member's result in a one-shot round (all its sessions together), or
    an address where no member answered (`member_id` None)."""

    member_id: str | None
    handle: str | None
    addresses: list[str]
    in_sync: bool
    error: str | None
    seconds: float
    bytes_sent: int = 0
    bytes_received: int = 0
    changes_applied: int = 0
    snapshot_sent: bool = False
    snapshot_received: bool = False


@dataclass
class _Round:
    since: float  # unix time the round started
    sessions: dict[str, set[PeerSession]]
    synced: set[str]


@dataclass
class PeerStatus:
    address: str
    port: int
    path: str  # "lan", "manual" or "incoming"
    member_id: str | None = None
    handle: str | None = None
    connected: bool = False
    last_seen: float | None = None
    in_sync: bool = False
    has_all_ours: bool = False
    progress: tuple[int, int] | None = None
    error: str | None = None
    undelivered: str | None = None  # why the peer does not hold our changes durably ("could not save: ...")

    @property
    def key(self) -> str:
        return f"{self.address}:{self.port}"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (port 0 = any free port); ":PORT" listens on every address."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 <= port < 65536:
        raise UsageError(f"cannot parse listen address '{text}' (use HOST:PORT)")
    return host, port


class LiveSync:
    def __init__(
        self,
        svc: CircleService,
        *,
        listen: tuple[str, int] | None = ("0.0.0.0", 0),
        manual_peers: Iterable[str] = (),
        discovery: bool = True,
        interfaces: list[str] | None = None,
        on_change: Callable[[], None] | None = None,
        relays: bool = True,
        follow_disk: bool = True,
    ) -> None:
        self.svc = svc
        self.listen = listen
        self.manual = [parse_manual_peer(p) for p in manual_peers]
        self.use_discovery = discovery
        self.interfaces = interfaces
        self.on_change = on_change  # the TUI repaints its Sync tab on this
        # False when the host (the TUI) already follows the store: its "disk"
        # notifications still reach us and push to peers.
        self.follow_disk = follow_disk
        self.node = SyncNode(GatedDoc(svc.doc, svc.gate), svc.home.identity, svc.keyring, svc.is_active_member,
                             self._on_event, current_epoch=lambda: svc.config.epoch,
                             adopted_at=self._adopted_at, owner_persists=True)
        self._told_durable: list[bytes] | None = None
        self._urgent_seen: list[bytes] = svc.doc.heads()  # standalone changes after these not pushed yet
        self._told_error: str | None = None
        self.discovery: Discovery | None = None
        self.bound: tuple[str, int] | None = None
        self.peers: dict[str, PeerStatus] = {}
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._remote_pending = False
        self._unsubscribe: Callable[[], None] | None = None
        self._epoch = svc.config.epoch
        self._last_persist = 0.0
        self.last_sync: float | None = None
        self.use_relays = relays
        self.relays: RelaySync | None = None  # when the document lists relays (relays.py)
        self.relay_results: list[RelayRoundResult] = []
        self._keep_connected = True
        self._round: _Round | None = None
        self._wake = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------

    async def start(self, keep_connected: bool = True) -> None:
        self._note_epoch()
        self._note_persisted()
        if self.listen is not None:
            self.bound = await self.node.start_server(*self.listen)
        self._unsubscribe = self.svc.subscribe(self._on_service_change)
        if self.follow_disk:
            self._spawn(self._refresh_loop())
        self._keep_connected = keep_connected
        await self._start_relays()
        if keep_connected:
            for host, port in self.manual:
                self._dial(host, port, "manual")
        if self.use_discovery and self.bound is not None:
            interfaces: Any = self.interfaces if self.interfaces else ALL_INTERFACES
            self.discovery = Discovery(self.svc.config.epoch_key, self.bound[1], interfaces=interfaces,
                                       on_event=self._on_discovery)
            await self.discovery.start()

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in [*self._dialers.values(), *self._tasks]:
            task.cancel()
        for task in [*self._dialers.values(), *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.discovery is not None:
            await self.discovery.close()
        await self.node.close()
        if self.relays is not None:
            await self.relays.close()
        self._persist_peers(force=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one-shot sync (`circle sync`) -------------------------------------------

    async def sync_round(self, timeout: float, discover_for: float = 3.0) -> list[MemberSync]:
        """Sync once with every manual peer and every peer discovery finds; one result per member."""
        started = time.monotonic()
        deadline = started + timeout
        me = self.svc.me
        others = {m.id for m in self.svc.board.members() if m.active and m.id != me}
        self._round = rnd = _Round(time.time(), {}, set())
        for s in self.node.sessions:  # peers that dialled us since start() count too
            mid = self._member_of(s.peer_verify_key)
            if not s.closed and mid is not None:
                rnd.sessions.setdefault(mid, set()).add(s)
                if s.in_sync:
                    rnd.synced.add(mid)
        tasks: dict[str, asyncio.Task[SyncReport]] = {}

        def launch(h: str, p: int, path: str) -> None:
            key = f"{h}:{p}"
            if key not in tasks and not self._is_self(h, p):
                self.peers.setdefault(key, PeerStatus(h, p, path))
                tasks[key] = asyncio.ensure_future(self.node.sync_once(h, p, timeout))

        for h, p in self.manual:
            launch(h, p, "manual")
        relay_round = asyncio.ensure_future(self.relays.sync_round(timeout) if self.relays is not None
                                            else asyncio.sleep(0, []))
        try:
            if self.discovery is not None:
                while True:
                    for h, p in sorted(self.discovery.peers):
                        launch(h, p, "lan")
                    pending = sum(not t.done() for t in tasks.values())
                    if browse_finished(time.monotonic() - started, min(discover_for, timeout),
                                       len(others - rnd.synced), len(tasks), pending):
                        break
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.1)
            reports = list(await asyncio.gather(*tasks.values()))
            await self._finish_incoming(rnd, deadline)
            self.relay_results = list(await relay_round)
        finally:
            self._round = None
        results = self._member_results(rnd, reports, time.monotonic() - started)
        for r in results:
            if r.in_sync:
                self.last_sync = time.time()
        self._persist_peers(force=True)
        return results

    async def _finish_incoming(self, rnd: _Round, deadline: float) -> None:
        """Members that dialled us during the round: let their sessions finish syncing."""
        waiting = [s for mid, ss in rnd.sessions.items() for s in ss
                   if not s.closed and mid not in rnd.synced]
        if waiting:
            await asyncio.gather(*(s.wait_in_sync(max(0.0, deadline - time.monotonic())) for s in waiting))

    def _member_results(self, rnd: _Round, reports: list[SyncReport], seconds: float) -> list[MemberSync]:
        by_member: dict[str, MemberSync] = {}
        loose: list[MemberSync] = []

        def entry(mid: str) -> MemberSync:
            if mid not in by_member:
                by_member[mid] = MemberSync(mid, self._handle(mid), [], mid in rnd.synced, None, seconds)
            return by_member[mid]

        for mid, sessions in rnd.sessions.items():
            row = entry(mid)
            for s in sessions:
                row.addresses.append(f"{s.address[0]}:{s.address[1]}")
                st = s.stats
                row.bytes_sent += st.wire_bytes_out
                row.bytes_received += st.wire_bytes_in
                row.changes_applied += st.changes_applied
                row.snapshot_sent |= st.snapshots_sent > 0
                row.snapshot_received |= st.snapshots_received > 0
        for report in reports:
            address = f"{report.address[0]}:{report.address[1]}"
            rid = self._member_of(report.peer_verify_key)
            if rid is None:
                # Nobody answered as a member here; if a member from that host
                # is in sync by another session, this address was that member.
                host_rows = [r for r in by_member.values() if r.in_sync
                             and any(a.rpartition(":")[0] == report.address[0] for a in r.addresses)]
                if host_rows:
                    host_rows[0].addresses.append(address)
                    continue
                loose.append(MemberSync(None, None, [address], False, _words(report.error), report.seconds))
                continue
            row = entry(rid)
            if address not in row.addresses:
                row.addresses.append(address)
            row.in_sync |= report.in_sync
            if not row.in_sync and row.error is None:
                row.error = _words(report.error)
        for row in by_member.values():
            row.addresses = sorted(set(row.addresses))
            if not row.in_sync and row.error is None:
                row.error = "connected, but did not finish syncing before the time-out"
            status = next((p for p in self.peers.values() if p.member_id == row.member_id), None)
            if status is not None:
                status.in_sync = row.in_sync
                status.has_all_ours = row.in_sync  # InSync needs the peer's word that it saved ours
                status.error = row.error
                if row.in_sync:
                    status.last_seen = time.time()
        for report in reports:  # the status of each dialled address, for `circle status`
            status = self.peers.get(f"{report.address[0]}:{report.address[1]}")
            if status is not None and report.peer_member_id is not None:
                status.member_id = report.peer_member_id
                status.handle = self._handle(report.peer_member_id)
                status.in_sync = report.peer_member_id in rnd.synced or report.in_sync
                status.error = None if status.in_sync else _words(report.error)
                if status.in_sync:
                    status.last_seen = time.time()
        return sorted(by_member.values(), key=lambda r: (r.handle or r.member_id or "")) + loose

    def _member_of(self, device_key: bytes | None) -> str | None:
        """The member a peer device acts for (a linked laptop reports as its member)."""
        if device_key is None:
            return None
        m = self.svc.membership()
        device = m.active_device(device_key)
        info = m.members.get(device.member) if device is not None else None
        return str(info.id) if info is not None else str(member_id_for(device_key))

    def _is_self(self, host: str, port: int) -> bool:
        return self.bound is not None and port == self.bound[1] and host in ("127.0.0.1", self.bound[0])

    def _adopted_at(self, epoch: int) -> float:
        """When this device made `epoch` its current one (the previous key's grace counts from it)."""
        rec = self.svc.config.settings.get(EPOCH_ADOPTED)
        if isinstance(rec, dict) and rec.get("epoch") == epoch and isinstance(rec.get("at"), int | float):
            return float(rec["at"])
        return time.time()

    def _note_epoch(self) -> None:
        rec = self.svc.config.settings.get(EPOCH_ADOPTED)
        if not (isinstance(rec, dict) and rec.get("epoch") == self.svc.config.epoch):
            self.svc.config.settings[EPOCH_ADOPTED] = {"epoch": self.svc.config.epoch, "at": time.time()}
            with contextlib.suppress(CircleError):
                self.svc.config.save(self.svc.home)

    # --- dialing -----------------------------------------------------------------

    def _dial(self, host: str, port: int, path: str) -> None:
        key = f"{host}:{port}"
        if self._is_self(host, port):
            return  # ourselves
        self.peers.setdefault(key, PeerStatus(host, port, path))
        if key not in self._dialers or self._dialers[key].done():
            # A peer on the LAN is cheap to retry: redial at least every 10 s,
            # so a laptop that comes back after a cut is reached quickly.
            self._dialers[key] = asyncio.get_running_loop().create_task(
                self.node.keep_connected(host, port, max_backoff=LAN_MAX_BACKOFF_S))

    def _on_discovery(self, event: Any) -> None:
        self._wake.set()  # a one-shot round waiting for peers looks again
        if not self._keep_connected:
            return
        if isinstance(event, PeerFound):
            self._dial(event.address, event.port, "manual" if event.manual else "lan")
        elif isinstance(event, PeerLost):
            key = f"{event.address}:{event.port}"
            task = self._dialers.pop(key, None)
            if task is not None:
                task.cancel()
            status = self.peers.get(key)
            if status is not None and not self._session_open(event.address, event.port):
                status.connected = False
                self._changed()
                # Gone from the LAN (goodbye, or silent past discovery's expiry)
                # and no session says otherwise: it leaves the list.
                del self.peers[key]
            self._changed()

    def _session_open(self, host: str, port: int) -> bool:
        return any(s.address == (host, port) and not s.closed for s in self.node.sessions)

    # --- events --------------------------------------------------------------------

    def _status_for(self, session: PeerSession) -> PeerStatus:
        host, port = session.address
        key = f"{host}:{port}"
        if key not in self.peers:
            self.peers[key] = PeerStatus(host, port, "incoming")
        return self.peers[key]

    def _handle(self, member_id: str | None) -> str | None:
        if member_id is None:
            return None
        member = self.svc.board.view().members.get(member_id)  # type: ignore[call-overload]
        return member.handle if member else None

    def _on_event(self, session: PeerSession, event: Event) -> None:
        status = self._status_for(session)
        status.last_seen = session.last_seen
        if isinstance(event, HandshakeDone):
            status.connected, status.error = True, None
            status.member_id = session.peer_member_id
            status.handle = self._handle(session.peer_member_id)
            mid = self._member_of(session.peer_verify_key)
            if self._round is not None and mid is not None:
                self._round.sessions.setdefault(mid, set()).add(session)
        elif isinstance(event, DocChanged):
            status.in_sync = False
            if not self._remote_pending:
                # Coalesce: persist and reconcile once per burst, after the
                # session has finished handling the current message.
                self._remote_pending = True
                asyncio.get_running_loop().call_soon(self._apply_remote)
        elif isinstance(event, Progress):
            status.progress = (event.bytes_done, event.bytes_total)
        elif isinstance(event, PeerSaved):
            status.has_all_ours = session.peer_has_all_ours
            status.undelivered = f"could not save our changes: {event.reason}" if event.reason else None
        elif isinstance(event, InSync):
            status.in_sync, status.progress = True, None
            status.has_all_ours = session.peer_has_all_ours
            status.undelivered = None
            self.last_sync = time.time()
            mid = self._member_of(session.peer_verify_key)
            if self._round is not None and mid is not None:
                self._round.synced.add(mid)
                self._wake.set()
        elif isinstance(event, Closed):
            status.connected, status.progress = False, None
            status.error = str(event.error) if event.error else None
        self._persist_peers()
        self._changed()

    def _apply_remote(self) -> None:
        self._remote_pending = False
        try:
            self.svc.remote_changed()
        except CircleError as exc:  # a full disk, a newer schema...: report, keep running
            for status in self.peers.values():
                status.error = str(exc)
            self._note_persisted(save_failure_words(str(exc)))
            return
        self._note_persisted()

    def _note_persisted(self, failure: str | None = None) -> None:
        """Tell the sessions what the store now holds durably, or why saving failed
        (peers count our changes, and theirs, as delivered only on this word)."""
        heads = self.svc.persisted_heads
        if heads != self._told_durable:
            self._told_durable = heads
            self._told_error = None
            self.node.persisted(heads)
        if failure is not None and failure != self._told_error:
            self._told_error = failure
            self.node.persist_failed(failure)

    async def _start_relays(self) -> None:
        if self.relays is None and self.use_relays and self.svc.board.relays():
            self.relays = RelaySync(self.svc, on_change=self._changed)
            if self._keep_connected:
                await self.relays.start()

    def close_removed(self) -> int:
        """Close, at once, every session whose peer device is no longer active
        (removed, or its member left), telling it so in words. Runs before any
        change is pushed, so a removed device never receives what follows."""
        closed = 0
        m = self.svc.membership()
        for session in list(self.node.sessions):
            key = session.peer_verify_key
            if session.closed or key is None or m.active_device(key) is not None:
                continue
            session.close(removal_notice(self.svc, key), ByeCode.REMOVED)
            closed += 1
        return closed

    def _on_service_change(self, origin: str) -> None:
        self.close_removed()  # first: a removed device receives nothing that follows
        if origin in ("local", "disk"):
            self._push_urgent()  # before anything slower (the relays check below reads the board)
        else:
            self._urgent_seen = self.svc.doc.heads()
        if self.relays is None and self.use_relays and self._unsubscribe is not None and self.svc.board.relays():
            self._spawn(self._start_relays())  # the first relay was just added
        if origin in ("local", "disk"):
            self.node.local_change()
            self._note_persisted()
        if self.svc.config.epoch != self._epoch:
            self._epoch = self.svc.config.epoch
            self._note_epoch()
            if self.discovery is not None:
                self._spawn(self.discovery.set_epoch_key(self.svc.config.epoch_key))
        self._changed()

    def _push_urgent(self) -> None:
        """Standalone changes (alerts) since the last look go ahead of everything."""
        heads = self.svc.doc.heads()
        try:
            new = self.svc.doc.changes_on([COLLECTIONS_CHANGE_HASH], self._urgent_seen)
        except CircleError:
            new = []
        self._urgent_seen = heads
        if not new:
            return
        hashes = [h for h in (change_hash(c) for c in new) if h is not None]
        gated = self.node.doc
        proofs = gated.proofs_for_hashes(hashes) if isinstance(gated, GatedDoc) else []
        self.node.push_urgent([COLLECTIONS_CHANGE, *new], proofs)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self.svc.refresh()  # other processes' edits; notifies "disk" -> push; retries a failed save
            except CircleError as exc:
                for status in self.peers.values():
                    status.error = f"local store: {exc}"
                self._note_persisted(save_failure_words(str(exc)))
                continue
            self._note_persisted()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _persist_peers(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_persist < PERSIST_PEERS_S:
            return
        self._last_persist = now
        known = dict(self.svc.config.settings.get("peers", {}))
        for status in self.peers.values():
            if status.last_seen is not None and status.member_id is not None:
                # One entry per member (incoming sessions come from a new port each time).
                known[status.member_id] = {k: v for k, v in asdict(status).items() if k != "progress"}
        self.svc.config.settings["peers"] = dict(sorted(known.items(), key=lambda kv: -(kv[1].get("last_seen") or 0))[:50])
        with contextlib.suppress(CircleError):
            self.svc.config.save(self.svc.home)


def save_failure_words(text: str) -> str:
    """Why our save failed, as a peer may read it: the common causes in a few
    words, never a path on this device (it names the user's home)."""
    lowered = text.lower()
    for needle, words in (("quota", "its disk quota is used up"), ("is full", "its disk is full"),
                          ("read-only", "its store is on a read-only file system"),
                          ("input/output", "its disk reported an input/output error"),
                          ("permission", "it has no permission to write its store")):
        if needle in lowered:
            return words
    return "it could not save (" + re.sub(r"(?:[A-Za-z]:)?[\\/][^\s;,)]*", "...", text)[:150] + ")"


def _words(error: object) -> str:
    """A sync failure as one sentence for people (errors already are; None is a time-out)."""
    if error is None:
        return "did not finish syncing before the time-out"
    return str(error)
