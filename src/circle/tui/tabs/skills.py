"""The Skills tab: what members can do or teach, the needs each may help
with, and list/edit/remove of your own. Skills are listed by title: nothing
here orders people."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.gather_records import Skill
from circle.crdt.gatherings import Gatherings, gatherings
from circle.crdt.matching import skill_score
from circle.crdt.model import MemberId, NeedStatus
from circle.tui.commands import ActionSpec
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.table import Column, RecordTable, Row, make_row
from circle.tui.tabs.base import BoardTab, matches_text

SKILL_COLUMNS = [Column("ID", 8, drop=2), Column("SKILL", 0), Column("CATEGORY", 12, drop=1), Column("MEMBER", 14),
                 Column("TEACH", 9, drop=3)]


def skill_row(s: Skill, handles: dict[MemberId, str], me: MemberId | None) -> Row:
    who = "you" if s.author == me else handles.get(s.author, s.author[:6])
    return make_row(s.id, (s.id, s.title, s.category or "-", who, "can teach" if s.teach else ""), "",
                    s.details)


class SkillsTab(BoardTab):
    TAB_ID = "skills"
    TITLE = "Skills"
    RECORDS = "skills"
    FILTER_HINT = "Type to filter skills: title, category, member"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("new_skill", "n", "New", "skills", "List a skill you can do or teach"),
        ActionSpec("edit_skill", "e", "Edit", "skills", "Edit your selected skill"),
        ActionSpec("remove_skill", "d", "Remove", "skills", "Remove your selected skill from the list"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(SKILL_COLUMNS, id="skills-table",
                              empty_text="No skills listed yet. Press n to list something you can do or teach.")
            with VerticalScroll(classes="side", id="skills-side"):
                yield Static(id="skills-detail")
                yield Static(id="skills-match")

    @property
    def g(self) -> Gatherings:
        return gatherings(self.board)

    def rebuild(self) -> None:
        me = self.host.service.me
        self.table.set_rows([skill_row(s, self.host.handles, me) for s in self.g.skills()])

    def _selected(self) -> Skill | None:
        rid = self.selected_id()
        return self.g.view().skills.get(rid) if rid else None

    def update_details(self) -> None:
        s = self._selected()
        self.query_one("#skills-detail", Static).update(self._detail(s) if s else Text(""))
        self.query_one("#skills-match", Static).update(self._fits(s) if s else Text(""))

    def _detail(self, s: Skill) -> Text:
        t = Text()
        t.append(s.title + "\n", style="bold")
        t.append(self.host.who(s.author) + (" · can teach" if s.teach else "") + f" · category {s.category or '-'}\n")
        if s.details:
            t.append("\n" + s.details + "\n")
        if s.author == self.host.service.me:
            t.append("\ne: edit · d: remove\n", style="dim")
        return t

    def _fits(self, s: Skill) -> Text:
        """Open needs this skill may help with (never the skill owner's own)."""
        fits = []
        for n in self.board.needs("active"):
            if n.author != s.author and n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED):
                points, reasons = skill_score(n, s)
                if points:
                    fits.append((-points, n.id, n, reasons))
        return matches_text("Needs it may help with", [
            (n.title, f"{self.host.who(n.author)}, {n.id}", reasons) for _, _, n, reasons in sorted(fits)[:5]])

    # --- actions ----------------------------------------------------------------

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

        self.app.push_screen(FormScreen("List a skill", self._fields(None), submit, "List"))

    def _skill(self) -> Skill | None:
        rid = self.need_selection("a skill")
        return None if rid is None else self.g.view().skills.get(rid)

    def action_edit_skill(self) -> None:
        s = self._skill()
        if s is None:
            return

        def submit(v: FormValues) -> None:
            self.g.edit_skill(s.id, title=v["title"], category=v["category"], teach=bool(v["teach"]),
                              details=v["details"])

        self.app.push_screen(FormScreen(f"Edit skill {s.id}", self._fields(s), submit))

    def action_remove_skill(self) -> None:
        s = self._skill()
        if s is not None:
            self.host.act(lambda: self.g.remove_skill(s.id), f"“{s.title}” removed")
