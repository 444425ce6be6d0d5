"""Board records as table rows and detail text: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from circle.crdt.model import (
    Availability,
    Member,
    MemberId,
    Millis,
    Need,
    NeedStatus,
    Offer,
    OfferStatus,
    Tool,
    Urgency,
)
from circle.tui.table import Column, Row, make_row

# `drop`: on a narrow terminal, the column hidden first (highest) so titles stay readable.
NEED_COLUMNS = [Column("ID", 8, drop=5), Column("URGENCY", 9), Column("TITLE", 0), Column("ZONE", 8, drop=3),
                Column("CLAIMED BY", 12, drop=1), Column("STATUS", 9, drop=2), Column("AGE", 4, drop=4)]
OFFER_COLUMNS = [Column("ID", 8, drop=5), Column("TITLE", 0), Column("CATEGORY", 10, drop=3),
                 Column("ZONE", 8, drop=4), Column("BY", 10), Column("QTY", 3, drop=2), Column("STATUS", 7, drop=1),
                 Column("AGE", 4, drop=6)]
TOOL_COLUMNS = [Column("ID", 8, drop=3), Column("NAME", 0), Column("CONDITION", 12, drop=2),
                Column("AVAILABILITY", 30), Column("HOLDS", 5, drop=1)]
MEMBER_COLUMNS = [Column("HANDLE", 16), Column("ZONE", 10, drop=2), Column("SAFETY NUMBER", 20),
                  Column("INVITED BY", 14, drop=1), Column("STATE", 0)]

URGENCY_LABEL = {Urgency.NOW: "NOW", Urgency.H48: "48h", Urgency.THIS_WEEK: "this week",
                 Urgency.ANYTIME: "anytime"}


def age(ms: Millis, now: Millis) -> str:
    """Compact age: 45s, 12m, 3h, 5d (future times get a leading 'in ')."""
    delta = (now - ms) // 1000
    prefix = ""
    if delta < 0:
        prefix, delta = "in ", -delta
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{prefix}{delta // size}{unit}"
    return f"{prefix}{delta}s"


def span(ms: Millis, now: Millis) -> str:
    """A time distance in words, rounded to the nearest unit: a 7-day loan
    is due "in 7 days" right after it starts, not "in 6d"."""
    delta = (ms - now) / 1000
    a = abs(delta)
    if a < 90:
        return "now"
    if a < 90 * 60:
        n, unit = round(a / 60), "minute"
    elif a < 36 * 3600:
        n, unit = round(a / 3600), "hour"
    else:
        n, unit = round(a / 86400), "day"
    words = f"{n} {unit}{'s' if n != 1 else ''}"
    return f"in {words}" if delta > 0 else f"{words} ago"


def day_text(ms: Millis, now: Millis) -> str:
    """A date members can read: "Tue 8 Dec (in 7 days)"."""
    when = datetime.fromtimestamp(ms / 1000)
    return f"{when:%a} {when.day} {when:%b} ({span(ms, now)})"


def handle(handles: Mapping[MemberId, str], member: MemberId | None) -> str:
    if member is None:
        return "-"
    return handles.get(member, member[:6])


def need_row(n: Need, handles: Mapping[MemberId, str], me: MemberId, now: Millis) -> Row:
    claimants = ", ".join("you" if c == me else handle(handles, c) for c in n.claims) or "-"
    tone = ""
    if n.status in (NeedStatus.MET, NeedStatus.WITHDRAWN, NeedStatus.EXPIRED):
        tone = "dim"
    elif n.urgency == Urgency.NOW:
        tone = "bad"
    elif n.urgency == Urgency.H48:
        tone = "warn"
    cells = (n.id, URGENCY_LABEL[n.urgency], n.title, n.zone or "-", claimants, n.status.value,
             age(n.created_at, now))
    extra = f"{n.details} {n.category} {' '.join(n.tags)} {handle(handles, n.author)}"
    return make_row(n.id, cells, tone, extra)


def offer_row(o: Offer, handles: Mapping[MemberId, str], me: MemberId, now: Millis) -> Row:
    by = "you" if o.author == me else handle(handles, o.author)
    qty = "∞" if o.recurring else ("" if o.quantity is None else str(o.quantity))
    tone = "" if o.status == OfferStatus.OPEN else "dim"
    cells = (o.id, o.title, o.category or "-", o.zone or "-", by, qty, o.status.value, age(o.created_at, now))
    return make_row(o.id, cells, tone, f"{o.details} {' '.join(o.tags)}")


def tool_availability_text(t: Tool, handles: Mapping[MemberId, str], me: MemberId, now: Millis) -> str:
    text = t.availability.value
    loan = t.current_loan
    if loan is not None:
        who = "you" if loan.borrower == me else handle(handles, loan.borrower)
        due = span(loan.due_at, now)
        text = f"OVERDUE {who}, due {due}" if t.overdue else f"on loan: {who}, due {due}"
    elif t.ready_for is not None:
        who = "you" if t.ready_for == me else handle(handles, t.ready_for)
        text = f"held: ready for {who}"
    if t.conflicting_loans:
        text += f" CONFLICT x{len(t.conflicting_loans) + 1}"
    return text


def tool_row(t: Tool, handles: Mapping[MemberId, str], me: MemberId, now: Millis) -> Row:
    if t.overdue or t.conflicting_loans:
        tone = "bad"
    elif t.availability == Availability.AVAILABLE:
        tone = "good"
    elif t.availability in (Availability.RETIRED, Availability.MISSING, Availability.MAINTENANCE):
        tone = "dim"
    else:
        tone = ""
    cells = (t.id, t.name, t.condition.value, tool_availability_text(t, handles, me, now),
             str(len(t.queue)) if t.queue else "")
    return make_row(t.id, cells, tone, f"{t.description} {t.category}")


def member_row(m: Member, handles: Mapping[MemberId, str], me: MemberId, fpr: str) -> Row:
    name = m.handle + (" (you)" if m.id == me else "")
    state = "active" if m.active else f"removed by {handle(handles, m.removed_by)}"
    cells = (name, m.zone or "-", fpr, handle(handles, m.invited_by) if m.invited_by else "founder", state)
    return make_row(m.id, cells, "" if m.active else "dim")
