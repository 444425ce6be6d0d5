"""The app's alert banner, Alerts pane, missed check-ins and lock (Pilot).

Another member's edits reach bo's home the way `circle serve` puts them
there: appended to bo's store by another service on the same home, which the
app follows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from circle.crdt.defence import CLOCK_SKEW_MS, MINUTE_MS, AlertState, Defence
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.app import CircleApp
from circle.tui.defence import AlertBanner, DefenceScreen, LockedScreen
from circle.tui.screens import ConfirmScreen, HelpScreen, PassphraseScreen
from factories import member_homes

SIZE = (120, 40)
PASS = "correct horse battery"


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def deliver(src: CircleService, dest_home: Path, passphrase: str | None = None) -> None:
    """What a sync process does: ana's changes appended to bo's store."""
    other = CircleService.open(Home.open(dest_home, passphrase))
    gate = getattr(src, "gate", None)  # with signed changes (issue 9), the proofs travel too
    if gate is None:
        other.apply_remote(src.doc.changes_since([]))
    else:
        other.apply_remote(src.doc.changes_since([]), gate.proofs_since(src.doc, []))


async def wait_for(pilot, cond, tries: int = 100) -> None:  # type: ignore[no-untyped-def]
    for _ in range(tries):  # bounded wait; no timing asserted
        if cond():
            return
        await pilot.pause(0.05)
    assert cond()


def banner(app: CircleApp) -> AlertBanner | None:
    found = app.screen.query(AlertBanner)
    return found.first() if found else None


async def test_alert_banner_stays_until_acknowledged_and_rings_once(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    ana = CircleService.open(Home.open(a_path, None))
    bo = CircleService.open(Home.open(b_path, None))
    app = CircleApp(bo, refresh_interval=0.1)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.6)
        b = banner(app)
        assert b is None or not b.display
        rid = Defence(ana.board).raise_alert("Two vans at 5th & Main", zone="north")
        deliver(ana, b_path)
        await wait_for(pilot, lambda: (x := banner(app)) is not None and bool(x.display))
        b = banner(app)
        assert b is not None and "Two vans at 5th & Main" in str(b.render())
        assert bells == [1]
        await pilot.pause(1.2)  # several polls later: still shown, no second bell
        assert b.display and bells == [1]
        await pilot.press("exclamation_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, DefenceScreen))
        await pilot.press("c")  # bo confirms the selected alert
        await pilot.pause(0.1)
        assert Defence(bo.board).alert(rid).state == AlertState.CONFIRMED
        await pilot.press("escape")
        await pilot.pause(0.6)
        b = banner(app)
        assert b is not None and not b.display
        assert bells == [1]


async def test_missed_checkin_is_raised_on_the_buddys_app(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    clock = Clock(1_800_000_000_000)
    ana = CircleService.open(Home.open(a_path, None), clock=clock)
    bo = CircleService.open(Home.open(b_path, None), clock=clock)
    cid = Defence(ana.board).start_checkin("Copwatch, 5th precinct", [bo.me], every_ms=30 * MINUTE_MS)
    deliver(ana, b_path)
    app = CircleApp(bo, refresh_interval=0.1)
    app.bell = lambda: None  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.6)
        b = banner(app)
        assert b is None or not b.display
        clock.now += 30 * MINUTE_MS + CLOCK_SKEW_MS + 1  # the buddy's own (fixed) clock passes the deadline
        await wait_for(pilot, lambda: (x := banner(app)) is not None and bool(x.display))
        text = str(banner(app).render())  # type: ignore[union-attr]
        assert "MISSED CHECK-IN: ana missed their" in text and "Copwatch, 5th precinct" in text
        assert app.defence_ui.pending and cid in next(iter(app.defence_ui.pending))


async def test_help_lists_pinned_resources_first(tmp_path: Path) -> None:
    (a_path,) = member_homes(tmp_path, ["ana"])
    ana = CircleService.open(Home.open(a_path, None))
    Defence(ana.board).add_resource("Legal support hotline", "555-0100")
    app = CircleApp(ana)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        lines = app.screen.lines  # type: ignore[attr-defined]
        assert lines[0] == ("", "Pinned resources") and "Legal support hotline" in lines[1][1]


async def test_circle_lock_from_another_process_locks_the_running_app(tmp_path: Path) -> None:
    (a_path,) = member_homes(tmp_path, ["ana"], passphrase=PASS)
    app = CircleApp(home_path=a_path, passphrase=PASS)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None and app.board_screen is not None, tries=200)
        svc = app.service
        assert svc is not None
        subprocess.run([sys.executable, "-m", "circle", "--home", str(a_path), "lock"], check=True,
                       capture_output=True, timeout=60)
        # The screen is pushed before its input is mounted: wait for the field a person types into.
        await wait_for(pilot, lambda: isinstance(app.screen, PassphraseScreen)
                       and bool(app.screen.query("#passphrase")))
        assert app.service is None and app.board_screen is None
        assert svc.config.epoch_keys == {} and svc.home.data_key == b""
        app.screen.query_one("#passphrase").value = PASS  # type: ignore[attr-defined]
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.service is not None and app.board_screen is not None, tries=200)
        # The lock key: asks once, then locks.
        await pilot.press("ctrl+l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#confirm")
        await wait_for(pilot, lambda: isinstance(app.screen, PassphraseScreen))
        assert app.service is None


async def test_lock_without_passphrase_says_the_files_stay_readable(tmp_path: Path) -> None:
    (a_path,) = member_homes(tmp_path, ["ana"])
    app = CircleApp(home_path=a_path)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, tries=200)
        from circle.node.panic import lock

        lock(a_path)
        await wait_for(pilot, lambda: isinstance(app.screen, LockedScreen))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.service is not None, tries=200)
