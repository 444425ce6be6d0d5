"""The Members tab: who is in the circle, their safety numbers, who invited
whom, invites and removals."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from circle.crdt.gatherings import gatherings
from circle.crdt.model import Member, MemberId
from circle.errors import CircleError, UsageError
from circle.net.keys import fingerprint
from circle.tui.commands import ActionSpec
from circle.tui.rows import MEMBER_COLUMNS, age, member_row
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import (
    ConfirmScreen,
    FormScreen,
    FormValues,
    InviteScreen,
    removal_text,
)
from circle.tui.table import RecordTable
from circle.tui.tabs.base import BoardTab
from circle.tui.tabs.hours import log_fields, member_extra, parse_hours, pick_fields, waiting_for

HOURS_ACTIONS = ("log_hours", "confirm_hours", "dispute_hours")


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
        # Hours: only while the time bank is on (check_action hides them otherwise).
        ActionSpec("log_hours", "h", "Log hours", "members", "Time bank: log hours given or received"),
        ActionSpec("confirm_hours", "c", "Confirm", "members", "Time bank: confirm hours another member logged"),
        ActionSpec("dispute_hours", "x", "Dispute", "members", "Time bank: dispute hours logged with you",
                   show=False),
        ActionSpec("toggle_timebank", "", "", "members", "Turn the circle's time bank on or off"),
    ]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in HOURS_ACTIONS:
            return self._timebank_on()
        return True

    def _timebank_on(self) -> bool:
        try:
            return gatherings(self.board).settings().timebank
        except CircleError:
            return False

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="body"):
            yield RecordTable(MEMBER_COLUMNS, id="members-table")
            with VerticalScroll(classes="side", id="members-side"):
                yield Static(id="members-detail")

    def rebuild(self) -> None:
        me = self.host.service.me
        self.table.set_rows([member_row(m, self.host.handles, me, fingerprint(m.sign_key))
                             for m in self.board.members()])
        self.refresh_bindings()  # the hours keys follow the time bank setting

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
        t.append(member_extra(gatherings(self.board), m.id, self.host.service.me, who))
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

    # --- time bank ----------------------------------------------------------------

    def action_toggle_timebank(self) -> None:
        g = gatherings(self.board)
        on = not g.settings().timebank
        if self.host.act(lambda: g.set_timebank(on), "Time bank " + ("on: members can log hours" if on else "off")):
            self.refresh_bindings()
            self.host.schedule_details(immediate=True)

    def action_log_hours(self) -> None:
        g, me = gatherings(self.board), self.host.service.me
        others = [m for m in self.board.members() if m.active and m.id != me]
        if not others:
            self.app.notify("Nobody else is in the circle yet.", severity="warning")
            return
        options = [(m.handle, m.id) for m in sorted(others, key=lambda m: m.handle.lower())]
        selected = self.selected_id()

        def submit(v: FormValues) -> None:
            minutes = parse_hours(v["hours"])
            g.log_hours(MemberId(v["with"]), minutes, v["note"], gave=v["direction"] == "gave")
            self.app.notify(f"Logged: it counts once {self.host.who(MemberId(v['with']))} confirms it")

        self.app.push_screen(FormScreen("Log hours (an hour is an hour, whatever the work)",
                                        log_fields(g, MemberId(selected) if selected else None, options), submit,
                                        "Log"))

    def action_confirm_hours(self) -> None:
        self._answer_hours(dispute=False)

    def action_dispute_hours(self) -> None:
        self._answer_hours(dispute=True)

    def _answer_hours(self, dispute: bool) -> None:
        g, me = gatherings(self.board), self.host.service.me
        try:
            choices = waiting_for(g, me) if not dispute else [
                x for x in g.exchanges(me) if x.status.value in ("pending", "confirmed") and x.duplicate_of is None]
        except CircleError as exc:
            self.host.fail(exc)
            return
        if not choices:
            self.app.notify("No hours wait for your word." if not dispute else "No exchange of yours to dispute.",
                            severity="warning")
            return

        def submit(v: FormValues) -> None:
            if not v["exchange"]:
                raise UsageError("pick an exchange")
            if dispute:
                g.dispute(v["exchange"], v["note"])
                self.app.notify("Disputed: it does not count until you both agree")
            else:
                g.confirm(v["exchange"])
                self.app.notify("Confirmed: it counts for both of you")

        title = "Dispute logged hours" if dispute else "Confirm logged hours"
        self.app.push_screen(FormScreen(title, pick_fields(choices, self.host.who, dispute), submit,
                                        "Dispute" if dispute else "Confirm"))
