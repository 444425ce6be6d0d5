"""Pilot tests: every flow a member uses, driven through keys and clicks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Select, Static

from circle.crdt.model import Availability, NeedStatus, OfferStatus, Urgency
from circle.node.circles import pick
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.app import BoardScreen, CircleApp
from circle.tui.demo import Demo
from circle.tui.providers import InviteInfo
from circle.tui.screens import (
    CircleSwitchScreen,
    ConfirmScreen,
    FormScreen,
    HelpScreen,
    InviteScreen,
    PassphraseScreen,
    WelcomeScreen,
)
from circle.tui.sync_view import CallbackSync, PeerInfo
from circle.tui.table import RecordTable

from .conftest import FIXED_NOW, Clock

SIZE = (120, 40)


def board_of(app: CircleApp) -> BoardScreen:
    assert app.board_screen is not None
    return app.board_screen


def table(app: CircleApp, name: str) -> RecordTable:
    return board_of(app).query_one(f"#{name}-table", RecordTable)


def titles(app: CircleApp, name: str, col: int = 2) -> list[str]:
    t = table(app, name)
    return [t.shown_row(i).cells[col] for i in range(len(t.shown))]


def text_of(widget: Static) -> str:
    return str(widget.render())


async def settle(pilot: Pilot[Any], app: CircleApp) -> None:
    """Wait (bounded) for the debounced side panel to catch up."""
    for _ in range(200):
        if board_of(app).details_settled:
            break
        await pilot.pause(0.02)
    await pilot.pause()


async def select_row(pilot: Pilot[Any], app: CircleApp, name: str, key_text: str, col: int = 2) -> str:
    """Move the cursor with the arrow keys to the row whose column holds key_text."""
    t = table(app, name)
    t.focus()
    await pilot.press("home")
    for _ in range(len(t.shown)):
        if key_text in t.shown_row(t.cursor).cells[col]:
            await settle(pilot, app)
            key = t.cursor_key
            assert key is not None
            return key
        await pilot.press("down")
    raise AssertionError(f"no row with {key_text!r} in {name}")


async def fill(pilot: Pilot[Any], selector: str, text: str) -> None:
    box = pilot.app.screen.query_one(selector, Input)
    box.focus()
    box.value = text
    await pilot.pause()


def demo_app(demo: Demo, **kw: Any) -> CircleApp:
    return CircleApp(demo.founder, **kw)


# --- first run and passphrase -------------------------------------------------


async def test_first_run_creates_a_circle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    app = CircleApp(home_path=home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen)
        assert app.screen.query_one("#join").disabled  # joining needs a JoinProvider
        assert "invite feature" in text_of(app.screen.query_one("#join-unavailable", Static))
        await fill(pilot, "#w-name", "Elm Street")
        await fill(pilot, "#w-handle", "robin")
        await fill(pilot, "#w-pass", "short")
        await fill(pilot, "#w-pass2", "short")
        await pilot.click("#create")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, WelcomeScreen), "a too-short passphrase must be refused"
        assert "at least 12" in text_of(app.screen.query_one("#welcome-error", Static))
        await fill(pilot, "#w-pass", "")
        await fill(pilot, "#w-pass2", "")
        await pilot.click("#create")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert app.service is not None and app.service.board.name == "Elm Street"
        status = text_of(app.screen.query_one("#status-bar", Static))
        assert "Elm Street" in status and "you: robin" in status and "NOT encrypted" in status
    assert Home.exists(home)


async def test_first_run_refuses_mismatched_passphrases(tmp_path: Path) -> None:
    app = CircleApp(home_path=tmp_path / "home")
    async with app.run_test(size=SIZE) as pilot:
        await fill(pilot, "#w-name", "Elm")
        await fill(pilot, "#w-handle", "robin")
        await fill(pilot, "#w-pass", "correct horse")
        await fill(pilot, "#w-pass2", "correct horsf")
        await pilot.click("#create")
        await pilot.pause()
        assert "do not match" in text_of(app.screen.query_one("#welcome-error", Static))
        assert not Home.exists(tmp_path / "home")


async def test_join_uses_the_join_provider(tmp_path: Path, deterministic: None) -> None:
    calls: list[tuple[str, str]] = []

    class FakeJoin:
        async def join(self, home: Home, code: str, handle: str, zone: str) -> CircleService:
            calls.append((code, handle))
            return CircleService.create(home, "Joined Circle", handle)

    app = CircleApp(home_path=tmp_path / "home", join=FakeJoin())
    async with app.run_test(size=SIZE) as pilot:
        assert not app.screen.query("#join-unavailable")
        await fill(pilot, "#j-code", "CODE-123")
        await fill(pilot, "#j-handle", "sam")
        await pilot.click("#join")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert calls == [("CODE-123", "sam")]
        assert isinstance(app.screen, BoardScreen)


async def test_passphrase_prompt_retries_until_right(tmp_path: Path) -> None:
    path = tmp_path / "home"
    home = Home.create(path, "correct horse battery")
    CircleService.create(home, "Locked Circle", "kim")
    app = CircleApp(home_path=path)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, PassphraseScreen)
        await pilot.press(*"wrong passphrase", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, PassphraseScreen)
        assert "wrong passphrase" in text_of(app.screen.query_one("#pass-error", Static))
        await pilot.press(*"correct horse battery", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert "encrypted at rest" in text_of(app.screen.query_one("#status-bar", Static))
        assert "NOT" not in text_of(app.screen.query_one("#status-bar", Static))


async def test_several_circles_open_a_switcher_then_remember_the_choice(tmp_path: Path) -> None:
    """Issue 11 item 6: no dead end. The switcher opens, the choice opens the
    board and becomes the default; C switches; a name prefix selects."""
    home = Home.create(tmp_path / "h", None)
    CircleService.create(home, "Tool Library", "a")
    CircleService.create(home, "Tenants Union", "a")
    app = CircleApp(home_path=tmp_path / "h")
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, CircleSwitchScreen)
        assert app.screen.query_one("#circle-list", OptionList).option_count == 2
        await pilot.press("down", "enter")  # sorted by name: Tenants Union, Tool Library
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert app.service is not None and app.service.board.name == "Tool Library"
        await pilot.press("C")
        await pilot.pause()
        assert isinstance(app.screen, CircleSwitchScreen)
        await pilot.press("home", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert app.service.board.name == "Tenants Union"
        assert "Tenants Union" in text_of(app.screen.query_one("#status-bar", Static))
    # The last circle opened is the default next time; a prefix also selects.
    again = Home.open(tmp_path / "h", None)
    assert CircleService.open(again, pick(again, None)).board.name == "Tenants Union"
    assert CircleService.open(again, pick(again, "tool")).board.name == "Tool Library"


# --- needs ---------------------------------------------------------------------


async def test_add_and_edit_a_need(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        assert isinstance(app.screen, FormScreen)
        await fill(pilot, "#f-title", "Firewood for the stove")
        app.screen.query_one("#f-urgency", Select).value = Urgency.NOW.value
        await fill(pilot, "#f-zone", "west")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert "Firewood for the stove" in titles(app, "needs")
        rid = table(app, "needs").cursor_key
        assert rid is not None
        need = demo.founder.board.need(rid)
        assert need.title == "Firewood for the stove" and need.urgency == Urgency.NOW and need.zone == "west"

        await pilot.press("e")
        assert isinstance(app.screen, FormScreen)
        assert app.screen.query_one("#f-title", Input).value == "Firewood for the stove"
        await fill(pilot, "#f-title", "Dry firewood")
        await pilot.press("enter")  # Enter moves to the next field; it does not save half a form
        assert isinstance(app.screen, FormScreen) and app.screen.focused.id == "f-details"  # type: ignore[union-attr]
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert demo.founder.board.need(rid).title == "Dry firewood"
        assert "Dry firewood" in titles(app, "needs")
        assert "Firewood for the stove" not in titles(app, "needs")


async def test_form_errors_stay_on_the_form(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        before = len(demo.founder.board.needs("all"))
        await pilot.press("n")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        assert "title must not be empty" in text_of(app.screen.query_one("#form-error", Static))
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert len(demo.founder.board.needs("all")) == before


async def test_claim_then_met(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        rid = await select_row(pilot, app, "needs", "Groceries")
        await pilot.press("c")
        await pilot.pause()
        need = demo.founder.board.need(rid)
        assert demo.founder.me in need.claims and need.status == NeedStatus.CLAIMED
        row = table(app, "needs").shown_row(table(app, "needs").cursor)
        assert row.key == rid and "you" in row.cells[4]
        await pilot.press("c")  # claiming twice is refused, with a sentence
        await pilot.pause()
        assert any("already claimed" in n.message for n in app._notifications)
        await pilot.press("m")
        await pilot.pause()
        assert demo.founder.board.need(rid).status == NeedStatus.MET
        assert rid not in table(app, "needs").shown_keys  # active list hides met needs
        await pilot.press("a")
        await pilot.pause()
        assert rid in table(app, "needs").shown_keys


async def test_withdraw_only_own_need(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        other = await select_row(pilot, app, "needs", "Groceries")  # ben's
        await pilot.press("w")
        await pilot.pause()
        assert demo.founder.board.need(other).status != NeedStatus.WITHDRAWN
        assert any("only the member who posted" in n.message for n in app._notifications)
        mine = await select_row(pilot, app, "needs", "walk the dog")  # posted by "you"
        await pilot.press("w")
        await pilot.pause()
        assert demo.founder.board.need(mine).status == NeedStatus.WITHDRAWN


async def test_filter_narrows_and_restores(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        everything = table(app, "needs").shown_keys
        assert len(everything) == 5
        await pilot.press("f")  # f filters the tab; / searches everything
        assert isinstance(app.focused, Input)
        await pilot.press(*"dog")
        await pilot.pause()
        assert titles(app, "needs") == ["Someone to walk the dog"]
        await pilot.press("backspace", "backspace", "backspace", *"south")  # zone matches too
        await pilot.pause()
        assert sorted(titles(app, "needs")) == ["Groceries for a week", "Winter coat, size M"]
        await pilot.press(*" zzz")
        await pilot.pause()
        assert titles(app, "needs") == []
        app.focused.value = ""  # type: ignore[union-attr]
        await pilot.pause()
        assert table(app, "needs").shown_keys == everything
        await pilot.press("escape")
        assert isinstance(app.focused, RecordTable)


async def test_match_panel_for_needs_and_offers(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await select_row(pilot, app, "needs", "Ride to the clinic")
        await pilot.pause()
        panel = text_of(board_of(app).query_one("#needs-match", Static))
        assert "Car rides on weekdays" in panel and "category transport" in panel
        await pilot.press("2")
        await pilot.pause()
        await select_row(pilot, app, "offers", "Soup", col=1)
        await pilot.pause()
        panel = text_of(board_of(app).query_one("#offers-match", Static))
        assert "Groceries for a week" in panel and "tags groceries" in panel


async def test_pause_and_resume_own_offer(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        rid = await select_row(pilot, app, "offers", "Car rides", col=1)
        await pilot.press("p")
        await pilot.pause()
        assert demo.founder.board.offer(rid).status == OfferStatus.PAUSED
        assert table(app, "offers").shown_row(table(app, "offers").cursor).cells[6] == "paused"
        await pilot.press("p")
        await pilot.pause()
        assert demo.founder.board.offer(rid).status == OfferStatus.OPEN


# --- tools -----------------------------------------------------------------------


async def test_borrow_return_hold(demo: Demo) -> None:
    app = demo_app(demo)
    board = demo.founder.board
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        ladder = await select_row(pilot, app, "tools", "Ladder", col=1)
        await pilot.press("b")
        await pilot.pause()
        tool = board.tool(ladder)
        assert tool.availability == Availability.ON_LOAN and tool.current_loan is not None
        assert tool.current_loan.borrower == demo.founder.me
        assert "on loan: you" in table(app, "tools").shown_row(table(app, "tools").cursor).cells[3]
        await pilot.press("r")
        assert isinstance(app.screen, FormScreen)
        app.screen.query_one("#f-condition", Select).value = "needs-repair"
        await pilot.press("ctrl+s")
        await pilot.pause()
        tool = board.tool(ladder)
        assert tool.availability == Availability.AVAILABLE and tool.condition.value == "needs-repair"

        drill = await select_row(pilot, app, "tools", "Cordless drill", col=1)
        assert [h.member for h in board.tool(drill).queue] == [demo.founder.me]  # sample data
        await pilot.press("u")
        await pilot.pause()
        assert board.tool(drill).queue == ()
        await pilot.press("h")
        await settle(pilot, app)
        assert [h.member for h in board.tool(drill).queue] == [demo.founder.me]
        detail = text_of(board_of(app).query_one("#tools-detail", Static))
        assert "Queue" in detail and "1. you" in detail
        await pilot.press("b")  # on loan to ana: refused with a sentence
        await pilot.pause()
        assert any("on loan to someone else" in n.message for n in app._notifications)


async def test_overdue_is_highlighted(tmp_path: Path, deterministic: None) -> None:
    from circle.tui.demo import build_demo

    clock = Clock()
    d = build_demo(tmp_path / "d", clock=clock)
    clock.advance_days(10)  # the drill was lent for 7 days
    app = CircleApp(d.founder)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await select_row(pilot, app, "tools", "Cordless drill", col=1)
        row = table(app, "tools").shown_row(table(app, "tools").cursor)
        assert row.tone == "bad" and row.cells[3].startswith("OVERDUE ana")
        assert "1 overdue" in text_of(board_of(app).query_one("#status-bar", Static))
    d.close()


async def test_loan_conflict_shown_and_resolved(demo: Demo) -> None:
    you, ben = demo.founder, demo.members[1]
    ladder = you.board.tools(search="ladder")[0].id
    you.board.borrow(ladder)
    ben.board.borrow(ladder)  # offline, at the same time
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        demo.step_sync()
        await pilot.pause()
        await pilot.press("3")
        await select_row(pilot, app, "tools", "Ladder", col=1)
        await settle(pilot, app)
        assert "CONFLICT x2" in table(app, "tools").shown_row(table(app, "tools").cursor).cells[3]
        assert "CONFLICT: 2 loans" in text_of(board_of(app).query_one("#tools-detail", Static))
        await pilot.press("r")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("ctrl+s")  # defaults to returning my own loan
        await pilot.pause()
        tool = you.board.tool(ladder)
        assert tool.conflicting_loans == () and tool.current_loan is not None
        assert tool.current_loan.borrower == ben.me


# --- members and invites -----------------------------------------------------------


async def test_invite_screen_shows_code_qr_and_fingerprint(demo: Demo) -> None:
    class FakeInvites:
        def create_invite(self) -> InviteInfo:
            return InviteInfo("circle1-abcd-efgh-ijkm", "k3fa 9tqe 2mzx 7hbw", FIXED_NOW + 3_600_000)

    app = demo_app(demo, invites=FakeInvites())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "i")
        await pilot.pause()
        assert isinstance(app.screen, InviteScreen)
        assert "circle1-abcd-efgh-ijkm" in text_of(app.screen.query_one("#invite-code", Static))
        assert "k3fa 9tqe 2mzx 7hbw" in text_of(app.screen.query_one("#invite-fpr", Static))
        qr = text_of(app.screen.query_one("#invite-qr", Static))
        assert "█" in qr and len(qr.splitlines()) > 10
        await pilot.press("escape")
        assert isinstance(app.screen, BoardScreen)


async def test_invite_without_provider_says_why(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "i")
        await pilot.pause()
        assert isinstance(app.screen, InviteScreen)
        assert "invite feature" in text_of(app.screen.query_one("#invite-error", Static))


async def test_remove_member_needs_confirmation(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        mid = await select_row(pilot, app, "members", "ana", col=0)
        assert "safety number" in text_of(board_of(app).query_one("#members-detail", Static))
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = text_of(app.screen.query_one("#confirm-body", Static))
        assert "does NOT" in body and "already has" in body and "cannot decrypt anything new" in body
        await pilot.press("escape")
        await pilot.pause()
        assert demo.founder.board.view().members[mid].active
        await pilot.press("d")
        await pilot.pause()
        assert await pilot.click("#confirm")
        await pilot.pause()
        member = demo.founder.board.view().members[mid]
        assert not member.active and member.removed_by == demo.founder.me
        assert "removed by you" in table(app, "members").shown_row(table(app, "members").cursor).cells[4]


# --- sync, notifications, palette, help ----------------------------------------------


async def test_sync_tab_lists_peers_in_plain_words(demo: Demo) -> None:
    peers = [
        PeerInfo("ana", "lan", "10.0.0.5:7000", FIXED_NOW - 5000, True, online=True, last_synced=FIXED_NOW - 5000),
        PeerInfo("relay.example.org", "relay", "wss://relay.example.org", None, None,
                 error="relay refused the upload: quota full"),
        PeerInfo("ben", "manual", "192.168.1.9:7000", FIXED_NOW, False, progress=0.4, online=True),
    ]
    app = demo_app(demo, sync=CallbackSync(lambda: peers))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await pilot.pause()
        rows = {r.cells[0]: r for r in (table(app, "sync").shown_row(i) for i in range(3))}
        assert rows["ana"].cells[4] == "has all our changes"
        assert rows["relay.example.org"].cells[4] == "problem: relay refused the upload: quota full"
        assert rows["relay.example.org"].cells[3] == "never"
        assert rows["ben"].cells[4] == "syncing 40%"
        status = text_of(board_of(app).query_one("#status-bar", Static))
        assert "2 peers online" in status and "last sync: 5s ago" in status


async def test_new_needs_from_others_notify(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        ana = demo.members[0]
        ana.board.add_need("Batteries for a hearing aid", urgency=Urgency.NOW)
        demo.founder.board.add_need("My own need")  # local: no notification
        demo.step_sync()
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("ana: Batteries for a hearing aid" in m for m in messages)
        assert not any("My own need" in m for m in messages)
        assert "Batteries for a hearing aid" in titles(app, "needs")


async def test_command_palette_finds_actions(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"add a tool")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        assert "Add a tool" in app.screen.form_title
        assert board_of(app).active_tab == "tools"


async def test_help_screen(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = text_of(app.screen.query_one("#help-text", Static))
        assert "Borrow the selected tool" in text and "Command palette" in text
        await pilot.press("escape")
        assert isinstance(app.screen, BoardScreen)


async def test_the_app_keeps_its_board_view_when_it_closes(demo: Demo) -> None:
    """After the app closes, `circle status` / `need list` read the board the
    app left (node/viewstore.py) instead of loading the document again."""
    from circle.node import viewstore

    svc = demo.founder
    app = demo_app(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        svc.board.add_need("Kept after closing")
        await pilot.pause()
    kept = viewstore.kept_records(svc.home, svc.config.circle_id, svc.clock(), "needs")
    assert kept is not None and "Kept after closing" in {n.title for n in kept.needs}
