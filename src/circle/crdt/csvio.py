"""Spreadsheet-safe CSV, one file per collection, and import of another tool
library's item export (myTurn, Circulate). Pure logic: text in, text out.

Export rules (what pandas and LibreOffice open as-is):
- one header row, one record per row, comma-separated, `\\r\\n` line ends,
  UTF-8 (with a byte-order mark on request, for Excel);
- times are ISO-8601 in UTC (`2026-12-01T21:47:01Z`), empty when unset;
- booleans are `true` / `false`; lists (tags, claimants) are plain text
  joined with `; `; people appear twice, as a handle column beside an id column;
- any cell that a spreadsheet would run as a formula (first character
  `=`, `+`, `-`, `@`, tab or carriage return) gets a leading `'`, the
  OWASP-recommended neutraliser: `=HYPERLINK(...)` stays visible text.

The columns of every file are listed in `COLUMNS` (name, meaning), which is
also what docs/tui.md and `circle export --columns` print.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from circle.crdt.board import Board
from circle.crdt.gather_records import Rsvp
from circle.crdt.gatherings import GatherView
from circle.crdt.model import Condition, MemberId, Millis, ToolState
from circle.crdt.text import printable
from circle.crdt.views import BoardView
from circle.errors import ImportError_, UsageError

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | bool | None

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "needs": [
        ("id", "record id (8 characters)"), ("title", "what is needed"), ("status", "open, claimed, met, withdrawn or expired"),
        ("urgency", "now, 48h, this-week or anytime"), ("category", "lowercase category"),
        ("tags", "tags joined with '; '"), ("zone", "coarse area"), ("author", "handle of who posted it"),
        ("author_id", "member id of who posted it"), ("claimed_by", "handles of who claimed it, '; '"),
        ("claimed_by_ids", "their member ids, '; '"), ("created", "when posted (UTC)"),
        ("updated", "last edit (UTC)"), ("expires", "when it expires (UTC)"), ("met", "when met (UTC)"),
        ("withdrawn", "when withdrawn (UTC)"), ("details", "free text"),
    ],
    "offers": [
        ("id", "record id"), ("title", "what is offered"), ("status", "open, paused, closed or expired"),
        ("category", "lowercase category"), ("tags", "tags joined with '; '"), ("zone", "coarse area"),
        ("author", "handle of who offers it"), ("author_id", "their member id"),
        ("quantity", "how many, empty when not counted"), ("recurring", "true when offered again and again"),
        ("created", "when posted (UTC)"), ("updated", "last edit (UTC)"), ("expires", "when it expires (UTC)"),
        ("closed", "when closed (UTC)"), ("details", "free text"),
    ],
    "tools": [
        ("id", "record id"), ("name", "tool name"),
        ("availability", "available, on-loan, held, maintenance, missing or retired"),
        ("state", "what the steward set: active, maintenance, missing or retired"),
        ("condition", "good, worn, needs-repair or unsafe"), ("condition_note", "free text"),
        ("category", "lowercase category"), ("steward", "handle of who looks after it"),
        ("steward_id", "their member id"), ("loan_days", "default loan length in days"),
        ("on_loan_to", "handle of the current borrower"), ("on_loan_to_id", "their member id"),
        ("due", "when the current loan is due (UTC)"), ("overdue", "true when the current loan is late"),
        ("queue", "how many members are waiting"), ("created", "when added (UTC)"),
        ("description", "free text"),
    ],
    "loans": [
        ("id", "loan id"), ("tool_id", "tool record id"), ("tool", "tool name"),
        ("borrower", "handle"), ("borrower_id", "member id"), ("status", "out, returned or lost"),
        ("out", "when it went out (UTC)"), ("due", "when due back (UTC)"), ("returned", "when returned (UTC)"),
        ("lost", "when marked lost (UTC)"), ("condition_out", "condition when lent"),
        ("condition_in", "condition when returned"), ("renewals", "times renewed"),
        ("overdue", "true when out and late"),
    ],
    "holds": [
        ("id", "hold id"), ("tool_id", "tool record id"), ("tool", "tool name"), ("member", "handle"),
        ("member_id", "member id"), ("status", "waiting, ready, loaned or cancelled"),
        ("created", "when placed (UTC)"), ("cancelled", "when cancelled (UTC)"),
        ("fulfilled", "when it became a loan (UTC)"),
    ],
    "members": [
        ("id", "member id"), ("handle", "pseudonym"), ("zone", "coarse area"), ("active", "false once removed"),
        ("joined", "when they joined (UTC)"), ("invited_by", "handle of who invited them"),
        ("invited_by_id", "their member id"), ("removed", "when removed (UTC)"),
        ("removed_by", "handle of who removed them"), ("removed_by_id", "their member id"),
    ],
    "skills": [
        ("id", "record id"), ("title", "the skill"), ("category", "lowercase category"),
        ("teach", "true when they can teach it"), ("member", "handle of who listed it"),
        ("member_id", "their member id"), ("listed", "false once removed"), ("created", "when listed (UTC)"),
        ("removed", "when removed (UTC)"), ("details", "free text"),
    ],
    "events": [
        ("id", "record id"), ("title", "the gathering"), ("kind", "potluck, workshop, meeting, cleanup or other"),
        ("starts", "when it starts (UTC)"), ("ends", "when it ends (UTC)"), ("zone_name", "the author's time zone"),
        ("place", "free text, never an address"), ("zone", "coarse area"), ("planned_by", "handle"),
        ("planned_by_id", "member id"), ("yes", "handles who said yes, '; '"), ("maybe", "handles, '; '"),
        ("no", "handles, '; '"), ("cancelled", "when cancelled (UTC)"), ("series", "weekly series id"),
        ("details", "free text"),
    ],
    "shifts": [
        ("id", "record id"), ("event_id", "event record id"), ("event", "event title"), ("title", "the shift"),
        ("starts", "when it starts (UTC)"), ("ends", "when it ends (UTC)"), ("slots", "people needed"),
        ("taken_by", "handles in the order they fill the slots, '; '"), ("taken_by_ids", "member ids, '; '"),
        ("over_full", "true when taken offline past its slots"), ("cancelled", "when cancelled (UTC)"),
    ],
    "bring": [
        ("id", "record id"), ("event_id", "event record id"), ("event", "event title"), ("member", "handle"),
        ("member_id", "member id"), ("item", "what they bring"), ("created", "when added (UTC)"),
        ("removed", "when taken off (UTC)"),
    ],
    "exchanges": [
        ("id", "record id"), ("giver", "handle of who gave the time"), ("giver_id", "member id"),
        ("receiver", "handle of who received it"), ("receiver_id", "member id"), ("hours", "hours, e.g. 1.5"),
        ("note", "what it was for"), ("status", "pending, confirmed, disputed or withdrawn"),
        ("counted", "true when confirmed by both and not a double log"), ("duplicate_of", "the log it doubles"),
        ("logged_by", "handle"), ("created", "when logged (UTC)"), ("need_id", "the need it helped with"),
    ],
}
# Collections read from the gatherings view (`circle.crdt.gatherings`).
GATHER_CSV = ("skills", "events", "shifts", "bring", "exchanges")
CSV_COLLECTIONS = tuple(COLUMNS)


def iso(ms: Millis | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_cell(value: Cell) -> str:
    """The text a spreadsheet shows, never a formula it runs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # Controls and bidi overrides shown, never obeyed (a terminal `cat`s CSV too);
    # line breaks inside details stay (CSV quotes them).
    text = printable(str(value), multiline=True)
    if text.startswith(FORMULA_START):
        return "'" + text
    return text


def rows_of(view: BoardView, collection: str, gather: GatherView | None = None) -> list[dict[str, Cell]]:
    """The rows of one collection as column -> value (before neutralising).
    Skills, events, shifts, bring and exchanges need the gatherings view."""
    if collection not in COLUMNS:
        raise UsageError(f"no collection '{collection}'; choose from {', '.join(COLUMNS)}")
    handles: dict[MemberId, str] = {m.id: m.handle for m in view.members.values()}

    def h(m: MemberId | None) -> str:
        return "" if m is None else handles.get(m, "")

    if collection in GATHER_CSV:
        if gather is None:
            raise UsageError(f"{collection} need the gatherings view")
        return _gather_rows(gather, collection, h)
    out: list[dict[str, Cell]] = []
    if collection == "needs":
        for n in sorted(view.needs.values(), key=lambda x: (x.created_at, x.id)):
            out.append({
                "id": n.id, "title": n.title, "status": n.status.value, "urgency": n.urgency.value,
                "category": n.category, "tags": "; ".join(sorted(n.tags)), "zone": n.zone,
                "author": h(n.author), "author_id": n.author,
                "claimed_by": "; ".join(h(c) for c in n.claims), "claimed_by_ids": "; ".join(n.claims),
                "created": iso(n.created_at), "updated": iso(n.updated_at), "expires": iso(n.expires_at),
                "met": iso(n.met_at), "withdrawn": iso(n.withdrawn_at), "details": n.details,
            })
    elif collection == "offers":
        for o in sorted(view.offers.values(), key=lambda x: (x.created_at, x.id)):
            out.append({
                "id": o.id, "title": o.title, "status": o.status.value, "category": o.category,
                "tags": "; ".join(sorted(o.tags)), "zone": o.zone, "author": h(o.author), "author_id": o.author,
                "quantity": o.quantity, "recurring": o.recurring, "created": iso(o.created_at),
                "updated": iso(o.updated_at), "expires": iso(o.expires_at), "closed": iso(o.closed_at),
                "details": o.details,
            })
    elif collection == "tools":
        for t in sorted(view.tools.values(), key=lambda x: (x.created_at, x.id)):
            loan = t.current_loan
            out.append({
                "id": t.id, "name": t.name, "availability": t.availability.value, "state": t.state.value,
                "condition": t.condition.value, "condition_note": t.condition_note, "category": t.category,
                "steward": h(t.steward), "steward_id": t.steward, "loan_days": t.loan_days,
                "on_loan_to": h(loan.borrower) if loan else "", "on_loan_to_id": loan.borrower if loan else "",
                "due": iso(loan.due_at) if loan else "", "overdue": t.overdue, "queue": len(t.queue),
                "created": iso(t.created_at), "description": t.description,
            })
    elif collection == "loans":
        tools = view.tools
        for x in sorted(view.loans.values(), key=lambda x: (x.out_at, x.id)):
            tool = tools.get(x.tool)
            out.append({
                "id": x.id, "tool_id": x.tool, "tool": tool.name if tool else "", "borrower": h(x.borrower),
                "borrower_id": x.borrower, "status": x.status.value, "out": iso(x.out_at), "due": iso(x.due_at),
                "returned": iso(x.returned_at), "lost": iso(x.lost_at), "condition_out": x.condition_out.value,
                "condition_in": x.condition_in.value if x.condition_in else "", "renewals": x.renewals,
                "overdue": x.overdue,
            })
    elif collection == "holds":
        tools = view.tools
        for hd in sorted(view.holds.values(), key=lambda x: (x.created_at, x.id)):
            tool = tools.get(hd.tool)
            out.append({
                "id": hd.id, "tool_id": hd.tool, "tool": tool.name if tool else "", "member": h(hd.member),
                "member_id": hd.member, "status": hd.status.value, "created": iso(hd.created_at),
                "cancelled": iso(hd.cancelled_at), "fulfilled": iso(hd.fulfilled_at),
            })
    else:  # members
        for m in sorted(view.members.values(), key=lambda x: (x.joined_at, x.id)):
            out.append({
                "id": m.id, "handle": m.handle, "zone": m.zone, "active": m.active, "joined": iso(m.joined_at),
                "invited_by": h(m.invited_by), "invited_by_id": m.invited_by or "", "removed": iso(m.removed_at),
                "removed_by": h(m.removed_by), "removed_by_id": m.removed_by or "",
            })
    return out


def _gather_rows(g: GatherView, collection: str, h: Any) -> list[dict[str, Cell]]:
    out: list[dict[str, Cell]] = []
    if collection == "skills":
        for s in sorted(g.skills.values(), key=lambda x: (x.created_at, x.id)):
            out.append({"id": s.id, "title": s.title, "category": s.category, "teach": s.teach, "member": h(s.author),
                        "member_id": s.author, "listed": s.listed, "created": iso(s.created_at),
                        "removed": iso(s.removed_at), "details": s.details})
    elif collection == "events":
        for e in sorted(g.events.values(), key=lambda x: (x.starts_at, x.id)):
            out.append({"id": e.id, "title": e.title, "kind": e.kind.value, "starts": iso(e.starts_at),
                        "ends": iso(e.ends_at), "zone_name": e.tz, "place": e.place, "zone": e.zone,
                        "planned_by": h(e.author), "planned_by_id": e.author,
                        **{a.value: "; ".join(h(m) for m in e.answers(a)) for a in Rsvp},
                        "cancelled": iso(e.cancelled_at), "series": e.series or "", "details": e.details})
    elif collection == "shifts":
        for sh in sorted(g.shifts.values(), key=lambda x: (x.starts_at, x.id)):
            ev = g.events.get(sh.event)
            out.append({"id": sh.id, "event_id": sh.event, "event": ev.title if ev else "", "title": sh.title,
                        "starts": iso(sh.starts_at), "ends": iso(sh.ends_at), "slots": sh.slots,
                        "taken_by": "; ".join(h(m) for m in sh.takers), "taken_by_ids": "; ".join(sh.takers),
                        "over_full": sh.over_full, "cancelled": iso(sh.cancelled_at)})
    elif collection == "bring":
        for b in sorted(g.bring.values(), key=lambda x: (x.created_at, x.id)):
            ev = g.events.get(b.event)
            out.append({"id": b.id, "event_id": b.event, "event": ev.title if ev else "", "member": h(b.member),
                        "member_id": b.member, "item": b.item, "created": iso(b.created_at),
                        "removed": iso(b.removed_at)})
    else:  # exchanges
        for x in sorted(g.exchanges.values(), key=lambda x: (x.created_at, x.id)):
            out.append({"id": x.id, "giver": h(x.giver), "giver_id": x.giver, "receiver": h(x.receiver),
                        "receiver_id": x.receiver, "hours": str(round(x.minutes / 60, 2)), "note": x.note,
                        "status": x.status.value, "counted": x.counted, "duplicate_of": x.duplicate_of or "",
                        "logged_by": h(x.logged_by), "created": iso(x.created_at), "need_id": x.need or ""})
    return out


def collection_csv(view: BoardView, collection: str, bom: bool = False, gather: GatherView | None = None) -> str:
    columns = [c for c, _ in COLUMNS[collection]]
    buf = io.StringIO()
    if bom:
        buf.write("\ufeff")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows_of(view, collection, gather):
        writer.writerow([safe_cell(row[c]) for c in columns])
    return buf.getvalue()


def export_csv_files(view: BoardView, collections: Iterable[str] = CSV_COLLECTIONS,
                     bom: bool = False, gather: GatherView | None = None) -> dict[str, str]:
    """File name -> CSV text, e.g. {"needs.csv": ...}; without `gather`, the
    gatherings collections are left out."""
    return {f"{c}.csv": collection_csv(view, c, bom, gather) for c in collections
            if gather is not None or c not in GATHER_CSV}


def export_zip(view: BoardView, collections: Iterable[str] = CSV_COLLECTIONS, bom: bool = False,
               date_time: tuple[int, int, int, int, int, int] = (1980, 1, 1, 0, 0, 0),
               gather: GatherView | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in export_csv_files(view, collections, bom, gather).items():
            info = zipfile.ZipInfo(name, date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))
        z.writestr(zipfile.ZipInfo("COLUMNS.txt", date_time), columns_text().encode("utf-8"))
    return buf.getvalue()


def columns_text() -> str:
    lines = []
    for name, cols in COLUMNS.items():
        lines.append(f"{name}.csv")
        lines.extend(f"  {c:<16} {d}" for c, d in cols)
        lines.append("")
    return "\n".join(lines)


# --- import of another tool library's items ------------------------------------------

# Column names as myTurn and Circulate write them (compared case-insensitively).
ITEM_ID, NAME, DESCRIPTION, CATEGORIES, KEYWORDS, CONDITION = (
    "item id", "name", "description", "categories", "keywords", "condition")
MANUFACTURER, MODEL, SERIAL, LOAN_LENGTH, RENEWALS, STATUS = (
    "manufacturer", "model", "serial number", "default loan length", "maximum number of renewals", "status")
MAPPED = {ITEM_ID, NAME, DESCRIPTION, CATEGORIES, KEYWORDS, CONDITION, MANUFACTURER, MODEL, SERIAL,
          LOAN_LENGTH, STATUS}
NOT_MAPPED_WHY = {
    RENEWALS: "circle has no renewal limit",
}
SOURCE_MARK = re.compile(r"\[imported item (\S+)\]")

_CONDITIONS: dict[str, Condition] = {
    "new": Condition.GOOD, "like new": Condition.GOOD, "excellent": Condition.GOOD, "very good": Condition.GOOD,
    "good": Condition.GOOD, "fair": Condition.WORN, "used": Condition.WORN, "worn": Condition.WORN,
    "poor": Condition.NEEDS_REPAIR, "damaged": Condition.NEEDS_REPAIR, "needs repair": Condition.NEEDS_REPAIR,
    "broken": Condition.UNSAFE, "unsafe": Condition.UNSAFE,
}
_STATES: dict[str, ToolState] = {
    "available": ToolState.ACTIVE, "active": ToolState.ACTIVE, "checked out": ToolState.ACTIVE,
    "on loan": ToolState.ACTIVE, "reserved": ToolState.ACTIVE, "in repair": ToolState.MAINTENANCE,
    "maintenance": ToolState.MAINTENANCE, "under maintenance": ToolState.MAINTENANCE,
    "lost": ToolState.MISSING, "missing": ToolState.MISSING, "retired": ToolState.RETIRED,
    "archived": ToolState.RETIRED, "inactive": ToolState.RETIRED, "disposed": ToolState.RETIRED,
}


@dataclass
class ItemImport:
    """What `import_items` did, in words the CLI and the app print."""

    added: list[str] = field(default_factory=list)  # tool names
    already_present: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "row 4: no name"
    notes: list[str] = field(default_factory=list)  # values that did not fit, per row
    ignored_columns: dict[str, str] = field(default_factory=dict)  # column -> why

    def as_dict(self) -> dict[str, Any]:
        return {"added": len(self.added), "already_present": len(self.already_present),
                "skipped": self.skipped, "notes": self.notes, "ignored_columns": self.ignored_columns,
                "added_names": self.added}

    def text(self) -> str:
        lines = [f"{len(self.added)} tool{'s' if len(self.added) != 1 else ''} added, "
                 f"{len(self.already_present)} already here (imported before)."]
        if self.skipped:
            lines += ["", "Not imported:"] + [f"  {s}" for s in self.skipped]
        if self.notes:
            lines += ["", "Changed to fit:"] + [f"  {s}" for s in self.notes]
        if self.ignored_columns:
            lines += ["", "Columns not used:"] + [f"  {c}: {why}" for c, why in self.ignored_columns.items()]
        return "\n".join(lines)


def _days(text: str) -> int | None:
    """ "14", "14 days", "2 weeks", "1 week" -> days."""
    m = re.fullmatch(r"\s*(\d+)\s*(d|day|days|w|wk|week|weeks)?\s*", text.lower())
    if not m:
        return None
    n = int(m.group(1))
    return n * 7 if (m.group(2) or "d").startswith("w") else n


def is_item_csv(text: str, filename: str = "") -> bool:
    """A tool library's item export rather than a circle JSON export: a .csv
    file, or text whose first line is a CSV header with a Name column."""
    if filename.lower().endswith(".csv"):
        return True
    head = text.removeprefix("\ufeff").lstrip()
    if head.startswith("{"):
        return False
    first = head.split("\n", 1)[0].lower()
    return "," in first and any(c.strip().strip('"') == NAME for c in first.split(","))


def read_item_rows(text: str) -> list[dict[str, str]]:
    text = text.removeprefix("\ufeff")
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames
        if not header:
            raise ImportError_("the file is empty: expected a CSV with a header row (Name, Description, ...)")
        names = {h.strip().lower() for h in header if h}
        if NAME not in names:
            raise ImportError_("no 'Name' column: this does not look like a myTurn or Circulate item export")
        return [{(k or "").strip().lower(): (v or "").strip() if isinstance(v, str) else "" for k, v in row.items()}
                for row in reader]
    except csv.Error as exc:
        raise ImportError_(f"not a readable CSV file: {exc}") from None


def import_items(board: Board, text: str) -> ItemImport:
    """Add every item as a tool stewarded by the importing member.

    Idempotent: each tool remembers its source item id (a `[imported item
    ID]` mark at the end of its description) and a second import of the
    same file adds nothing. The whole file is read and checked before the
    first tool is written."""
    rows = read_item_rows(text)
    report = ItemImport()
    header = set(rows[0]) if rows else set()
    for col in sorted(header - MAPPED - {""}):
        report.ignored_columns[col] = NOT_MAPPED_WHY.get(col, "circle has no such field")
    known = {m.group(1) for t in board.view().tools.values() for m in SOURCE_MARK.finditer(t.description)}
    plan: list[dict[str, Any]] = []
    for index, row in enumerate(rows, start=2):  # row 1 is the header
        name = row.get(NAME, "")
        if not name:
            report.skipped.append(f"row {index}: no name")
            continue
        if len(name) > 200:
            report.notes.append(f"row {index}: name cut to 200 characters")
            name = name[:200]
        item_id = re.sub(r"\s+", "-", row.get(ITEM_ID, ""))[:40]
        if item_id and item_id in known:
            report.already_present.append(name)
            continue
        desc_parts = [row.get(DESCRIPTION, "")]
        extra = [f"{label}: {row[key]}" for key, label in ((MANUFACTURER, "Manufacturer"), (MODEL, "Model"),
                                                           (SERIAL, "Serial number"), (KEYWORDS, "Keywords"))
                 if row.get(key)]
        if extra:
            desc_parts.append(" · ".join(extra))
        if item_id:
            desc_parts.append(f"[imported item {item_id}]")
        description = "\n".join(p for p in desc_parts if p)
        if len(description) > 4000:
            report.notes.append(f"row {index} ({name}): description cut to fit 4000 characters")
            description = description[-4000:] if item_id else description[:4000]
        cats = [c.strip() for c in re.split(r"[;,|]", row.get(CATEGORIES, "")) if c.strip()]
        category = cats[0] if cats else ""
        if len(cats) > 1:
            report.notes.append(f"row {index} ({name}): category '{cats[0]}' kept; {', '.join(cats[1:])} dropped")
        raw_cond = row.get(CONDITION, "")
        condition = _CONDITIONS.get(raw_cond.lower(), Condition.GOOD)
        if raw_cond and raw_cond.lower() not in _CONDITIONS:
            report.notes.append(f"row {index} ({name}): condition '{raw_cond}' unknown; set to good, kept as note")
        note = raw_cond if raw_cond and raw_cond.lower() not in _CONDITIONS else ""
        raw_days = row.get(LOAN_LENGTH, "")
        days = _days(raw_days) if raw_days else 7
        if days is None or not 1 <= days <= 365:
            report.notes.append(f"row {index} ({name}): loan length '{raw_days}' not understood; 7 days")
            days = 7
        raw_state = row.get(STATUS, "")
        state = _STATES.get(raw_state.lower(), ToolState.ACTIVE)
        if raw_state and raw_state.lower() not in _STATES:
            report.notes.append(f"row {index} ({name}): status '{raw_state}' unknown; set to active")
        if raw_state.lower() in ("checked out", "on loan"):
            report.notes.append(f"row {index} ({name}): was checked out; record the loan with `tool borrow "
                                "--for MEMBER` (who had it is not in the export)")
        plan.append({"name": name, "description": description, "category": category, "condition": condition,
                     "loan_days": days, "note": note, "state": state})
        if item_id:
            known.add(item_id)
    for p in plan:
        rid = board.add_tool(p["name"], p["description"], p["category"], p["condition"], p["loan_days"], p["note"])
        if p["state"] != ToolState.ACTIVE:
            board.edit_tool(rid, state=p["state"])
        report.added.append(p["name"])
    return report

