"""Snapshots of the main screens at 120x40, with a fixed clock, fixed ids and
keys and fixed sample data (see conftest). Update with `--snapshot-update`
after checking the new SVGs by eye."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from circle.crdt.gather_records import EventKind
from circle.crdt.gatherings import gatherings
from circle.crdt.times import _show_minute
from circle.tui.app import CircleApp
from circle.tui.demo import Demo
from circle.tui.providers import InviteInfo
from circle.tui.sync_view import CallbackSync, PeerInfo

from .conftest import FIXED_NOW

SIZE = (120, 40)

PEERS = [
    PeerInfo("ana", "lan", "10.0.0.5:7000", FIXED_NOW - 5000, True, online=True, last_synced=FIXED_NOW - 5000),
    PeerInfo("ben", "manual", "192.168.1.9:7000", FIXED_NOW - 1000, False, progress=0.4, online=True),
    PeerInfo("relay.example.org", "relay", "wss://relay.example.org", FIXED_NOW - 3_600_000, None,
             error="relay refused the upload: quota full"),
]


class FixedInvites:
    def create_invite(self) -> InviteInfo:
        return InviteInfo("circle1-7fq2-mx3k-9tdw-hb4e", "k3fa 9tqe 2mzx 7hbw", FIXED_NOW + 24 * 3_600_000)


def app_for(demo: Demo) -> CircleApp:
    return CircleApp(demo.founder, sync=CallbackSync(lambda: PEERS), invites=FixedInvites(),
                     refresh_interval=3600)


def test_needs_tab(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), terminal_size=SIZE)


def test_offers_tab(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["2", "down"], terminal_size=SIZE)


def test_tools_tab(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["3"], terminal_size=SIZE)


def test_members_tab(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["4"], terminal_size=SIZE)


def test_sync_tab(snap_compare: Any, demo: Demo) -> None:
    demo.founder.board.add_relay("wss://relay.example.org")  # listed, and the peer source reports on it
    demo.founder.board.add_relay("wss://backup.example.net")  # listed, not connected yet
    assert snap_compare(app_for(demo), press=["5"], terminal_size=SIZE)


def test_need_form(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["down", "e"], terminal_size=SIZE)


def test_invite_screen(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["4", "i"], terminal_size=SIZE)


def test_remove_confirmation(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["4", "d"], terminal_size=SIZE)


def test_filtered_needs(snap_compare: Any, demo: Demo) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await pilot.press("f", *"south")
        await pilot.pause()

    assert snap_compare(app_for(demo), run_before=run_before, terminal_size=SIZE)


def test_welcome_screen(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(CircleApp(home_path=tmp_path / "new-home"), terminal_size=SIZE)


# --- 80x24 (issue 11 item 5): what matters survives a small terminal -------------------

SMALL = (80, 24)


def test_needs_tab_80x24(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), terminal_size=SMALL)


def test_tools_tab_80x24(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["3"], terminal_size=SMALL)


def test_invite_screen_80x24(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["4", "i"], terminal_size=SMALL)


def test_search_80x24(snap_compare: Any, demo: Demo) -> None:
    assert snap_compare(app_for(demo), press=["slash", *"coat"], terminal_size=SMALL)


# --- skills and events (issue 12) --------------------------------------------------------

HOUR = 3_600_000


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Event times are shown in the reader's zone: pin it for the snapshots."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    _show_minute.cache_clear()
    yield
    monkeypatch.undo()
    time.tzset()
    _show_minute.cache_clear()


def gathering_demo(demo: Demo) -> Demo:
    start = FIXED_NOW - FIXED_NOW % (24 * HOUR) + 18 * HOUR  # 18:00 UTC on the fixed day
    you, ana, ben = demo.founder, demo.members[0], demo.members[1]
    ga, gb, gy = gatherings(ana.board), gatherings(ben.board), gatherings(you.board)
    ga.add_skill("Plumbing", "repair", teach=True, details="taps, leaks, radiators")
    gb.add_skill("Spanish conversation", "language", teach=True)
    gy.add_skill("Bike repair", "repair")
    (potluck,) = gy.add_event("Potluck", start + 24 * HOUR, 180, "community room", kind=EventKind.POTLUCK,
                              zone="north", details="Bring a dish if you can; nobody has to.")
    (pantry,) = ga.add_event("Food pantry", start + 48 * HOUR, 120, "church hall", kind=EventKind.OTHER)
    gy.add_shift(potluck, "set-up", start + 23 * HOUR, 60, 2)
    door = ga.add_shift(pantry, "door", start + 48 * HOUR, 120, 1)
    demo.step_sync()
    gy.rsvp(potluck, "yes")
    ga.rsvp(potluck, "maybe")
    gy.add_bring(potluck, "lentil soup")
    gy.take_shift(door)
    gb.take_shift(door)  # offline at the same time: over-full
    demo.step_sync()
    return demo


def test_skills_tab(snap_compare: Any, demo: Demo, utc: None) -> None:
    assert snap_compare(app_for(gathering_demo(demo)), press=["6"], terminal_size=SIZE)


def test_events_tab(snap_compare: Any, demo: Demo, utc: None) -> None:
    assert snap_compare(app_for(gathering_demo(demo)), press=["7"], terminal_size=SIZE)


def test_events_tab_80x24(snap_compare: Any, demo: Demo, utc: None) -> None:
    assert snap_compare(app_for(gathering_demo(demo)), press=["7", "down"], terminal_size=SMALL)


def test_event_form(snap_compare: Any, demo: Demo, utc: None) -> None:
    assert snap_compare(app_for(gathering_demo(demo)), press=["7", "e"], terminal_size=SIZE)
