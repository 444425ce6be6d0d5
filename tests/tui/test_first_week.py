"""Pilot tests for issue 11 (the first week with a real group): forms take
typing at once, notifications for claim / ready / due / overdue, search
from anywhere, profile, a steward lending, history, safety numbers with a
"do they match?" step, and what survives 80x24."""

from __future__ import annotations

from typing import Any

from textual.widgets import Input, Select, Static

from circle.crdt.model import Availability
from circle.net.keys import fingerprint
from circle.tui.app import BoardScreen, CircleApp
from circle.tui.demo import Demo
from circle.tui.providers import InviteInfo
from circle.tui.screens import FormScreen, InfoScreen, InviteScreen, SafetyCheckScreen, code_lines
from circle.tui.search import SearchScreen

from .conftest import FIXED_NOW, Clock
from .test_flows import SIZE, board_of, demo_app, select_row, table, text_of


def notices(app: CircleApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


# --- item 1: typing right after opening a form ------------------------------------------


async def test_typing_right_after_n_lands_in_the_title(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", *"Ride to clinic Tuesday", "tab", *"leaves at nine")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("enter")  # Enter goes on to the next field, it does not submit half a form
        assert isinstance(app.screen, FormScreen)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        need = next(n for n in demo.founder.board.needs("all") if n.title == "Ride to clinic Tuesday")
        assert need.details == "leaves at nine"
        # Every form: the first field has the focus as it opens.
        for tab, key in (("2", "n"), ("3", "n"), ("3", "r")):
            await pilot.press(tab, key)
            await pilot.pause()
            if isinstance(app.screen, FormScreen):
                first = app.screen.fields[0].name
                assert app.screen.focused is not None and app.screen.focused.id == f"f-{first}"
                await pilot.press("escape")
                await pilot.pause()


# --- item 7: notifications -----------------------------------------------------------------


async def test_claim_ready_due_and_overdue_notify_with_a_bell(demo: Demo, clock: Clock) -> None:
    app = CircleApp(demo.founder, bell=True)
    bells: list[int] = []
    app.bell = lambda: bells.append(1)  # type: ignore[method-assign]
    you, ana = demo.founder, demo.members[0]
    mine = next(n for n in you.board.needs("active") if n.author == you.me and not n.claims)
    drill = next(t for t in you.board.tools() if t.name == "Cordless drill")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        ana.board.claim_need(mine.id)
        demo.step_sync()
        await pilot.pause(0.1)
        assert any("Your need was claimed" in m and "ana will help" in m for m in notices(app))
        ana.board.return_tool(drill.id)
        demo.step_sync()
        await pilot.pause(0.1)
        assert any("ready for you" in m for m in notices(app))
        you.board.borrow(drill.id)  # 7 days
        await pilot.pause(0.1)
        clock.advance_days(6.5)
        board_of(app).reload()  # what the app's minute timer does
        await pilot.pause()
        assert any("Loan due soon" in m and "Cordless drill" in m for m in notices(app))
        clock.advance_days(1)
        board_of(app).reload()
        await pilot.pause()
        assert any("Loan overdue" in m for m in notices(app))
        assert len(bells) >= 4
        await pilot.press("A")  # the activity feed
        await pilot.pause()
        assert isinstance(app.screen, InfoScreen)
        feed = text_of(app.screen.query_one("#info-body", Static))
        assert "The last 7 days" in feed and "Your loan of Cordless drill is overdue" in feed
        assert "you's" not in feed
        await pilot.press("escape", "A")
        await pilot.pause()
        assert "Since you last looked" in text_of(app.screen.query_one("#info-body", Static))


# --- search from anywhere -----------------------------------------------------------------


async def test_slash_searches_everything_and_jumps_to_the_record(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "slash", *"drill")  # from the Members tab
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen)
        counts = text_of(app.screen.query_one("#search-counts", Static))
        assert "tools" in counts
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, BoardScreen)
        assert board_of(app).active_tab == "tools"
        t = table(app, "tools")
        assert "Cordless drill" in t.shown_row(t.cursor).cells[1]


# --- profile, steward lending, history ------------------------------------------------------


async def test_edit_profile_lend_as_steward_and_see_history(demo: Demo) -> None:
    app = demo_app(demo)
    you = demo.founder
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("P")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("ctrl+a", *"Mira", "tab", *"riverside")
        app.screen.query_one("#f-handle", Input).value = "Mira"
        await pilot.press("ctrl+s")
        await pilot.pause()
        me = you.board.view().members[you.me]
        assert me.handle == "Mira" and me.zone == "riverside"

        await pilot.press("3")
        await select_row(pilot, app, "tools", "Ladder", col=1)  # stewarded by ben: borrow directly
        ladder = next(t for t in you.board.tools() if t.name.startswith("Ladder"))
        ben = demo.members[1]
        assert ladder.steward == ben.me
        drill = next(t for t in you.board.tools() if t.name == "Cordless drill")
        demo.members[0].board.return_tool(drill.id)
        you.board.unhold(drill.id)
        demo.step_sync()
        await pilot.pause(0.1)
        await select_row(pilot, app, "tools", "Cordless drill", col=1)  # you steward it
        await pilot.press("b")
        assert isinstance(app.screen, FormScreen)
        who = app.screen.query_one("#f-member", Select)
        who.value = ben.me
        await pilot.press("ctrl+s")
        await pilot.pause()
        tool = you.board.tool(drill.id)
        assert tool.availability == Availability.ON_LOAN and tool.current_loan is not None
        assert tool.current_loan.borrower == ben.me
        await pilot.press("H")
        await pilot.pause()
        assert isinstance(app.screen, InfoScreen)
        history = text_of(app.screen.query_one("#info-body", Static))
        assert "ben took it (good), lent by you" in history and "ana took it" in history


# --- item 3: one safety number, a "do they match?" step -------------------------------------


class UsedOnce:
    """An invite provider whose code is used by 'ben' after the first poll."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.polls = 0

    def create_invite(self) -> InviteInfo:
        me = self.demo.founder.board.view().members[self.demo.founder.me]
        return InviteInfo("circle:" + "-".join(["abcd"] * 30), fingerprint(me.sign_key), FIXED_NOW + 1_800_000)

    def invite_used(self, code: str) -> tuple[str, str] | None:
        self.polls += 1
        ben = self.demo.founder.board.member("ben")
        return (ben.handle, fingerprint(ben.sign_key)) if self.polls > 1 else None


async def test_invite_shows_the_member_safety_number_then_asks_if_they_match(demo: Demo) -> None:
    provider = UsedOnce(demo)
    app = CircleApp(demo.founder, invites=provider)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        mid = await select_row(pilot, app, "members", "(you)", col=0)
        members_fpr = table(app, "members").shown_row(table(app, "members").cursor).cells[2]
        assert mid == demo.founder.me
        await pilot.press("i")
        await pilot.pause()
        assert isinstance(app.screen, InviteScreen)
        fpr = text_of(app.screen.query_one("#invite-fpr", Static))
        assert members_fpr in fpr  # the same number as on the Members tab
        code = text_of(app.screen.query_one("#invite-code", Static))
        assert all(len(line) <= 72 for line in code.splitlines())  # whole groups per line
        assert all(len(g) == 4 for line in code.splitlines() for g in line.removeprefix("circle:").strip("-").split("-"))
        assert not app.screen.query_one("#invite-qr").display  # taller than 24 rows: hidden until q
        assert "expires in 30 min" in text_of(app.screen.query_one("#invite-state", Static))
        assert not app.screen.query_one("#match").display
        await pilot.pause(2.2)  # the screen polls once a second
        state = text_of(app.screen.query_one("#invite-state", Static))
        ben = demo.founder.board.member("ben")
        assert "ben joined" in state and fingerprint(ben.sign_key) in state and "Do both match" in state
        await pilot.click("#mismatch")
        await pilot.pause()
        assert isinstance(app.screen, BoardScreen)
        assert any("Do not trust this member" in m for m in notices(app))


async def test_the_joiner_is_asked_too(demo: Demo) -> None:
    app = CircleApp(demo.members[0])  # ana, invited by the founder
    async with app.run_test(size=SIZE) as pilot:
        app.check_safety_numbers(demo.members[0])
        await pilot.pause()
        assert isinstance(app.screen, SafetyCheckScreen)
        body = text_of(app.screen.query_one("#safety-body", Static))
        founder = demo.founder.board.view().members[demo.founder.me]
        ana = demo.members[0].board.view().members[demo.members[0].me]
        assert fingerprint(founder.sign_key) in body and fingerprint(ana.sign_key) in body
        await pilot.click("#match")
        await pilot.pause()
        assert any("Safety numbers match" in m for m in notices(app))


def test_code_lines_cut_between_groups_only() -> None:
    code = "circle:" + "-".join(f"{i:04d}" for i in range(33))
    lines = code_lines(code, 40)
    assert all(len(line) <= 40 for line in lines)
    assert "".join(lines).replace("-", "") == code.replace("-", "")


# --- item 5: 80x24 keeps what matters -------------------------------------------------------


async def test_80x24_keeps_encryption_help_search_and_readable_titles(demo: Demo) -> None:
    app = demo_app(demo)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        status = text_of(board_of(app).query_one("#status-bar", Static))
        assert "encrypted" in status.lower()
        footer_keys = [k.key for k in app.screen.query("FooterKey")]  # type: ignore[attr-defined]
        assert footer_keys[:2] == ["question_mark", "slash"]
        t = table(app, "needs")
        widths = t._widths(t.size.width)
        labels = [c.label for c in t.columns]
        assert widths[labels.index("TITLE")] >= 20  # titles stay readable...
        assert widths[labels.index("ID")] == 0  # ...because the id column goes first
        assert widths[labels.index("URGENCY")] > 0 and widths[labels.index("CLAIMED BY")] > 0
        side = board_of(app).query_one("#needs-side")
        assert side.size.width <= 30


# --- item 9: contrast -----------------------------------------------------------------------


def _contrast(a: Any, b: Any) -> float:
    def lum(c: Any) -> float:
        def ch(v: int) -> float:
            x = v / 255
            return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4
        return 0.2126 * ch(c.red) + 0.7152 * ch(c.green) + 0.0722 * ch(c.blue)
    hi, lo = sorted([lum(a), lum(b)], reverse=True)
    return (hi + 0.05) / (lo + 0.05)


async def test_tones_and_status_bar_meet_wcag_aa_in_light_and_dark(demo: Demo) -> None:
    from rich.color import Color as RichColor

    for theme in ("textual-light", "textual-dark"):
        app = demo_app(demo)
        async with app.run_test(size=SIZE) as pilot:
            app.theme = theme
            await pilot.pause()
            t = table(app, "needs")
            t._styles.clear()
            bg = t.rich_style.bgcolor
            assert bg is not None
            for tone in ("good", "warn", "bad", "dim"):
                fg = t._style(tone).color
                assert fg is not None
                ratio = _contrast(fg.get_truecolor(), bg.get_truecolor())
                assert ratio >= 4.5, (theme, tone, ratio)
            bar = board_of(app).query_one("#status-bar")
            style = bar.rich_style
            ratio = _contrast((style.color or RichColor.parse("white")).get_truecolor(),
                              (style.bgcolor or RichColor.parse("black")).get_truecolor())
            assert ratio >= 4.5, (theme, "status bar", ratio)


# --- issue 11 item 4: the short code on the invite screen ------------------------------------


class ShortInvite:
    """An invite provider with a short code; its attempts can be used up."""

    def __init__(self, demo: Demo) -> None:
        self.demo = demo
        self.left = 3

    def create_invite(self) -> InviteInfo:
        me = self.demo.founder.board.view().members[self.demo.founder.me]
        return InviteInfo("circle:" + "-".join(["abcd"] * 33), fingerprint(me.sign_key), FIXED_NOW + 1_800_000,
                          "4821-0937-5512", lambda: self.left)

    def invite_used(self, code: str) -> tuple[str, str] | None:
        return None


async def test_invite_screen_shows_the_whole_short_code_at_80x24_and_120x40(demo: Demo) -> None:
    for size in ((80, 24), (120, 40)):
        provider = ShortInvite(demo)
        app = CircleApp(demo.founder, invites=provider)
        async with app.run_test(size=size) as pilot:
            await pilot.press("4", "i")
            await pilot.pause()
            assert isinstance(app.screen, InviteScreen)
            short = app.screen.query_one("#invite-short", Static)
            assert text_of(short) == "4821-0937-5512"
            region = short.region  # on screen, whole, not scrolled away
            assert region.width >= len("4821-0937-5512") and region.height >= 1
            assert 0 <= region.x and region.right <= size[0] and 0 <= region.y and region.bottom <= size[1]
            assert "4821-0937-5512" in app.export_screenshot().replace("&#160;", " ")
            for wid in ("#invite-fpr", "#invite-state"):  # the safety number and the state still show
                r = app.screen.query_one(wid).region
                assert r.height >= 1 and r.bottom <= size[1], (size, wid)
            provider.left = 0
            await pilot.pause(1.2)
            state = text_of(app.screen.query_one("#invite-state", Static))
            assert "short code was tried too often" in state and "long code still does" in state
