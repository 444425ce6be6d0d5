"""Live sync for one circle on this device: TCP sessions + LAN discovery.

`LiveSync` wires the sans-I/O sessions (via `net.tcp.SyncNode`) and mDNS
discovery (`net.discovery`) to a `CircleService`. Everything runs on one
asyncio loop, which is the document's only owner (automerge is not
thread-safe): the refresh timer that follows other processes' edits, the
sessions applying peers' changes, and local edits made by the CLI or TUI on
the same loop.

What a peer sees is recorded in `PeerStatus` and persisted (throttled) in the
circle's settings, so `circle status` can show peers even when nothing runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from circle.errors import CircleError, UsageError
from circle.net.discovery import ALL_INTERFACES, Discovery, PeerFound, PeerLost, parse_manual_peer
from circle.net.messages import ByeCode
from circle.net.session import Closed, DocChanged, Event, HandshakeDone, InSync, Progress
from circle.net.tcp import PeerSession, SyncNode, SyncReport
from circle.node.authorship import GatedDoc
from circle.node.relays import RelayRoundResult, RelaySync
from circle.node.service import CircleService

REFRESH_S = 0.25
PERSIST_PEERS_S = 5.0
LAN_MAX_BACKOFF_S = 10.0


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


def removal_notice(svc: CircleService, device_key: bytes) -> str:
    """"You were removed from Block 9 by ana on 2 Dec." (what a removed device is told)."""
    m = svc.membership()
    d = m.devices.get(device_key)
    owner = m.members.get(d.member) if d is not None else None
    by_key = (d.removed_by if d is not None and d.removed_by else None) or (owner.removed_by if owner else None)
    by = m.members.get(by_key) if by_key else None
    when = (d.removed_at if d is not None and d.removed_at else None) or (owner.removed_at if owner else None)
    day = time.strftime("%-d %b", time.localtime(when / 1000)) if when else "recently"
    if owner is not None and owner.left:
        return f"You left {svc.config.name} on {day}."
    who = by.handle if by is not None else "another member"
    return f"You were removed from {svc.config.name} by {who} on {day}."


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
                             self._on_event)
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

    # --- lifecycle ---------------------------------------------------------

    async def start(self, keep_connected: bool = True) -> None:
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
                                       on_event=self._on_discovery if keep_connected else None)
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

    async def sync_round(self, timeout: float, discover_for: float = 3.0) -> list[SyncReport]:
        """Sync once with every manual peer and every peer discovery finds."""
        targets = {f"{h}:{p}": (h, p, "manual") for h, p in self.manual}
        if self.discovery is not None:
            deadline = time.monotonic() + min(discover_for, timeout)
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for h, p in self.discovery.peers:
                targets.setdefault(f"{h}:{p}", (h, p, "lan"))
        for key, (h, p, path) in targets.items():
            self.peers.setdefault(key, PeerStatus(h, p, path))
        relay_round = asyncio.ensure_future(self.relays.sync_round(timeout) if self.relays is not None
                                            else asyncio.sleep(0, []))
        reports = await asyncio.gather(*(self.node.sync_once(h, p, timeout) for h, p, _ in targets.values()))
        self.relay_results = list(await relay_round)
        for report in reports:
            status = self.peers[f"{report.address[0]}:{report.address[1]}"]
            status.member_id = report.peer_member_id
            status.handle = self._handle(report.peer_member_id)
            status.in_sync = status.has_all_ours = report.in_sync
            status.error = str(report.error) if report.error else None
            if report.in_sync:
                status.last_seen = time.time()
                self.last_sync = time.time()
        self._persist_peers(force=True)
        return list(reports)

    # --- dialing -----------------------------------------------------------------

    def _dial(self, host: str, port: int, path: str) -> None:
        key = f"{host}:{port}"
        if self.bound is not None and port == self.bound[1] and host in ("127.0.0.1", self.bound[0]):
            return  # ourselves
        self.peers.setdefault(key, PeerStatus(host, port, path))
        if key not in self._dialers or self._dialers[key].done():
            # A peer on the LAN is cheap to retry: redial at least every 10 s,
            # so a laptop that comes back after a cut is reached quickly.
            self._dialers[key] = asyncio.get_running_loop().create_task(
                self.node.keep_connected(host, port, max_backoff=LAN_MAX_BACKOFF_S))

    def _on_discovery(self, event: Any) -> None:
        if isinstance(event, PeerFound):
            self._dial(event.address, event.port, "manual" if event.manual else "lan")
        elif isinstance(event, PeerLost):
            task = self._dialers.pop(f"{event.address}:{event.port}", None)
            if task is not None:
                task.cancel()
            status = self.peers.get(f"{event.address}:{event.port}")
            if status is not None:
                status.connected = False
            self._changed()

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
        elif isinstance(event, DocChanged):
            status.in_sync = False
            if not self._remote_pending:
                # Coalesce: persist and reconcile once per burst, after the
                # session has finished handling the current message.
                self._remote_pending = True
                asyncio.get_running_loop().call_soon(self._apply_remote)
        elif isinstance(event, Progress):
            status.progress = (event.bytes_done, event.bytes_total)
        elif isinstance(event, InSync):
            status.in_sync, status.progress = True, None
            status.has_all_ours = session.peer_has_all_ours
            self.last_sync = time.time()
        elif isinstance(event, Closed):
            status.connected, status.progress = False, None
            status.error = str(event.error) if event.error else None
        self._persist_peers()
        self._changed()

    def _apply_remote(self) -> None:
        self._remote_pending = False
        try:
            self.svc.remote_changed()
        except CircleError as exc:  # e.g. a newer schema arrived: report, keep running
            for status in self.peers.values():
                status.error = str(exc)

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
        self.close_removed()
        if self.relays is None and self.use_relays and self._unsubscribe is not None and self.svc.board.relays():
            self._spawn(self._start_relays())  # the first relay was just added
        if origin in ("local", "disk"):
            self.node.local_change()
        if self.svc.config.epoch != self._epoch:
            self._epoch = self.svc.config.epoch
            if self.discovery is not None:
                self._spawn(self.discovery.set_epoch_key(self.svc.config.epoch_key))
        self._changed()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                self.svc.refresh()  # other processes' edits; notifies "disk" -> push
            except CircleError as exc:
                for status in self.peers.values():
                    status.error = f"local store: {exc}"

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
