"""Command palette provider: every board action, findable by name.

Actions that work everywhere are listed here; each tab lists its own
(`BoardTab.ACTIONS`), and the board screen hands the palette both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class ActionSpec:
    action: str  # method name without "action_"
    key: str  # key binding ("" for palette-only)
    label: str  # footer text
    tab: str | None  # tab it belongs to, None = everywhere
    help: str  # one sentence for the palette and the help screen
    show: bool = True  # shown in the footer


@runtime_checkable
class RunsCommands(Protocol):
    """The board screen as the palette sees it (a Protocol: no import of app.py)."""

    def run_command(self, action: str) -> None: ...
    def command_specs(self) -> Sequence[tuple[str, ActionSpec]]: ...


# Global actions. The footer shows the first few even at 80 columns, so the
# most needed ones come first.
ACTIONS: list[ActionSpec] = [
    ActionSpec("search", "slash", "Search", None, "Search needs, offers, tools and members at once"),
    ActionSpec("focus_filter", "f", "Filter", None, "Type to filter the current table", show=False),
    ActionSpec("activity", "A", "Activity", None, "What changed since you last looked", show=False),
    ActionSpec("profile", "P", "Profile", None, "Edit your handle and zone", show=False),
    ActionSpec("switch_circle", "C", "Circles", None, "Switch to another circle on this device", show=False),
    ActionSpec("report", "M", "Report", None, "Write the meeting report (Markdown and HTML)", show=False),
    ActionSpec("export", "E", "Export", None, "Export every record to JSON, or to CSV files", show=False),
    ActionSpec("import_file", "I", "Import", None,
               "Import records from a circle JSON export or a myTurn/Circulate item CSV", show=False),
    ActionSpec("toggle_bell", "", "", None, "Ring the terminal bell for notifications (on/off)", show=False),
    ActionSpec("sync_refresh", "ctrl+r", "Reload", None, "Reload the board from disk now", show=False),
]


def palette_name(title: str | None, spec: ActionSpec) -> str:
    return f"{title}: {spec.help}" if title else spec.help


class BoardCommands(Provider):
    """Finds every board action; running one switches to its tab first."""

    def _board(self) -> RunsCommands | None:
        screen = self.screen
        return screen if isinstance(screen, RunsCommands) else None

    async def discover(self) -> Hits:
        board = self._board()
        if board is None:
            return
        for title, spec in board.command_specs():
            yield DiscoveryHit(palette_name(title, spec), partial(board.run_command, spec.action), help=spec.help)

    async def search(self, query: str) -> Hits:
        board = self._board()
        if board is None:
            return
        matcher = self.matcher(query)
        for title, spec in board.command_specs():
            name = palette_name(title, spec)
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(board.run_command, spec.action), help=spec.help)
