"""The board screen: the status bar, the tabs listed in `circle.tui.tabs.TABS`,
the footer, and the actions that work everywhere (search, filter, activity,
profile, circles, report, export, import).

It composes the tabs and routes: board changes become a reload of the
visible tab (others are rebuilt when shown), cursor moves become a debounced
side-panel refresh, palette commands go to the tab that owns them. Each tab
owns its own table, panel and actions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from circle.crdt.activity import Event, Watch, recent
from circle.crdt.board import Board
from circle.crdt.model import MemberId, Millis
from circle.crdt.search import SearchIndex
from circle.crdt.stewardship import check_profile
from circle.crdt.views import BoardView
from circle.errors import CircleError, UsageError
from circle.node.circles import last_looked, mark_looked
from circle.node.service import CircleService
from circle.node.status import keep
from circle.tui.commands import ACTIONS, ActionSpec
from circle.tui.exchange import export_form, import_form, report_form
from circle.tui.providers import InviteProvider
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues, InfoScreen
from circle.tui.search import SearchScreen
from circle.tui.sync_view import SyncStatusSource, summary
from circle.tui.table import RecordTable
from circle.tui.tabs import TABS, BoardTab

DETAIL_DELAY = 0.12  # seconds of quiet before the side panel's matches are recomputed
NARROW = 100  # below this many columns the side panel narrows and the status bar abbreviates
MAX_TOASTS = 3
FOOTER_FIRST = ("question_mark", "slash")

TAB_ACTIONS = {spec.action: tab.TAB_ID for tab in TABS for spec in tab.ACTIONS}
TAB_KEY_SPECS = [ActionSpec(f"show_tab('{tab.TAB_ID}')", str(n), tab.TITLE, None, f"Go to the {tab.TITLE} tab",
                            show=False)
                 for n, tab in enumerate(TABS, start=1) if n <= 9]


def global_specs() -> list[ActionSpec]:
    return [*ACTIONS, *TAB_KEY_SPECS]


class StatusBar(Static):
    DEFAULT_CSS = """
    StatusBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """


class BoardScreen(Screen[None]):
    """The board: tabs over one service."""

    DEFAULT_CSS = """
    BoardScreen #tabs { height: 1fr; }
    BoardScreen TabPane { height: 1fr; padding: 0; }
    BoardScreen ContentSwitcher { height: 1fr; }
    """

    BINDINGS: list[BindingType] = [
        Binding(s.key, s.action, s.label, show=s.show, key_display="/" if s.key == "slash" else None)
        for s in global_specs() if s.key
    ]

    class SwitchCircle(Message):
        """Ask the app to open the circle switcher."""

    def __init__(self, service: CircleService, sync: SyncStatusSource, invites: InviteProvider | None) -> None:
        super().__init__()
        self.service = service
        self.sync = sync
        self.invites = invites
        self.handles: dict[MemberId, str] = {}
        self.bell = False
        self.feed: list[Event] = []  # notifications while the app runs, newest last
        self._watch = Watch(service.me)
        self._reload_pending = False
        self._detail_timer: Timer | None = None
        self._dirty: set[str] = set()
        self.loaded = False
        self._loop_thread = threading.get_ident()
        self._unsubscribe: Callable[[], None] | None = None
        self.tabs: dict[str, BoardTab] = {}
        self._baseline: list[Event] = []
        self._index: tuple[BoardView, SearchIndex] | None = None

    # --- layout ------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status-bar")
        with TabbedContent(initial=TABS[0].TAB_ID, id="tabs"):
            for cls in TABS:
                tab = cls(self)
                self.tabs[cls.TAB_ID] = tab
                with TabPane(cls.TITLE, id=cls.TAB_ID):
                    yield tab
        yield Footer()

    def on_mount(self) -> None:
        self._unsubscribe = self.service.subscribe(self._on_change)
        self.tabs[TABS[0].TAB_ID].focus_table()
        # Paint the frame first, then fill it: on a big board, parsing the
        # document takes longer than drawing the empty screen.
        self.call_after_refresh(self._first_load)

    def _first_load(self) -> None:
        self.reload(status=False)  # the table first; the status bar's counts after that frame
        # What is already on the board is the baseline: later changes notify.
        self._baseline = self._watch.update(self.board.view(), self.now())
        self.loaded = True
        self.call_after_refresh(self._after_first_load)
        self.set_interval(1.0, self.update_sync)
        self.set_interval(60.0, self._tick)  # ages, expiry and due dates move with the clock

    def _after_first_load(self) -> None:
        self.update_sync()
        self._announce(self._baseline)  # loans already due or overdue, tools ready for me

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        # The next `circle status` / `need list` then reads this board's view
        # instead of loading the document (node/viewstore.py; nothing after a lock).
        keep(self.service)

    def on_resize(self, event: events.Resize) -> None:
        narrow = event.size.width < NARROW
        for side in self.query(".side"):
            side.set_class(narrow, "narrow")
        self.query_one(Footer).compact = narrow
        if self.loaded:
            self.update_status()

    @property
    def active_bindings(self) -> dict[str, Any]:
        """Help and search first: the footer cuts from the right on a narrow terminal."""
        bindings = super().active_bindings
        first = {k: v for k, v in bindings.items() if k in FOOTER_FIRST}
        return {**{k: first[k] for k in FOOTER_FIRST if k in first},
                **{k: v for k, v in bindings.items() if k not in first}}

    # --- what tabs ask of the host -------------------------------------------------

    @property
    def board(self) -> Board:
        return self.service.board

    def now(self) -> Millis:
        return self.service.clock()

    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or TABS[0].TAB_ID

    def table(self, name: str) -> RecordTable:
        return self.query_one(f"#{name}-table", RecordTable)

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
        self.schedule_reload()

    def _announce(self, events_: list[Event]) -> None:
        """Notifications for what concerns me; the feed keeps them all."""
        if not events_:
            return
        self.feed.extend(events_)
        del self.feed[:-200]
        order = {"error": 0, "warning": 1, "information": 2}
        shown = sorted(events_, key=lambda e: order[e.severity])
        for e in shown[:MAX_TOASTS]:
            self.app.notify(e.text, title=e.title, severity=e.severity)
        if len(shown) > MAX_TOASTS:
            self.app.notify(f"and {len(shown) - MAX_TOASTS} more: press A for the activity feed", title="More")
        if self.bell:
            self.app.bell()

    def _tick(self) -> None:
        self.reload()

    def schedule_reload(self) -> None:
        if not self._reload_pending:
            self._reload_pending = True
            self.call_later(self.reload)

    def reload(self, status: bool = True) -> None:
        """Rebuild the visible tab's rows from the board; other tabs are rebuilt
        when shown (at 10k records each tab costs tens of ms, and parsing a
        collection the first time far more)."""
        self._reload_pending = False
        self._dirty = set(self.tabs)
        self.handles = {m.id: m.handle for m in self.board.view().members.values()}
        self._rebuild(self.active_tab)
        if status:
            self.update_status()
            self._announce(self._watch.update(self.board.view(), self.now()))

    def _rebuild(self, tab: str) -> None:
        if tab not in self._dirty or tab not in self.tabs:
            return
        self._dirty.discard(tab)
        self.tabs[tab].rebuild()
        self.schedule_details()

    def update_status(self) -> None:
        st = self.service
        board = st.board
        online, last = summary(self.sync.peers(), self.now())
        view = board.view()
        me = view.members.get(st.me)
        narrow = self.size.width < NARROW
        text = Text()
        text.append(f"◉ {board.name}", style="bold")
        # Encryption first: it must survive the narrowest terminal.
        if st.home.encrypted:
            text.append("  encrypted at rest" if not narrow else " · encrypted", style="bold")
        else:
            text.append("  NOT encrypted at rest" if not narrow else " · NOT encrypted", style="bold reverse")
        sep = "  │  " if not narrow else " · "
        text.append(f"{sep}you: {me.handle if me else '?'}")
        if me is not None and not me.active:
            text.append(" (removed)", style="bold reverse")
        peers = f"{online} peer{'s' if online != 1 else ''} online" if not narrow else f"{online} online"
        text.append(f"{sep}{peers}{sep}{'last sync' if not narrow else 'synced'}: {last}")
        overdue = len(board.overdue())
        if overdue:
            text.append(f"{sep}{overdue} overdue", style="bold reverse")
        self.query_one("#status-bar", StatusBar).update(text)

    def update_sync(self) -> None:
        peers = self.sync.peers()
        sync_tab = self.tabs.get("sync")
        if sync_tab is not None and hasattr(sync_tab, "update_peers"):
            sync_tab.update_peers(peers)
            if self.active_tab == "sync":
                sync_tab.update_relays(peers)
                self._dirty.discard("sync")
        self.update_status()

    # --- details panels -----------------------------------------------------

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
        tab = self.tabs.get(self.active_tab)
        if tab is not None:
            tab.update_details()

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
        tab = self.active_tab
        self._rebuild(tab)
        self.schedule_details()
        if tab in self.tabs:
            self.tabs[tab].focus_table()
        self.refresh_bindings()

    def key_escape(self) -> None:
        focused = self.focused
        if isinstance(focused, Input) and focused.has_class("filter"):
            name = (focused.id or "").removesuffix("-filter")
            self.table(name).focus()

    def action_show_tab(self, tab: str) -> None:
        if tab not in self.tabs:
            return
        self.query_one("#tabs", TabbedContent).active = tab
        self._rebuild(tab)
        self.tabs[tab].focus_table()
        self.refresh_bindings()

    def action_focus_filter(self) -> None:
        tab = self.tabs.get(self.active_tab)
        if tab is not None and not tab.focus_filter():
            self.app.notify("This tab has no filter; press / to search everything", severity="warning")

    def action_sync_refresh(self) -> None:
        try:
            self.service.refresh()
        except CircleError as exc:
            self.fail(exc)
        self.reload()

    def command_specs(self) -> Sequence[tuple[str | None, ActionSpec]]:
        out: list[tuple[str | None, ActionSpec]] = [(None, s) for s in global_specs()]
        out += [(tab.TITLE, s) for tab in TABS for s in tab.ACTIONS]
        return out

    def run_command(self, action: str) -> None:
        """From the command palette: go to the action's tab, then run it there."""
        tab = TAB_ACTIONS.get(action)
        if tab is None:
            self.call_after_refresh(self.run_action, action)
            return
        if tab != self.active_tab:
            self.action_show_tab(tab)
        self.call_after_refresh(self.tabs[tab].run_action, action)

    # --- search ------------------------------------------------------------------

    def action_search(self) -> None:
        def done(hit: tuple[str, str] | None) -> None:
            if hit is None:
                self.call_after_refresh(self.tabs[self.active_tab].focus_table)
            else:
                self.call_after_refresh(self.show_record, *hit)

        # Nothing keeps the focus underneath: on return it would pull the tab
        # it is in forward again, over the tab of the record we jump to.
        self.set_focus(None)
        self.app.push_screen(SearchScreen(self.search_index, self.service.me), done)

    def search_index(self) -> SearchIndex:
        """One index per board view: a second `/` on an unchanged board is instant."""
        view = self.board.view()
        if self._index is None or self._index[0] is not view:
            self._index = (view, SearchIndex.build(view))
        return self._index[1]

    def show_record(self, collection: str, key: str) -> None:
        for tab_id, tab in self.tabs.items():
            if tab.RECORDS == collection:
                self.action_show_tab(tab_id)
                self.call_after_refresh(self._jump, tab, key)
                return

    def _jump(self, tab: BoardTab, key: str) -> None:
        if not tab.show_key(key):
            self.app.notify("That record is not in this list any more", severity="warning")
        tab.focus_table()
        self.schedule_details(immediate=True)

    # --- activity, profile, circles ------------------------------------------------

    def action_activity(self) -> None:
        home, cid = self.service.home, self.service.config.circle_id
        since = last_looked(home, cid)
        now = self.now()
        items = recent(self.board.view(), self.service.me, since if since is not None else now - 7 * 86_400_000)
        head = ("Since you last looked" if since is not None else "The last 7 days") + \
            (f" ({datetime.fromtimestamp(since / 1000):%a %d %b %H:%M})" if since else "")
        lines = [f"{datetime.fromtimestamp(e.at / 1000):%a %d %b %H:%M}  {e.text}" for e in items]
        body = head + ":\n\n" + ("\n".join(lines) if lines else "Nothing new.")
        mark_looked(home, cid, now)
        self.app.push_screen(InfoScreen("Activity", body))

    def action_toggle_bell(self) -> None:
        self.bell = not self.bell
        self.app.notify("Terminal bell " + ("on" if self.bell else "off") + " for notifications")

    def action_profile(self) -> None:
        me = self.board.view().members.get(self.service.me)
        fields = [FieldSpec("handle", "Handle", value=me.handle if me else ""),
                  FieldSpec("zone", "Zone", value=me.zone if me else "", placeholder="coarse area, never an address")]

        def submit(v: FormValues) -> None:
            from circle.node.membership import set_profile

            current = self.board.view().members.get(self.service.me)
            if current is None:
                raise UsageError("you are not a member of this circle")
            handle, zone = check_profile(current, v["handle"], v["zone"])
            set_profile(self.service, handle, zone)
            self.app.notify(f"Your profile now reads {handle}" + (f", {zone}" if zone else ""))

        self.app.push_screen(FormScreen("Your profile in this circle", fields, submit))

    def action_switch_circle(self) -> None:
        self.post_message(self.SwitchCircle())

    # --- report, export, import ------------------------------------------------------

    def default_path(self, stem: str, suffix: str) -> str:
        day = datetime.fromtimestamp(self.now() / 1000).strftime("%Y-%m-%d")
        return f"~/circle-{stem}-{day}{suffix}"

    def default_export_path(self) -> str:
        return self.default_path("export", ".json")

    def action_export(self) -> None:
        self.app.push_screen(export_form(self.board, self.default_path, self.app.notify))

    def action_import_file(self) -> None:
        form, done = import_form(self.board, self.default_export_path(), self.app.push_screen)
        self.app.push_screen(form, done)

    def action_report(self) -> None:
        self.app.push_screen(report_form(self.board, self.default_path, self.now, self.app.notify))


