"""The Tools tab: the library, loans (also recorded by a steward for another
member), holds, state, loss, and each tool's loan and condition history."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.model import Availability, Condition, Loan, MemberId, Tool, ToolState
from circle.crdt.stewardship import HistoryEntry, lend, tool_history
from circle.errors import CircleError, NotFound
from circle.tui.commands import ActionSpec
from circle.tui.rows import TOOL_COLUMNS, age, day_text, tool_row
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import ConfirmScreen, FieldSpec, FormScreen, FormValues, InfoScreen
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab

CONDITION_OPTIONS = [(c.value, c.value) for c in Condition]
TOOL_STATE_OPTIONS = [(s.value, s.value) for s in (ToolState.ACTIVE, ToolState.MAINTENANCE, ToolState.RETIRED,
                                                   ToolState.MISSING)]
HISTORY_IN_PANEL = 5


class ToolsTab(BoardTab):
    TAB_ID = "tools"
    TITLE = "Tools"
    RECORDS = "tools"
    FILTER_HINT = "Type to filter tools"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("new_tool", "n", "New", "tools", "Add a tool to the library (you steward it)"),
        ActionSpec("edit_tool", "e", "Edit", "tools", "Edit the selected tool"),
        ActionSpec("borrow", "b", "Borrow", "tools",
                   "Borrow the selected tool (its steward can record the loan for another member)"),
        ActionSpec("return_tool", "r", "Return", "tools", "Return a loan of the selected tool (also resolves conflicts)"),
        ActionSpec("renew", "R", "Renew", "tools", "Renew your loan of the selected tool", show=False),
        ActionSpec("hold", "h", "Hold", "tools", "Join the queue for the selected tool"),
        ActionSpec("unhold", "u", "Unhold", "tools", "Leave the queue for the selected tool", show=False),
        ActionSpec("history", "H", "History", "tools", "Loan and condition history of the selected tool"),
        ActionSpec("tool_state", "s", "State", "tools",
                   "Set the selected tool's state: active, maintenance, retired or missing", show=False),
        ActionSpec("mark_lost", "l", "Lost", "tools", "Mark the selected tool lost and its open loans lost (asks first)",
                   show=False),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(TOOL_COLUMNS, id="tools-table",
                              empty_text="The tool library is empty. Press n to add a tool.")
            with VerticalScroll(classes="side", id="tools-side"):
                yield Static(id="tools-detail")

    def rebuild(self) -> None:
        me, now = self.host.service.me, self.host.now()
        self.table.set_rows([tool_row(t, self.host.handles, me, now) for t in self.board.tools()])

    def update_details(self) -> None:
        tid = self.selected_id()
        tool = self.board.view().tools.get(tid) if tid else None
        self.query_one("#tools-detail", Static).update(self._detail(tool) if tool else Text(""))

    def _detail(self, tool: Tool) -> Text:
        now, who = self.host.now(), self.host.who
        t = Text()
        t.append(tool.name + "\n", style="bold")
        t.append(f"{tool.availability.value} · condition {tool.condition.value} · steward "
                 f"{who(tool.steward)} · loans of {tool.loan_days} days\n")
        if tool.condition_note:
            t.append(f"note: {tool.condition_note}\n")
        if tool.description:
            t.append(tool.description + "\n")
        loan = tool.current_loan
        if loan is not None:
            style = "bold red" if loan.overdue else ""
            t.append(f"\nOn loan to {who(loan.borrower)} since {day_text(loan.out_at, now)}; due "
                     f"{day_text(loan.due_at, now)}{', OVERDUE' if loan.overdue else ''}\n", style=style)
        if tool.conflicting_loans:
            t.append(f"\nCONFLICT: {len(tool.conflicting_loans) + 1} loans were made at once while offline.\n",
                     style="bold red")
            t.append(f"Current: {who(loan.borrower) if loan else '-'} ({loan.id if loan else '-'})\n")
            for c in tool.conflicting_loans:
                t.append(f"Also out: {who(c.borrower)} ({c.id}), since {age(c.out_at, now)} ago\n")
            t.append("Press r to return one of them and resolve it.\n")
        if tool.queue:
            t.append("\nQueue\n", style="bold")
            for pos, h in enumerate(tool.queue, 1):
                ready = " (ready)" if pos == 1 and tool.ready_for == h.member else ""
                t.append(f"{pos}. {who(h.member)}{ready}, since {age(h.created_at, now)} ago\n")
        history = tool_history(self.board, tool.id)
        if history:
            t.append("\nHistory (H: all)\n", style="bold")
            for line in self._history_lines(history[-HISTORY_IN_PANEL:]):
                t.append(line + "\n")
        return t

    def _history_lines(self, entries: list[HistoryEntry]) -> list[str]:
        now, who = self.host.now(), self.host.who
        lines = []
        for e in entries:
            x = e.loan
            line = f"{day_text(x.out_at, now)}: {who(x.borrower)} took it ({x.condition_out.value})"
            if e.recorded_by is not None:
                line += f", lent by {who(e.recorded_by)}"
            if x.returned_at is not None:
                cond = x.condition_in.value if x.condition_in else x.condition_out.value
                line += f"; back {day_text(x.returned_at, now)} ({cond})"
            elif x.lost_at is not None:
                line += f"; lost {day_text(x.lost_at, now)}"
            else:
                line += f"; due {day_text(x.due_at, now)}" + (" OVERDUE" if x.overdue else "")
            lines.append(line)
        return lines

    # --- actions ----------------------------------------------------------------

    def _tool(self) -> Tool | None:
        rid = self.need_selection("a tool")
        return None if rid is None else self.board.view().tools.get(rid)

    def action_new_tool(self) -> None:
        fields = [
            FieldSpec("name", "Name", placeholder="e.g. cordless drill"),
            FieldSpec("description", "Description"),
            FieldSpec("category", "Category"),
            FieldSpec("condition", "Condition", "select", Condition.GOOD.value, CONDITION_OPTIONS),
            FieldSpec("note", "Condition note"),
            FieldSpec("loan_days", "Loan days", "int", 7),
        ]

        def submit(v: FormValues) -> None:
            rid = self.board.add_tool(v["name"], v["description"], v["category"], Condition(v["condition"]),
                                      v["loan_days"] or 7, v["note"])
            self.call_after_refresh(self.table.move_to_key, rid)

        self.app.push_screen(FormScreen("Add a tool (you will be its steward)", fields, submit, "Add"))

    def action_edit_tool(self) -> None:
        t = self._tool()
        if t is None:
            return
        fields = [
            FieldSpec("name", "Name", value=t.name), FieldSpec("description", "Description", value=t.description),
            FieldSpec("category", "Category", value=t.category),
            FieldSpec("condition", "Condition", "select", t.condition.value, CONDITION_OPTIONS),
            FieldSpec("note", "Condition note", value=t.condition_note),
            FieldSpec("loan_days", "Loan days", "int", t.loan_days),
        ]

        def submit(v: FormValues) -> None:
            self.board.edit_tool(t.id, name=v["name"], description=v["description"], category=v["category"],
                                 loan_days=v["loan_days"])
            if v["condition"] != t.condition.value or v["note"] != t.condition_note:
                self.board.set_condition(t.id, Condition(v["condition"]), v["note"])

        self.app.push_screen(FormScreen(f"Edit tool {t.id}", fields, submit))

    def action_borrow(self) -> None:
        t = self._tool()
        if t is None:
            return
        me = self.host.service.me
        if t.steward != me or t.availability not in (Availability.AVAILABLE, Availability.HELD):
            self.host.act(lambda: self.board.borrow(t.id), f"You borrowed {t.name} for {t.loan_days} days")
            return
        # The steward hands tools over: record the loan for whoever takes it.
        members = [m for m in self.board.members() if m.active]
        members.sort(key=lambda m: (m.id != me, m.handle.lower()))
        default = t.ready_for if t.ready_for is not None else me
        options = [(("you" if m.id == me else m.handle), m.id) for m in members]
        fields = [
            FieldSpec("member", "Who takes it", "select", default, options),
            FieldSpec("days", "Loan days", "int", t.loan_days),
        ]

        def submit(v: FormValues) -> None:
            lend(self.board, t.id, v["member"], v["days"] or t.loan_days)
            who = self.host.who(MemberId(v["member"]))
            self.app.notify(f"{t.name} lent to {who} for {v['days'] or t.loan_days} days"
                            if who != "you" else f"You borrowed {t.name}")

        self.app.push_screen(FormScreen(f"Lend {t.name}", fields, submit, "Record loan"))

    def action_return_tool(self) -> None:
        t = self._tool()
        if t is None:
            return
        loans = [x for x in (t.current_loan, *t.conflicting_loans) if x is not None]
        if not loans:
            self.host.fail(NotFound(f"{t.name} is not on loan"))
            return
        mine = [x for x in loans if x.borrower == self.host.service.me]
        default = (mine or loans)[0]

        def label(x: Loan) -> str:
            whose = self.host.who(x.borrower)
            whose = "your loan" if whose == "you" else f"{whose}'s loan"
            return f"{whose} {x.id}" + (" (current)" if x is t.current_loan else " (conflict)")

        fields = [
            FieldSpec("loan", "Loan", "select", default.id, [(label(x), x.id) for x in loans]),
            FieldSpec("condition", "Condition now", "select", default.condition_out.value, CONDITION_OPTIONS),
            FieldSpec("note", "Note", value=t.condition_note),
        ]

        def submit(v: FormValues) -> None:
            self.board.return_tool(t.id, Condition(v["condition"]), v["note"], loan_id=v["loan"])
            self.app.notify(f"{t.name} returned")

        self.app.push_screen(FormScreen(f"Return {t.name}", fields, submit, "Return"))

    def action_renew(self) -> None:
        t = self._tool()
        if t is not None:
            self.host.act(lambda: self.board.renew(t.id), f"Loan of {t.name} renewed")

    def action_hold(self) -> None:
        t = self._tool()
        if t is not None:
            self.host.act(lambda: self.board.hold(t.id), f"You are in the queue for {t.name}")

    def action_unhold(self) -> None:
        t = self._tool()
        if t is not None:
            self.host.act(lambda: self.board.unhold(t.id), f"You left the queue for {t.name}")

    def action_history(self) -> None:
        t = self._tool()
        if t is None:
            return
        try:
            entries = tool_history(self.board, t.id)
        except CircleError as exc:
            self.host.fail(exc)
            return
        lines = self._history_lines(entries) or ["Never lent yet."]
        head = f"Condition now: {t.condition.value}" + (f" ({t.condition_note})" if t.condition_note else "")
        self.app.push_screen(InfoScreen(f"History of {t.name}", head + "\n\n" + "\n".join(lines)))

    def action_tool_state(self) -> None:
        t = self._tool()
        if t is None:
            return
        fields = [FieldSpec("state", "State", "select", t.state.value, TOOL_STATE_OPTIONS)]

        def submit(v: FormValues) -> None:
            state = ToolState(v["state"])
            if state != t.state:
                self.board.edit_tool(t.id, state=state)
                self.app.notify(f"{t.name} is now {state.value}")

        self.app.push_screen(FormScreen(f"State of {t.name}", fields, submit, "Set state"))

    def action_mark_lost(self) -> None:
        t = self._tool()
        if t is None:
            return
        if t.state == ToolState.MISSING:
            self.app.notify(f"{t.name} is already marked missing.", severity="warning")
            return
        loans = [x for x in (t.current_loan, *t.conflicting_loans) if x is not None]
        body = f"This marks {t.name} missing for every member"
        if loans:
            body += " and closes " + ", ".join(f"{self.host.who(x.borrower)}'s loan" for x in loans) + " as lost"
        body += (".\nNobody can borrow or hold it while it is missing. If it turns up, press s and set "
                 "its state back to active.")

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.host.act(lambda: self.board.mark_lost(t.id), f"{t.name} marked lost")

        self.app.push_screen(ConfirmScreen(f"Mark {t.name} lost?", body, "Mark lost"), done)
