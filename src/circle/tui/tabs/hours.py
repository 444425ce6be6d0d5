"""What the Members tab shows of skills and the time bank, and its hours forms.

Hours exist only when the circle turned the time bank on (`circle settings
timebank on`, or the palette's "Time bank on/off"): when off, nothing about
hours is shown and the hours keys are hidden. Balances count confirmed
exchanges only (both sides said so), given and received side by side: no
total, no rank, nothing that gates help.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from circle.crdt.gatherings import Gatherings
from circle.crdt.model import MemberId
from circle.crdt.timebank import Exchange, ExchangeStatus, format_hours
from circle.crdt.times import parse_duration
from circle.errors import UsageError
from circle.tui.safetext import SafeText as Text
from circle.tui.screens import FieldSpec

EXCHANGES_IN_PANEL = 8


def parse_hours(text: str) -> int:
    """"1.5" (hours), "1h30", "90m" -> minutes."""
    value = text.strip()
    try:
        hours = float(value.replace(",", "."))
    except ValueError:
        return parse_duration(value)
    if not 0 < hours <= 24 * 7:
        raise UsageError("hours must be more than 0 and at most a week")
    return round(hours * 60)


def waiting_for(g: Gatherings, me: MemberId) -> list[Exchange]:
    """Exchanges the other side logged that wait for my word."""
    return [x for x in g.exchanges(me) if x.status == ExchangeStatus.PENDING and x.duplicate_of is None
            and me not in x.sides]


def exchange_line(x: Exchange, who: Callable[[MemberId], str]) -> str:
    day = datetime.fromtimestamp(x.created_at / 1000).strftime("%d %b")
    state = x.status.value + (" (same as " + x.duplicate_of + ")" if x.duplicate_of else "")
    return f"{day} {who(x.giver)} → {who(x.receiver)} {format_hours(x.minutes)}: {x.note} [{state}]"


def member_extra(g: Gatherings, member: MemberId, me: MemberId | None, who: Callable[[MemberId], str]) -> Text:
    """For the member detail panel: their skills and, only when the time bank
    is on, their confirmed hours and their exchanges."""
    t = Text()
    skills = g.skills(member)
    if skills:
        t.append("\nSkills\n", style="bold")
        for s in skills:
            t.append(f"  {s.title}" + (" (can teach)" if s.teach else "") + "\n")
    if not g.settings().timebank:
        return t
    b = g.balances().get(member)
    t.append("\nTime bank (confirmed)\n", style="bold")
    t.append(f"  gave {format_hours(b.given_minutes if b else 0)} · "
             f"received {format_hours(b.received_minutes if b else 0)}\n")
    mine = g.exchanges(member)
    pending = [x for x in mine if x.status == ExchangeStatus.PENDING and not x.duplicate_of]
    if pending:
        t.append(f"  {len(pending)} waiting for a confirmation\n", style="dim")
    if me is not None and member == me:
        waiting = waiting_for(g, me)
        if waiting:
            t.append(f"  {len(waiting)} waiting for YOUR word: c to confirm, x to dispute\n", style="bold")
    for x in mine[:EXCHANGES_IN_PANEL]:
        t.append(f"  {exchange_line(x, who)} ({x.id})\n", style="dim" if x.status == ExchangeStatus.WITHDRAWN else "")
    t.append("h: log hours · c: confirm · x: dispute\n", style="dim")
    return t


def log_fields(g: Gatherings, other: MemberId | None, options: list[tuple[str, str]]) -> list[FieldSpec]:
    # What it was for comes first: the form opens with the cursor there.
    default = other if other is not None and any(v == other for _, v in options) else options[0][1]
    return [
        FieldSpec("note", "What for", placeholder="e.g. fixed the back brake"),
        FieldSpec("hours", "Hours", value="1", placeholder="1.5, 1h30 or 90m"),
        FieldSpec("with", "With", "select", default, options),
        FieldSpec("direction", "Who gave", "select", "gave",
                  [("I gave them my time", "gave"), ("they gave me their time", "received")]),
    ]


def pick_fields(choices: list[Exchange], who: Callable[[MemberId], str], note: bool) -> list[FieldSpec]:
    options = [(exchange_line(x, who), x.id) for x in choices]
    fields = [FieldSpec("exchange", "Exchange", "select", options[0][1], options)]
    if note:
        fields.insert(0, FieldSpec("note", "Why", placeholder="what is not right about it"))
    return fields
