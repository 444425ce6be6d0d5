"""What changed for me: notifications and the activity feed (pure logic).

Two views of the same question, both from the board alone:

- `Watch` compares successive snapshots while the app runs and yields the
  notifications a member acts on: a new need from someone else, someone
  claiming my need, a need I claimed withdrawn, a tool I queued for ready
  for me, my loan due within a day, my loan overdue, someone borrowing a
  tool I steward, a new member. Time-based ones (due, overdue) fire when a
  loan *crosses* into that state, so each fires once per loan, and once at
  start for loans already in that state.
- `recent(view, since)` lists what happened after a moment from the
  records' own timestamps: the feed behind "since you last looked" in the
  app and `circle activity` in the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from circle.crdt.model import DAY_MS, LoanStatus, MemberId, Millis, NeedStatus, RecordId, Urgency
from circle.crdt.views import BoardView

Severity = Literal["information", "warning", "error"]


@dataclass(frozen=True)
class Event:
    at: Millis
    kind: str  # new_need, claimed, withdrawn, ready, due, overdue, lent, joined, met, returned, new_offer, new_tool
    title: str  # short heading
    text: str  # one sentence, handles not ids
    collection: str
    record: str
    severity: Severity = "information"


def _who(view: BoardView, member: MemberId | None, me: MemberId) -> str:
    if member is None:
        return "someone"
    if member == me:
        return "you"
    m = view.members.get(member)
    return m.handle if m else member[:6]


def _loan_bucket(due_at: Millis, now: Millis) -> int:
    """0 fine, 1 due within a day, 2 overdue."""
    if now > due_at:
        return 2
    return 1 if due_at - now <= DAY_MS else 0


@dataclass
class Watch:
    """Feed it views (on every change and on a clock tick); it returns the
    notifications since the last view it saw."""

    me: MemberId
    needs: dict[RecordId, tuple[NeedStatus, frozenset[MemberId]]] | None = None
    ready: set[RecordId] = field(default_factory=set)
    loans: dict[RecordId, int] = field(default_factory=dict)  # my open loans -> bucket
    lent: set[RecordId] = field(default_factory=set)  # open loans of tools I steward
    members: set[MemberId] = field(default_factory=set)

    def update(self, view: BoardView, now: Millis) -> list[Event]:
        me, out = self.me, []
        first = self.needs is None
        needs = {rid: (n.status, frozenset(n.claims)) for rid, n in view.needs.items()}
        if not first:
            assert self.needs is not None
            for rid, n in view.needs.items():
                old = self.needs.get(rid)
                who = _who(view, n.author, me)
                if old is None:
                    if n.author != me and n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED):
                        urgent = n.urgency in (Urgency.NOW, Urgency.H48)
                        out.append(Event(n.created_at, "new_need", "New need" + (" (urgent)" if urgent else ""),
                                         f"{who}: {n.title}", "needs", rid,
                                         "warning" if n.urgency == Urgency.NOW else "information"))
                    continue
                if n.author == me:
                    for c in n.claims.keys() - old[1]:
                        if c != me:
                            out.append(Event(n.claims[c], "claimed", "Your need was claimed",
                                             f"{_who(view, c, me)} will help with “{n.title}”", "needs", rid))
                if me in n.claims and old[0] != n.status and n.status == NeedStatus.WITHDRAWN:
                    out.append(Event(n.withdrawn_at or now, "withdrawn", "A need you claimed was withdrawn",
                                     f"{who} withdrew “{n.title}”; you no longer need to help", "needs", rid,
                                     "warning"))
            new_members = set(view.members) - self.members
            for mid in sorted(new_members):
                m = view.members[mid]
                if mid != me:
                    by = _who(view, m.invited_by, me) if m.invited_by else "nobody"
                    out.append(Event(m.joined_at, "joined", "New member",
                                     f"{m.handle} joined (invited by {by})", "members", mid))
        self.needs = needs
        self.members = set(view.members)

        ready: set[RecordId] = set()
        loans: dict[RecordId, int] = {}
        lent: set[RecordId] = set()
        for tid, t in view.tools.items():
            if t.ready_for == me:
                ready.add(tid)
                if tid not in self.ready:
                    out.append(Event(now, "ready", "A tool is ready for you",
                                     f"{t.name} is ready for you: press b on it to borrow", "tools", tid, "warning"))
            for x in (t.current_loan, *t.conflicting_loans):
                if x is None or x.status != LoanStatus.OUT:
                    continue
                if x.borrower == me:
                    b = _loan_bucket(x.due_at, now)
                    loans[x.id] = b
                    if b > self.loans.get(x.id, 0):
                        if b == 2:
                            out.append(Event(x.due_at, "overdue", "Loan overdue",
                                             f"{t.name} was due back; return or renew it", "tools", tid, "error"))
                        else:
                            out.append(Event(now, "due", "Loan due soon",
                                             f"{t.name} is due back within a day", "tools", tid, "warning"))
                if t.steward == me and x.borrower != me:
                    lent.add(x.id)
                    if not first and x.id not in self.lent:
                        out.append(Event(x.out_at, "lent", "Your tool went out",
                                         f"{_who(view, x.borrower, me)} borrowed {t.name}", "tools", tid))
        self.ready, self.loans, self.lent = ready, loans, lent
        return out


def recent(view: BoardView, me: MemberId, since: Millis, limit: int = 50) -> list[Event]:
    """What happened after `since`, newest first, from record timestamps."""
    out: list[Event] = []
    for rid, n in view.needs.items():
        who = _who(view, n.author, me)
        if n.created_at > since:
            out.append(Event(n.created_at, "new_need", "New need", f"{who} posted “{n.title}”", "needs", rid))
        for c, at in n.claims.items():
            if at > since:
                out.append(Event(at, "claimed", "Claimed", f"{_who(view, c, me)} claimed “{n.title}”", "needs", rid))
        if n.met_at is not None and n.met_at > since:
            out.append(Event(n.met_at, "met", "Met", f"“{n.title}” was met", "needs", rid))
        if n.withdrawn_at is not None and n.withdrawn_at > since:
            out.append(Event(n.withdrawn_at, "withdrawn", "Withdrawn", f"{who} withdrew “{n.title}”", "needs", rid))
    for rid, o in view.offers.items():
        if o.created_at > since:
            out.append(Event(o.created_at, "new_offer", "New offer",
                             f"{_who(view, o.author, me)} offered “{o.title}”", "offers", rid))
    tools = view.tools
    for rid, t in tools.items():
        if t.created_at > since:
            out.append(Event(t.created_at, "new_tool", "New tool",
                             f"{_who(view, t.steward, me)} added {t.name} to the library", "tools", rid))
    for x in view.loans.values():
        lent_tool = tools.get(x.tool)
        name = lent_tool.name if lent_tool else "a tool"
        if x.out_at > since:
            out.append(Event(x.out_at, "lent", "Borrowed", f"{_who(view, x.borrower, me)} borrowed {name}",
                             "tools", x.tool))
        if x.returned_at is not None and x.returned_at > since:
            out.append(Event(x.returned_at, "returned", "Returned",
                             f"{_who(view, x.borrower, me)} returned {name}", "tools", x.tool))
        if x.overdue and x.due_at > since:
            whose = "Your" if x.borrower == me else f"{_who(view, x.borrower, me)}'s"
            out.append(Event(x.due_at, "overdue", "Overdue", f"{whose} loan of {name} is overdue",
                             "tools", x.tool, "error"))
    for mid, m in view.members.items():
        if m.joined_at > since:
            by = _who(view, m.invited_by, me) if m.invited_by else "nobody"
            out.append(Event(m.joined_at, "joined", "Joined", f"{m.handle} joined (invited by {by})",
                             "members", mid))
    out.sort(key=lambda e: -e.at)
    return out[:limit]
