"""`/`: one search across needs, offers, tools and members.

The index is built once when the screen opens; each keystroke is one pass
over it (see `circle.crdt.search`). Enter (or a click) jumps to the record
in its tab; Escape goes back."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from circle.crdt.model import MemberId
from circle.crdt.search import COLLECTIONS, SearchIndex
from circle.crdt.views import BoardView
from circle.tui.safetext import SafeText as Text
from circle.tui.table import Column, RecordTable, make_row

SEARCH_COLUMNS = [Column("IN", 7), Column("TITLE", 0), Column("WHAT", 30)]
KIND = {"needs": "need", "offers": "offer", "tools": "tool", "members": "member"}


class SearchScreen(ModalScreen[tuple[str, str] | None]):
    DEFAULT_CSS = """
    SearchScreen { align: center top; }
    SearchScreen > Vertical { width: 100%; max-width: 110; height: 90%; border: thick $accent;
                              background: $surface; padding: 0 1; }
    SearchScreen #search-counts { height: 1; color: $text-muted; }
    SearchScreen #search-results { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "close", "Close"), Binding("down", "to_results", "Results", show=False)]

    def __init__(self, view: BoardView | Callable[[], SearchIndex], me: MemberId) -> None:
        """`view`: the board view to index, or a function returning a (cached) index."""
        super().__init__()
        self._source = view
        self.index: SearchIndex | None = None
        self.me = me

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Input(placeholder="Search needs, offers, tools and members", id="search-input")
            yield Static(Text("Type a word; Enter opens the first hit, ↓ moves into the list."), id="search-counts")
            yield RecordTable(SEARCH_COLUMNS, id="search-results", empty_text="No matches.")

    def on_mount(self) -> None:
        self.query_one("#search-input", Input).focus()
        if self.index is None:
            # Paint the box first: on a big board the first index takes a moment,
            # and what is typed meanwhile is searched as soon as it is ready.
            self.query_one("#search-counts", Static).update(Text("Indexing the board…"))
            self.call_after_refresh(self._build)

    def _build(self) -> None:
        source = self._source
        self.index = source() if callable(source) else SearchIndex.build(source)
        box = self.query_one("#search-input", Input)
        self._show(box.value)

    @on(Input.Changed, "#search-input")
    def _changed(self, event: Input.Changed) -> None:
        if self.index is not None:
            self._show(event.value)

    def _show(self, value: str) -> None:
        assert self.index is not None
        hits, counts = self.index.search(value)
        self.query_one("#search-results", RecordTable).set_rows([
            make_row(f"{h.collection}:{h.id}", (KIND[h.collection], h.title, h.summary), "" if h.live else "dim")
            for h in hits])
        if value.strip():
            parts = [f"{counts[c]} {c}" for c in COLLECTIONS if counts[c]]
            text = ", ".join(parts) if parts else "no matches"
        else:
            text = "Type a word; Enter opens the first hit, ↓ moves into the list."
        self.query_one("#search-counts", Static).update(Text(text))

    @on(Input.Submitted, "#search-input")
    def _submitted(self) -> None:
        self._open(self.query_one("#search-results", RecordTable).cursor_key)

    def action_to_results(self) -> None:
        self.query_one("#search-results", RecordTable).focus()

    @on(RecordTable.Selected)
    def _selected(self, event: RecordTable.Selected) -> None:
        self._open(event.key)

    def _open(self, key: str | None) -> None:
        if key is None:
            return
        collection, _, rid = key.partition(":")
        self.dismiss((collection, rid))

    def action_close(self) -> None:
        self.dismiss(None)
