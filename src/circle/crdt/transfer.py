"""Export (JSON, CSV) and import (JSON) of a circle's records.

Export strips nothing: every stored field of every record, plus the derived
state (`status`, `availability`, ...) under keys that import ignores. Import
merges: records whose id already exists are left alone, new ones are added in
one transaction, and the whole file is validated first, so a bad record
rejects the import (naming the record) and changes nothing. Members are never
imported: membership changes only through invites and removals.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from dataclasses import asdict, fields, is_dataclass
from enum import Enum
from typing import Any

from circle.crdt.am import Field, Record, Scalar
from circle.crdt.board import Board, clean_tags
from circle.crdt.exportscan import Rows, scan
from circle.crdt.gather_records import (
    Bad,
    EventKind,
    Rsvp,
    parse_bring,
    parse_event,
    parse_exchange,
    parse_shift,
    parse_skill,
)
from circle.crdt.gatherings import ensure_collections, gatherings
from circle.crdt.model import Condition, ToolState, Urgency
from circle.crdt.text import check_field, printable
from circle.crdt.timebank import Side
from circle.errors import ImportError_

FORMAT = "circle-export"
VERSION = 1
COLLECTIONS = ("members", "needs", "offers", "tools", "loans", "holds")
# Skills, the time bank and gatherings (issue 12): their own view (`gatherings`).
GATHER_COLLECTIONS = ("skills", "exchanges", "events", "bring", "shifts")
DERIVED = {"status", "availability", "overdue", "current_loan", "conflicting_loans", "queue",
           "duplicate_of", "possible_duplicate_of"}


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, frozenset | set):
        return sorted(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def record_dict(obj: Any) -> dict[str, Any]:
    """A domain dataclass as JSON-ready data (used by every --json output)."""
    assert is_dataclass(obj)
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in ("current_loan",):
            out[f.name] = value.id if value is not None else None
        elif f.name in ("conflicting_loans", "queue"):
            out[f.name] = [x.id for x in value]
        elif is_dataclass(value):
            out[f.name] = _plain(asdict(value))  # type: ignore[arg-type]
        else:
            out[f.name] = _plain(value)
    return out


def export_json(board: Board) -> dict[str, Any]:
    view = board.view()
    gather = gatherings(board).view()
    meta = board.meta()
    return {
        "format": FORMAT, "version": VERSION,
        # str or None: a peer may have written anything into meta (LWW)
        "circle": {k: v if isinstance(v, str) else None
                   for k, v in (("id", meta.get("circle_id")), ("name", meta.get("name")))},
        "exported_at": board.clock(),
        # Sorted by id: a stable file whatever order the view holds records in.
        **{name: [record_dict(r) for _, r in sorted(getattr(view, name).items())] for name in COLLECTIONS},
        **{name: [record_dict(r) for _, r in sorted(getattr(gather, name).items())] for name in GATHER_COLLECTIONS},
        "settings": {"timebank": gather.settings.timebank},
        "malformed": [asdict(m) for m in view.malformed] + [asdict(m) for m in gather.malformed],
    }


def _csv_cell(value: Any) -> Any:
    """Members' text in a CSV cell: controls shown escaped (the file is often `cat`ed), and a
    leading = + - @ quoted with ' so a spreadsheet never runs it as a formula."""
    if not isinstance(value, str):
        return value
    text = printable(value, multiline=True)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def export_csv(board: Board) -> str:
    """One section per collection: a `# name` line, a header row, the rows."""
    data = export_json(board)
    out = io.StringIO()
    for name in COLLECTIONS:
        rows = data[name]
        out.write(f"# {name}\n")
        if not rows:
            out.write("\n")
            continue
        columns = list(rows[0].keys())
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(json.dumps(v) if isinstance(v, list | dict) else v)
                             for k, v in row.items()})
        out.write("\n")
    return out.getvalue()


# --- import -----------------------------------------------------------------

_STR, _INT, _OPT_INT, _OPT_STR, _BOOL = "str", "int", "opt_int", "opt_str", "bool"
_SCHEMA: dict[str, dict[str, str]] = {
    "needs": {"title": _STR, "details": _STR, "category": _STR, "tags": "tags", "urgency": "urgency",
              "zone": _STR, "author": _STR, "created_at": _INT, "updated_at": _INT, "expires_at": _INT,
              "claims": "claims", "met_at": _OPT_INT, "withdrawn_at": _OPT_INT},
    "offers": {"title": _STR, "details": _STR, "category": _STR, "tags": "tags", "zone": _STR,
               "author": _STR, "quantity": _OPT_INT, "recurring": _BOOL, "created_at": _INT,
               "updated_at": _INT, "expires_at": _INT, "paused": _BOOL, "closed_at": _OPT_INT},
    "tools": {"name": _STR, "description": _STR, "category": _STR, "steward": _STR,
              "condition": "condition", "condition_note": _STR, "loan_days": _INT, "state": "state",
              "created_at": _INT},
    "loans": {"tool": _STR, "borrower": _STR, "out_at": _INT, "due_at": _INT, "returned_at": _OPT_INT,
              "lost_at": _OPT_INT, "condition_out": "condition", "condition_in": "opt_condition",
              "renewals": _INT},
    "holds": {"tool": _STR, "member": _STR, "created_at": _INT, "cancelled_at": _OPT_INT,
              "fulfilled_at": _OPT_INT},
    "skills": {"title": _STR, "category": _STR, "details": _STR, "teach": _BOOL, "author": _STR,
               "created_at": _INT, "updated_at": _INT, "removed_at": _OPT_INT},
    "events": {"title": _STR, "kind": "kind", "details": _STR, "place": _STR, "zone": _STR, "starts_at": _INT,
               "minutes": _INT, "tz": _STR, "author": _STR, "created_at": _INT, "updated_at": _INT,
               "cancelled_at": _OPT_INT, "series": _OPT_STR, "rsvps": "rsvps"},
    "bring": {"event": _STR, "member": _STR, "item": _STR, "created_at": _INT, "removed_at": _OPT_INT},
    "shifts": {"event": _STR, "title": _STR, "starts_at": _INT, "minutes": _INT, "slots": _INT, "author": _STR,
               "created_at": _INT, "cancelled_at": _OPT_INT, "takes": "claims"},
    "exchanges": {"giver": _STR, "receiver": _STR, "minutes": _INT, "note": _STR, "need": _OPT_STR,
                  "logged_by": _STR, "created_at": _INT, "sides": "sides", "notes": "notes",
                  "withdrawn_at": _OPT_INT, "seen": "ids"},
}
_ENUMS: dict[str, type[Enum]] = {"urgency": Urgency, "condition": Condition, "state": ToolState,
                                 "kind": EventKind}
# What an imported record must also pass: the parser every view reads it with.
_PARSERS: dict[str, Any] = {"skills": parse_skill, "events": parse_event, "bring": parse_bring,
                            "shifts": parse_shift, "exchanges": parse_exchange}
_MEMBER_MAPS = {"rsvps": (Rsvp, "an answer (yes, no or maybe)"), "sides": (Side, "confirmed or disputed")}


# Whole numbers are stored as 64-bit integers; times and counts never need
# more than JavaScript's safe range (year 285,000), so that is the bound.
MAX_INT = 2**53 - 1
_MEMBER_ID = re.compile(r"^[a-z2-9]{1,64}$")


def _convert(kind: str, value: Any, where: str, key: str) -> Field:
    def bad(expected: str) -> ImportError_:
        shown = printable(json.dumps(value)[:40]) if not isinstance(value, int) else str(value)[:40]
        return ImportError_(f"{where}: field '{key}' must be {expected}, got {shown}")

    is_int = isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT
    if kind == _STR:
        if not isinstance(value, str):
            raise bad("text")
        problem = check_field(key, value)
        if problem is not None:
            raise ImportError_(f"{where}: field '{key}' {problem}")
        return value
    if kind == _INT:
        if not is_int:
            raise bad(f"a whole number between -{MAX_INT} and {MAX_INT}")
        return int(value)
    if kind == _OPT_INT:
        if value is not None and not is_int:
            raise bad(f"a whole number between -{MAX_INT} and {MAX_INT}, or null")
        return value  # type: ignore[no-any-return]
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) and check_field("tag", t) is None
                                                  for t in value):
            raise bad("a list of text tags")
        return clean_tags(value)
    if kind == _OPT_STR:
        if value is None:
            return None
        return _convert(_STR, value, where, key)
    if kind in _MEMBER_MAPS or kind == "notes":
        if not isinstance(value, dict) or len(value) > 1000 or not all(
                isinstance(k, str) and _MEMBER_ID.match(k) for k in value):
            raise bad("a map whose keys are member ids")
        out: dict[str, Scalar] = {}
        for k, v in value.items():
            if kind == "notes":
                out[k] = _convert(_STR, v, where, key)  # type: ignore[assignment]
                continue
            answers, words = _MEMBER_MAPS[kind]
            try:
                out[k] = answers(v).value
            except ValueError:
                raise bad(f"a map of member id to {words}") from None
        return out
    if kind == "ids":
        if not isinstance(value, list) or len(value) > 1000 or not all(
                isinstance(x, str) and x.isalnum() and len(x) <= 64 for x in value):
            raise bad("a list of record ids")
        return " ".join(sorted(value))
    if kind == "claims":
        if not isinstance(value, dict) or len(value) > 1000 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_INT for v in value.values()
        ):
            raise bad("a map of member id to time")
        if not all(isinstance(k, str) and _MEMBER_ID.match(k) for k in value):
            raise bad("a map whose keys are member ids")
        claims: dict[str, Scalar] = {str(k): int(v) for k, v in value.items()}
        return claims
    if kind == "opt_condition":
        if value is None:
            return None
        kind = "condition"
    enum = _ENUMS[kind]
    try:
        return enum(value).value  # type: ignore[no-any-return]
    except ValueError:
        raise bad("one of " + ", ".join(str(e.value) for e in enum)) from None


def parse_import(text: str) -> dict[str, Any]:
    """The export's top level; its record lists are decoded one record at a
    time when read (crdt/exportscan.py), so a large file is not held twice."""
    try:
        data = scan(text, frozenset(COLLECTIONS))
    except json.JSONDecodeError as exc:
        raise ImportError_(f"not a circle export: invalid JSON at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ImportError_("not a circle export (missing \"format\": \"circle-export\")")
    if data.get("version") != VERSION:
        raise ImportError_(f"unsupported export version {data.get('version')!r}; this circle reads version {VERSION}")
    return data


def _size_of(rid: str, fields: dict[str, Any]) -> int:
    """Bytes a record adds to the document: its text, plus a little per field for the op."""
    def size(v: Any) -> int:
        if isinstance(v, str | bytes):
            return len(v)
        if isinstance(v, dict):
            return sum(16 + len(str(k)) + size(x) for k, x in v.items())
        return 8

    return len(rid) + sum(16 + len(k) + size(v) for k, v in fields.items())


def import_records(board: Board, data: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Validate everything, then add unknown records in one change.

    Two passes over the records, one record in memory at a time (issue 16
    case 8): the first validates and counts, the second converts again and
    writes. Existing ids come from the document's keys, never from parsing
    the board (an id already present, even as an unreadable record, is left alone)."""
    board._require_member()
    plan: list[tuple[str, str]] = []  # (collection, id): what the second pass writes
    size = 0  # what the records add to the document, roughly (checked against its limit)
    report: dict[str, dict[str, int]] = {}
    known_tools = set(board.doc.record_ids("tools"))
    incoming_tools = {r.get("id") for r in data.get("tools", []) if isinstance(r, dict)}
    for name, schema in _SCHEMA.items():
        rows = data.get(name, [])
        if not isinstance(rows, list | Rows):
            raise ImportError_(f"'{name}' must be a list of records")
        existing = set(board.doc.record_ids(name))
        added = skipped = 0
        for index, row in enumerate(rows):
            where = f"{name}[{index}]"
            if not isinstance(row, dict):
                raise ImportError_(f"{where}: not a record")
            rid = row.get("id")
            if not isinstance(rid, str) or not rid or len(rid) > 64 or not rid.isalnum():
                raise ImportError_(f"{where}: missing or invalid id")
            where = f"{name}[{index}] (id {rid})"
            missing = [k for k in schema if k not in row]
            if missing:
                raise ImportError_(f"{where}: missing field(s) {', '.join(missing)}")
            unknown = set(row) - set(schema) - DERIVED - {"id"}
            if unknown:
                raise ImportError_(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            converted = {k: _convert(kind, row[k], where, k) for k, kind in schema.items()}
            if name in _PARSERS:
                try:
                    _PARSERS[name](rid, _as_record(converted))
                except (Bad, ValueError, TypeError) as exc:
                    raise ImportError_(f"{where}: {exc}") from None
            if name in ("loans", "holds") and str(converted["tool"]) not in known_tools | incoming_tools:
                raise ImportError_(f"{where}: refers to tool {converted['tool']!s} which is in neither the circle nor the file")
            if rid in existing:
                skipped += 1
                continue
            plan.append((name, rid))
            size += _size_of(rid, converted)
            existing.add(rid)  # a second copy of an id in the file is skipped, as before
            added += 1
        report[name] = {"added": added, "already_present": skipped}
    members = data.get("members", [])
    report["members"] = {"added": 0, "not_imported": len(members) if isinstance(members, list | Rows) else 0}
    if "settings" in data:
        report["settings"] = {"added": 0, "not_imported": 1}  # a circle's own choice, never another's
    if plan:
        board.doc.make_room(size)  # all or nothing: refuse before writing any of it
        if any(name in GATHER_COLLECTIONS for name, _ in plan):
            ensure_collections(board.doc)
        wanted = set(plan)
        with board.doc.edit() as ed:
            for name, schema in _SCHEMA.items():
                for index, row in enumerate(data.get(name, [])):
                    rid = row["id"]
                    if (name, rid) in wanted:
                        wanted.discard((name, rid))
                        where = f"{name}[{index}] (id {rid})"
                        ed.put_record(name, rid, {k: _convert(kind, row[k], where, k) for k, kind in schema.items()})
        board._commit()
    return report


def _as_record(fields_: dict[str, Field]) -> Record:
    return dict(fields_)  # type: ignore[arg-type]
