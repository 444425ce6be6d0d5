"""Two app instances on one circle: an edit in one shows up in the other."""

from __future__ import annotations

from pathlib import Path

from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.app import CircleApp
from circle.tui.demo import Demo
from circle.tui.table import RecordTable

SIZE = (120, 40)


def need_titles(app: CircleApp) -> list[str]:
    assert app.board_screen is not None
    t = app.board_screen.query_one("#needs-table", RecordTable)
    return [t.shown_row(i).cells[2] for i in range(len(t.shown))]


async def test_two_windows_on_one_home_follow_each_other(tmp_path: Path) -> None:
    """Same device, two processes' worth of services: the disk-follow path."""
    home = Home.create(tmp_path / "h", None)
    CircleService.create(home, "Shared", "kim")
    svc_a = CircleService.open(Home.open(tmp_path / "h", None))
    svc_b = CircleService.open(Home.open(tmp_path / "h", None))
    app_a = CircleApp(svc_a, refresh_interval=0.05)
    app_b = CircleApp(svc_b, refresh_interval=0.05)
    async with app_a.run_test(size=SIZE) as pa, app_b.run_test(size=SIZE) as pb:
        await pa.press("n")
        box = app_a.screen.query_one("#f-title")
        box.value = "Typed in window A"  # type: ignore[attr-defined]
        await pa.press("ctrl+s")
        await pa.pause()
        assert "Typed in window A" in need_titles(app_a)
        for _ in range(100):  # bounded wait for B's disk-follow timer; no timing asserted
            if "Typed in window A" in need_titles(app_b):
                break
            await pb.pause(0.05)
        assert "Typed in window A" in need_titles(app_b)


async def test_two_members_sync_through_the_demo_link(demo: Demo) -> None:
    """Two members on separate homes; changes move with the demo's sync function."""
    you, ana = demo.founder, demo.members[0]
    app_you = CircleApp(you)
    app_ana = CircleApp(ana)
    async with app_you.run_test(size=SIZE) as p_you, app_ana.run_test(size=SIZE) as p_ana:
        await p_ana.press("n")
        app_ana.screen.query_one("#f-title").value = "Posted by ana"  # type: ignore[attr-defined]
        await p_ana.press("ctrl+s")
        await p_ana.pause()
        assert "Posted by ana" not in need_titles(app_you)
        assert demo.step_sync() > 0
        await p_you.pause()
        assert "Posted by ana" in need_titles(app_you)
        # and back: claim it in "you", see the claim in ana's table
        t = app_you.board_screen.query_one("#needs-table", RecordTable)  # type: ignore[union-attr]
        rid = next(k for k in t.shown_keys if you.board.need(k).title == "Posted by ana")
        assert t.move_to_key(rid)
        await p_you.press("c")
        await p_you.pause()
        demo.step_sync()
        await p_ana.pause()
        t_ana = app_ana.board_screen.query_one("#needs-table", RecordTable)  # type: ignore[union-attr]
        row = next(t_ana.shown_row(i) for i in range(len(t_ana.shown)) if t_ana.shown_row(i).key == rid)
        assert row.cells[4] == "you" and row.cells[5] == "claimed"
