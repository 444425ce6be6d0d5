"""The Events tab: gatherings, RSVPs, bring lists, shifts, and reminders.

Times are shown in this device's zone (the author's own wall-clock time is
added when it differs). A shift that two members took offline past its
slots shows as OVER-FULL, the later takers marked, until one drops.
Reminders: the app notifies once before an event you said yes to and before
a shift you are on (`REMIND_EVENT_MS` / `REMIND_SHIFT_MS` ahead).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.gather_records import Event, EventKind, EventStatus, Rsvp, Shift
from circle.crdt.gatherings import Gatherings, gatherings
from circle.crdt.model import MemberId, Millis
from circle.crdt.times import author_time, local_zone_name, parse_duration, parse_when, show_time
from circle.errors import UsageError
from circle.tui.commands import ActionSpec
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.table import Column, RecordTable, Row, make_row
from circle.tui.tabs.base import BoardTab, TabHost

# At 120 columns the side panel leaves room for WHEN, TITLE, WHERE, YES and
# SHIFTS; the status and kind are in the detail panel.
EVENT_COLUMNS = [Column("ID", 8, drop=5), Column("WHEN", 20), Column("TITLE", 0), Column("KIND", 8, drop=4),
                 Column("WHERE", 16, drop=2), Column("YES", 3, drop=3), Column("SHIFTS", 10, drop=1),
                 Column("STATUS", 9, drop=6)]
KIND_OPTIONS = [(k.value, k.value) for k in EventKind]
SHOWING = ["upcoming", "past", "all"]
REMINDER_INTERVAL = 30.0  # seconds between reminder checks
EMPTY = {"upcoming": "No upcoming gatherings. Press n to plan one.", "past": "No past gatherings.",
         "all": "No gatherings yet. Press n to plan one."}


def shifts_cell(shifts: list[Shift]) -> str:
    live = [s for s in shifts if s.cancelled_at is None]
    if not live:
        return ""
    if any(s.over_full for s in live):
        return "OVER-FULL"
    open_slots = sum(s.open_slots for s in live)
    return f"{open_slots} open" if open_slots else "full"


def event_row(e: Event, shifts: list[Shift], me: MemberId, now: Millis) -> Row:
    status = e.status(now)
    cell = shifts_cell(shifts)
    tone = "dim" if status in (EventStatus.PAST, EventStatus.CANCELLED) else (
        "bad" if cell == "OVER-FULL" else ("good" if e.rsvps.get(me) == Rsvp.YES else ""))
    cells = (e.id, show_time(e.starts_at), e.title, e.kind.value, e.place or "-",
             str(sum(1 for a in e.rsvps.values() if a == Rsvp.YES)), cell, status.value)
    return make_row(e.id, cells, tone, f"{e.zone} {e.details}")


class EventsTab(BoardTab):
    TAB_ID = "events"
    TITLE = "Events"
    RECORDS = "events"
    FILTER_HINT = "Type to filter events: title, kind, place, zone"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("new_event", "n", "New", "events", "Plan a gathering: potluck, workshop, meeting, clean-up"),
        ActionSpec("edit_event", "e", "Edit", "events", "Edit the selected event"),
        ActionSpec("rsvp('yes')", "y", "Yes", "events", "Answer yes: you are coming to the selected event"),
        ActionSpec("rsvp('maybe')", "m", "Maybe", "events", "Answer maybe for the selected event"),
        ActionSpec("rsvp('no')", "x", "No", "events", "Answer no: you are not coming to the selected event"),
        ActionSpec("bring", "b", "Bring", "events", "Say what you bring to the selected event (or take it off)"),
        ActionSpec("new_shift", "s", "Add shift", "events", "Add a shift (a slot for helpers) to the selected event"),
        ActionSpec("take_shift", "t", "Take shift", "events", "Take a shift of the selected event"),
        ActionSpec("drop_shift", "d", "Drop shift", "events", "Drop a shift of the selected event you took"),
        ActionSpec("cancel_event", "c", "Cancel", "events", "Cancel the selected event, or put a cancelled one on again",
                   show=False),
        ActionSpec("cycle_events_showing", "a", "Upcoming/past/all", "events",
                   "Show upcoming, past or all events", show=False),
    ]

    def __init__(self, host: TabHost) -> None:
        super().__init__(host)
        self.showing = "upcoming"
        self.reminded: set[str] = set()

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(EVENT_COLUMNS, id="events-table", empty_text=EMPTY["upcoming"])
            with VerticalScroll(classes="side", id="events-side"):
                yield Static(id="events-detail")

    def on_mount(self) -> None:
        self.set_interval(REMINDER_INTERVAL, self.remind)
        self.call_after_refresh(self.remind)

    @property
    def g(self) -> Gatherings:
        return gatherings(self.board)

    def who(self, member: MemberId) -> str:
        return self.host.who(member)

    # --- data -------------------------------------------------------------

    def rebuild(self) -> None:
        g, me, now = self.g, self.host.service.me, self.host.now()
        by_event = g.view().shifts_by_event
        self.table.set_rows([event_row(e, by_event.get(e.id, []), me, now) for e in g.events(self.showing)])

    def _event(self, warn: bool = True) -> Event | None:
        rid = self.need_selection("an event") if warn else self.selected_id()
        return self.g.view().events.get(rid) if rid else None

    def update_details(self) -> None:
        e = self._event(warn=False)
        self.query_one("#events-detail", Static).update(self.detail(e) if e else Text(""))

    def show_key(self, key: str) -> bool:
        e = self.g.view().events.get(key)  # type: ignore[call-overload]
        if e is not None and self.showing != "all" and e not in self.g.events(self.showing):
            self._show("all")
        return super().show_key(key)

    def detail(self, e: Event) -> Text:
        g, now = self.g, self.host.now()
        t = Text()
        t.append(e.title + "\n", style="bold")
        t.append(f"{e.kind.value} · {e.status(now).value} · planned by {self.who(e.author)}\n")
        theirs = author_time(e.starts_at, e.tz)
        t.append(f"{show_time(e.starts_at)}, {e.minutes // 60}h{e.minutes % 60:02d}"
                 + (f" ({theirs} for the author)" if theirs else "") + "\n")
        t.append(f"where: {e.place or '-'}" + (f" · zone {e.zone}" if e.zone else "") + "\n")
        if e.details:
            t.append("\n" + e.details + "\n")
        t.append("\nComing\n", style="bold underline")
        for answer in Rsvp:
            people = [self.who(m) for m in e.answers(answer)]
            t.append(f"{answer.value:>5}: {', '.join(people) or '-'}\n")
        t.append("\nBring list\n", style="bold underline")
        bring = g.bring_list(e.id)
        if not bring:
            t.append("nothing yet (b: say what you bring)\n", style="dim")
        for b in bring:
            t.append(f"• {self.who(b.member)}: {b.item}\n")
        shifts = g.shifts_of(e.id)
        if shifts:
            t.append("\nShifts\n", style="bold underline")
        for s in shifts:
            over = set(s.over)
            people = ", ".join(self.who(m) + (" (over)" if m in over else "") for m in s.takers) or "nobody yet"
            style = "bold red" if s.over_full else ""
            t.append(f"{s.title} {show_time(s.starts_at)[-5:]}, {len(s.takes)}/{s.slots}: {people}\n", style=style)
            if s.over_full:
                t.append("  OVER-FULL: taken offline at the same time; someone please drop (d)\n", style="bold red")
        return t

    # --- reminders ----------------------------------------------------------

    def remind(self) -> None:
        try:
            due = self.g.reminders()
        except Exception:  # never let a reminder check take the app down
            return
        for r in due:
            if r.key not in self.reminded:
                self.reminded.add(r.key)
                self.app.notify(r.text, title="Reminder", timeout=30)

    # --- actions ------------------------------------------------------------

    def action_cycle_events_showing(self) -> None:
        self._show(SHOWING[(SHOWING.index(self.showing) + 1) % len(SHOWING)])
        self.app.notify(f"Showing {self.showing} events")

    def _show(self, showing: str) -> None:
        self.showing = showing
        self.table.set_empty_text(EMPTY[showing])
        self.rebuild()
        self.host.schedule_details()

    def _fields(self, e: Event | None) -> list[FieldSpec]:
        when = datetime.fromtimestamp(e.starts_at / 1000).astimezone().strftime("%Y-%m-%dT%H:%M") if e else ""
        length = (f"{e.minutes // 60}h{e.minutes % 60}m" if e.minutes % 60 else f"{e.minutes // 60}h") if e else "2h"
        return [
            FieldSpec("title", "Title", value=e.title if e else "", placeholder="e.g. Potluck"),
            FieldSpec("at", "Starts", value=when, placeholder="2026-12-12T18:00 (your time)"),
            FieldSpec("duration", "Duration", value=length, placeholder="3h, 90m, 1h30m"),
            FieldSpec("place", "Where", value=e.place if e else "",
                      placeholder="free text, e.g. community room (never an address)"),
            FieldSpec("kind", "Kind", "select", e.kind.value if e else EventKind.OTHER.value, KIND_OPTIONS),
            FieldSpec("zone", "Zone", value=e.zone if e else ""),
            FieldSpec("details", "Details", value=e.details if e else ""),
        ]

    def action_new_event(self) -> None:
        def submit(v: FormValues) -> None:
            tz = local_zone_name()
            ids = self.g.add_event(v["title"], parse_when(v["at"], tz), parse_duration(v["duration"]), v["place"],
                                   kind=EventKind(v["kind"]), zone=v["zone"], details=v["details"], tz=tz)
            self.call_after_refresh(self.table.move_to_key, ids[0])

        self.app.push_screen(FormScreen("Plan a gathering", self._fields(None), submit, "Plan"))

    def action_edit_event(self) -> None:
        e = self._event()
        if e is None:
            return

        def submit(v: FormValues) -> None:
            tz = local_zone_name()
            self.g.edit_event(e.id, title=v["title"], starts_at=parse_when(v["at"], tz),
                              minutes=parse_duration(v["duration"]), place=v["place"], kind=EventKind(v["kind"]),
                              zone=v["zone"], details=v["details"], tz=tz)

        self.app.push_screen(FormScreen(f"Edit event {e.id}", self._fields(e), submit))

    def action_rsvp(self, answer: str) -> None:
        e = self._event()
        if e is not None:
            self.host.act(lambda: self.g.rsvp(e.id, answer), f"You answered {answer} for “{e.title}”")

    def action_bring(self) -> None:
        e = self._event()
        if e is None:
            return
        mine = [b for b in self.g.bring_list(e.id) if b.member == self.host.service.me]
        fields = [FieldSpec("item", "I will bring", placeholder="e.g. lentil soup")]
        if mine:
            fields.append(FieldSpec("remove", "Or take off", "select", "",
                                    [("(nothing)", ""), *((b.item, b.id) for b in mine)]))

        def submit(v: FormValues) -> None:
            if v.get("remove"):
                self.g.remove_bring(v["remove"])
            if v["item"].strip() or not v.get("remove"):
                self.g.add_bring(e.id, v["item"])

        self.app.push_screen(FormScreen(f"Bring list of {e.title}", fields, submit))

    def action_cancel_event(self) -> None:
        e = self._event()
        if e is not None:
            undo = e.cancelled_at is not None
            self.host.act(lambda: self.g.cancel_event(e.id, cancelled=not undo),
                     f"“{e.title}” is {'on again' if undo else 'cancelled'}")

    def action_new_shift(self) -> None:
        e = self._event()
        if e is None:
            return
        start = datetime.fromtimestamp(e.starts_at / 1000).astimezone().strftime("%Y-%m-%dT%H:%M")
        fields = [FieldSpec("title", "Shift", placeholder="e.g. set-up"),
                  FieldSpec("at", "Starts", value=start), FieldSpec("duration", "Duration", value="1h"),
                  FieldSpec("slots", "People needed", "int", 1)]

        def submit(v: FormValues) -> None:
            self.g.add_shift(e.id, v["title"], parse_when(v["at"], local_zone_name()), parse_duration(v["duration"]),
                             v["slots"] or 1)

        self.app.push_screen(FormScreen(f"Add a shift to {e.title}", fields, submit, "Add"))

    def _pick_shift(self, take: bool) -> None:
        e = self._event()
        if e is None:
            return
        me = self.host.service.me
        shifts = [s for s in self.g.shifts_of(e.id) if (me not in s.takes) == take and s.cancelled_at is None]
        if not shifts:
            self.app.notify("No shift to take here" if take else "You are on no shift of this event",
                            severity="warning")
            return
        verb = "took" if take else "dropped"

        def run(shift_id: str) -> None:
            if take:
                self.g.take_shift(shift_id)
            else:
                self.g.drop_shift(shift_id)
        if len(shifts) == 1:
            self.host.act(lambda: run(shifts[0].id), f"You {verb} “{shifts[0].title}”")
            return
        options = [(f"{s.title} {show_time(s.starts_at)[-5:]} ({len(s.takes)}/{s.slots})", s.id) for s in shifts]

        def submit(v: FormValues) -> None:
            if not v["shift"]:
                raise UsageError("pick a shift")
            run(v["shift"])

        self.app.push_screen(FormScreen("Take a shift" if take else "Drop a shift",
                                        [FieldSpec("shift", "Shift", "select", options[0][1], options)], submit,
                                        "Take" if take else "Drop"))

    def action_take_shift(self) -> None:
        self._pick_shift(True)

    def action_drop_shift(self) -> None:
        self._pick_shift(False)

