"""The meeting printout: one page of what a group goes through together.

`build(view, now)` gathers the facts (open needs by urgency, open offers,
tools out and overdue, new members); `build_for(board, now)` adds what the
board's other views hold: upcoming gatherings and open shifts (issue 12) and
the pinned resources (issue 13). `markdown(report)` and `html(report)`
write them with handles, not ids, and dates, not milliseconds. The HTML is
one self-contained file (inline style, no scripts, no external links) that
prints on one or two A4 pages; every value is escaped.
"""

from __future__ import annotations

import html as _html
from dataclasses import dataclass, field
from datetime import datetime

from circle.crdt.board import Board
from circle.crdt.defence import Defence, Resource
from circle.crdt.gather_records import Rsvp
from circle.crdt.gatherings import Gatherings, gatherings
from circle.crdt.model import DAY_MS, MemberId, Millis, NeedStatus, OfferStatus, Urgency
from circle.crdt.times import show_time
from circle.crdt.views import BoardView

URGENCY_WORDS = {Urgency.NOW: "now", Urgency.H48: "within 48 hours", Urgency.THIS_WEEK: "this week",
                 Urgency.ANYTIME: "any time"}


def date(ms: Millis | None) -> str:
    if ms is None:
        return ""
    d = datetime.fromtimestamp(ms / 1000)
    return f"{d:%a} {d.day} {d:%b %Y}"


@dataclass(frozen=True)
class Section:
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    empty: str = "Nothing."


@dataclass(frozen=True)
class Report:
    circle: str
    made_at: Millis
    summary: list[str]
    sections: list[Section]


def build_for(board: Board, now: Millis, new_member_days: int = 30, event_days: int = 14) -> Report:
    """The whole report of a board: `build` plus gatherings, shifts and resources."""
    return build(board.view(), board.name, now, new_member_days, gatherings(board), Defence(board).resources(),
                 event_days)


def gathering_sections(g: Gatherings, handles: dict[MemberId, str], now: Millis,
                       days: int = 14) -> tuple[list[str], list[Section]]:
    """Upcoming gatherings (next `days` days) and the shifts that still need people."""
    horizon = now + days * DAY_MS
    soon = [e for e in g.events("upcoming") if e.starts_at <= horizon]
    shifts = [(e, s) for e, s in g.open_shifts() if e.starts_at <= horizon]

    def coming(people: list[MemberId]) -> str:
        return ", ".join(sorted((handles.get(m, "(unknown)") for m in people), key=str.lower)) or "nobody yet"

    summary = [f"{len(soon)} gathering{'s' if len(soon) != 1 else ''} in the next {days} days, "
               f"{len(shifts)} shift{'s' if len(shifts) != 1 else ''} still need people"]
    sections = [
        Section(f"Upcoming gatherings (next {days} days)", ("When", "Gathering", "Where", "Coming"),
                [(show_time(e.starts_at), e.title, e.place or "place to be decided", coming(e.answers(Rsvp.YES)))
                 for e in soon], f"No gatherings planned in the next {days} days."),
        Section("Open shifts", ("Shift", "For", "When", "Open"),
                [(s.title, e.title, show_time(s.starts_at), f"{s.open_slots} of {s.slots} open")
                 for e, s in shifts], "Every shift is covered."),
    ]
    return summary, sections


def resources_section(resources: list[Resource]) -> Section:
    """The pinned resources (legal, medical, know-your-rights), as in `circle resource list`."""
    return Section("Resources", ("Kind", "Resource", "Details"),
                   [(r.kind.value, r.title, r.details) for r in resources],
                   "No pinned resources yet (circle resource add).")


def build(view: BoardView, circle: str, now: Millis, new_member_days: int = 30, gather: Gatherings | None = None,
          resources: list[Resource] | None = None, event_days: int = 14) -> Report:
    handles: dict[MemberId, str] = {m.id: m.handle for m in view.members.values()}

    def h(m: MemberId | None) -> str:
        return "" if m is None else handles.get(m, "(unknown)")

    needs = [n for n in view.needs.values() if n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED)]
    needs.sort(key=lambda n: (-n.urgency.rank, n.created_at))
    offers = sorted((o for o in view.offers.values() if o.status == OfferStatus.OPEN), key=lambda o: o.created_at)
    tools = view.tools
    out = [t for t in tools.values() if t.current_loan is not None]
    out.sort(key=lambda t: (not t.overdue, t.current_loan.due_at if t.current_loan else 0))
    overdue = [t for t in out if t.overdue]
    since = now - new_member_days * DAY_MS
    members = sorted((m for m in view.members.values() if m.joined_at >= since and m.active),
                     key=lambda m: m.joined_at)
    active_members = sum(1 for m in view.members.values() if m.active)
    summary = [
        f"{len(needs)} open need{'s' if len(needs) != 1 else ''}"
        f" ({sum(1 for n in needs if n.status == NeedStatus.CLAIMED)} claimed)",
        f"{len(offers)} open offer{'s' if len(offers) != 1 else ''}",
        f"{len(out)} tool{'s' if len(out) != 1 else ''} out of {len(tools)}, {len(overdue)} overdue",
        f"{active_members} member{'s' if active_members != 1 else ''}, {len(members)} new in the last "
        f"{new_member_days} days",
    ]
    sections = [
        Section("Open needs", ("Urgency", "Need", "Asked by", "Claimed by", "Since"),
                [(URGENCY_WORDS[n.urgency], n.title, h(n.author), ", ".join(h(c) for c in n.claims) or "nobody yet",
                  date(n.created_at)) for n in needs], "No open needs."),
        Section("Open offers", ("Offer", "Offered by", "Zone", "Since"),
                [(o.title, h(o.author), o.zone, date(o.created_at)) for o in offers], "No open offers."),
        Section("Tools out", ("Tool", "With", "Due back", "Late?"),
                [(t.name, h(t.current_loan.borrower), date(t.current_loan.due_at),
                  "OVERDUE" if t.overdue else "") for t in out if t.current_loan is not None],
                "Every tool is in."),
        Section("New members", ("Member", "Zone", "Invited by", "Joined"),
                [(m.handle, m.zone, h(m.invited_by) if m.invited_by else "founder", date(m.joined_at))
                 for m in members], f"Nobody joined in the last {new_member_days} days."),
    ]
    if gather is not None:
        more_summary, more = gathering_sections(gather, handles, now, event_days)
        summary += more_summary
        sections += more
    if resources is not None:
        sections.append(resources_section(resources))
    return Report(circle, now, summary, sections)


def _md_cell(text: str) -> str:
    return " ".join(text.replace("\\", "\\\\").replace("|", "\\|").split())


def markdown(r: Report) -> str:
    lines = [f"# {_md_cell(r.circle)}: meeting report", "", f"Made {date(r.made_at)}.", ""]
    lines += [f"- {s}" for s in r.summary] + [""]
    for s in r.sections:
        lines += [f"## {s.title}", ""]
        if not s.rows:
            lines += [s.empty, ""]
            continue
        lines.append("| " + " | ".join(s.columns) + " |")
        lines.append("|" + "|".join("---" for _ in s.columns) + "|")
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows]
        lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; color: #111; background: #fff; margin: 2em; max-width: 60em; }
h1 { font-size: 1.5em; margin: 0 0 .2em 0; } h2 { font-size: 1.15em; margin: 1.2em 0 .3em 0; }
table { border-collapse: collapse; width: 100%; font-size: .95em; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid #999; vertical-align: top; }
th { background: #eee; } .late { color: #a00; font-weight: bold; } .muted { color: #444; }
@media print { body { margin: 0; } }
"""


def html(r: Report) -> str:
    e = _html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{e(r.circle)}: meeting report</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(r.circle)}: meeting report</h1>", f'<p class="muted">Made {e(date(r.made_at))}.</p>',
             "<ul>" + "".join(f"<li>{e(s)}</li>" for s in r.summary) + "</ul>"]
    for s in r.sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        if not s.rows:
            parts.append(f'<p class="muted">{e(s.empty)}</p>')
            continue
        parts.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.columns) + "</tr></thead><tbody>")
        for row in s.rows:
            cells = "".join(f'<td class="late">{e(c)}</td>' if c == "OVERDUE" else f"<td>{e(c)}</td>" for c in row)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
