"""A virtual, filterable record table (Textual's Line API).

Why not `DataTable`: measured on this machine, `DataTable.add_rows` of 10k
rows takes ~3.8 s and a clear + re-add per keystroke ~3 s, far over the 50 ms
filter budget. This widget keeps every row as plain strings with a
precomputed lowercase search string; filtering is one pass over those strings
(a few ms at 10k) and rendering touches only the lines on screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from circle.crdt.text import printable

MIN_FLEX = 20

# Row tones with at least 4.5:1 contrast (WCAG AA) on the table's surface in
# dark and light themes: the themes' own $success and $warning fall to
# 1.4-1.8:1 on textual-light. Keyed by "theme is dark".
TONES: dict[bool, dict[str, str]] = {
    True: {"good": "#3fb950", "warn": "#d29922", "bad": "#ff7b72", "dim": "#8b949e"},
    False: {"good": "#116329", "warn": "#7d4e00", "bad": "#a40e26", "dim": "#4d5560"},
}



@dataclass(frozen=True)
class Column:
    label: str
    width: int  # 0 = flexible: takes the width left over by the fixed columns
    drop: int = 0  # when the flexible column gets too narrow, columns with the highest drop go first


@dataclass(frozen=True)
class Row:
    key: str
    cells: tuple[str, ...]
    tone: str = ""  # "", "warn", "bad", "dim", "good"
    search: str = ""  # lowercase text the filter matches against


def make_row(key: str, cells: Sequence[str], tone: str = "", extra: str = "") -> Row:
    # Cells hold members' text: controls, escapes and bidi overrides are shown escaped, never sent raw.
    cells = tuple(printable(c) for c in cells)
    text = " ".join(cells)
    return Row(key, tuple(cells), tone, f"{key} {text} {extra}".lower())


def filter_indices(rows: Sequence[Row], query: str) -> list[int]:
    """Indices of rows whose search text holds every word of `query`."""
    words = query.lower().split()
    if not words:
        return list(range(len(rows)))
    if len(words) == 1:
        w = words[0]
        return [i for i, r in enumerate(rows) if w in r.search]
    return [i for i, r in enumerate(rows) if all(w in r.search for w in words)]


class RecordTable(ScrollView, can_focus=True):
    """Rows of plain text, a cursor, and a fixed header line."""

    DEFAULT_CSS = """
    RecordTable {
        background: $surface;
        height: 1fr;
        overflow-x: hidden;
    }
    RecordTable > .record-table--header { text-style: bold; color: $text; background: $panel; }
    RecordTable > .record-table--cursor { background: $accent 40%; }
    RecordTable:focus > .record-table--cursor { background: $accent; color: $text; }
    RecordTable > .record-table--warn { color: $warning; }
    RecordTable > .record-table--bad { color: $error; text-style: bold; }
    RecordTable > .record-table--dim { color: $text-muted; }
    RecordTable > .record-table--good { color: $success; }
    RecordTable > .record-table--empty { color: $text-muted; text-style: italic; }
    """

    COMPONENT_CLASSES = {
        "record-table--header", "record-table--cursor", "record-table--warn", "record-table--bad",
        "record-table--dim", "record-table--good", "record-table--empty",
    }

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    class Highlighted(Message):
        """The cursor moved to another record (key is None when the table is empty)."""

        def __init__(self, table: RecordTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> RecordTable:
            return self.table

    class Selected(Highlighted):
        """Enter (or a double click) on a record."""

    def __init__(self, columns: Sequence[Column], *, empty_text: str = "(nothing here)",
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = list(columns)
        self.empty_text = "loading…"
        self._final_empty_text = empty_text
        self.rows: list[Row] = []
        self.shown: list[int] = []
        self.query_text = ""
        self._last_key: str | None = None
        self._styles: dict[str, Style] = {}

    # --- data ------------------------------------------------------------

    def set_rows(self, rows: list[Row]) -> None:
        """Replace the data, keeping the cursor on the same record if it is still there."""
        key = self.cursor_key
        self.rows = rows
        self.empty_text = self._final_empty_text
        self._apply(key)

    def set_empty_text(self, text: str) -> None:
        """What the table says when it has no rows (set before or after loading)."""
        self._final_empty_text = text
        if self.empty_text != "loading…":
            self.empty_text = text
        self.refresh()

    def set_filter(self, query: str) -> None:
        if query == self.query_text:
            return
        key = self.cursor_key
        self.query_text = query
        self._apply(key)

    def _apply(self, keep_key: str | None) -> None:
        self.shown = filter_indices(self.rows, self.query_text)
        new_cursor = 0
        if keep_key is not None:
            for pos, i in enumerate(self.shown):
                if self.rows[i].key == keep_key:
                    new_cursor = pos
                    break
        self.virtual_size = Size(self._total_width(), len(self.shown) + 1)
        self.cursor = new_cursor
        self.refresh()

    @property
    def cursor_key(self) -> str | None:
        if not self.shown or self.cursor >= len(self.shown):
            return None
        return self.rows[self.shown[self.cursor]].key

    @property
    def shown_keys(self) -> list[str]:
        return [self.rows[i].key for i in self.shown]

    def shown_row(self, pos: int) -> Row:
        return self.rows[self.shown[pos]]

    def move_to_key(self, key: str) -> bool:
        for pos, i in enumerate(self.shown):
            if self.rows[i].key == key:
                self.cursor = pos
                return True
        return False

    # --- cursor ------------------------------------------------------------

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.shown) - 1)) if self.shown else 0

    def watch_cursor(self, value: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        key = self.cursor_key
        if key != self._last_key:
            self._last_key = key
            self.post_message(self.Highlighted(self, key))

    def _scroll_to_cursor(self) -> None:
        body = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.scrollable_content_region.height - 2)

    def action_jump(self, where: int) -> None:
        self.cursor = 0 if where == 0 else len(self.shown) - 1

    def action_select(self) -> None:
        self.post_message(self.Selected(self, self.cursor_key))

    def on_click(self, event: Click) -> None:
        y = event.y
        if y <= 0:
            return
        pos = int(self.scroll_y) + y - 1
        if 0 <= pos < len(self.shown):
            self.cursor = pos
            if event.chain > 1:
                self.action_select()

    # --- rendering ---------------------------------------------------------

    def _widths(self, total: int) -> list[int]:
        """Column widths for `total` cells; 0 = hidden. On a narrow terminal the
        flexible column (the title) keeps at least MIN_FLEX cells: droppable
        columns are hidden first instead of shrinking every title to "S…"."""
        shown = list(self.columns)
        droppable = sorted((c for c in self.columns if c.drop), key=lambda c: -c.drop)
        while True:
            fixed = sum(c.width + 1 for c in shown if c.width)
            flex = [c for c in shown if c.width == 0]
            spare = total - 1 - fixed - len(flex)
            if spare >= MIN_FLEX * max(1, len(flex)) or not droppable:
                break
            shown.remove(droppable.pop(0))
        each = max(10, spare) // max(1, len(flex))
        return [(c.width or each) if c in shown else 0 for c in self.columns]

    def _total_width(self) -> int:
        return max(self.size.width, 1)

    def on_resize(self) -> None:
        self.virtual_size = Size(self._total_width(), len(self.shown) + 1)

    def _line(self, cells: Sequence[str], widths: list[int]) -> str:
        parts = []
        for text, width in zip(cells, widths, strict=False):
            if width == 0:
                continue
            t = text.replace("\n", " ")
            if cell_len(t) > width:
                t = set_cell_size(t, width - 1) + "…" if width > 1 else set_cell_size(t, width)
            else:
                t = set_cell_size(t, width)
            parts.append(t)
        return " " + " ".join(parts)

    def _style(self, name: str) -> Style:
        """Component styles, cached: looking them up per line costs more than the line."""
        key = f"{name}:{self.has_focus}"
        style = self._styles.get(key)
        if style is None:
            style = self.rich_style if name == "base" else self.get_component_rich_style(f"record-table--{name}")
            tone = TONES[self.app.current_theme.dark].get(name)
            if tone is not None:  # readable in both themes, whatever the theme's palette
                style = style + Style(color=tone)
            self._styles[key] = style
        return style

    def notify_style_update(self) -> None:
        self._styles.clear()
        super().notify_style_update()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        widths = self._widths(width)
        if y == 0:
            text = self._line([c.label for c in self.columns], widths)
            style = self._style("header")
            return Strip([Segment(set_cell_size(text, width), style)], width)
        pos = int(self.scroll_y) + y - 1
        base = self._style("base")
        if not self.shown:
            if y == 1:
                style = self._style("empty")
                msg = self.empty_text if not self.query_text else f"nothing matches '{self.query_text}'"
                return Strip([Segment(set_cell_size(" " + msg, width), style)], width)
            return Strip.blank(width, base)
        if pos >= len(self.shown):
            return Strip.blank(width, base)
        row = self.rows[self.shown[pos]]
        line_style: Style = base
        if row.tone:
            line_style = line_style + self._style(row.tone)
        if pos == self.cursor:
            line_style = line_style + self._style("cursor")
        text = self._line(row.cells, widths)
        return Strip([Segment(set_cell_size(text, width), line_style)], width)
