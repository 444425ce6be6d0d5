"""Command palette provider: every board action, findable by name."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider


@runtime_checkable
class RunsCommands(Protocol):
    """The board screen as the palette sees it (a Protocol: no import of app.py)."""

    def run_command(self, action: str) -> None: ...


@dataclass(frozen=True)
class ActionSpec:
    action: str  # method name without "action_"
    key: str  # key binding ("" for palette-only)
    label: str  # footer text
    tab: str | None  # tab it belongs to, None = everywhere
    help: str  # one sentence for the palette and the help screen


# The Needs tab's status filter, in the order `s` cycles through it.
NEED_STATUS_LABELS = {
    "active": "active needs (open and claimed)",
    "open": "open needs",
    "claimed": "claimed needs",
    "met": "met needs",
    "withdrawn": "withdrawn needs",
    "expired": "expired needs",
    "all": "all needs",
}

TAB_TITLES = {"needs": "Needs", "offers": "Offers", "tools": "Tools", "members": "Members", "sync": "Sync",
              "skills": "Skills", "events": "Events"}

ACTIONS: list[ActionSpec] = [
    ActionSpec("new_need", "n", "New", "needs", "Post a new need"),
    ActionSpec("edit_need", "e", "Edit", "needs", "Edit the selected need"),
    ActionSpec("claim", "c", "Claim", "needs", "Claim the selected need: you will help with it"),
    ActionSpec("unclaim", "u", "Unclaim", "needs", "Take back your claim on the selected need"),
    ActionSpec("met", "m", "Met", "needs", "Mark the selected need as met"),
    ActionSpec("withdraw", "w", "Withdraw", "needs", "Withdraw your own need"),
    ActionSpec("reopen", "o", "Reopen", "needs", "Reopen a met, withdrawn or expired need"),
    ActionSpec("toggle_all", "a", "All/active", "needs", "Show all needs or only active ones"),
    ActionSpec("cycle_need_status", "s", "Status", "needs",
               "Show needs of the next status: active, open, claimed, met, withdrawn, expired, all"),
    *(ActionSpec(f"need_status('{status}')", "", "", "needs", f"Show {label}")
      for status, label in NEED_STATUS_LABELS.items()),
    ActionSpec("new_offer", "n", "New", "offers", "Post a new offer"),
    ActionSpec("edit_offer", "e", "Edit", "offers", "Edit the selected offer"),
    ActionSpec("pause", "p", "Pause/resume", "offers", "Pause or resume your selected offer"),
    ActionSpec("close_offer", "x", "Close", "offers", "Close your selected offer for good"),
    ActionSpec("toggle_all_offers", "a", "All/open", "offers", "Show all offers or only open and paused"),
    ActionSpec("new_tool", "n", "New", "tools", "Add a tool to the library (you steward it)"),
    ActionSpec("edit_tool", "e", "Edit", "tools", "Edit the selected tool"),
    ActionSpec("borrow", "b", "Borrow", "tools", "Borrow the selected tool"),
    ActionSpec("return_tool", "r", "Return", "tools", "Return a loan of the selected tool (also resolves conflicts)"),
    ActionSpec("renew", "R", "Renew", "tools", "Renew your loan of the selected tool"),
    ActionSpec("hold", "h", "Hold", "tools", "Join the queue for the selected tool"),
    ActionSpec("unhold", "u", "Unhold", "tools", "Leave the queue for the selected tool"),
    ActionSpec("tool_state", "s", "State", "tools",
               "Set the selected tool's state: active, maintenance, retired or missing"),
    ActionSpec("mark_lost", "l", "Lost", "tools", "Mark the selected tool lost and its open loans lost (asks first)"),
    ActionSpec("invite", "i", "Invite", "members", "Invite someone: code, QR code and fingerprint"),
    ActionSpec("remove_member", "d", "Remove", "members", "Remove the selected member (asks first)"),
    ActionSpec("add_relay", "a", "Add relay", "sync", "Add a relay (ws:// or wss:// URL) to this circle"),
    ActionSpec("remove_relay", "d", "Remove relay", "sync", "Stop using one of this circle's relays"),
    ActionSpec("export", "E", "Export", None, "Export every record to a JSON or CSV file"),
    ActionSpec("import_file", "I", "Import", None, "Import records from a circle JSON export"),
    ActionSpec("focus_filter", "slash", "Filter", None, "Type to filter the current table"),
    ActionSpec("show_tab('needs')", "1", "Needs", None, "Go to the Needs tab"),
    ActionSpec("show_tab('offers')", "2", "Offers", None, "Go to the Offers tab"),
    ActionSpec("show_tab('tools')", "3", "Tools", None, "Go to the Tools tab"),
    ActionSpec("show_tab('members')", "4", "Members", None, "Go to the Members tab"),
    ActionSpec("show_tab('sync')", "5", "Sync", None, "Go to the Sync tab"),
    ActionSpec("show_tab('skills')", "6", "Skills", None, "Go to the Skills tab"),
    ActionSpec("show_tab('events')", "7", "Events", None, "Go to the Events tab"),
    ActionSpec("sync_refresh", "ctrl+r", "Reload", None, "Reload the board from disk now"),
]


def palette_name(spec: ActionSpec) -> str:
    return f"{TAB_TITLES[spec.tab]}: {spec.help}" if spec.tab else spec.help


class BoardCommands(Provider):
    """Finds every board action; running one switches to its tab first."""

    def _board(self) -> RunsCommands | None:
        screen = self.screen
        return screen if isinstance(screen, RunsCommands) else None

    async def discover(self) -> Hits:
        board = self._board()
        if board is None:
            return
        for spec in ACTIONS:
            yield DiscoveryHit(palette_name(spec), partial(board.run_command, spec.action), help=spec.help)

    async def search(self, query: str) -> Hits:
        board = self._board()
        if board is None:
            return
        matcher = self.matcher(query)
        for spec in ACTIONS:
            name = palette_name(spec)
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(board.run_command, spec.action), help=spec.help)
