"""Read side: turn raw Automerge records into typed, derived views.

A record written by a newer or hostile peer in an unexpected shape never
crashes a reader: it becomes a `Malformed` entry (listed by `status`) and is
left out of every view.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeVar

from circle.crdt.am import MALFORMED, AmDoc, Field, Record
from circle.crdt.model import (
    Condition,
    Hold,
    HoldStatus,
    Loan,
    LoanStatus,
    Malformed,
    Member,
    MemberId,
    Millis,
    Need,
    Offer,
    RecordId,
    Tool,
    ToolState,
    Urgency,
    loan_status,
    need_status,
    offer_status,
    tool_availability,
)

E = TypeVar("E")


class _Bad(Exception):
    """A field has the wrong type; the record is reported as malformed."""


def _str(rec: Record, key: str, default: str | None = None) -> str:
    value = rec.get(key, default)
    if not isinstance(value, str):
        if value is None and default is not None:
            return default
        raise _Bad(f"field '{key}' is not text")
    return value


def _int(rec: Record, key: str) -> int:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"field '{key}' is not a number")
    return value


def _opt_int(rec: Record, key: str) -> int | None:
    value = rec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"field '{key}' is not a number")
    return value


def _opt_str(rec: Record, key: str) -> str | None:
    value = rec.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _Bad(f"field '{key}' is not text")


def _bytes(rec: Record, key: str) -> bytes:
    value = rec.get(key)
    if not isinstance(value, bytes):
        raise _Bad(f"field '{key}' is not bytes")
    return value


def _bool(rec: Record, key: str) -> bool:
    value = rec.get(key, False)
    if not isinstance(value, bool):
        raise _Bad(f"field '{key}' is not true/false")
    return value


def _set(rec: Record, key: str) -> frozenset[str]:
    value: Field = rec.get(key, {})
    if not isinstance(value, dict):
        raise _Bad(f"field '{key}' is not a set")
    return frozenset(k for k, v in value.items() if v is True)


def _enum(enum: type[E], rec: Record, key: str) -> E:
    raw = _str(rec, key)
    try:
        return enum(raw)  # type: ignore[call-arg]
    except ValueError:
        raise _Bad(f"field '{key}' has unknown value '{raw}'") from None


def parse_member(rid: str, rec: Record) -> Member:
    invited = _opt_str(rec, "invited_by")
    removed_by = _opt_str(rec, "removed_by")
    return Member(
        id=MemberId(rid), handle=_str(rec, "handle"), sign_key=_bytes(rec, "sign_key"),
        box_key=_bytes(rec, "box_key"), zone=_str(rec, "zone", ""), joined_at=_int(rec, "joined_at"),
        invited_by=MemberId(invited) if invited else None, removed_at=_opt_int(rec, "removed_at"),
        removed_by=MemberId(removed_by) if removed_by else None,
    )


def parse_need(rid: str, rec: Record, now: Millis) -> Need:
    claims_raw = rec.get("claims", {})
    if not isinstance(claims_raw, dict):
        raise _Bad("field 'claims' is not a map")
    claims = {
        MemberId(k): v for k, v in claims_raw.items() if isinstance(v, int) and not isinstance(v, bool)
    }
    met_at, withdrawn_at, expires_at = _opt_int(rec, "met_at"), _opt_int(rec, "withdrawn_at"), _int(rec, "expires_at")
    return Need(
        id=RecordId(rid), title=_str(rec, "title"), details=_str(rec, "details", ""),
        category=_str(rec, "category", ""), tags=_set(rec, "tags"),
        urgency=_enum(Urgency, rec, "urgency"), zone=_str(rec, "zone", ""),
        author=MemberId(_str(rec, "author")), created_at=_int(rec, "created_at"),
        updated_at=_int(rec, "updated_at"), expires_at=expires_at, claims=claims,
        met_at=met_at, withdrawn_at=withdrawn_at,
        status=need_status(claims=claims, met_at=met_at, withdrawn_at=withdrawn_at, expires_at=expires_at, now=now),
    )


def parse_offer(rid: str, rec: Record, now: Millis) -> Offer:
    paused, closed_at, expires_at = _bool(rec, "paused"), _opt_int(rec, "closed_at"), _int(rec, "expires_at")
    return Offer(
        id=RecordId(rid), title=_str(rec, "title"), details=_str(rec, "details", ""),
        category=_str(rec, "category", ""), tags=_set(rec, "tags"), zone=_str(rec, "zone", ""),
        author=MemberId(_str(rec, "author")), quantity=_opt_int(rec, "quantity"),
        recurring=_bool(rec, "recurring"), created_at=_int(rec, "created_at"),
        updated_at=_int(rec, "updated_at"), expires_at=expires_at, paused=paused, closed_at=closed_at,
        status=offer_status(paused=paused, closed_at=closed_at, expires_at=expires_at, now=now),
    )


def parse_loan(rid: str, rec: Record, now: Millis) -> Loan:
    returned_at, lost_at, due_at = _opt_int(rec, "returned_at"), _opt_int(rec, "lost_at"), _int(rec, "due_at")
    status = loan_status(returned_at, lost_at)
    cond_in = _opt_str(rec, "condition_in")
    return Loan(
        id=RecordId(rid), tool=RecordId(_str(rec, "tool")), borrower=MemberId(_str(rec, "borrower")),
        out_at=_int(rec, "out_at"), due_at=due_at, returned_at=returned_at, lost_at=lost_at,
        condition_out=_enum(Condition, rec, "condition_out"),
        condition_in=Condition(cond_in) if cond_in in set(Condition) else None,
        renewals=_opt_int(rec, "renewals") or 0, status=status,
        overdue=status == LoanStatus.OUT and now > due_at,
    )


def parse_hold(rid: str, rec: Record) -> Hold:
    cancelled, fulfilled = _opt_int(rec, "cancelled_at"), _opt_int(rec, "fulfilled_at")
    status = HoldStatus.CANCELLED if cancelled is not None else (
        HoldStatus.LOANED if fulfilled is not None else HoldStatus.WAITING
    )
    return Hold(
        id=RecordId(rid), tool=RecordId(_str(rec, "tool")), member=MemberId(_str(rec, "member")),
        created_at=_int(rec, "created_at"), cancelled_at=cancelled, fulfilled_at=fulfilled, status=status,
    )


def parse_tool_base(rid: str, rec: Record) -> dict[str, object]:
    return dict(
        id=RecordId(rid), name=_str(rec, "name"), description=_str(rec, "description", ""),
        category=_str(rec, "category", ""), steward=MemberId(_str(rec, "steward")),
        condition=_enum(Condition, rec, "condition"), condition_note=_str(rec, "condition_note", ""),
        loan_days=_int(rec, "loan_days"), state=_enum(ToolState, rec, "state"),
        created_at=_int(rec, "created_at"),
    )


@dataclass
class BoardView:
    """Everything in the document at one set of heads, parsed and derived."""

    members: dict[MemberId, Member] = field(default_factory=dict)
    needs: dict[RecordId, Need] = field(default_factory=dict)
    offers: dict[RecordId, Offer] = field(default_factory=dict)
    tools: dict[RecordId, Tool] = field(default_factory=dict)
    loans: dict[RecordId, Loan] = field(default_factory=dict)
    holds: dict[RecordId, Hold] = field(default_factory=dict)
    malformed: list[Malformed] = field(default_factory=list)


def _each(doc: AmDoc, collection: str, view: BoardView) -> list[tuple[str, Record]]:
    out = []
    for rid, rec in doc.records(collection).items():
        if rec is MALFORMED or not isinstance(rec, dict):
            view.malformed.append(Malformed(collection, rid, "not a record"))
        else:
            out.append((rid, rec))
    return out


def build_view(doc: AmDoc, now: Millis) -> BoardView:
    view = BoardView()

    def parse_all(collection: str, parse: object, target: dict[object, object]) -> None:
        for rid, rec in _each(doc, collection, view):
            try:
                target[rid] = parse(rid, rec)  # type: ignore[operator]
            except (_Bad, ValueError, TypeError) as exc:
                view.malformed.append(Malformed(collection, rid, str(exc)))

    parse_all("members", parse_member, view.members)  # type: ignore[arg-type]
    parse_all("needs", lambda r, x: parse_need(r, x, now), view.needs)  # type: ignore[arg-type]
    parse_all("offers", lambda r, x: parse_offer(r, x, now), view.offers)  # type: ignore[arg-type]
    parse_all("loans", lambda r, x: parse_loan(r, x, now), view.loans)  # type: ignore[arg-type]
    parse_all("holds", parse_hold, view.holds)  # type: ignore[arg-type]

    active_loans: dict[RecordId, list[Loan]] = defaultdict(list)
    for loan in view.loans.values():
        if loan.status == LoanStatus.OUT:
            active_loans[loan.tool].append(loan)
    waiting: dict[RecordId, list[Hold]] = defaultdict(list)
    for hold in view.holds.values():
        if hold.status == HoldStatus.WAITING:
            waiting[hold.tool].append(hold)

    for rid, rec in _each(doc, "tools", view):
        try:
            base = parse_tool_base(rid, rec)
        except (_Bad, ValueError) as exc:
            view.malformed.append(Malformed("tools", rid, str(exc)))
            continue
        queue = sorted(waiting.get(RecordId(rid), []), key=lambda h: h.order_key)
        availability, current, conflicts = tool_availability(
            base["state"], active_loans.get(RecordId(rid), []), queue  # type: ignore[arg-type]
        )
        tool = Tool(**base, availability=availability, current_loan=current,  # type: ignore[arg-type]
                    conflicting_loans=conflicts, queue=tuple(queue))
        view.tools[tool.id] = tool
        ready = tool.ready_for
        if ready is not None and queue:
            first = queue[0]
            view.holds[first.id] = Hold(**{**first.__dict__, "status": HoldStatus.READY})
    return view
