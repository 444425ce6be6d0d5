"""Community defence in the app: the alert banner, the Alerts pane, the lock key.

`DefenceUI` belongs to the app. Every POLL_S (on the loop, like every other
document read) it derives alerts and check-ins from the board
(crdt/defence.py) and:
- shows a red banner on the board screen for every active alert raised by
  someone else and every missed check-in where this member is a buddy that
  has not been acknowledged yet, and rings the terminal bell once for each
  new one. The banner stays until acknowledged (`!` opens the Alerts pane,
  which acknowledges what it shows).
- watches the lock stamp (node/panic.py): when `circle lock` runs anywhere
  on this device, or the lock key is confirmed here, the app closes live
  sync, drops its service and keys, and shows the passphrase screen.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Static

from circle.crdt.defence import (
    Alert,
    AlertKind,
    AlertState,
    Checkin,
    CheckinState,
    Defence,
    parse_duration,
)
from circle.errors import CircleError
from circle.node.panic import LockWatch, lock
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import ConfirmScreen, FieldSpec, FormScreen, FormValues
from circle.tui.table import Column, Row, make_row

if TYPE_CHECKING:
    from circle.node.service import CircleService

POLL_S = 0.5
ALERT_COLUMNS = [Column("ID", 8), Column("STATE", 11), Column("KIND", 10), Column("TEXT", 0), Column("ZONE", 8),
                 Column("RAISED BY", 14), Column("CONF", 4), Column("", 7)]
CHECKIN_COLUMNS = [Column("ID", 8), Column("STATE", 8), Column("TITLE", 0), Column("WHO", 12),
                   Column("BUDDIES", 16), Column("DUE", 6)]
KIND_OPTIONS = [(k.value, k.value) for k in AlertKind]
HELP_KEYS = [("!", "Alerts, check-ins and resources (acknowledges the alert banner)"),
             ("ctrl+l", "Lock: every circle process on this device forgets its keys (asks once)")]


def _hm(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


def alert_row(d: Defence, a: Alert) -> Row:
    tone = {AlertState.UNCONFIRMED: "warn", AlertState.CONFIRMED: "bad"}.get(a.state, "dim")
    by = d.handle(a.raiser) + ("" if a.verified else "?")
    return make_row(a.id, [a.id, a.state.value, a.kind.value, a.text, a.zone, by, str(len(a.confirmed_by)),
                           "FLAGGED" if a.flagged else ""], tone)


def checkin_row(d: Defence, c: Checkin) -> Row:
    tone = {CheckinState.MISSED: "bad", CheckinState.DUE_SOON: "warn"}.get(c.state, "")
    return make_row(c.id, [c.id, c.state.value, c.title, d.handle(c.owner), ", ".join(d.handle(b) for b in c.buddies),
                           _hm(c.due_at) if c.due_at else "-"], tone)


def resource_lines(d: Defence) -> list[tuple[str, str]]:
    """Pinned resources as help lines: shown first in the app's help."""
    items = d.resources()
    if not items:
        return [("", "Pinned resources"), ("-", "none yet: add with `circle resource add`")]
    return [("", "Pinned resources")] + [
        (r.kind.value, r.title + (f": {r.details}" if r.details else "")) for r in items]


class AlertBanner(Static):
    """Red, docked on top of the board; hidden when there is nothing to acknowledge."""

    DEFAULT_CSS = """
    AlertBanner { dock: top; height: auto; background: $error; color: $text; text-style: bold;
                  padding: 0 1; display: none; }
    """


class LockedScreen(Screen[None]):
    """After a lock on a home without passphrase: nothing to type, but say so."""

    BINDINGS = [Binding("enter", "reopen", "Reopen")]
    DEFAULT_CSS = """
    LockedScreen { align: center middle; }
    LockedScreen > Vertical { width: 70; height: auto; border: thick $warning; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(Text("Locked. This app forgot its keys."))
            yield Static(Text("This device has no passphrase, so its files stay readable to anyone who can "
                              "read them. Press Enter to reopen."))
            yield Button("Reopen", id="reopen", variant="primary")

    def action_reopen(self) -> None:
        unlock = getattr(self.app, "unlock", None)
        if unlock is not None:
            unlock(None, None)

    @on(Button.Pressed, "#reopen")
    def _reopen(self) -> None:
        self.action_reopen()


class DefenceScreen(Screen[None]):
    """Alerts, check-ins and resources, with their actions."""

    DEFAULT_CSS = """
    DefenceScreen .title { text-style: bold; background: $panel; padding: 0 1; }
    DefenceScreen #alerts-table { height: 1fr; }
    DefenceScreen #checkins-table { height: 8; }
    DefenceScreen #defence-detail { height: auto; max-height: 8; padding: 0 1; }
    DefenceScreen #resources { height: auto; max-height: 8; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("r", "raise_alert", "Raise"),
        Binding("c", "confirm", "Confirm"),
        Binding("s", "resolve", "Resolve"),
        Binding("x", "retract", "Retract"),
        Binding("o", "checkin_ok", "I'm ok"),
        Binding("e", "checkin_end", "End check-in"),
        Binding("tab", "switch_table", "Alerts/check-ins"),
    ]

    def __init__(self, ui: DefenceUI) -> None:
        super().__init__()
        self.ui = ui

    @property
    def d(self) -> Defence:
        assert self.ui.defence is not None
        return self.ui.defence

    def compose(self) -> ComposeResult:
        from circle.tui.table import RecordTable

        yield Static(Text("Alerts (r raise · c confirm · s resolve · x retract)"), classes="title")
        yield RecordTable(ALERT_COLUMNS, id="alerts-table", empty_text="No alerts. Press r to raise one.")
        yield Static(id="defence-detail")
        yield Static(Text("Check-ins (o I'm ok · e end)"), classes="title")
        yield RecordTable(CHECKIN_COLUMNS, id="checkins-table", empty_text="No running check-ins.")
        yield Static(Text("Pinned resources"), classes="title")
        with VerticalScroll(id="resources"):
            yield Static(id="resources-text")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_rows()
        self.query_one("#alerts-table").focus()
        self.set_interval(POLL_S, self.refresh_rows)

    def _table(self, name: str) -> Any:
        from circle.tui.table import RecordTable

        return self.query_one(f"#{name}-table", RecordTable)

    def refresh_rows(self) -> None:
        if self.ui.defence is None:
            return
        d = self.d
        alerts = d.alerts()
        self._table("alerts").set_rows([alert_row(d, a) for a in alerts])
        self._table("checkins").set_rows([checkin_row(d, c) for c in d.checkins()])
        self.query_one("#resources-text", Static).update(
            Text("\n".join(f"[{k}] {w}" if k else w for k, w in resource_lines(d)[1:])))
        self.ui.acknowledge()
        self._detail()

    def _detail(self) -> None:
        key = self._table("alerts").cursor_key
        text = Text()
        if key is not None:
            try:
                a = self.d.alert(key)
            except CircleError:
                a = None
            if a is not None:
                text.append(f"{a.text}\n", style="bold")
                text.append(f"raised by {self.d.handle(a.raiser)}{'' if a.verified else ' (unverified)'} "
                            f"at {_hm(a.raised_at)}, expires {_hm(a.expires_at)}\n")
                if a.flagged:
                    text.append(f"{self.d.handle(a.raiser)} raised {a.rate} alerts within 30 min\n", style="bold red")
                for f in a.facts:
                    line = f"{_hm(f.at)} {f.kind.value} by {self.d.handle(f.writer)}" + (f": {f.note}" if f.note else "")
                    text.append(line + (f" (does not count: {f.ignored})" if f.ignored else "") + "\n",
                                style="dim" if f.ignored else "")
        for c in self.d.missed_for(None):
            text.append("MISSED: " + self.d.missed_message(c) + "\n", style="bold red")
        self.query_one("#defence-detail", Static).update(text)

    def _do(self, fn: Any, done: str) -> None:
        try:
            fn()
        except CircleError as exc:
            self.app.notify(str(exc), title="Not done", severity="error")
            return
        self.app.notify(done)
        self.refresh_rows()

    def _selected(self, name: str) -> str | None:
        key = self._table(name).cursor_key
        if key is None:
            self.app.notify(f"Select {'an alert' if name == 'alerts' else 'a check-in'} first", severity="warning")
        return key  # type: ignore[no-any-return]

    def action_close(self) -> None:
        self.app.pop_screen()

    def action_switch_table(self) -> None:
        other = "checkins" if self.focused is self._table("alerts") else "alerts"
        self._table(other).focus()

    def action_raise_alert(self) -> None:
        def submit(v: FormValues) -> None:
            self.d.raise_alert(v["text"], AlertKind(v["kind"]), v["zone"], parse_duration(v["expires"] or "2h"))
            self.refresh_rows()
        self.app.push_screen(FormScreen("Raise an alert (zones, never addresses)", [
            FieldSpec("text", "What"), FieldSpec("kind", "Kind", "select", "other", KIND_OPTIONS),
            FieldSpec("zone", "Zone"), FieldSpec("expires", "Expires in", value="2h"),
        ], submit, save_label="Raise"))

    def action_confirm(self) -> None:
        key = self._selected("alerts")
        if key:
            self._do(lambda: self.d.confirm(key), "Confirmed")

    def action_resolve(self) -> None:
        key = self._selected("alerts")
        if key:
            self._do(lambda: self.d.resolve(key), "Resolved")

    def action_retract(self) -> None:
        key = self._selected("alerts")
        if key:
            self._do(lambda: self.d.retract(key), "Retracted")

    def action_checkin_ok(self) -> None:
        key = self._selected("checkins")
        if key:
            self._do(lambda: self.d.checkin_ok(key), "Check-in: ok")

    def action_checkin_end(self) -> None:
        key = self._selected("checkins")
        if key:
            self._do(lambda: self.d.checkin_end(key), "Check-in ended")


class DefenceUI:
    """The app's side of community defence (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.service: CircleService | None = None
        self.defence: Defence | None = None
        self.banner: AlertBanner | None = None
        self.board_screen: Any = None
        self.pending: dict[str, str] = {}  # not yet acknowledged: id -> banner line
        self.acknowledged: set[str] = set()
        self.bells = 0
        self.lock_watch: LockWatch | None = None
        self._timer: Any = None
        self._locking = False

    def attach(self, service: CircleService, board_screen: Any) -> None:
        self.service = service
        self.defence = Defence(service.board)
        self.board_screen = board_screen
        self.banner = None
        if self.lock_watch is None:
            self.lock_watch = LockWatch(service.home.path)
        else:
            self.lock_watch.rearm()
        if self._timer is None:
            self._timer = self.app.set_interval(POLL_S, self.poll)
        self.acknowledged |= {a.id for a in self.defence.alerts() if not a.active}

    # --- polling -------------------------------------------------------------------

    def poll(self) -> None:
        if self._locking:
            return
        if self.board_screen is not None and not getattr(self.board_screen, "loaded", True):
            return  # the board's first load is queued; tearing it down now would leave its timers running
        if self.lock_watch is not None and self.service is not None and self.lock_watch.tripped():
            # Once: timer ticks queued while the loop was busy must not start a second
            # lock that would cancel this one half-way.
            self._locking = True
            self.app.run_worker(self.locked(), group="lock")
            return
        if self.defence is None or self.service is None:
            return
        try:
            self.check()
        except CircleError:
            return

    def check(self) -> None:
        assert self.defence is not None and self.service is not None
        d, me = self.defence, self.service.me
        wanted: dict[str, str] = {}
        for a in d.alerts(active_only=True):
            if a.raiser != me:
                flag = f"  [{d.handle(a.raiser)} raised {a.rate} alerts within 30 min]" if a.flagged else ""
                wanted[a.id] = (f"ALERT {a.kind.value.upper()} ({a.state.value}): {a.text}"
                                + (f" [zone {a.zone}]" if a.zone else "") + f" - {d.handle(a.raiser)}{flag}")
        for c in d.missed_for(me):
            wanted["checkin:" + c.id + f":{c.due_at}"] = "MISSED CHECK-IN: " + d.missed_message(c)
        fresh = [k for k in wanted if k not in self.pending and k not in self.acknowledged]
        self.pending = {k: v for k, v in wanted.items() if k not in self.acknowledged}
        if fresh:
            self.bells += 1
            self.app.bell()
        self._paint()

    def _paint(self) -> None:
        screen = self.board_screen
        if screen is None or not screen.is_attached:
            return
        if self.banner is None or not self.banner.is_attached:
            self.banner = AlertBanner(id="alert-banner")
            screen.mount(self.banner, before=0)
        if self.pending:
            lines = list(self.pending.values())[-4:]
            more = len(self.pending) - len(lines)
            text = "\n".join(lines) + (f"\n... and {more} more" if more else "") + \
                "\nPress ! to see and acknowledge."
            self.banner.update(Text(text))
            self.banner.display = True
        else:
            self.banner.display = False

    def acknowledge(self) -> None:
        self.acknowledged |= set(self.pending)
        self.pending = {}
        self._paint()

    # --- actions -------------------------------------------------------------------

    def open_pane(self) -> None:
        if self.defence is not None and not isinstance(self.app.screen, DefenceScreen):
            self.app.push_screen(DefenceScreen(self))

    def ask_lock(self) -> None:
        if self.service is None:
            return
        path = self.service.home.path

        def done(confirmed: bool | None) -> None:
            if confirmed:
                lock(path)
                self.poll()
        self.app.push_screen(ConfirmScreen(
            "Lock now?", "Every circle process on this device (this app, `circle serve`, watchers) forgets "
            "its keys now. You will need the passphrase to open the circle again.", "Lock"), done)

    async def locked(self) -> None:
        """Forget everything that holds keys; show the passphrase screen."""
        try:
            await self._lock_app()
        finally:
            self._locking = False

    async def _lock_app(self) -> None:
        from circle.tui.screens import PassphraseScreen

        svc, app = self.service, self.app
        if svc is None:
            return
        self.service, self.defence, self.board_screen, self.banner = None, None, None, None
        self.pending = {}
        close = getattr(app.sync_source, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # noqa: BLE001 - the lock must go on whatever sync does
                pass
        encrypted = svc.home.encrypted
        app.home_path = app.home_path or svc.home.path
        svc.config.epoch_keys.clear()
        svc.home.data_key = b""
        app.service, app.board_screen, app._home = None, None, None
        for screen in app.screen_stack[1:]:
            for timer in list(getattr(screen, "_timers", ())):  # no repaint of a screen being torn down
                timer.stop()
        while len(app.screen_stack) > 1:
            await app.pop_screen()
        await app.push_screen(PassphraseScreen(str(app.home_path)) if encrypted else LockedScreen())
        app.notify("Locked: this app forgot its keys.", severity="warning")
