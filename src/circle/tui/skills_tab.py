"""The Skills tab, and what the Members tab shows of skills and hours.

A self-contained pane: its own table (`#skills-table`), filter
(`#skills-filter`), detail panel and keys, over `gatherings(service.board)`.
Like every tab it re-reads the board on change, but only while it is shown.
Skills are listed by title: nothing here orders people.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Static, TabbedContent

from circle.crdt.gather_records import Skill
from circle.crdt.gatherings import Gatherings, gatherings
from circle.crdt.matching import skill_score
from circle.crdt.model import MemberId, NeedStatus
from circle.crdt.timebank import format_hours
from circle.errors import CircleError
from circle.node.service import CircleService
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.table import Column, RecordTable, Row, make_row

SKILL_COLUMNS = [Column("ID", 8), Column("SKILL", 0), Column("CATEGORY", 12), Column("MEMBER", 14),
                 Column("TEACH", 9)]


def skill_row(s: Skill, handles: dict[MemberId, str], me: MemberId) -> Row:
    who = "you" if s.author == me else handles.get(s.author, s.author[:6])
    return make_row(s.id, (s.id, s.title, s.category or "-", who, "can teach" if s.teach else ""), "",
                    s.details)


class TabPaneBase(Vertical):
    """What the Skills and Events panes share: follow the service, rebuild
    when shown, report errors in one sentence."""

    tab_id = ""

    def __init__(self, service: CircleService) -> None:
        super().__init__(id=f"{self.tab_id}-pane")
        self.service = service
        self._dirty = True
        self._unsubscribe: Callable[[], None] | None = None
        self._loop_thread = threading.get_ident()

    @property
    def g(self) -> Gatherings:
        return gatherings(self.service.board)

    @property
    def handles(self) -> dict[MemberId, str]:
        return {m.id: m.handle for m in self.service.board.view().members.values()}

    def who(self, member: MemberId) -> str:
        return "you" if member == self.service.me else self.handles.get(member, member[:6])

    def on_mount(self) -> None:
        self._loop_thread = threading.get_ident()
        self._unsubscribe = self.service.subscribe(self._on_change)
        try:
            self.screen.query_one("#tabs", TabbedContent)
        except Exception:
            return
        self.watch(self.screen.query_one("#tabs", TabbedContent), "active", self._tab_shown)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def _on_change(self, origin: str) -> None:
        if threading.get_ident() != self._loop_thread:
            self.app.call_from_thread(self._on_change, origin)
            return
        self._dirty = True
        if self.shown:
            self.call_later(self.rebuild)

    @property
    def shown(self) -> bool:
        try:
            return self.screen.query_one("#tabs", TabbedContent).active == self.tab_id
        except Exception:
            return False

    def _tab_shown(self, active: str) -> None:
        if active == self.tab_id and self._dirty:
            self.rebuild()

    def rebuild(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.fill()
        self.update_detail()

    def fill(self) -> None:
        raise NotImplementedError

    def update_detail(self) -> None:
        raise NotImplementedError

    @property
    def table(self) -> RecordTable:
        return self.query_one(f"#{self.tab_id}-table", RecordTable)

    def selected_key(self) -> str | None:
        return self.table.cursor_key

    def act(self, fn: Callable[[], object], done: str) -> None:
        try:
            fn()
        except CircleError as exc:
            self.app.notify(str(exc), title="Not done", severity="error")
            return
        self.app.notify(done)

    def form(self, title: str, fields: list[FieldSpec], submit: Callable[[FormValues], None],
             label: str = "Save") -> None:
        self.app.push_screen(FormScreen(title, fields, submit, label))

    @on(RecordTable.Highlighted)
    def _moved(self, event: RecordTable.Highlighted) -> None:
        if event.table is self.table:
            self.update_detail()


class SkillsPane(TabPaneBase):
    tab_id = "skills"
    BINDINGS = [
        Binding("n", "new_skill", "New"),
        Binding("e", "edit_skill", "Edit"),
        Binding("d", "remove_skill", "Remove"),
    ]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Type to filter skills: title, category, member", id="skills-filter",
                    classes="filter")
        with Horizontal(classes="body"):
            yield RecordTable(SKILL_COLUMNS, id="skills-table",
                              empty_text="No skills listed yet. Press n to list something you can do or teach.")
            with VerticalScroll(classes="side"):
                yield Static(id="skills-detail")

    def fill(self) -> None:
        handles, me = self.handles, self.service.me
        self.table.set_rows([skill_row(s, handles, me) for s in self.g.skills()])

    def update_detail(self) -> None:
        key = self.selected_key()
        s = self.g.view().skills.get(key) if key else None  # type: ignore[call-overload]
        self.query_one("#skills-detail", Static).update(self.detail(s) if s else Text(""))

    def detail(self, s: Skill) -> Text:
        t = Text()
        t.append(s.title + "\n", style="bold")
        t.append(f"{self.who(s.author)}" + (" · can teach" if s.teach else "") + f" · {s.category or '-'}\n")
        if s.details:
            t.append("\n" + s.details + "\n")
        board = self.service.board
        fits = []
        for n in board.needs("active"):
            if n.author != s.author and n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED):
                points, reasons = skill_score(n, s)
                if points:
                    fits.append((-points, n.id, n, reasons))
        t.append("\nNeeds it may help with\n", style="bold underline")
        if not fits:
            t.append("none open now\n", style="dim")
        for _, _, n, reasons in sorted(fits)[:5]:
            t.append(f"• {n.title}", style="bold")
            t.append(f" ({self.who(n.author)}, {n.id})\n")
            t.append(f"  {'; '.join(reasons)}\n", style="dim")
        if s.author == self.service.me:
            t.append("\ne: edit · d: remove\n", style="dim")
        return t

    def _fields(self, s: Skill | None) -> list[FieldSpec]:
        return [
            FieldSpec("title", "Skill", value=s.title if s else "", placeholder="e.g. bike repair, Spanish"),
            FieldSpec("category", "Category", value=s.category if s else "", placeholder="e.g. repair, food"),
            FieldSpec("details", "Details", value=s.details if s else ""),
            FieldSpec("teach", "I can teach it", "check", bool(s and s.teach)),
        ]

    def action_new_skill(self) -> None:
        def submit(v: FormValues) -> None:
            rid = self.g.add_skill(v["title"], v["category"], bool(v["teach"]), v["details"])
            self.call_after_refresh(self.table.move_to_key, rid)
        self.form("List a skill", self._fields(None), submit, "List")

    def _mine(self) -> Skill | None:
        key = self.selected_key()
        s = self.g.view().skills.get(key) if key else None  # type: ignore[call-overload]
        if s is None:
            self.app.notify("Select a skill first", severity="warning")
        return s

    def action_edit_skill(self) -> None:
        s = self._mine()
        if s is not None:
            self.form(f"Edit skill {s.id}", self._fields(s), lambda v: self.g.edit_skill(
                s.id, title=v["title"], category=v["category"], teach=bool(v["teach"]), details=v["details"]))

    def action_remove_skill(self) -> None:
        s = self._mine()
        if s is not None:
            self.act(lambda: self.g.remove_skill(s.id), f"“{s.title}” removed")


def member_extra(service: CircleService, member: MemberId, who: Callable[[MemberId], str]) -> Text:
    """For the Members tab's detail panel: the member's skills and, only when
    the time bank is on, their confirmed hours (given / received, no rank)."""
    g = gatherings(service.board)
    t = Text()
    skills = g.skills(member)
    if skills:
        t.append("\nSkills\n", style="bold")
        for s in skills:
            t.append(f"  {s.title}" + (" (can teach)" if s.teach else "") + "\n")
    if g.settings().timebank:
        b = g.balances().get(member)
        t.append("\nTime bank (confirmed)\n", style="bold")
        t.append(f"  gave {format_hours(b.given_minutes if b else 0)} · "
                 f"received {format_hours(b.received_minutes if b else 0)}\n")
        pending = [x for x in g.exchanges(member) if x.status.value == "pending" and not x.duplicate_of]
        if pending:
            t.append(f"  {len(pending)} waiting for a confirmation\n", style="dim")
    return t
