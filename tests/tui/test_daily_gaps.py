"""Pilot tests for the daily-use actions that used to need the CLI: tool state
and loss, the relay list, export and import, and the needs status filter."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

from textual.widgets import Checkbox, Input, Select, Static

from circle.crdt.model import Availability, LoanStatus, NeedStatus, ToolState
from circle.tui.app import HELP_LINES, BoardScreen, CircleApp, import_report_text
from circle.tui.demo import Demo
from circle.tui.live import LiveLink, LiveOptions
from circle.tui.screens import ConfirmScreen, FormScreen, InfoScreen
from factories import member_homes
from livehelp import open_service

from .test_flows import SIZE, board_of, demo_app, fill, select_row, table, text_of, titles


def form_error(app: CircleApp) -> str:
    return text_of(app.screen.query_one("#form-error", Static))


def notices(app: CircleApp) -> list[str]:
    return [n.message for n in app._notifications]


# --- tools: state and loss --------------------------------------------------------


async def test_set_tool_state_and_mark_lost_with_confirmation(demo: Demo) -> None:
    app = demo_app(demo)
    board = demo.founder.board
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        ladder = await select_row(pilot, app, "tools", "Ladder", col=1)
        await pilot.press("s")
        assert isinstance(app.screen, FormScreen)
        state = app.screen.query_one("#f-state", Select)
        assert state.value == "active"
        state.value = "maintenance"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert board.tool(ladder).state == ToolState.MAINTENANCE
        assert table(app, "tools").shown_row(table(app, "tools").cursor).cells[3].startswith("maintenance")

        drill = await select_row(pilot, app, "tools", "Cordless drill", col=1)  # on loan to ana
        loan = board.tool(drill).current_loan
        assert loan is not None
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = text_of(app.screen.query_one("#confirm-body", Static))
        assert "missing for every member" in body and "ana's loan" in body and "as lost" in body
        await pilot.press("escape")  # cancel: nothing changes
        await pilot.pause()
        assert board.tool(drill).state == ToolState.ACTIVE
        await pilot.press("l")
        await pilot.pause()
        assert await pilot.click("#confirm")
        await pilot.pause()
        tool = board.tool(drill)
        assert tool.state == ToolState.MISSING and tool.availability == Availability.MISSING
        assert tool.current_loan is None
        assert board.view().loans[loan.id].status == LoanStatus.LOST
        assert "missing" in table(app, "tools").shown_row(table(app, "tools").cursor).cells[3]
        await pilot.press("l")  # twice: refused with a sentence, no dialog
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert any("already marked missing" in m for m in notices(app))

        await pilot.press("s")  # it turned up: back to active
        assert isinstance(app.screen, FormScreen)
        assert app.screen.query_one("#f-state", Select).value == "missing"
        app.screen.query_one("#f-state", Select).value = "active"
        await pilot.press("ctrl+s")
        await pilot.pause()
        tool = board.tool(drill)
        assert tool.state == ToolState.ACTIVE
        assert tool.availability == Availability.HELD and tool.ready_for == demo.founder.me  # our hold is next


# --- needs: status filter -------------------------------------------------------------


async def test_needs_status_filter_cycles_through_every_status(demo: Demo) -> None:
    board = demo.founder.board
    needs = {n.title: n.id for n in board.needs("all")}
    met = needs["Groceries for a week"]
    board.met_need(met)
    withdrawn = needs["Someone to walk the dog"]  # the founder's own
    board.withdraw_need(withdrawn)
    claimed = needs["Ride to the clinic on Thursday"]
    board.claim_need(claimed)
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        status = board_of(app).query_one("#needs-status", Static)
        assert "showing: active" in text_of(status)
        assert set(table(app, "needs").shown_keys) == {n.id for n in board.needs("active")}
        assert met not in table(app, "needs").shown_keys

        seen: dict[str, set[str]] = {}
        for expected in ("open", "claimed", "met", "withdrawn", "expired", "all", "active"):
            await pilot.press("s")
            await pilot.pause()
            assert board_of(app).tabs["needs"].need_status  # type: ignore[attr-defined] == expected
            assert f"showing: {expected}" in text_of(status)
            seen[expected] = set(table(app, "needs").shown_keys)
            if expected == "expired":
                assert "No expired needs" in table(app, "needs").empty_text
        assert seen["met"] == {met}
        assert seen["withdrawn"] == {withdrawn}
        assert claimed in seen["claimed"] and claimed not in seen["open"]
        assert seen["open"] and all(board.need(k).status == NeedStatus.OPEN for k in seen["open"])
        assert seen["expired"] == set()
        assert seen["all"] == {n.id for n in board.needs("all")}
        assert seen["active"] == seen["open"] | seen["claimed"]

        # The palette's per-status entries switch to the Needs tab first.
        await pilot.press("3")
        board_of(app).run_command("need_status('withdrawn')")
        await pilot.pause()
        await pilot.pause()
        assert board_of(app).active_tab == "needs"
        assert table(app, "needs").shown_keys == [withdrawn]
        await pilot.press("a")  # all/active still toggles
        await pilot.pause()
        assert board_of(app).tabs["needs"].need_status  # type: ignore[attr-defined] == "all"
        assert set(table(app, "needs").shown_keys) == seen["all"]


# --- sync: the relay list ---------------------------------------------------------------


async def test_add_and_remove_relays_with_errors_in_the_form(demo: Demo) -> None:
    app = demo_app(demo)
    board = demo.founder.board
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await pilot.pause()
        relays = table(app, "relays")
        assert relays.shown_keys == [] and "Press a to add one" in relays.empty_text
        await pilot.press("d")  # nothing to remove
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert any("lists no relays" in m for m in notices(app))

        await pilot.press("a")
        assert isinstance(app.screen, FormScreen)
        await fill(pilot, "#f-url", "https://relay.example.org")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen), "a bad URL keeps the form open"
        assert "ws:// or wss://" in form_error(app)
        await fill(pilot, "#f-url", "wss://Relay.Example.org")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert [r.url for r in board.relays()] == ["wss://relay.example.org/"]
        row = relays.shown_row(0)
        assert row.cells[0] == "wss://relay.example.org/" and row.cells[1] == "you"
        assert row.cells[3] == "not connected yet"

        await pilot.press("a")
        await fill(pilot, "#f-url", "wss://relay.example.org/")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen) and "already listed" in form_error(app)
        # Plain ws:// to another machine would carry the mailbox token in clear:
        # refused by the CLI's rule, nothing listed.
        for insecure in ("ws://relay.example.org", "ws://192.168.1.20:7400", "ws://localhost.example.org"):
            await fill(pilot, "#f-url", insecure)
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, FormScreen) and "use wss://" in form_error(app), insecure
            assert [r.url for r in board.relays()] == ["wss://relay.example.org/"]
        await fill(pilot, "#f-url", "ws://127.0.0.1:9/")
        await pilot.press("enter")
        await pilot.pause()
        assert relays.shown_keys == ["ws://127.0.0.1:9/", "wss://relay.example.org/"]

        relays.focus()
        await pilot.press("end")
        await pilot.press("d")
        assert isinstance(app.screen, FormScreen)
        assert app.screen.query_one("#f-url", Select).value == "wss://relay.example.org/"  # the highlighted one
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert [r.url for r in board.relays()] == ["ws://127.0.0.1:9/"]
        assert relays.shown_keys == ["ws://127.0.0.1:9/"]
        assert board.relays(include_removed=True)[1].removed_by == demo.founder.me


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_first_relay_added_in_the_app_starts_live_relays(tmp_path: Path) -> None:
    (path,) = member_homes(tmp_path, ["ana"])
    link = LiveLink(LiveOptions(listen=("127.0.0.1", 0), discovery=False))
    app = CircleApp(open_service(path), sync=link, invites=link, on_service=link.attach)
    url = f"ws://127.0.0.1:{_closed_port()}/"
    try:
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(100):  # bounded wait for the listener
                if link.live is not None and link.live.bound is not None:
                    break
                await pilot.pause(0.05)
            assert link.live is not None and link.live.bound is not None
            assert link.live.relays is None  # no relay listed: none started
            await pilot.press("5", "a")
            await fill(pilot, "#f-url", url)
            await pilot.press("enter")
            await pilot.pause()
            for _ in range(100):
                if link.live.relays is not None and link.live.relays.status():
                    break
                await pilot.pause(0.05)
            assert link.live.relays is not None, "adding the first relay must start relay sync"
            assert [r.url for r in link.live.relays.status()] == [url]
            board_of(app).update_sync()
            assert table(app, "relays").shown_row(0).cells[3] != "not connected yet"
            sync_rows = [table(app, "sync").shown_row(i) for i in range(len(table(app, "sync").shown))]
            assert [r.key for r in sync_rows if r.cells[1] == "relay"] == [f"relay:{url}:127.0.0.1"]
            await pilot.press("d")  # removing it from the list closes the session
            await pilot.press("ctrl+s")
            await pilot.pause()
            for _ in range(100):
                if not link.live.relays.status():
                    break
                await pilot.pause(0.05)
            assert link.live.relays.status() == []
            assert table(app, "relays").shown_keys == []
    finally:
        await link.close()


# --- export and import ----------------------------------------------------------------


async def test_export_json_and_csv_then_import_with_report(demo: Demo, tmp_path: Path) -> None:
    app = demo_app(demo)
    board = demo.founder.board
    out = tmp_path / "out.json"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("E")
        assert isinstance(app.screen, FormScreen)
        default = app.screen.query_one("#f-path", Input).value
        assert default.startswith("~/circle-export-2025-06-1") and default.endswith(".json")
        await fill(pilot, "#f-path", str(tmp_path / "missing-dir" / "x.json"))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "does not exist" in form_error(app)
        await fill(pilot, "#f-path", str(out))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        data = json.loads(out.read_text())
        assert data["format"] == "circle-export"
        assert {n["title"] for n in data["needs"]} == {n.title for n in board.needs("all")}
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert any("not encrypted" in m for m in notices(app))

        await pilot.press("E")  # the same file again: refused unless "replace" is ticked
        await fill(pilot, "#f-path", str(out))
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen) and "already exists" in form_error(app)
        app.screen.query_one("#f-format", Select).value = "csv:needs"
        app.screen.query_one("#f-overwrite", Checkbox).value = True
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert out.read_text().startswith("id,title,status,urgency,")

        # Import: a file with one new need and everything else already here.
        extra = dict(data["needs"][0], id="importedneed1", title="Imported need")
        data["needs"].append(extra)
        src = tmp_path / "in.json"
        src.write_text(json.dumps(data))
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")

        await pilot.press("I")
        assert isinstance(app.screen, FormScreen)
        await fill(pilot, "#f-path", str(tmp_path / "nope.json"))
        await pilot.press("enter")
        await pilot.pause()
        assert "there is no file" in form_error(app)
        await fill(pilot, "#f-path", str(bad))
        await pilot.press("enter")
        await pilot.pause()
        assert "not a circle export" in form_error(app)
        await fill(pilot, "#f-path", str(src))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, InfoScreen)
        report = text_of(app.screen.query_one("#info-body", Static))
        assert "1 record added" in report
        assert f"needs: 1 added, {len(data['needs']) - 1} already present" in report
        assert "members: 0 not imported" not in report and "members:" in report
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert board.need("importedneed1").title == "Imported need"
        assert "Imported need" in titles(app, "needs")


def test_import_report_says_when_nothing_is_new() -> None:
    text = import_report_text({"needs": {"added": 0, "already_present": 3},
                               "members": {"added": 0, "not_imported": 2}})
    assert text.startswith("Nothing new")
    assert "needs: 0 added, 3 already present" in text and "members: 2 not imported" in text


def test_help_lists_the_new_actions() -> None:
    helps = {what: key for key, what in HELP_LINES}
    assert helps["Export every record to JSON, or to CSV files"] == "E"
    assert helps["Import records from a circle JSON export or a myTurn/Circulate item CSV"] == "I"
    assert helps["Mark the selected tool lost and its open loans lost (asks first)"] == "l"
    assert helps["Add a relay (wss://; ws:// only for one on this machine) to this circle"] == "a"
    assert any(what.startswith("Show needs of the next status") for what in helps)
