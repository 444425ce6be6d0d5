"""The circle terminal app: a thin layer over `CircleService`.

Attributes down, messages up: the app gets its service and providers in the
constructor; screens get what they show as attributes and answer with
messages or `dismiss` values; every board action goes through
`service.board`, exactly as the CLI's does, and every `CircleError` becomes
one sentence on screen.

Threads. Automerge is not thread-safe and holds the GIL while it works, so the
document has exactly one owner: the event-loop thread. Everything that
touches it (board actions, `service.refresh()` following other processes'
edits, `apply_remote`, view rebuilds) runs on the loop, in handlers, timers
(`set_interval`) and `call_later` callbacks, never in thread workers. A thread
would not make it faster (the GIL is held) and could corrupt the document if
it overlapped with the UI's reads. The only work sent to threads is the
argon2id key derivation in `Home.open`/`Home.create`, which touches no
document and releases the GIL.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from circle.crdt.board import Board
from circle.crdt.matching import needs_for, offers_for
from circle.crdt.model import (
    DAY_MS,
    Condition,
    MemberId,
    Millis,
    Need,
    NeedStatus,
    Offer,
    OfferStatus,
    RecordId,
    Tool,
    ToolState,
    Urgency,
)
from circle.crdt.store import atomic_write
from circle.crdt.transfer import export_csv, export_json, import_records, parse_import
from circle.errors import CircleError, NotFound, PassphraseRequired, UsageError, WrongPassphrase
from circle.net.keys import fingerprint
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.commands import ACTIONS, NEED_STATUS_LABELS, TAB_TITLES, BoardCommands
from circle.tui.events_tab import EventsPane
from circle.tui.providers import InviteProvider, JoinProvider
from circle.tui.rows import (
    MEMBER_COLUMNS,
    NEED_COLUMNS,
    OFFER_COLUMNS,
    TOOL_COLUMNS,
    URGENCY_LABEL,
    age,
    member_row,
    need_row,
    offer_row,
    tool_row,
)
from circle.tui.screens import (
    ConfirmScreen,
    FieldSpec,
    FormScreen,
    FormValues,
    HelpScreen,
    InfoScreen,
    InviteScreen,
    PassphraseScreen,
    WelcomeScreen,
    removal_text,
)
from circle.tui.skills_tab import SkillsPane, member_extra
from circle.tui.sync_view import (
    RELAY_COLUMNS,
    SYNC_COLUMNS,
    NoSync,
    PeerInfo,
    SyncStatusSource,
    peer_row,
    relay_row,
    summary,
)
from circle.tui.table import RecordTable

GATHER_TABS = ("skills", "events")  # self-contained panes (skills_tab.py, events_tab.py)

Ticker = tuple[float, Callable[[], object]]
DETAIL_DELAY = 0.12  # seconds of quiet before the side panel's matches are recomputed

ACTION_TABS = {spec.action: spec.tab for spec in ACTIONS}
URGENCY_OPTIONS = [(URGENCY_LABEL[u], u.value) for u in (Urgency.ANYTIME, Urgency.THIS_WEEK, Urgency.H48, Urgency.NOW)]
CONDITION_OPTIONS = [(c.value, c.value) for c in Condition]
TOOL_STATE_OPTIONS = [(s.value, s.value) for s in (ToolState.ACTIVE, ToolState.MAINTENANCE, ToolState.RETIRED,
                                                   ToolState.MISSING)]
NEED_STATUSES = list(NEED_STATUS_LABELS)
FORMAT_OPTIONS = [("JSON (can be imported again)", "json"), ("CSV (a section per collection)", "csv")]


def _tags(text: str) -> list[str]:
    return [t.strip() for t in text.replace(",", " ").split() if t.strip()]


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $primary; color: $text; padding: 0 1; }
    """


class BoardScreen(Screen[None]):
    """The board: tabs over one service."""

    DEFAULT_CSS = """
    BoardScreen #tabs { height: 1fr; }
    BoardScreen TabPane { height: 1fr; padding: 0; }
    BoardScreen ContentSwitcher { height: 1fr; }
    BoardScreen .filter { margin: 0 0; height: 3; }
    BoardScreen .body { height: 1fr; }
    BoardScreen .side { width: 38; border-left: solid $primary; padding: 0 1; }
    BoardScreen .side-title { text-style: bold; }
    BoardScreen #sync-help { height: auto; padding: 0 1 1 1; color: $text-muted; }
    BoardScreen .filter-row { height: 3; }
    BoardScreen .filter-row > .filter { width: 1fr; }
    BoardScreen #needs-status { width: auto; padding: 1 1 0 1; color: $text-muted; }
    BoardScreen #relays-title { height: 1; padding: 0 1; text-style: bold; background: $panel; }
    BoardScreen #relays-table { height: 8; }
    """

    BINDINGS = [
        Binding(spec.key, spec.action, spec.label, show=spec.tab is not None or spec.key == "slash",
                key_display="/" if spec.key == "slash" else None)
        for spec in ACTIONS if spec.key
    ]

    def __init__(self, service: CircleService, sync: SyncStatusSource, invites: InviteProvider | None) -> None:
        super().__init__()
        self.service = service
        self.sync = sync
        self.invites = invites
        self.need_status = "active"  # a key of NEED_STATUS_LABELS
        self.show_all_offers = False
        self._known_needs: set[RecordId] = set()
        self._reload_pending = False
        self._detail_timer: Timer | None = None
        self._dirty: set[str] = set()
        self.loaded = False
        self._loop_thread = threading.get_ident()
        self._unsubscribe: Callable[[], None] | None = None
        self.handles: dict[MemberId, str] = {}

    # --- layout ------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status-bar")
        with TabbedContent(initial="needs", id="tabs"):
            with TabPane("Needs", id="needs"):
                with Horizontal(classes="filter-row"):
                    yield Input(placeholder="Type to filter needs: words in title, details, tags, zone, people",
                                id="needs-filter", classes="filter")
                    yield Static(self._need_status_text(), id="needs-status")
                with Horizontal(classes="body"):
                    yield RecordTable(NEED_COLUMNS, id="needs-table",
                                      empty_text="No active needs. Press n to post one.")
                    with VerticalScroll(classes="side", id="needs-side"):
                        yield Static(id="needs-detail")
                        yield Static(id="needs-match")
            with TabPane("Offers", id="offers"):
                yield Input(placeholder="Type to filter offers", id="offers-filter", classes="filter")
                with Horizontal(classes="body"):
                    yield RecordTable(OFFER_COLUMNS, id="offers-table",
                                      empty_text="No open offers. Press n to post one.")
                    with VerticalScroll(classes="side", id="offers-side"):
                        yield Static(id="offers-detail")
                        yield Static(id="offers-match")
            with TabPane("Tools", id="tools"):
                yield Input(placeholder="Type to filter tools", id="tools-filter", classes="filter")
                with Horizontal(classes="body"):
                    yield RecordTable(TOOL_COLUMNS, id="tools-table",
                                      empty_text="The tool library is empty. Press n to add a tool.")
                    with VerticalScroll(classes="side", id="tools-side"):
                        yield Static(id="tools-detail")
            with TabPane("Skills", id="skills"):
                yield SkillsPane(self.service)
            with TabPane("Events", id="events"):
                yield EventsPane(self.service)
            with TabPane("Members", id="members"):
                yield Input(placeholder="Type to filter members", id="members-filter", classes="filter")
                with Horizontal(classes="body"):
                    yield RecordTable(MEMBER_COLUMNS, id="members-table")
                    with VerticalScroll(classes="side", id="members-side"):
                        yield Static(id="members-detail")
            with TabPane("Sync", id="sync"):
                yield Static(Text(
                    "Devices and relays this circle syncs with. 'has all our changes' means that copy "
                    "is up to date with everything on this device."), id="sync-help")
                with Vertical(classes="body"):
                    yield RecordTable(SYNC_COLUMNS, id="sync-table",
                                      empty_text="No peers or relays yet: live sync is not connected on this device.")
                    yield Static(Text("Relays listed in this circle (a: add · d: remove)"), id="relays-title")
                    yield RecordTable(RELAY_COLUMNS, id="relays-table",
                                      empty_text="No relays listed. Press a to add one, e.g. wss://relay.example.org")
        yield Footer()

    def on_mount(self) -> None:
        self._unsubscribe = self.service.subscribe(self._on_change)
        self.query_one("#needs-table", RecordTable).focus()
        # Paint the frame first, then fill it: on a big board, parsing the
        # document takes longer than drawing the empty screen.
        self.call_after_refresh(self._first_load)

    def _first_load(self) -> None:
        self.reload(status=False)  # the table first; the status bar's counts after that frame
        self._known_needs |= set(self.service.board.view().needs)
        self.loaded = True
        self.call_after_refresh(self.update_sync)
        self.set_interval(1.0, self.update_sync)
        self.set_interval(60.0, self.reload)  # ages and expiry move with the clock

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    # --- helpers ---------------------------------------------------------------

    @property
    def board(self) -> Board:
        return self.service.board

    def now(self) -> Millis:
        return self.service.clock()

    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or "needs"

    def table(self, name: str) -> RecordTable:
        return self.query_one(f"#{name}-table", RecordTable)

    def selected(self, name: str) -> RecordId | None:
        key = self.table(name).cursor_key
        return None if key is None else RecordId(key)

    def who(self, member: MemberId | None) -> str:
        if member is None:
            return "-"
        if member == self.service.me:
            return "you"
        return self.handles.get(member, member[:6])

    def fail(self, exc: CircleError) -> None:
        self.app.notify(str(exc), title="Not done", severity="error")

    def act(self, fn: Callable[[], object], done: str | None = None) -> bool:
        try:
            fn()
        except CircleError as exc:
            self.fail(exc)
            return False
        if done:
            self.app.notify(done)
        return True

    # --- data flow -------------------------------------------------------------

    def _on_change(self, origin: str) -> None:
        if threading.get_ident() != self._loop_thread:
            self.app.call_from_thread(self._on_change, origin)
            return
        if origin in ("remote", "disk"):
            self._announce_new_needs()
        self.schedule_reload()

    def _announce_new_needs(self) -> None:
        needs = self.board.view().needs
        fresh = [n for rid, n in needs.items() if rid not in self._known_needs]
        self._known_needs = set(needs)
        theirs = [n for n in fresh if n.author != self.service.me
                  and n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED)]
        theirs.sort(key=lambda n: (-n.urgency.rank, n.created_at))
        for n in theirs[:3]:
            title = "New need" + (f" ({URGENCY_LABEL[n.urgency]})" if n.urgency.rank >= 2 else "")
            self.app.notify(f"{self.who(n.author)}: {n.title}", title=title,
                            severity="warning" if n.urgency == Urgency.NOW else "information")
        if len(theirs) > 3:
            self.app.notify(f"and {len(theirs) - 3} more new needs", title="New needs")

    def schedule_reload(self) -> None:
        if not self._reload_pending:
            self._reload_pending = True
            self.call_later(self.reload)

    def reload(self, status: bool = True) -> None:
        """Rebuild the visible tab's rows from the board; other tabs are rebuilt
        when shown (at 10k records each tab costs tens of ms, and parsing a
        collection the first time far more)."""
        self._reload_pending = False
        self._dirty = {"needs", "offers", "tools", "members", "sync"}
        self.handles = {m.id: m.handle for m in self.board.view().members.values()}
        self._rebuild(self.active_tab)
        if status:
            self.update_status()

    def _rebuild(self, tab: str) -> None:
        if tab not in self._dirty:
            return
        self._dirty.discard(tab)
        board, me, now = self.board, self.service.me, self.now()
        if tab == "needs":
            needs = board.needs(self.need_status)
            self.table("needs").set_rows([need_row(n, self.handles, me, now) for n in needs])
            self._known_needs |= set(board.view().needs)
        elif tab == "offers":
            offers = board.offers("all")
            if not self.show_all_offers:
                offers = [o for o in offers if o.status in (OfferStatus.OPEN, OfferStatus.PAUSED)]
            self.table("offers").set_rows([offer_row(o, self.handles, me, now) for o in offers])
        elif tab == "tools":
            self.table("tools").set_rows([tool_row(t, self.handles, me, now) for t in board.tools()])
        elif tab == "members":
            self.table("members").set_rows([
                member_row(m, self.handles, me, fingerprint(m.sign_key)) for m in board.members()
            ])
        elif tab == "sync":
            self._update_relays(self.sync.peers())
        self.schedule_details()

    def update_status(self) -> None:
        st = self.service
        board = st.board
        peers = self.sync.peers()
        online, last = summary(peers, self.now())
        view = board.view()
        me = view.members.get(st.me)
        text = Text()
        text.append(f"◉ {board.name}", style="bold")
        text.append(f"  │  you: {me.handle if me else '?'}")
        if me is not None and not me.active:
            text.append(" (removed)", style="bold red")
        text.append(f"  │  {online} peer{'s' if online != 1 else ''} online  │  last sync: {last}  │  ")
        if st.home.encrypted:
            text.append("encrypted at rest", style="bold green")
        else:
            text.append("NOT encrypted at rest", style="bold yellow")
        overdue = len(board.overdue())
        if overdue:
            text.append(f"  │  {overdue} overdue", style="bold red")
        self.query_one("#status-bar", StatusBar).update(text)

    def update_sync(self) -> None:
        peers = self.sync.peers()
        now = self.now()
        self.table("sync").set_rows([peer_row(p, now) for p in peers])
        if self.active_tab == "sync":
            self._update_relays(peers)
        self.update_status()

    def _update_relays(self, peers: list[PeerInfo]) -> None:
        """The document's relay list, with what live sync says about each."""
        self._dirty.discard("sync")
        live = {p.address.rstrip("/"): p for p in peers
                if p.path == "relay" and not p.name.endswith("(previous key)")}
        now = self.now()
        self.table("relays").set_rows([
            relay_row(r.url, self.who(r.added_by), r.added_at, live.get(r.url.rstrip("/")), now)
            for r in self.board.relays()
        ])

    # --- details and match panels ------------------------------------------

    @on(RecordTable.Highlighted)
    def _highlighted(self, event: RecordTable.Highlighted) -> None:
        self.schedule_details()

    def schedule_details(self, immediate: bool = False) -> None:
        """Refresh the side panel of the visible tab. Matching scans every open
        offer (or need), so while the cursor or the filter is moving the update
        waits for a short pause instead of running on every keystroke."""
        if self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None
        if immediate:
            self.call_later(self.update_details)
        else:
            self._detail_timer = self.set_timer(DETAIL_DELAY, self.update_details)

    @property
    def details_settled(self) -> bool:
        return self._detail_timer is None

    def update_details(self) -> None:
        self._detail_timer = None
        tab = self.active_tab
        view = self.board.view()
        if tab == "needs":
            nid = self.selected("needs")
            need = view.needs.get(nid) if nid else None
            self.query_one("#needs-detail", Static).update(self._need_detail(need) if need else Text(""))
            self.query_one("#needs-match", Static).update(self._need_matches(need) if need else Text(""))
        elif tab == "offers":
            oid = self.selected("offers")
            offer = view.offers.get(oid) if oid else None
            self.query_one("#offers-detail", Static).update(self._offer_detail(offer) if offer else Text(""))
            self.query_one("#offers-match", Static).update(self._offer_matches(offer) if offer else Text(""))
        elif tab == "tools":
            tid = self.selected("tools")
            tool = view.tools.get(tid) if tid else None
            self.query_one("#tools-detail", Static).update(self._tool_detail(tool) if tool else Text(""))
        elif tab == "members":
            mid = self.selected("members")
            member = view.members.get(MemberId(mid)) if mid else None
            self.query_one("#members-detail", Static).update(self._member_detail(member) if member else Text(""))

    def _need_detail(self, n: Need) -> Text:
        now = self.now()
        t = Text()
        t.append(n.title + "\n", style="bold")
        t.append(f"{n.status.value} · {URGENCY_LABEL[n.urgency]} · by {self.who(n.author)} "
                 f"· {age(n.created_at, now)} ago\n")
        if n.zone or n.category:
            t.append(f"zone {n.zone or '-'} · category {n.category or '-'}\n")
        if n.tags:
            t.append("tags " + ", ".join(sorted(n.tags)) + "\n")
        if n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED):
            t.append(f"expires {age(n.expires_at, now)}\n")
        if n.claims:
            t.append("claimed by " + ", ".join(self.who(c) for c in n.claims) + "\n")
        if n.details:
            t.append("\n" + n.details + "\n")
        return t

    def _need_matches(self, n: Need) -> Text:
        matches = offers_for(n, self.board.offers("open"), limit=5)
        return _matches_text("Offers that may fit", [
            (m.offer.title, f"{self.who(m.offer.author)}, {m.offer.id}", m.reasons) for m in matches])

    def _offer_detail(self, o: Offer) -> Text:
        now = self.now()
        t = Text()
        t.append(o.title + "\n", style="bold")
        t.append(f"{o.status.value} · by {self.who(o.author)} · {age(o.created_at, now)} ago\n")
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

    def _offer_matches(self, o: Offer) -> Text:
        matches = needs_for(o, self.board.needs("active"), limit=5)
        return _matches_text("Needs that may fit", [
            (m.need.title, f"{URGENCY_LABEL[m.need.urgency]}, {self.who(m.need.author)}, {m.need.id}", m.reasons)
            for m in matches])

    def _tool_detail(self, tool: Tool) -> Text:
        now = self.now()
        t = Text()
        t.append(tool.name + "\n", style="bold")
        t.append(f"{tool.availability.value} · condition {tool.condition.value} · steward "
                 f"{self.who(tool.steward)} · loans of {tool.loan_days} days\n")
        if tool.condition_note:
            t.append(f"note: {tool.condition_note}\n")
        if tool.description:
            t.append(tool.description + "\n")
        loan = tool.current_loan
        if loan is not None:
            style = "bold red" if loan.overdue else ""
            t.append(f"\nOn loan to {self.who(loan.borrower)} since {age(loan.out_at, now)} ago; due "
                     f"{age(loan.due_at, now)}{' ago, OVERDUE' if loan.overdue else ''}\n", style=style)
        if tool.conflicting_loans:
            t.append(f"\nCONFLICT: {len(tool.conflicting_loans) + 1} loans were made at once while offline.\n",
                     style="bold red")
            t.append(f"Current: {self.who(loan.borrower) if loan else '-'} ({loan.id if loan else '-'})\n")
            for c in tool.conflicting_loans:
                t.append(f"Also out: {self.who(c.borrower)} ({c.id}), since {age(c.out_at, now)} ago\n")
            t.append("Press r to return one of them and resolve it.\n")
        if tool.queue:
            t.append("\nQueue\n", style="bold")
            for pos, h in enumerate(tool.queue, 1):
                ready = " (ready)" if pos == 1 and tool.ready_for == h.member else ""
                t.append(f"{pos}. {self.who(h.member)}{ready}, since {age(h.created_at, now)} ago\n")
        return t

    def _member_detail(self, m: Any) -> Text:
        now = self.now()
        t = Text()
        t.append(m.handle + (" (you)" if m.id == self.service.me else "") + "\n", style="bold")
        t.append(f"id {m.id}\n")
        t.append("fingerprint\n", style="bold")
        t.append(f"  {fingerprint(m.sign_key)}\n")
        t.append("Compare it in person before trusting a new member.\n", style="dim")
        t.append(f"zone {m.zone or '-'} · joined {age(m.joined_at, now)} ago\n")
        t.append("invited by " + (self.who(m.invited_by) if m.invited_by else "nobody (founder)") + "\n")
        if not m.active:
            t.append(f"removed by {self.who(m.removed_by)}\n", style="bold red")
        t.append(member_extra(self.service, m.id, self.who))
        t.append("\ni: invite someone · d: remove this member\n", style="dim")
        return t

    # --- filter and tabs --------------------------------------------------------

    @on(Input.Changed, ".filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removesuffix("-filter")
        self.table(name).set_filter(event.value)

    @on(Input.Submitted, ".filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        name = (event.input.id or "").removesuffix("-filter")
        self.table(name).focus()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()
        tab = self.active_tab
        self._rebuild(tab)
        self.schedule_details()
        if tab in ("needs", "offers", "tools", "members", "sync", *GATHER_TABS):
            self.table(tab).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tab = ACTION_TABS.get(action)
        if tab is None:
            return True
        try:
            return self.active_tab == tab
        except Exception:
            return False

    def key_escape(self) -> None:
        focused = self.focused
        if isinstance(focused, Input) and focused.has_class("filter"):
            name = (focused.id or "").removesuffix("-filter")
            self.table(name).focus()

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self.refresh_bindings()
        self._rebuild(tab)
        if tab in ("needs", "offers", "tools", "members", "sync", *GATHER_TABS):
            self.table(tab).focus()

    def action_focus_filter(self) -> None:
        tab = self.active_tab
        if tab != "sync":
            self.query_one(f"#{tab}-filter", Input).focus()

    def action_sync_refresh(self) -> None:
        try:
            self.service.refresh()
        except CircleError as exc:
            self.fail(exc)
        self.reload()

    def run_command(self, action: str) -> None:
        """From the command palette: go to the action's tab, then run it."""
        tab = ACTION_TABS.get(action)
        if tab is not None and tab != self.active_tab:
            self.action_show_tab(tab)
        self.call_after_refresh(self.run_action, action)

    # --- needs -----------------------------------------------------------

    def _need_fields(self, n: Need | None) -> list[FieldSpec]:
        days = 14 if n is None else max(1, -(-(n.expires_at - self.now()) // DAY_MS))
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
            rid = self.board.add_need(v["title"], v["details"], v["category"], _tags(v["tags"]),
                                      Urgency(v["urgency"]), v["zone"], v["expires"] or 14)
            self._known_needs.add(rid)
            self.call_after_refresh(self.table("needs").move_to_key, rid)

        self.app.push_screen(FormScreen("Post a need", self._need_fields(None), submit, "Post"))

    def _need(self) -> Need | None:
        rid = self.selected("needs")
        if rid is None:
            self.app.notify("Select a need first", severity="warning")
            return None
        return self.board.view().needs.get(rid)

    def action_edit_need(self) -> None:
        n = self._need()
        if n is None:
            return

        def submit(v: FormValues) -> None:
            self.board.edit_need(n.id, title=v["title"], details=v["details"], category=v["category"],
                                 tags=_tags(v["tags"]), urgency=Urgency(v["urgency"]), zone=v["zone"],
                                 expires_days=v["expires"])

        self.app.push_screen(FormScreen(f"Edit need {n.id}", self._need_fields(n), submit))

    def action_claim(self) -> None:
        n = self._need()
        if n is not None:
            self.act(lambda: self.board.claim_need(n.id), f"You claimed “{n.title}”")

    def action_unclaim(self) -> None:
        n = self._need()
        if n is not None:
            self.act(lambda: self.board.unclaim_need(n.id), f"Claim on “{n.title}” taken back")

    def action_met(self) -> None:
        n = self._need()
        if n is not None:
            self.act(lambda: self.board.met_need(n.id), f"“{n.title}” marked met")

    def action_withdraw(self) -> None:
        n = self._need()
        if n is not None:
            self.act(lambda: self.board.withdraw_need(n.id), f"“{n.title}” withdrawn")

    def action_reopen(self) -> None:
        n = self._need()
        if n is not None:
            self.act(lambda: self.board.reopen_need(n.id), f"“{n.title}” reopened")

    def action_toggle_all(self) -> None:
        self.action_need_status("active" if self.need_status == "all" else "all")

    def action_cycle_need_status(self) -> None:
        self.action_need_status(NEED_STATUSES[(NEED_STATUSES.index(self.need_status) + 1) % len(NEED_STATUSES)])

    def action_need_status(self, status: str) -> None:
        """Show only needs of one status ("active" = open and claimed, "all")."""
        if status not in NEED_STATUS_LABELS:
            return
        self.need_status = status
        self.query_one("#needs-status", Static).update(self._need_status_text())
        self.table("needs").set_empty_text(self._need_empty_text())
        self.app.notify(f"Showing {NEED_STATUS_LABELS[status]}")
        self._dirty.add("needs")
        self._rebuild("needs")

    def _need_status_text(self) -> Text:
        t = Text("showing: ")
        t.append(self.need_status, style="bold")
        t.append(" · s: next")
        return t

    def _need_empty_text(self) -> str:
        if self.need_status == "active":
            return "No active needs. Press n to post one."
        return f"No {NEED_STATUS_LABELS[self.need_status]}. Press s to show another status."

    # --- offers -------------------------------------------------------------

    def _offer_fields(self, o: Offer | None) -> list[FieldSpec]:
        days = 30 if o is None else max(1, -(-(o.expires_at - self.now()) // DAY_MS))
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
        rid = self.selected("offers")
        if rid is None:
            self.app.notify("Select an offer first", severity="warning")
            return None
        return self.board.view().offers.get(rid)

    def action_new_offer(self) -> None:
        def submit(v: FormValues) -> None:
            rid = self.board.add_offer(v["title"], v["details"], v["category"], _tags(v["tags"]), v["zone"],
                                       v["quantity"], bool(v["recurring"]), v["expires"] or 30)
            self.call_after_refresh(self.table("offers").move_to_key, rid)

        self.app.push_screen(FormScreen("Post an offer", self._offer_fields(None), submit, "Post"))

    def action_edit_offer(self) -> None:
        o = self._offer()
        if o is None:
            return

        def submit(v: FormValues) -> None:
            self.board.edit_offer(o.id, title=v["title"], details=v["details"], category=v["category"],
                                  tags=_tags(v["tags"]), zone=v["zone"], quantity=v["quantity"],
                                  recurring=bool(v["recurring"]), expires_days=v["expires"])

        self.app.push_screen(FormScreen(f"Edit offer {o.id}", self._offer_fields(o), submit))

    def action_pause(self) -> None:
        o = self._offer()
        if o is None:
            return
        if o.status == OfferStatus.PAUSED:
            self.act(lambda: self.board.resume_offer(o.id), f"“{o.title}” is open again")
        else:
            self.act(lambda: self.board.pause_offer(o.id), f"“{o.title}” paused")

    def action_close_offer(self) -> None:
        o = self._offer()
        if o is not None:
            self.act(lambda: self.board.close_offer(o.id), f"“{o.title}” closed")

    def action_toggle_all_offers(self) -> None:
        self.show_all_offers = not self.show_all_offers
        self.reload()

    # --- tools ----------------------------------------------------------------

    def _tool(self) -> Tool | None:
        rid = self.selected("tools")
        if rid is None:
            self.app.notify("Select a tool first", severity="warning")
            return None
        return self.board.view().tools.get(rid)

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
            self.call_after_refresh(self.table("tools").move_to_key, rid)

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
        if t is not None:
            self.act(lambda: self.board.borrow(t.id), f"You borrowed {t.name} for {t.loan_days} days")

    def action_return_tool(self) -> None:
        t = self._tool()
        if t is None:
            return
        loans = [x for x in (t.current_loan, *t.conflicting_loans) if x is not None]
        if not loans:
            self.fail(NotFound(f"{t.name} is not on loan"))
            return
        mine = [x for x in loans if x.borrower == self.service.me]
        default = (mine or loans)[0]
        options = [(f"{self.who(x.borrower)}'s loan {x.id}" + (" (current)" if x is t.current_loan else " (conflict)"),
                    x.id) for x in loans]
        fields = [
            FieldSpec("loan", "Loan", "select", default.id, options),
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
            self.act(lambda: self.board.renew(t.id), f"Loan of {t.name} renewed")

    def action_hold(self) -> None:
        t = self._tool()
        if t is not None:
            self.act(lambda: self.board.hold(t.id), f"You are in the queue for {t.name}")

    def action_unhold(self) -> None:
        t = self._tool()
        if t is not None:
            self.act(lambda: self.board.unhold(t.id), f"You left the queue for {t.name}")

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
            body += " and closes " + ", ".join(f"{self.who(x.borrower)}'s loan" for x in loans) + " as lost"
        body += (".\nNobody can borrow or hold it while it is missing. If it turns up, press s and set "
                 "its state back to active.")

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.act(lambda: self.board.mark_lost(t.id), f"{t.name} marked lost")

        self.app.push_screen(ConfirmScreen(f"Mark {t.name} lost?", body, "Mark lost"), done)

    # --- relays (Sync tab) ------------------------------------------------------

    def action_add_relay(self) -> None:
        fields = [FieldSpec("url", "Relay URL", placeholder="wss://relay.example.org")]

        def submit(v: FormValues) -> None:
            rec = self.board.add_relay(v["url"])
            self.app.notify(f"Relay {rec.url} added; every member's device will use it once synced")
            self.call_after_refresh(self.table("relays").move_to_key, rec.url)

        self.app.push_screen(FormScreen("Add a relay to this circle", fields, submit, "Add"))

    def action_remove_relay(self) -> None:
        relays = self.board.relays()
        if not relays:
            self.app.notify("This circle lists no relays.", severity="warning")
            return
        urls = [r.url for r in relays]
        chosen = self.table("relays").cursor_key
        fields = [FieldSpec("url", "Relay", "select", chosen if chosen in urls else urls[0],
                            [(u, u) for u in urls])]

        def submit(v: FormValues) -> None:
            rec = self.board.remove_relay(v["url"])
            self.app.notify(f"Relay {rec.url} removed; members can add it again")

        self.app.push_screen(FormScreen("Stop using a relay", fields, submit, "Remove"))

    # --- export and import ------------------------------------------------------

    def default_export_path(self) -> str:
        day = datetime.fromtimestamp(self.now() / 1000).strftime("%Y-%m-%d")
        return f"~/circle-export-{day}.json"

    def action_export(self) -> None:
        default = self.default_export_path()
        fields = [
            FieldSpec("path", "File", value=default),
            FieldSpec("format", "Format", "select", "json", FORMAT_OPTIONS),
            FieldSpec("overwrite", "Replace the file if it exists", "check", False),
        ]

        def submit(v: FormValues) -> None:
            raw = v["path"].strip()
            if not raw:
                raise UsageError("type the path of the file to write")
            if v["format"] == "csv" and raw == default:
                raw = raw.removesuffix(".json") + ".csv"
            path = Path(raw).expanduser()
            if path.is_dir():
                raise UsageError(f"{path} is a folder; type a file name")
            if not path.parent.is_dir():
                raise UsageError(f"the folder {path.parent} does not exist")
            if path.exists() and not v["overwrite"]:
                raise UsageError(f"{path} already exists; choose another name or tick “Replace”")
            board = self.board
            if v["format"] == "csv":
                text = export_csv(board)
            else:
                text = json.dumps(export_json(board), indent=2, sort_keys=True) + "\n"
            atomic_write(path, text.encode("utf-8"), mode=0o600)
            self.app.notify(f"Wrote {path}. It is not encrypted: keep it somewhere safe.", title="Exported")

        self.app.push_screen(FormScreen("Export every record", fields, submit, "Export"))

    def action_import_file(self) -> None:
        fields = [FieldSpec("path", "File", placeholder=f"e.g. {self.default_export_path()}")]
        report: dict[str, dict[str, int]] = {}

        def submit(v: FormValues) -> None:
            raw = v["path"].strip()
            if not raw:
                raise UsageError("type the path of a circle JSON export")
            path = Path(raw).expanduser()
            try:
                text = path.read_text("utf-8")
            except FileNotFoundError:
                raise UsageError(f"there is no file at {path}") from None
            except IsADirectoryError:
                raise UsageError(f"{path} is a folder, not an export file") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
            report.update(import_records(self.board, parse_import(text)))

        def done(saved: bool | None) -> None:
            if saved and report:
                self.app.push_screen(InfoScreen("Import finished", import_report_text(report)))

        self.app.push_screen(FormScreen("Import records from a circle JSON export", fields, submit, "Import"), done)

    # --- members --------------------------------------------------------------

    def action_invite(self) -> None:
        if self.invites is None:
            self.app.push_screen(InviteScreen(None, (
                "Inviting needs the invite feature, which this build does not have yet. "
                "When it exists, this screen shows a one-time code, its QR code and your fingerprint."
            )))
            return
        try:
            info = self.invites.create_invite()
        except CircleError as exc:
            self.app.push_screen(InviteScreen(None, str(exc)))
            return
        expires = f"expires {age(info.expires_at, self.now())}" if info.expires_at else ""
        self.app.push_screen(InviteScreen(info, None, expires))

    def action_remove_member(self) -> None:
        mid = self.selected("members")
        if mid is None:
            self.app.notify("Select a member first", severity="warning")
            return
        m = self.board.view().members.get(MemberId(mid))
        if m is None:
            return
        if m.id == self.service.me:
            self.app.notify("You cannot remove yourself from here.", severity="warning")
            return
        if not m.active:
            self.app.notify(f"{m.handle} was already removed.", severity="warning")
            return

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.act(lambda: remove_member(self.service, m.id), f"{m.handle} removed from the circle")

        self.app.push_screen(ConfirmScreen(f"Remove {m.handle} from the circle?", removal_text(m.handle),
                                           f"Remove {m.handle}"), done)


def import_report_text(report: dict[str, dict[str, int]]) -> str:
    """The import report in words: added / already present per collection."""
    lines = []
    added = 0
    for name, counts in report.items():
        if name == "members":
            n = counts.get("not_imported", 0)
            lines.append(f"members: {n} not imported (membership changes only through invites)")
            continue
        added += counts.get("added", 0)
        lines.append(f"{name}: {counts.get('added', 0)} added, {counts.get('already_present', 0)} already present")
    head = f"{added} record{'s' if added != 1 else ''} added." if added else \
        "Nothing new: every record in the file was already here."
    return head + "\n\n" + "\n".join(lines)


def remove_member(service: CircleService, member_id: str) -> object:
    """Removal with key rotation, as one signed change (`circle.node.membership.remove`)."""
    from circle.node.membership import remove

    return remove(service, member_id)


class MessageScreen(Screen[None]):
    """A plain message with a way out (errors opening the circle)."""

    DEFAULT_CSS = """
    MessageScreen { align: center middle; }
    MessageScreen > Static { width: 80; height: auto; border: thick $error; padding: 1 2; }
    """
    BINDINGS = [Binding("q,escape", "app.quit", "Quit")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(Text(self.message + "\n\nPress q to quit."), id="message")


HELP_LINES = [("", "Everywhere")] + [
    (spec.key if spec.key != "slash" else "/", spec.help) for spec in ACTIONS if spec.tab is None
] + [("?", "This help"), ("ctrl+p", "Command palette: find any action by name"), ("ctrl+q", "Quit")]
for _tab, _title in TAB_TITLES.items():
    _specs = [s for s in ACTIONS if s.tab == _tab and s.key]  # palette-only actions are not keys
    if _specs:
        HELP_LINES.append(("", _title))
        HELP_LINES.extend((s.key, s.help) for s in _specs)


def _matches_text(heading: str, rows: list[tuple[str, str, tuple[str, ...]]]) -> Text:
    """The match panel: one bold title per suggestion, who/which, and why it fits."""
    t = Text()
    t.append(f"\n{heading}\n", style="bold underline")
    if not rows:
        t.append("none yet\n", style="dim")
    for title, about, reasons in rows:
        t.append(f"• {title}", style="bold")
        t.append(f" ({about})\n")
        t.append(f"  {'; '.join(reasons)}\n", style="dim")
    return t


class CircleApp(App[None]):
    """The app. Give it an open `service`, or a `home_path` to run the first-run
    / passphrase flow itself."""

    TITLE = "circle"
    COMMANDS = App.COMMANDS | {BoardCommands}
    BINDINGS = [Binding("question_mark", "help", "Help", key_display="?")]
    CSS = """
    Screen { background: $background; }
    """

    def __init__(
        self,
        service: CircleService | None = None,
        *,
        home_path: Path | None = None,
        circle: str | None = None,
        passphrase: str | None = None,
        sync: SyncStatusSource | None = None,
        invites: InviteProvider | None = None,
        join: JoinProvider | None = None,
        tickers: Sequence[Ticker] = (),
        refresh_interval: float = 0.5,
        on_service: Callable[[CircleService], None] | None = None,
    ) -> None:
        super().__init__()
        self.service = service
        self.home_path = home_path
        self.circle = circle
        self.passphrase = passphrase
        self.sync_source: SyncStatusSource = sync or NoSync()
        self.invites = invites
        self.joiner = join
        self.tickers = list(tickers)
        self.refresh_interval = refresh_interval
        self.on_service = on_service
        self.board_screen: BoardScreen | None = None
        self._home: Home | None = None
        self._refresh_error: str | None = None

    # --- startup flow -------------------------------------------------------

    def on_mount(self) -> None:
        if self.service is not None:
            self.show_board(self.service)
            return
        if self.home_path is None:
            self.push_screen(MessageScreen("No service and no home directory were given."))
            return
        if not Home.exists(self.home_path):
            self.push_screen(WelcomeScreen(home_exists=False, join_available=self.joiner is not None))
            return
        self.unlock(self.passphrase, None)

    @work(exclusive=True, group="open")
    async def unlock(self, passphrase: str | None, screen: PassphraseScreen | None) -> None:
        assert self.home_path is not None
        try:
            # argon2id: no document involved, releases the GIL: fine in a thread.
            home = await asyncio.to_thread(Home.open, self.home_path, passphrase)
        except PassphraseRequired:
            self.push_screen(PassphraseScreen(str(self.home_path)))
            return
        except WrongPassphrase as exc:
            if screen is None:
                screen = PassphraseScreen(str(self.home_path))
                await self.push_screen(screen)
            screen.show_error(f"{exc}. Try again.")
            return
        except CircleError as exc:
            await self._replace(MessageScreen(str(exc)))
            return
        self._home = home
        if not home.circle_ids():
            await self._replace(WelcomeScreen(home_exists=True, join_available=self.joiner is not None))
            return
        try:
            service = CircleService.open(home, self.circle)
            service.refresh()
        except CircleError as exc:
            await self._replace(MessageScreen(str(exc)))
            return
        await self._replace_with_board(service)

    async def _replace(self, screen: Screen[Any]) -> None:
        if len(self.screen_stack) > 1:
            await self.switch_screen(screen)
        else:
            await self.push_screen(screen)

    async def _replace_with_board(self, service: CircleService) -> None:
        self.service = service
        board = self._make_board(service)
        await self._replace(board)
        self._start_timers()

    def _make_board(self, service: CircleService) -> BoardScreen:
        if self.on_service is not None:
            self.on_service(service)
        self.board_screen = BoardScreen(service, self.sync_source, self.invites)
        return self.board_screen

    def show_board(self, service: CircleService) -> None:
        self.service = service
        self.push_screen(self._make_board(service))
        self._start_timers()

    def _start_timers(self) -> None:
        self.set_interval(self.refresh_interval, self.poll_disk)
        for interval, fn in self.tickers:
            self.set_interval(interval, self._ticker(fn))

    def _ticker(self, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except CircleError as exc:
                self.notify(str(exc), severity="error")
        return run

    def poll_disk(self) -> None:
        """Follow edits made by other processes on this home (the CLI, another window)."""
        if self.service is None:
            return
        try:
            self.service.refresh()
        except CircleError as exc:
            if str(exc) != self._refresh_error:
                self._refresh_error = str(exc)
                self.notify(f"Could not read changes from disk: {exc}", severity="error")
            return
        self._refresh_error = None

    @on(PassphraseScreen.Submitted)
    def _passphrase(self, event: PassphraseScreen.Submitted) -> None:
        screen = self.screen if isinstance(self.screen, PassphraseScreen) else None
        self.unlock(event.passphrase, screen)

    @on(WelcomeScreen.Create)
    def _create(self, event: WelcomeScreen.Create) -> None:
        self.create_circle(event.request, self.screen if isinstance(self.screen, WelcomeScreen) else None)

    @work(exclusive=True, group="open")
    async def create_circle(self, req: Any, screen: WelcomeScreen | None) -> None:
        assert self.home_path is not None
        if not req.name.strip() or not req.handle.strip():
            if screen is not None:
                screen.show_error("A circle name and your handle are both needed.")
            return
        try:
            home = self._home
            if home is None:
                home = await asyncio.to_thread(Home.create, self.home_path, req.passphrase)
                self._home = home
            service = CircleService.create(home, req.name, req.handle, req.zone)
        except CircleError as exc:
            if screen is not None:
                screen.show_error(str(exc))
            return
        await self._replace_with_board(service)
        self.notify(f"Circle “{req.name}” created. Invite members from the Members tab (4, then i).")

    @on(WelcomeScreen.Join)
    def _join(self, event: WelcomeScreen.Join) -> None:
        self.join_circle(event.request, self.screen if isinstance(self.screen, WelcomeScreen) else None)

    @work(exclusive=True, group="open")
    async def join_circle(self, req: Any, screen: WelcomeScreen | None) -> None:
        assert self.home_path is not None
        if self.joiner is None:
            if screen is not None:
                screen.show_error("Joining needs the invite feature, which this build does not have yet.")
            return
        if not req.code.strip() or not req.handle.strip():
            if screen is not None:
                screen.show_error("Paste the invite code and choose your handle.")
            return
        try:
            home = self._home
            if home is None:
                home = await asyncio.to_thread(Home.create, self.home_path, req.passphrase)
                self._home = home
            service = await self.joiner.join(home, req.code.strip(), req.handle, req.zone)
        except CircleError as exc:
            if screen is not None:
                screen.show_error(str(exc))
            return
        await self._replace_with_board(service)

    # --- global actions -----------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(HELP_LINES))
