"""What every board tab shares: the host it talks to and the base widget.

A tab owns its table, its filter, its side panel and its actions (key
bindings live on the tab, so the footer shows only what works where the
cursor is). It never reaches into the screen: it asks its `host` (the board
screen, seen through the `TabHost` protocol) for the service, the clock and
handles, and it tells the screen about changes by posting messages.

Adding a tab: subclass `BoardTab`, set `TAB_ID`, `TITLE` and `ACTIONS`,
implement `compose_body`, `rebuild` and (optionally) `update_details`, and
list the class in `circle.tui.tabs.TABS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input

from circle.crdt.board import Board
from circle.crdt.model import MemberId, Millis, RecordId
from circle.errors import CircleError
from circle.tui.commands import ActionSpec
from circle.tui.safetext import SafeText as Text
from circle.tui.table import RecordTable

if TYPE_CHECKING:
    from circle.node.service import CircleService


class TabHost(Protocol):
    """The board screen as a tab sees it."""

    service: CircleService
    handles: dict[MemberId, str]

    @property
    def board(self) -> Board: ...
    def now(self) -> Millis: ...
    def who(self, member: MemberId | None) -> str: ...
    def act(self, fn: Callable[[], object], done: str | None = None) -> bool: ...
    def fail(self, exc: CircleError) -> None: ...
    def schedule_details(self, immediate: bool = False) -> None: ...


def tags_of(text: str) -> list[str]:
    return [t.strip() for t in text.replace(",", " ").split() if t.strip()]


def matches_text(heading: str, rows: list[tuple[str, str, tuple[str, ...]]]) -> Text:
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


def bindings_for(actions: list[ActionSpec]) -> list[BindingType]:
    return [Binding(s.key, s.action, s.label, show=s.show) for s in actions if s.key]


class BoardTab(Vertical):
    """One tab's content. Subclasses set the class attributes below."""

    TAB_ID: ClassVar[str] = ""
    TITLE: ClassVar[str] = ""
    ACTIONS: ClassVar[list[ActionSpec]] = []
    FILTER_HINT: ClassVar[str | None] = None  # None: the tab has no filter box
    TABLE: ClassVar[str | None] = None  # the table the cursor lives in (default: TAB_ID)
    RECORDS: ClassVar[str | None] = None  # board collection whose ids the table's keys are

    DEFAULT_CSS = """
    BoardTab { height: 1fr; }
    BoardTab .filter { margin: 0 0; height: 3; }
    BoardTab .body { height: 1fr; }
    BoardTab .side { width: 38; border-left: solid $primary; padding: 0 1; }
    BoardTab .side.narrow { width: 28; }
    BoardTab .side-title { text-style: bold; }
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        if "ACTIONS" in cls.__dict__:  # before Textual merges the class's bindings
            cls.BINDINGS = bindings_for(cls.ACTIONS)
        super().__init_subclass__(**kwargs)

    def __init__(self, host: TabHost) -> None:
        super().__init__(id=f"{self.TAB_ID}-tab")
        self.host = host

    # --- what subclasses provide ---------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.FILTER_HINT is not None:
            yield Input(placeholder=self.FILTER_HINT, id=f"{self.TAB_ID}-filter", classes="filter")
        yield from self.compose_body()

    def compose_body(self) -> ComposeResult:
        raise NotImplementedError

    def rebuild(self) -> None:
        """Refill the table(s) from the board."""

    def update_details(self) -> None:
        """Refill the side panel for the row under the cursor."""

    # --- helpers -------------------------------------------------------------------

    @property
    def board(self) -> Board:
        return self.host.board

    @property
    def table(self) -> RecordTable:
        return self.query_one(f"#{self.TABLE or self.TAB_ID}-table", RecordTable)

    def selected_id(self) -> RecordId | None:
        key = self.table.cursor_key
        return None if key is None else RecordId(key)

    def focus_table(self) -> None:
        self.table.focus()

    def focus_filter(self) -> bool:
        if self.FILTER_HINT is None:
            return False
        self.query_one(f"#{self.TAB_ID}-filter", Input).focus()
        return True

    def show_key(self, key: str) -> bool:
        """Put the cursor on a record (search results jump here)."""
        if self.FILTER_HINT is not None:
            box = self.query_one(f"#{self.TAB_ID}-filter", Input)
            if box.value:
                box.value = ""
                self.table.set_filter("")
        return self.table.move_to_key(key) is not False

    def need_selection(self, what: str) -> RecordId | None:
        rid = self.selected_id()
        if rid is None:
            self.app.notify(f"Select {what} first", severity="warning")
        return rid
