"""Pilot tests: the Skills and Events tabs, over-full shifts, reminders and
hours on the Members tab, driven through keys like a member would."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, Select, Static, TabbedContent

from circle.crdt.gatherings import gatherings
from circle.tui.app import CircleApp
from circle.tui.demo import Demo
from circle.tui.screens import FormScreen
from circle.tui.tabs.events import EventsTab

from .conftest import Clock
from .test_flows import SIZE, board_of, fill, settle, table, text_of

HOUR = 3_600_000


def notes(app: CircleApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def save_form(pilot: Pilot[Any]) -> None:
    assert isinstance(pilot.app.screen, FormScreen)
    await pilot.press("ctrl+s")
    await pilot.pause()
    assert not isinstance(pilot.app.screen, FormScreen), "the form was refused"


async def test_events_tab_plan_answer_bring_and_shift(demo: Demo, clock: Clock) -> None:
    app = CircleApp(demo.founder)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("7")
        await pilot.pause()
        assert board_of(app).query_one("#tabs", TabbedContent).active == "events"
        events = table(app, "events")
        assert events.shown == []
        await pilot.press("n")
        await fill(pilot, "#f-title", "Potluck")
        await fill(pilot, "#f-at", "2025-06-20T18:00")
        await fill(pilot, "#f-duration", "3h")
        await fill(pilot, "#f-place", "community room")
        await save_form(pilot)
        await settle(pilot, app)
        assert [events.shown_row(i).cells[2] for i in range(len(events.shown))] == ["Potluck"]
        events.focus()
        await pilot.press("y")
        await pilot.pause()
        await pilot.press("b")
        await fill(pilot, "#f-item", "lentil soup")
        await save_form(pilot)
        await pilot.press("s")
        await fill(pilot, "#f-title", "set-up")
        await fill(pilot, "#f-slots", "1")
        await save_form(pilot)
        await pilot.press("t")
        await settle(pilot, app)
        detail = text_of(board_of(app).query_one("#events-detail", Static))
        assert "yes: you" in detail and "you: lentil soup" in detail and "set-up" in detail and "1/1: you" in detail
        assert events.shown_row(0).cells[6] == "full"
        # Filter narrows the events like any other table.
        await pilot.press("f")
        await pilot.press(*"nothing-like-it")
        await pilot.pause()
        assert events.shown == []


async def test_shift_taken_offline_twice_shows_over_full_until_one_drops(demo: Demo, clock: Clock) -> None:
    you, ana = demo.founder, demo.members[0]
    g = gatherings(you.board)
    (eid,) = g.add_event("Pantry", clock() + 24 * HOUR, 120, "pantry")
    sid = g.add_shift(eid, "door", clock() + 24 * HOUR, 60, 1)
    demo.step_sync()
    app = CircleApp(you)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await pilot.pause()
        table(app, "events").focus()
        await pilot.press("t")  # you take the only slot...
        clock.now += 1000
        gatherings(ana.board).take_shift(sid)  # ...and ana, offline, took it too
        demo.step_sync()
        await pilot.pause()
        await settle(pilot, app)
        events = table(app, "events")
        assert events.shown_row(0).cells[6] == "OVER-FULL" and events.shown_row(0).tone == "bad"
        detail = text_of(board_of(app).query_one("#events-detail", Static))
        assert "2/1: you, ana (over)" in detail and "OVER-FULL" in detail
        gatherings(ana.board).drop_shift(sid)
        demo.step_sync()
        await pilot.pause()
        await settle(pilot, app)
        assert events.shown_row(0).cells[6] == "full"


async def test_reminders_before_an_event_you_said_yes_to_and_your_shift(demo: Demo, clock: Clock) -> None:
    you = demo.founder
    g = gatherings(you.board)
    (eid,) = g.add_event("Workshop", clock() + 3 * HOUR, 60, "library")
    (other,) = g.add_event("Meeting", clock() + 3 * HOUR, 60, "hall")  # no yes: no reminder
    sid = g.add_shift(eid, "chairs", clock() + 2 * HOUR, 30, 2)
    g.rsvp(eid, "yes")
    g.take_shift(sid)
    app = CircleApp(you)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        pane = board_of(app).query_one(EventsTab)
        pane.remind()
        await pilot.pause()
        assert not any(n.startswith("Reminder") for n in notes(app))  # too early for both
        clock.now += 90 * 60_000
        pane.remind()
        pane.remind()  # once only
        await pilot.pause()
        reminders = [n for n in notes(app) if n.startswith("Reminder")]
        assert len(reminders) == 2
        assert any("Workshop starts" in n for n in reminders) and any("chairs" in n for n in reminders)
        assert not any("Meeting" in n for n in reminders) and other


async def test_skills_tab_and_hours_on_the_members_tab(demo: Demo, clock: Clock) -> None:
    you, ana = demo.founder, demo.members[0]
    gatherings(ana.board).add_skill("Plumbing", "repair", teach=True, details="taps, leaks")
    you.board.add_need("Someone to fix a leaking tap", category="repair", tags=["plumbing"])
    demo.step_sync()
    app = CircleApp(you)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await pilot.pause()
        await settle(pilot, app)
        skills = table(app, "skills")
        assert [skills.shown_row(i).cells[1] for i in range(len(skills.shown))] == ["Plumbing"]
        skills.focus()
        await pilot.pause()
        await settle(pilot, app)
        detail = text_of(board_of(app).query_one("#skills-detail", Static))
        detail += text_of(board_of(app).query_one("#skills-match", Static))
        assert "ana · can teach" in detail and "leaking tap" in detail and "category repair" in detail
        await pilot.press("n")
        await fill(pilot, "#f-title", "Bike repair")
        await save_form(pilot)
        await pilot.pause()
        assert {skills.shown_row(i).cells[3] for i in range(len(skills.shown))} == {"ana", "you"}
        # Members tab: skills always; hours only once the time bank is on.
        await pilot.press("4")
        await pilot.pause()
        members = table(app, "members")
        members.focus()
        await pilot.press("home")
        for _ in range(len(members.shown)):
            if members.shown_row(members.cursor).cells[0] == "ana":
                break
            await pilot.press("down")
        await settle(pilot, app)
        detail = text_of(board_of(app).query_one("#members-detail", Static))
        assert "Plumbing (can teach)" in detail and "Time bank" not in detail
        g = gatherings(you.board)
        g.set_timebank(True)
        g.log_hours(ana.me, 90, "fixed the tap", gave=False)
        demo.step_sync()
        gatherings(ana.board).confirm(g.exchanges()[0].id)
        demo.step_sync()
        await pilot.press("down", "up")
        await settle(pilot, app)
        detail = text_of(board_of(app).query_one("#members-detail", Static))
        assert "Time bank (confirmed)" in detail and "gave 1h30" in detail


# --- typing straight after a form opens, at both sizes ------------------------------

FORMS = [  # (tab key, form key, the first field, the first keys a member types at once)
    ("6", "n", "#f-title", "Bik"),
    ("6", "e", "#f-title", "ing"),
    ("7", "n", "#f-title", "Pot"),
    ("7", "e", "#f-title", " 2"),
    ("7", "b", "#f-item", "soup"),
    ("7", "s", "#f-title", "set"),
    ("4", "h", "#f-note", "tap"),
]


async def test_every_form_takes_typing_the_moment_it_opens(demo: Demo, clock: Clock) -> None:
    you = demo.founder
    g = gatherings(you.board)
    g.add_skill("Sewing")
    g.add_event("Clean-up", clock() + 24 * HOUR, 60, "park")
    g.set_timebank(True)
    for size in ((80, 24), (120, 40)):
        app = CircleApp(you)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            shown = ""
            for tab, key, field, typed in FORMS:
                if tab != shown:
                    await pilot.press(tab)
                    await pilot.pause()
                    shown = tab
                board_of(app).tabs[board_of(app).active_tab].focus_table()
                await pilot.press(key, *typed)  # no pause between opening and typing
                assert isinstance(app.screen, FormScreen), (size, tab, key)
                box = app.screen.query_one(field, Input)
                assert app.screen.focused is box and box.value.endswith(typed), (size, tab, key, box.value)
                await pilot.press("escape")
                await pilot.pause()
                assert not isinstance(app.screen, FormScreen)


# --- hours from the app -----------------------------------------------------------------


async def test_hours_are_logged_confirmed_and_disputed_from_the_members_tab(demo: Demo, clock: Clock) -> None:
    you, ana = demo.founder, demo.members[0]
    app = CircleApp(you)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await pilot.pause()
        members = table(app, "members")
        members.focus()
        await pilot.press("h")  # the time bank is off: no form, no hours key in the footer
        await pilot.pause()
        assert not isinstance(app.screen, FormScreen)
        assert "h" not in board_of(app).active_bindings
        board_of(app).run_command("toggle_timebank")
        await pilot.pause()
        await pilot.pause()
        assert gatherings(you.board).settings().timebank
        assert "h" in board_of(app).active_bindings
        # Log 1h30 given to ana: it waits for ana's word.
        members.focus()
        await pilot.press("h", *"fixed the tap")
        await fill(pilot, "#f-hours", "1.5")
        app.screen.query_one("#f-with", Select).value = ana.me
        await save_form(pilot)
        demo.step_sync()
        ga = gatherings(ana.board)
        (x,) = ga.exchanges()
        assert (x.giver, x.receiver, x.minutes, x.status.value) == (you.me, ana.me, 90, "pending")
        ga.confirm(x.id)
        # ana logs an hour she gave you, twice (the second is wrong): you confirm one, dispute the other.
        clock.now += 1000
        first = ga.log_hours(you.me, 60, "Spanish lesson", gave=True)
        demo.step_sync()
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, FormScreen)
        assert app.screen.query_one("#f-exchange", Select).value == first
        await save_form(pilot)
        clock.now += 1000
        second = ga.log_hours(you.me, 300, "Spanish lesson", gave=True, force=True)
        demo.step_sync()
        await pilot.press("x", *"it was one hour, not five")
        app.screen.query_one("#f-exchange", Select).value = second
        await save_form(pilot)
        demo.step_sync()
        statuses = {e.id: e.status.value for e in ga.exchanges()}
        assert statuses == {x.id: "confirmed", first: "confirmed", second: "disputed"}
        # Your own line on the Members tab: confirmed only, given and received side by side.
        await pilot.press("home")
        for _ in range(len(members.shown)):
            if members.shown_row(members.cursor).cells[0] == "you":
                break
            await pilot.press("down")
        await settle(pilot, app)
        detail = text_of(board_of(app).query_one("#members-detail", Static))
        assert "gave 1h30 · received 1h" in detail and "disputed" in detail


async def test_toasts_show_markup_in_titles_as_text(demo: Demo, clock: Clock) -> None:
    you = demo.founder
    (eid,) = gatherings(you.board).add_event("[@click=app.quit]Potluck[/]", clock() + 24 * HOUR, 60, "hall")
    app = CircleApp(you)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await pilot.pause()
        table(app, "events").focus()
        await pilot.press("y")
        await pilot.pause()
        last = list(app._notifications)[-1]
        assert "[@click=app.quit]Potluck[/]" in last.message and last.markup is False
        assert gatherings(you.board).event(eid).rsvps[you.me].value == "yes"
