"""The Sync tab: devices and relays this circle syncs with, the address this
device listens on, and the circle's relay list."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from circle.tui.commands import ActionSpec
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec, FormScreen, FormValues
from circle.tui.sync_view import (
    RELAY_COLUMNS,
    SYNC_COLUMNS,
    PeerInfo,
    SyncStatusSource,
    peer_row,
    relay_row,
)
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab


class SyncTab(BoardTab):
    TAB_ID = "sync"
    TITLE = "Sync"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("add_relay", "a", "Add relay", "sync", "Add a relay (wss://; ws:// only for one on this machine) to this circle"),
        ActionSpec("remove_relay", "d", "Remove relay", "sync", "Stop using one of this circle's relays"),
    ]

    DEFAULT_CSS = """
    SyncTab #sync-help { height: auto; padding: 0 1 1 1; color: $text-muted; }
    SyncTab #relays-title { height: 1; padding: 0 1; text-style: bold; background: $panel; }
    SyncTab #relays-table { height: 8; }
    """

    def compose_body(self) -> ComposeResult:
        yield Static(Text(
            "Devices and relays this circle syncs with. 'has all our changes' means that copy "
            "is up to date with everything on this device."), id="sync-help")
        with Vertical(classes="body"):
            yield RecordTable(SYNC_COLUMNS, id="sync-table",
                              empty_text="No peers or relays yet: live sync is not connected on this device.")
            yield Static(Text("Relays listed in this circle (a: add · d: remove)"), id="relays-title")
            yield RecordTable(RELAY_COLUMNS, id="relays-table",
                              empty_text="No relays listed. Press a to add one, e.g. wss://relay.example.org")

    @property
    def source(self) -> SyncStatusSource:
        return self.screen.sync  # type: ignore[attr-defined, no-any-return]

    def rebuild(self) -> None:
        self.update_peers(self.source.peers())
        self.update_relays(self.source.peers())

    def update_peers(self, peers: list[PeerInfo]) -> None:
        now = self.host.now()
        self.table.set_rows([peer_row(p, now) for p in peers])
        listening = getattr(self.source, "listening", None)
        addrs = listening() if callable(listening) else []
        help_text = ("Devices and relays this circle syncs with. 'has all our changes' means that copy "
                     "is up to date with everything on this device.")
        if addrs:
            help_text += "\nThis device listens on " + ", ".join(addrs) + " (give it as --peer where " \
                         "multicast does not work)."
        self.query_one("#sync-help", Static).update(Text(help_text))

    def update_relays(self, peers: list[PeerInfo]) -> None:
        """The document's relay list, with what live sync says about each."""
        live = {p.address.rstrip("/"): p for p in peers
                if p.path == "relay" and not p.name.endswith("(previous key)")}
        now = self.host.now()
        self.query_one("#relays-table", RecordTable).set_rows([
            relay_row(r.url, self.host.who(r.added_by), r.added_at, live.get(r.url.rstrip("/")), now)
            for r in self.board.relays()
        ])

    # --- actions ----------------------------------------------------------------

    def action_add_relay(self) -> None:
        fields = [FieldSpec("url", "Relay URL", placeholder="wss://relay.example.org")]

        def submit(v: FormValues) -> None:
            from circle.net.relay_protocol import check_relay_url

            check_relay_url(v["url"])  # the CLI's rule: ws:// only to this machine (the token would travel in clear)
            rec = self.board.add_relay(v["url"])
            self.app.notify(f"Relay {rec.url} added; every member's device will use it once synced")
            self.call_after_refresh(self.query_one("#relays-table", RecordTable).move_to_key, rec.url)

        self.app.push_screen(FormScreen("Add a relay to this circle", fields, submit, "Add"))

    def action_remove_relay(self) -> None:
        relays = self.board.relays()
        if not relays:
            self.app.notify("This circle lists no relays.", severity="warning")
            return
        urls = [r.url for r in relays]
        chosen = self.query_one("#relays-table", RecordTable).cursor_key
        fields = [FieldSpec("url", "Relay", "select", chosen if chosen in urls else urls[0],
                            [(u, u) for u in urls])]

        def submit(v: FormValues) -> None:
            rec = self.board.remove_relay(v["url"])
            self.app.notify(f"Relay {rec.url} removed; members can add it again")

        self.app.push_screen(FormScreen("Stop using a relay", fields, submit, "Remove"))
