"""Issue 10: in the app, a member's text is shown, never obeyed by the terminal."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.app import CircleApp
from circle.tui.table import RecordTable

EVIL = "\x1b]0;OWNED\x07\x1b[2J\x1b[31mFree food\x1b[0m \u202etxt.exe"
FORBIDDEN = ("\x1b", "\x07", "\u202e")


async def test_table_and_detail_show_controls_escaped(tmp_path: Path) -> None:
    svc = CircleService.create(Home.create(tmp_path / "h", None), "Tenants", "ro\u202e")
    svc.board.add_need(EVIL, details="first\n\x1b[2Jsecond", zone="\u202enorth")
    app = CircleApp(svc)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.board_screen is not None
        table = app.board_screen.query_one("#needs-table", RecordTable)
        row = table.shown_row(0)
        assert not any(ch in cell for cell in row.cells for ch in FORBIDDEN)
        assert "\\x1b]0;OWNED\\x07" in row.cells[2]
        for _ in range(100):
            if app.board_screen.details_settled:
                break
            await pilot.pause(0.02)
        await pilot.pause()
        detail = str(app.board_screen.query_one("#needs-detail", Static).render())
        assert "OWNED" in detail and not any(ch in detail for ch in FORBIDDEN)
        assert "first\n" in detail  # details keep their lines
        lines = [table.render_line(y).text for y in range(table.size.height)]
        assert not any(ch in line for line in lines for ch in FORBIDDEN)
