"""The board's tabs, in the order they appear (keys 1, 2, 3, ...).

This list is the one place that names the tabs: the board screen composes
them, binds their number keys, builds the help screen and the command
palette from it. A new tab is a `BoardTab` subclass in its own module,
appended here.
"""

from __future__ import annotations

from circle.tui.tabs.base import BoardTab
from circle.tui.tabs.events import EventsTab
from circle.tui.tabs.members import MembersTab
from circle.tui.tabs.needs import NeedsTab
from circle.tui.tabs.offers import OffersTab
from circle.tui.tabs.skills import SkillsTab
from circle.tui.tabs.sync import SyncTab
from circle.tui.tabs.tools import ToolsTab

TABS: list[type[BoardTab]] = [NeedsTab, OffersTab, ToolsTab, MembersTab, SyncTab, SkillsTab, EventsTab]

__all__ = ["TABS", "BoardTab"]
