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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Static

from circle.errors import AmbiguousId, CircleError, PassphraseRequired, WrongPassphrase
from circle.net.keys import fingerprint
from circle.node.circles import circles, pick, remember
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.board import BoardScreen, global_specs
from circle.tui.commands import BoardCommands
from circle.tui.defence import HELP_KEYS, DefenceUI, resource_lines
from circle.tui.exchange import import_report_text
from circle.tui.providers import InviteProvider, JoinProvider
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import (
    CircleSwitchScreen,
    HelpScreen,
    PassphraseScreen,
    SafetyCheckScreen,
    WelcomeScreen,
)
from circle.tui.sync_view import NoSync, SyncStatusSource
from circle.tui.tabs import TABS

__all__ = ["HELP_LINES", "BoardScreen", "CircleApp", "MessageScreen", "import_report_text"]

Ticker = tuple[float, Callable[[], object]]


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


def _help_lines() -> list[tuple[str, str]]:
    lines = [("", "Everywhere")] + [
        ("/" if s.key == "slash" else s.key, s.help) for s in global_specs() if s.key
    ] + [("?", "This help"), ("ctrl+p", "Command palette: find any action by name"), ("ctrl+q", "Quit")]
    for tab in TABS:
        specs = [s for s in tab.ACTIONS if s.key]  # palette-only actions are not keys
        if specs:
            lines.append(("", tab.TITLE))
            lines.extend((s.key, s.help) for s in specs)
    return lines


HELP_LINES = _help_lines()


class CircleApp(App[None]):
    """The app. Give it an open `service`, or a `home_path` to run the first-run
    / passphrase flow itself."""

    TITLE = "circle"
    COMMANDS = App.COMMANDS | {BoardCommands}
    BINDINGS = [Binding("question_mark", "help", "Help", key_display="?"),
                # Listed in help (?), not in the footer, so the footer snapshots stay as they are.
                Binding("exclamation_mark", "defence", "Alerts", key_display="!", show=False),
                Binding("ctrl+l", "lock", "Lock", show=False)]
    CSS = """
    Screen { background: $background; }
    /* Toasts at the top: forms are centred and keep their buttons at the bottom. */
    ToastRack { align: right top; }
    """

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Toasts show their text as written: messages quote members' titles and
        handles, and Textual markup in them (`[@click=...]`) must not run."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

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
        bell: bool = False,
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
        self.defence_ui = DefenceUI(self)  # alert banner, Alerts pane, lock (tui/defence.py)
        self.bell_on = bell
        self._timers_started = False

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
            circle_id = pick(home, self.circle)
        except AmbiguousId:
            # Several circles and no default: let the member choose.
            await self._replace(CircleSwitchScreen(circles(home), None, modal=False))
            return
        except CircleError as exc:
            await self._replace(MessageScreen(str(exc)))
            return
        await self.open_circle(home, circle_id)

    async def open_circle(self, home: Home, circle_id: str) -> None:
        try:
            service = CircleService.open(home, circle_id)
            service.refresh()
        except CircleError as exc:
            await self._replace(MessageScreen(str(exc)))
            return
        try:
            remember(home, circle_id)  # the next `circle` opens this one
        except (CircleError, OSError):
            pass
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
        self._home = service.home
        if self.on_service is not None:
            self.on_service(service)
        self.board_screen = BoardScreen(service, self.sync_source, self.invites)
        self.defence_ui.attach(service, self.board_screen)
        self.board_screen.bell = self.bell_on
        return self.board_screen

    def show_board(self, service: CircleService) -> None:
        self.service = service
        self.push_screen(self._make_board(service))
        self._start_timers()

    def _start_timers(self) -> None:
        if self._timers_started:
            return
        self._timers_started = True
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
        if len(req.handle.strip()) > 40 or len(req.zone.strip()) > 60:
            if screen is not None:
                screen.show_error("A handle has at most 40 characters (a zone 60).")
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
        self.check_safety_numbers(service)

    def check_safety_numbers(self, service: CircleService) -> None:
        """The joiner's half of the "do they match?" step."""
        view = service.board.view()
        me = view.members.get(service.me)
        inviter = view.members.get(me.invited_by) if me is not None and me.invited_by else None
        if me is None or inviter is None:
            return

        def done(match: bool | None) -> None:
            if match:
                self.notify(f"Safety numbers match: you joined {inviter.handle}'s circle.", title="Checked")
            else:
                self.notify(f"The numbers differ: this may not be {inviter.handle}'s circle. Post nothing; "
                            f"run `circle leave --circle \"{service.board.name}\"` and ask for a new invite in person.",
                            title="Do not trust this circle", severity="error", timeout=60)

        self.push_screen(SafetyCheckScreen(service.board.name, inviter.handle, fingerprint(inviter.sign_key),
                                           fingerprint(me.sign_key)), done)

    # --- several circles ----------------------------------------------------------

    @on(BoardScreen.SwitchCircle)
    def _switch_requested(self) -> None:
        home = self._home
        if home is None:
            return
        current = self.service.config.circle_id if self.service is not None else None
        self.push_screen(CircleSwitchScreen(circles(home), current))

    @on(CircleSwitchScreen.Chosen)
    def _chosen(self, event: CircleSwitchScreen.Chosen) -> None:
        self.switch_to(event.circle_id)

    @work(exclusive=True, group="open")
    async def switch_to(self, circle_id: str) -> None:
        home = self._home
        if home is None:
            return
        if self.service is not None and self.service.config.circle_id == circle_id:
            if isinstance(self.screen, CircleSwitchScreen) and len(self.screen_stack) > 2:
                self.pop_screen()
            return
        close = getattr(self.sync_source, "close", None)
        if close is not None and self.service is not None:
            await close()  # live sync follows the open circle
        while len(self.screen_stack) > 2:
            await self.pop_screen()
        await self.open_circle(home, circle_id)
        self.notify(f"Opened {self.service.board.name if self.service else circle_id}")

    # --- global actions -----------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            first = resource_lines(self.defence_ui.defence) if self.defence_ui.defence is not None else []
            self.push_screen(HelpScreen(first + [("", "Safety")] + HELP_KEYS + HELP_LINES))

    def action_defence(self) -> None:
        self.defence_ui.open_pane()

    def action_lock(self) -> None:
        self.defence_ui.ask_lock()
