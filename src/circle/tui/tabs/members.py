"""The Members tab: who is in the circle, their safety numbers, who invited
whom, invites and removals."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.model import Member, MemberId
from circle.errors import CircleError
from circle.net.keys import fingerprint
from circle.tui.commands import ActionSpec
from circle.tui.rows import MEMBER_COLUMNS, age, member_row
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import ConfirmScreen, InviteScreen, removal_text
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab


def remove_member(service: object, member_id: str) -> object:
    """Removal with key rotation (`circle.node.membership.remove`)."""
    from circle.node.membership import remove

    return remove(service, member_id)  # type: ignore[arg-type]


class MembersTab(BoardTab):
    TAB_ID = "members"
    TITLE = "Members"
    RECORDS = "members"
    FILTER_HINT = "Type to filter members"
    ACTIONS: ClassVar[list[ActionSpec]] = [
        ActionSpec("invite", "i", "Invite", "members", "Invite someone: code, QR code and safety number"),
        ActionSpec("edit_profile", "e", "Edit profile", "members", "Edit your handle and zone"),
        ActionSpec("remove_member", "d", "Remove", "members", "Remove the selected member (asks first)"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(MEMBER_COLUMNS, id="members-table")
            with VerticalScroll(classes="side", id="members-side"):
                yield Static(id="members-detail")

    def rebuild(self) -> None:
        me = self.host.service.me
        self.table.set_rows([member_row(m, self.host.handles, me, fingerprint(m.sign_key))
                             for m in self.board.members()])

    def update_details(self) -> None:
        mid = self.selected_id()
        member = self.board.view().members.get(MemberId(mid)) if mid else None
        self.query_one("#members-detail", Static).update(self._detail(member) if member else Text(""))

    def _detail(self, m: Member) -> Text:
        now, who = self.host.now(), self.host.who
        view = self.board.view()
        t = Text()
        t.append(m.handle + (" (you)" if m.id == self.host.service.me else "") + "\n", style="bold")
        t.append("safety number\n", style="bold")
        t.append(f"  {fingerprint(m.sign_key)}\n")
        t.append("The same on every screen and device. Compare it in person once.\n", style="dim")
        t.append(f"zone {m.zone or '-'} · joined {age(m.joined_at, now)} ago\n")
        t.append("invited by " + (who(m.invited_by) if m.invited_by else "nobody (founder)") + "\n")
        invited = sorted((x.handle for x in view.members.values() if x.invited_by == m.id), key=str.lower)
        if invited:
            t.append("invited " + ", ".join(invited) + "\n")
        if not m.active:
            t.append(f"removed by {who(m.removed_by)}\n", style="bold red")
        t.append(f"id {m.id}\n", style="dim")
        t.append("\ni: invite someone · e: edit your profile · d: remove this member\n", style="dim")
        return t

    # --- actions ----------------------------------------------------------------

    def action_invite(self) -> None:
        invites = getattr(self.screen, "invites", None)
        if invites is None:
            self.app.push_screen(InviteScreen(None, (
                "Inviting needs the invite feature, which this build does not have yet. "
                "When it exists, this screen shows a one-time code, its QR code and your safety number."
            )))
            return
        try:
            info = invites.create_invite()
        except CircleError as exc:
            self.app.push_screen(InviteScreen(None, str(exc)))
            return
        def done(answer: str | None) -> None:
            if answer == "match":
                self.app.notify("Safety numbers match: you both talk to the right device.", title="Checked")
            elif answer == "mismatch":
                self.app.notify("The numbers differ: someone else may have used the code. Select the new "
                                "member here and press d to remove them, then invite again in person.",
                                title="Do not trust this member", severity="error", timeout=30)

        self.app.push_screen(InviteScreen(info, None, now=self.host.now,
                                          used=getattr(invites, "invite_used", None)), done)

    def action_edit_profile(self) -> None:
        self.screen.run_action("profile")

    def action_remove_member(self) -> None:
        mid = self.need_selection("a member")
        if mid is None:
            return
        m = self.board.view().members.get(MemberId(mid))
        if m is None:
            return
        if m.id == self.host.service.me:
            self.app.notify("You cannot remove yourself from here.", severity="warning")
            return
        if not m.active:
            self.app.notify(f"{m.handle} was already removed.", severity="warning")
            return

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self.host.act(lambda: remove_member(self.host.service, m.id), f"{m.handle} removed from the circle")

        self.app.push_screen(ConfirmScreen(f"Remove {m.handle} from the circle?", removal_text(m.handle),
                                           f"Remove {m.handle}"), done)
