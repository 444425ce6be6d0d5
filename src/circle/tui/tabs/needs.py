"""The Needs tab: table, status filter, detail and matching offers, actions."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Static

from circle.crdt.matching import offers_for
from circle.crdt.model import DAY_MS, Need, NeedStatus, Urgency
from circle.tui.commands import ActionSpec
from circle.tui.rows import NEED_COLUMNS, URGENCY_LABEL, age, need_row
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab, matches_text, tags_of

URGENCY_OPTIONS = [(URGENCY_LABEL[u], u.value) for u in (Urgency.ANYTIME, Urgency.THIS_WEEK, Urgency.H48, Urgency.NOW)]

# The status filter, in the order `s` cycles through it.
NEED_STATUS_LABELS = {
    "active": "active needs (open and claimed)",
    "open": "open needs",
    "claimed": "claimed needs",
    "met": "met needs",
    "withdrawn": "withdrawn needs",
    "expired": "expired needs",
    "all": "all needs",
}
NEED_STATUSES = list(NEED_STATUS_LABELS)


class NeedsTab(BoardTab):
    TAB_ID = "needs"
    TITLE = "Needs"
    RECORDS = "needs"
    FILTER_HINT = None  # the filter shares a row with the status line (compose_body)
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("new_need", "n", "New", "needs", "Post a new need"),
        ActionSpec("edit_need", "e", "Edit", "needs", "Edit the selected need"),
        ActionSpec("claim", "c", "Claim", "needs", "Claim the selected need: you will help with it"),
        ActionSpec("unclaim", "u", "Unclaim", "needs", "Take back your claim on the selected need"),
        ActionSpec("met", "m", "Met", "needs", "Mark the selected need as met"),
        ActionSpec("withdraw", "w", "Withdraw", "needs", "Withdraw your own need"),
        ActionSpec("reopen", "o", "Reopen", "needs", "Reopen a met, withdrawn or expired need", show=False),
        ActionSpec("toggle_all", "a", "All/active", "needs", "Show all needs or only active ones", show=False),
        ActionSpec("cycle_need_status", "s", "Status", "needs",
                   "Show needs of the next status: active, open, claimed, met, withdrawn, expired, all"),
        *(ActionSpec(f"need_status('{status}')", "", "", "needs", f"Show {label}")
          for status, label in NEED_STATUS_LABELS.items()),
    ]

    DEFAULT_CSS = """
    NeedsTab .filter-row { height: 3; }
    NeedsTab .filter-row > .filter { width: 1fr; }
    NeedsTab #needs-status { width: auto; padding: 1 1 0 1; color: $text-muted; }
    """

    need_status = "active"

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="filter-row"):
            yield Input(placeholder="Type to filter needs: words in title, details, tags, zone, people",
                        id="needs-filter", classes="filter")
            yield Static(self._status_text(), id="needs-status")
        with Horizontal(classes="body"):
            yield RecordTable(NEED_COLUMNS, id="needs-table", empty_text="No active needs. Press n to post one.")
            with VerticalScroll(classes="side", id="needs-side"):
                yield Static(id="needs-detail")
                yield Static(id="needs-match")

    def focus_filter(self) -> bool:
        self.query_one("#needs-filter", Input).focus()
        return True

    def show_key(self, key: str) -> bool:
        n = self.board.view().needs.get(key)  # type: ignore[call-overload]
        if n is not None and self.need_status != "all" and not self._shows(n.status):
            self.action_need_status("all")
        box = self.query_one("#needs-filter", Input)
        if box.value:
            box.value = ""
            self.table.set_filter("")
        return self.table.move_to_key(key)

    def _shows(self, status: NeedStatus) -> bool:
        if self.need_status == "active":
            return status in (NeedStatus.OPEN, NeedStatus.CLAIMED)
        return self.need_status in ("all", status.value)

    def rebuild(self) -> None:
        board, me, now = self.board, self.host.service.me, self.host.now()
        self.table.set_rows([need_row(n, self.host.handles, me, now) for n in board.needs(self.need_status)])

    def update_details(self) -> None:
        nid = self.selected_id()
        need = self.board.view().needs.get(nid) if nid else None
        self.query_one("#needs-detail", Static).update(self._detail(need) if need else Text(""))
        self.query_one("#needs-match", Static).update(self._matches(need) if need else Text(""))

    def _detail(self, n: Need) -> Text:
        now, who = self.host.now(), self.host.who
        t = Text()
        t.append(n.title + "\n", style="bold")
        t.append(f"{n.status.value} · {URGENCY_LABEL[n.urgency]} · by {who(n.author)} · {age(n.created_at, now)} ago\n")
        if n.zone or n.category:
            t.append(f"zone {n.zone or '-'} · category {n.category or '-'}\n")
        if n.tags:
            t.append("tags " + ", ".join(sorted(n.tags)) + "\n")
        if n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED):
            t.append(f"expires {age(n.expires_at, now)}\n")
        if n.claims:
            t.append("claimed by " + ", ".join(who(c) for c in n.claims) + "\n")
        if n.details:
            t.append("\n" + n.details + "\n")
        return t

    def _matches(self, n: Need) -> Text:
        matches = offers_for(n, self.board.offers("open"), limit=5)
        return matches_text("Offers that may fit", [
            (m.offer.title, f"{self.host.who(m.offer.author)}, {m.offer.id}", m.reasons) for m in matches])

    # --- actions ----------------------------------------------------------------

    def _fields(self, n: Need | None) -> list[FieldSpec]:
        days = 14 if n is None else max(1, -(-(n.expires_at - self.host.now()) // DAY_MS))
        return [
            FieldSpec("title", "Title", value=n.title if n else "", placeholder="what is needed"),
            FieldSpec("details", "Details", value=n.details if n else ""),
            FieldSpec("urgency", "Urgency", "select", n.urgency.value if n else Urgency.ANYTIME.value,
                      URGENCY_OPTIONS),
            FieldSpec("category", "Category", value=n.category if n else "", placeholder="e.g. food, transport"),
            FieldSpec("tags", "Tags", value=", ".join(sorted(n.tags)) if n else "", placeholder="comma separated"),
            FieldSpec("zone", "Zone", value=n.zone if n else "", placeholder="coarse area, never an address"),
            FieldSpec("expires", "Expires in days", "int", days),
        ]

    def action_new_need(self) -> None:
        def submit(v: FormValues) -> None:
            rid = self.board.add_need(v["title"], v["details"], v["category"], tags_of(v["tags"]),
                                      Urgency(v["urgency"]), v["zone"], v["expires"] or 14)
            self.call_after_refresh(self.table.move_to_key, rid)

        self.app.push_screen(FormScreen("Post a need", self._fields(None), submit, "Post"))

    def _need(self) -> Need | None:
        rid = self.need_selection("a need")
        return None if rid is None else self.board.view().needs.get(rid)

    def action_edit_need(self) -> None:
        n = self._need()
        if n is None:
            return

        def submit(v: FormValues) -> None:
            self.board.edit_need(n.id, title=v["title"], details=v["details"], category=v["category"],
                                 tags=tags_of(v["tags"]), urgency=Urgency(v["urgency"]), zone=v["zone"],
                                 expires_days=v["expires"])

        self.app.push_screen(FormScreen(f"Edit need {n.id}", self._fields(n), submit))

    def action_claim(self) -> None:
        n = self._need()
        if n is not None:
            self.host.act(lambda: self.board.claim_need(n.id), f"You claimed “{n.title}”")

    def action_unclaim(self) -> None:
        n = self._need()
        if n is not None:
            self.host.act(lambda: self.board.unclaim_need(n.id), f"Claim on “{n.title}” taken back")

    def action_met(self) -> None:
        n = self._need()
        if n is not None:
            self.host.act(lambda: self.board.met_need(n.id), f"“{n.title}” marked met")

    def action_withdraw(self) -> None:
        n = self._need()
        if n is not None:
            self.host.act(lambda: self.board.withdraw_need(n.id), f"“{n.title}” withdrawn")

    def action_reopen(self) -> None:
        n = self._need()
        if n is not None:
            self.host.act(lambda: self.board.reopen_need(n.id), f"“{n.title}” reopened")

    def action_toggle_all(self) -> None:
        self.action_need_status("active" if self.need_status == "all" else "all")

    def action_cycle_need_status(self) -> None:
        self.action_need_status(NEED_STATUSES[(NEED_STATUSES.index(self.need_status) + 1) % len(NEED_STATUSES)])

    def action_need_status(self, status: str) -> None:
        """Show only needs of one status ("active" = open and claimed, "all")."""
        if status not in NEED_STATUS_LABELS:
            return
        self.need_status = status
        self.query_one("#needs-status", Static).update(self._status_text())
        self.table.set_empty_text(self._empty_text())
        self.app.notify(f"Showing {NEED_STATUS_LABELS[status]}")
        self.rebuild()
        self.host.schedule_details()

    def _status_text(self) -> Text:
        t = Text("showing: ")
        t.append(self.need_status, style="bold")
        t.append(" · s: next")
        return t

    def _empty_text(self) -> str:
        if self.need_status == "active":
            return "No active needs. Press n to post one."
        return f"No {NEED_STATUS_LABELS[self.need_status]}. Press s to show another status."
