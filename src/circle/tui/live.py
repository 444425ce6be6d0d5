"""Real sync, invites and joining for the app (the TUI's Protocols, implemented).

Everything here runs on the app's asyncio loop, which owns the document:
`LiveSync` (TCP sessions, mDNS, relays) and the `InviteHost` are started as
tasks on that loop once the board is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from circle.errors import CircleError
from circle.net.invite import InviteCode
from circle.net.keys import fingerprint
from circle.net.shortcode import ShortCode
from circle.node.home import Home
from circle.node.invites import InviteHost, advertise_short, find_inviter, join, redeem_short
from circle.node.live import LiveSync, PeerStatus
from circle.node.relays import RelayRow
from circle.node.service import CircleService
from circle.tui.providers import InviteInfo
from circle.tui.sync_view import PathKind, PeerInfo

INVITE_MINUTES = 30


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


def peer_info(p: PeerStatus, loopback: bool = False) -> PeerInfo:
    # A peer that dialled us is reached directly, like one given with --peer.
    path: PathKind = "loopback" if loopback else ("lan" if p.path == "lan" else "direct")
    progress = None
    if p.progress is not None and p.progress[1] > 0:
        progress = min(1.0, p.progress[0] / p.progress[1])
    return PeerInfo(
        name=p.handle or p.member_id or p.key, path=path, address=p.key, last_seen=_ms(p.last_seen),
        in_sync=p.in_sync and p.has_all_ours if p.connected else None, progress=progress,
        # What the peer could not save is the first thing to say ("could not save our changes: the disk...").
        error=p.undelivered or p.error, online=p.connected,
        last_synced=_ms(p.last_seen) if p.in_sync else None,
    )


def relay_info(row: RelayRow) -> PeerInfo:
    host = urlsplit(row.url).hostname or row.url
    name = host if row.epoch == "current" else f"{host} (previous key)"
    return PeerInfo(
        name=name, path="relay", address=row.url, last_seen=_ms(row.last_seen),
        in_sync=(row.caught_up and row.pending == 0) if row.connected else None,
        error=row.error, online=row.connected,
        last_synced=_ms(row.last_seen) if row.caught_up else None,
    )


@dataclass
class LiveOptions:
    listen: tuple[str, int] = ("0.0.0.0", 0)
    peers: tuple[str, ...] = ()
    discovery: bool = True
    interfaces: tuple[str, ...] = ()
    invite_addresses: tuple[str, ...] = ()


@dataclass
class LiveLink:
    """The app's live sync: a source for the Sync tab and an invite provider."""

    options: LiveOptions = field(default_factory=LiveOptions)
    live: LiveSync | None = None
    host: InviteHost | None = None
    error: str | None = None
    loopback: bool = False
    _task: asyncio.Task[None] | None = None
    _adverts: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, svc: CircleService) -> None:
        """Called by the app when the board opens (on the loop)."""
        self.live = LiveSync(svc, listen=self.options.listen, manual_peers=self.options.peers,
                             discovery=self.options.discovery, interfaces=list(self.options.interfaces) or None,
                             follow_disk=False)  # the app's own timer follows the store
        self.host = InviteHost(svc)
        self._task = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        assert self.live is not None and self.host is not None
        try:
            await self.live.start()
            await self.host.start(self.options.listen[0], 0)
        except (CircleError, OSError, RuntimeError) as exc:
            self.error = f"live sync could not start: {exc}"

    async def _announce(self, short: ShortCode, port: int, expires_at: int) -> None:
        """Advertise a short code while it can still be answered (not used, not
        used up, not expired), then stop."""
        host = self.host
        disc = await advertise_short(short, port, list(self.options.interfaces) or None)
        try:
            while (host is not None and time.time() < expires_at and short.nameplate in host.short
                   and host.short_attempts_left(short.nameplate) > 0):
                await asyncio.sleep(1.0)
        finally:
            await disc.close()

    async def close(self) -> None:
        for task in self._adverts:
            task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self.host is not None:
            await self.host.close()
        if self.live is not None:
            with contextlib.suppress(Exception):
                await self.live.close()

    # --- SyncStatusSource ------------------------------------------------------

    def peers(self) -> list[PeerInfo]:
        if self.live is None:
            return []
        # A one-shot sync (`circle sync`) that dialled us and left is history,
        # not an offline peer: only peers we dial, or that are connected, stay.
        rows = [peer_info(p, self.loopback) for p in self.live.peers.values()
                if p.connected or p.path != "incoming" or p.error]
        if self.live.relays is not None:
            rows.extend(relay_info(r) for r in self.live.relays.status())
        if self.error:
            rows.append(PeerInfo(name="live sync", path="manual", address="-", error=self.error))
        return rows

    # --- InviteProvider ----------------------------------------------------------

    def create_invite(self) -> InviteInfo:
        if self.host is None or self.host.bound is None:
            raise CircleError(self.error or "live sync is still starting; try again in a moment")
        from circle.net.discovery import local_addresses

        host, port = self.host.bound
        addresses = self.options.invite_addresses or (
            tuple(local_addresses(port)) if host == "0.0.0.0" else (f"{host}:{port}",))
        svc = self.host.svc
        relays = tuple(r.url for r in svc.board.relays()) if hasattr(svc.board, "relays") else ()
        code, short = self.host.create_short(INVITE_MINUTES, addresses, relays)
        me = svc.board.view().members.get(svc.me)
        mine = fingerprint(me.sign_key) if me is not None else fingerprint(svc.home.identity.verify_key)
        if self.options.discovery and not self.loopback and not host.startswith("127."):  # where live sync announces
            self._adverts.append(asyncio.get_running_loop().create_task(
                self._announce(short, port, code.expires_at)))
        invite_host = self.host
        return InviteInfo(code.encode(), mine, code.expires_at * 1000, short.text,
                          lambda: invite_host.short_attempts_left(short.nameplate))

    def invite_used(self, code_text: str) -> tuple[str, str] | None:
        """(handle, safety number) of who joined with this code, once someone did."""
        if self.host is None:
            return None
        try:
            member_id = self.host.used.get(InviteCode.parse(code_text).invite_id)
        except CircleError:
            return None
        if member_id is None:
            return None
        m = self.host.svc.board.view().members.get(member_id)  # type: ignore[call-overload]
        return (m.handle, fingerprint(m.sign_key)) if m is not None else None

    def listening(self) -> list[str]:
        """Addresses peers can give as --peer to reach this device."""
        if self.live is None or self.live.bound is None:
            return []
        host, port = self.live.bound
        if host not in ("0.0.0.0", "::"):
            return [f"{host}:{port}"]
        from circle.net.discovery import local_addresses

        return list(local_addresses(port))


class LiveJoin:
    """JoinProvider: join with a code typed on the welcome screen."""

    async def join(self, home: Home, code: str, handle: str, zone: str) -> CircleService:
        if ShortCode.looks_short(code):  # found on the LAN by mDNS, traded for the long code
            short = ShortCode.parse(code)
            long_code = await redeem_short(short, await find_inviter(short, None))
        else:
            long_code = InviteCode.parse(code)
        result = await join(home, long_code, handle, zone)
        return result.service


class LoopbackDemo:
    """`circle demo`: the two simulated members dial you over loopback TCP and
    stay connected; their posts reach you through real encrypted sessions."""

    def __init__(self, demo: object) -> None:
        self.demo = demo
        self.link = LiveLink(LiveOptions(listen=("127.0.0.1", 0), discovery=False,
                                         invite_addresses=()), loopback=True)
        self.members: list[LiveSync] = []

    def attach(self, svc: CircleService) -> None:
        self.link.attach(svc)
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        assert self.link._task is not None
        await self.link._task
        live = self.link.live
        if live is None or live.bound is None:
            return
        for member in getattr(self.demo, "members", []):
            peer = LiveSync(member, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{live.bound[1]}"])
            await peer.start()
            self.members.append(peer)
