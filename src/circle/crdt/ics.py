"""iCalendar (RFC 5545) export of events and shifts.

Written by hand (a few dozen lines) rather than with a library: the output
is small, and the tests read it back with the standard `icalendar` parser,
so the writer is checked by code it shares nothing with.

Times are written in UTC (`...Z`): an instant, which every calendar shows in
its reader's zone; the author's zone name goes into `X-CIRCLE-TZ`. A place
is the free text the author chose. Cancelled events stay in the file with
`STATUS:CANCELLED`, so calendars that imported them earlier drop them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from circle.crdt.gather_records import BringItem, Event, Shift
from circle.crdt.model import Millis

PRODID = "-//circle//gatherings//EN"


def _escape(text: str) -> str:
    return (text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def _fold(line: str) -> str:
    """Lines of at most 75 octets, continued with CRLF + space (RFC 5545 §3.1),
    never splitting a UTF-8 character."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line
    parts: list[str] = []
    current, size = "", 0
    for ch in line:
        n = len(ch.encode("utf-8"))
        if size + n > (75 if not parts else 74):
            parts.append(current)
            current, size = "", 0
        current += ch
        size += n
    parts.append(current)
    return "\r\n ".join(parts)


def _stamp(ms: Millis) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%dT%H%M%SZ")


def _vevent(uid: str, start: Millis, end: Millis, summary: str, stamp: Millis, *, location: str = "",
            description: str = "", categories: str = "", cancelled: bool = False, tz: str = "",
            sequence: int = 0) -> list[str]:
    lines = ["BEGIN:VEVENT", f"UID:{uid}", f"DTSTAMP:{_stamp(stamp)}", f"DTSTART:{_stamp(start)}",
             f"DTEND:{_stamp(end)}", f"SUMMARY:{_escape(summary)}", f"SEQUENCE:{sequence}"]
    if location:
        lines.append(f"LOCATION:{_escape(location)}")
    if description:
        lines.append(f"DESCRIPTION:{_escape(description)}")
    if categories:
        lines.append(f"CATEGORIES:{_escape(categories)}")
    if tz:
        lines.append(f"X-CIRCLE-TZ:{_escape(tz)}")
    lines.append("STATUS:CANCELLED" if cancelled else "STATUS:CONFIRMED")
    lines.append("END:VEVENT")
    return lines


def calendar(circle_id: str, items: Iterable[tuple[Event, list[Shift], list[BringItem]]],
             handles: dict[str, str], now: Millis) -> str:
    """A VCALENDAR with one VEVENT per event and one per shift."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH"]
    for e, shifts, bring in items:
        desc = [e.details] if e.details else []
        yes = [handles.get(m, m) for m in e.answers_yes()]
        if yes:
            desc.append("Coming: " + ", ".join(yes))
        if bring:
            desc.append("Bring list: " + "; ".join(f"{handles.get(b.member, b.member)}: {b.item}" for b in bring))
        for s in shifts:
            desc.append(f"Shift {s.title}: {len(s.takes)}/{s.slots}")
        lines += _vevent(f"{e.id}@{circle_id}.circle", e.starts_at, e.ends_at, e.title, now,
                         location=e.place, description="\n".join(desc), categories=e.kind.value,
                         cancelled=e.cancelled_at is not None, tz=e.tz,
                         sequence=max(0, (e.updated_at - e.created_at) // 1000))
        for s in shifts:
            takers = ", ".join(handles.get(m, m) for m in s.takers) or "nobody yet"
            lines += _vevent(f"{s.id}@{circle_id}.circle", s.starts_at, s.ends_at, f"{s.title} ({e.title})",
                             now, location=e.place, description=f"Shift, {s.slots} slots: {takers}",
                             categories="shift",
                             cancelled=s.cancelled_at is not None or e.cancelled_at is not None, tz=e.tz)
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)
