"""The Sync tab and the status bar's view of sync, against a small interface.

The sync layer (LAN sessions, relays) is not wired to the service yet. The
TUI only needs to *read* its state, so it depends on `SyncStatusSource`; the
lead implements it over the real sessions. Until then `NoSync` reports no
peers, and the demo reports its simulated members.

Contract for implementers: `peers()` is called on the event-loop thread about
once a second and must return quickly (no I/O, no document access): return a
snapshot that the sync tasks keep up to date.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from circle.crdt.model import Millis
from circle.tui.rows import age
from circle.tui.table import Column, Row, make_row

PathKind = Literal["lan", "relay", "direct", "manual", "loopback"]


@dataclass(frozen=True)
class PeerInfo:
    """One peer or relay as the Sync tab shows it.

    - name: a member handle for peers, the host for relays.
    - path: how we reach it: "lan" (mDNS), "relay", "manual" (host:port), "loopback" (demo).
    - last_seen: when we last heard from it (ms since epoch), None if never.
    - in_sync: True when it has all our changes (and we have all of its);
      None when unknown.
    - progress: 0.0-1.0 while a sync is running, else None.
    - error: the last problem in plain words (e.g. "relay refused: quota full"), else None.
    - online: a live session is open right now.
    """

    name: str
    path: PathKind
    address: str
    last_seen: Millis | None = None
    in_sync: bool | None = None
    progress: float | None = None
    error: str | None = None
    online: bool = False
    last_synced: Millis | None = None  # when a sync with it last completed


class SyncStatusSource(Protocol):
    def peers(self) -> list[PeerInfo]: ...


class NoSync:
    """Default: live sync is not wired in."""

    def peers(self) -> list[PeerInfo]:
        return []


SYNC_COLUMNS = [Column("PEER / RELAY", 18), Column("PATH", 8), Column("ADDRESS", 22),
                Column("LAST SEEN", 10), Column("STATE", 0)]


def peer_state(p: PeerInfo) -> str:
    if p.error:
        return f"problem: {plain_error(p.error)}"
    if p.progress is not None:
        return f"syncing {int(p.progress * 100)}%"
    if p.in_sync is True:
        return "has all our changes"
    if p.in_sync is False:
        return "behind: changes still to send"
    return "unknown" if p.online else "offline"


_EPOCH = re.compile(r"(sealed |encrypted )?under (key )?epoch \d+")
_LONG_HEX = re.compile(r"\b[0-9a-f]{16,}\b")


def plain_error(text: str) -> str:
    """Errors in members' words: no epoch numbers, no long ids."""
    text = _EPOCH.sub("sealed with a circle key this device does not have", text)
    return _LONG_HEX.sub("…", text)


def peer_row(p: PeerInfo, now: Millis) -> Row:
    seen = "never" if p.last_seen is None else age(p.last_seen, now)
    if p.error:
        tone = "bad"
    elif not p.online:
        tone = "dim"
    elif p.in_sync:
        tone = "good"
    else:
        tone = "warn"
    return make_row(f"{p.path}:{p.address}:{p.name}",
                    (p.name, p.path, p.address, seen, peer_state(p)), tone)


def summary(peers: list[PeerInfo], now: Millis) -> tuple[int, str]:
    """(online peer count, 'last sync' text) for the status bar."""
    online = sum(1 for p in peers if p.online and p.path != "relay")  # a relay is not a member's device
    done = [p.last_synced for p in peers if p.last_synced is not None]
    last = "never" if not done else age(max(done), now) + " ago"
    return online, last


@dataclass
class CallbackSync:
    """Adapter: any zero-argument callable returning PeerInfo list."""

    fn: Callable[[], list[PeerInfo]]

    def peers(self) -> list[PeerInfo]:
        return self.fn()


RELAY_COLUMNS = [Column("RELAY URL", 40), Column("ADDED BY", 12), Column("ADDED", 6), Column("CONNECTION", 0)]


def relay_row(url: str, added_by: str, added_at: Millis, live: PeerInfo | None, now: Millis) -> Row:
    """One relay listed in the document; `live` is what live sync reports for it
    (None when live sync has not opened it: not running, or just added)."""
    if live is None:
        return make_row(url, (url, added_by, age(added_at, now), "not connected yet"), "dim")
    tone = "bad" if live.error else "good" if live.online else "dim"
    return make_row(url, (url, added_by, age(added_at, now), peer_state(live)), tone)
