"""The Offers tab: table, detail and matching needs, actions."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.matching import needs_for
from circle.crdt.model import DAY_MS, Offer, OfferStatus
from circle.tui.commands import ActionSpec
from circle.tui.rows import OFFER_COLUMNS, URGENCY_LABEL, age, offer_row
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab, matches_text, tags_of


class OffersTab(BoardTab):
    TAB_ID = "offers"
    TITLE = "Offers"
    RECORDS = "offers"
    FILTER_HINT = "Type to filter offers"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("new_offer", "n", "New", "offers", "Post a new offer"),
        ActionSpec("edit_offer", "e", "Edit", "offers", "Edit the selected offer"),
        ActionSpec("pause", "p", "Pause/resume", "offers", "Pause or resume your selected offer"),
        ActionSpec("close_offer", "x", "Close", "offers", "Close your selected offer for good"),
        ActionSpec("toggle_all_offers", "a", "All/open", "offers", "Show all offers or only open and paused"),
    ]

    show_all = False

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(OFFER_COLUMNS, id="offers-table", empty_text="No open offers. Press n to post one.")
            with VerticalScroll(classes="side", id="offers-side"):
                yield Static(id="offers-detail")
                yield Static(id="offers-match")

    def rebuild(self) -> None:
        offers = self.board.offers("all")
        if not self.show_all:
            offers = [o for o in offers if o.status in (OfferStatus.OPEN, OfferStatus.PAUSED)]
        me, now = self.host.service.me, self.host.now()
        self.table.set_rows([offer_row(o, self.host.handles, me, now) for o in offers])

    def show_key(self, key: str) -> bool:
        o = self.board.view().offers.get(key)  # type: ignore[call-overload]
        if o is not None and o.status not in (OfferStatus.OPEN, OfferStatus.PAUSED) and not self.show_all:
            self.show_all = True
            self.rebuild()
        return super().show_key(key)

    def update_details(self) -> None:
        oid = self.selected_id()
        offer = self.board.view().offers.get(oid) if oid else None
        self.query_one("#offers-detail", Static).update(self._detail(offer) if offer else Text(""))
        self.query_one("#offers-match", Static).update(self._matches(offer) if offer else Text(""))

    def _detail(self, o: Offer) -> Text:
        now = self.host.now()
        t = Text()
        t.append(o.title + "\n", style="bold")
        t.append(f"{o.status.value} · by {self.host.who(o.author)} · {age(o.created_at, now)} ago\n")
        if o.zone or o.category:
            t.append(f"zone {o.zone or '-'} · category {o.category or '-'}\n")
        if o.tags:
            t.append("tags " + ", ".join(sorted(o.tags)) + "\n")
        if o.recurring:
            t.append("recurring\n")
        elif o.quantity is not None:
            t.append(f"quantity {o.quantity}\n")
        if o.details:
            t.append("\n" + o.details + "\n")
        return t

    def _matches(self, o: Offer) -> Text:
        matches = needs_for(o, self.board.needs("active"), limit=5)
        return matches_text("Needs that may fit", [
            (m.need.title, f"{URGENCY_LABEL[m.need.urgency]}, {self.host.who(m.need.author)}, {m.need.id}",
             m.reasons)
            for m in matches])

    # --- actions ----------------------------------------------------------------

    def _fields(self, o: Offer | None) -> list[FieldSpec]:
        days = 30 if o is None else max(1, -(-(o.expires_at - self.host.now()) // DAY_MS))
        return [
            FieldSpec("title", "Title", value=o.title if o else "", placeholder="what you can give or lend"),
            FieldSpec("details", "Details", value=o.details if o else ""),
            FieldSpec("category", "Category", value=o.category if o else ""),
            FieldSpec("tags", "Tags", value=", ".join(sorted(o.tags)) if o else "", placeholder="comma separated"),
            FieldSpec("zone", "Zone", value=o.zone if o else ""),
            FieldSpec("quantity", "Quantity", "int", "" if o is None or o.quantity is None else o.quantity),
            FieldSpec("recurring", "Recurring (offered again and again)", "check", bool(o and o.recurring)),
            FieldSpec("expires", "Expires in days", "int", days),
        ]

    def _offer(self) -> Offer | None:
        rid = self.need_selection("an offer")
        return None if rid is None else self.board.view().offers.get(rid)

    def action_new_offer(self) -> None:
        def submit(v: FormValues) -> None:
            rid = self.board.add_offer(v["title"], v["details"], v["category"], tags_of(v["tags"]), v["zone"],
                                       v["quantity"], bool(v["recurring"]), v["expires"] or 30)
            self.call_after_refresh(self.table.move_to_key, rid)

        self.app.push_screen(FormScreen("Post an offer", self._fields(None), submit, "Post"))

    def action_edit_offer(self) -> None:
        o = self._offer()
        if o is None:
            return

        def submit(v: FormValues) -> None:
            self.board.edit_offer(o.id, title=v["title"], details=v["details"], category=v["category"],
                                  tags=tags_of(v["tags"]), zone=v["zone"], quantity=v["quantity"],
                                  recurring=bool(v["recurring"]), expires_days=v["expires"])

        self.app.push_screen(FormScreen(f"Edit offer {o.id}", self._fields(o), submit))

    def action_pause(self) -> None:
        o = self._offer()
        if o is None:
            return
        if o.status == OfferStatus.PAUSED:
            self.host.act(lambda: self.board.resume_offer(o.id), f"“{o.title}” is open again")
        else:
            self.host.act(lambda: self.board.pause_offer(o.id), f"“{o.title}” paused")

    def action_close_offer(self) -> None:
        o = self._offer()
        if o is not None:
            self.host.act(lambda: self.board.close_offer(o.id), f"“{o.title}” closed")

    def action_toggle_all_offers(self) -> None:
        self.show_all = not self.show_all
        self.rebuild()
        self.host.schedule_details()
