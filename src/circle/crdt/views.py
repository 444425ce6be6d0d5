"""Read side: turn raw Automerge records into typed, derived views.

A record written by a newer or hostile peer in an unexpected shape never
crashes a reader: it becomes a `Malformed` entry (listed by `status`) and is
left out of every view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import Any, TypeVar

from circle.crdt.am import MALFORMED, AmDoc, Record
from circle.crdt.model import (
    Condition,
    EpochRecord,
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
    RelayRecord,
    Tool,
    ToolState,
    Urgency,
    loan_status,
    need_status,
    offer_status,
    tool_availability,
)
from circle.crdt.text import LIMITS as TEXT_LIMITS

E = TypeVar("E")
T = TypeVar("T")


class _Bad(Exception):
    """A field has the wrong type; the record is reported as malformed."""


def _str(rec: Record, key: str, default: str | None = None) -> str:
    value = rec.get(key, default)
    if not isinstance(value, str):
        if value is None and default is not None:
            return default
        raise _Bad(f"field '{key}' is not text")
    # issue 10: lengths hold on the sync path too (a peer's client may skip the board's checks).
    limit = TEXT_LIMITS.get(key)
    if limit is not None and len(value) > limit:
        raise _Bad(f"field '{key}' is longer than {limit} characters")
    return value


def _cut(rec: Record, key: str, default: str | None = None) -> str:
    """Member fields: an over-long handle or zone is shown cut, never makes the member malformed
    (which would drop an honest member whose record someone else padded)."""
    value = rec.get(key, default)
    if not isinstance(value, str):
        return _str(rec, key, default)
    return value[: TEXT_LIMITS.get(key, len(value))]


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


def _tags(rec: Record, key: str) -> frozenset[str]:
    value = rec.get(key, "")
    if not isinstance(value, str):
        raise _Bad(f"field '{key}' is not text")
    return frozenset(value.split())


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
        id=MemberId(rid), handle=_cut(rec, "handle"), sign_key=_bytes(rec, "sign_key"),
        box_key=_bytes(rec, "box_key"), zone=_cut(rec, "zone", ""), joined_at=_int(rec, "joined_at"),
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
        category=_str(rec, "category", ""), tags=_tags(rec, "tags"),
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
        category=_str(rec, "category", ""), tags=_tags(rec, "tags"), zone=_str(rec, "zone", ""),
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


def parse_epoch(rid: str, rec: Record) -> EpochRecord:
    grants_raw = rec.get("grants", {})
    if not isinstance(grants_raw, dict):
        raise _Bad("field 'grants' is not a map")
    grants = {MemberId(k): v for k, v in grants_raw.items() if isinstance(v, bytes)}
    return EpochRecord(
        id=rid, number=_int(rec, "number"), created_by=MemberId(_str(rec, "created_by")),
        created_at=_int(rec, "created_at"), removed=frozenset(MemberId(m) for m in _tags(rec, "removed")),
        grants=grants, check=_bytes(rec, "check"),
    )


def parse_relay(rid: str, rec: Record) -> RelayRecord:
    removed_by = _opt_str(rec, "removed_by")
    return RelayRecord(
        id=rid, url=_str(rec, "url"), added_by=MemberId(_str(rec, "added_by")),
        added_at=_int(rec, "added_at"), removed_at=_opt_int(rec, "removed_at"),
        removed_by=MemberId(removed_by) if removed_by else None,
    )


def parse_tool_base(rid: str, rec: Record) -> dict[str, object]:
    return dict(
        id=RecordId(rid), name=_str(rec, "name"), description=_str(rec, "description", ""),
        category=_str(rec, "category", ""), steward=MemberId(_str(rec, "steward")),
        condition=_enum(Condition, rec, "condition"), condition_note=_str(rec, "condition_note", ""),
        loan_days=_int(rec, "loan_days"), state=_enum(ToolState, rec, "state"),
        created_at=_int(rec, "created_at"),
    )


class BoardView:
    """Everything in the document at one set of heads, parsed and derived.

    Each collection is parsed on first use only: `circle need list` on a
    10k-record board never pays for tools, loans and holds."""

    def __init__(self, doc: AmDoc, now: Millis, previous: BoardView | None = None,
                 changed: dict[str, set[str]] | None = None) -> None:
        """With `previous` and `changed`, collections the previous view had
        parsed are carried over and only the changed records are re-read:
        one edit on a 10k-record board costs a few records, not 10k."""
        self._doc = doc
        self.now = now
        self._malformed: dict[str, list[Malformed]] = {}
        self._previous = previous
        self._changed = changed

    def _parse(self, collection: str, parse: Callable[[str, Record], T]) -> dict[Any, T]:
        previous, changed = self._previous, self._changed
        if previous is not None and changed is not None and collection in previous._malformed:
            parsed = previous.__dict__.get(_ATTRS.get(collection, collection))
            if isinstance(parsed, dict):
                return self._update(collection, parse, parsed, previous._malformed[collection],
                                    changed.get(collection, set()))
        out: dict[Any, T] = {}
        bad: list[Malformed] = []
        for rid, rec in self._doc.records(collection).items():
            self._parse_one(collection, parse, rid, rec, out, bad)
        self._malformed[collection] = bad
        return out

    def _update(self, collection: str, parse: Callable[[str, Record], T], parsed: dict[Any, T],
                bad_before: list[Malformed], ids: set[str]) -> dict[Any, T]:
        out = dict(parsed)
        bad = [m for m in bad_before if m.id not in ids]
        for rid in ids:
            out.pop(rid, None)
            rec = self._doc.record(collection, rid)
            if rec is None:
                if rid in self._doc.record_ids(collection):
                    bad.append(Malformed(collection, rid, "not a record"))
                continue
            self._parse_one(collection, parse, rid, rec, out, bad)
        self._malformed[collection] = bad
        return out

    @staticmethod
    def _parse_one(collection: str, parse: Callable[[str, Record], T], rid: str, rec: Record | object,
                   out: dict[Any, T], bad: list[Malformed]) -> None:
        if rec is MALFORMED or not isinstance(rec, dict):
            bad.append(Malformed(collection, rid, "not a record"))
            return
        try:
            out[rid] = parse(rid, rec)
        except (_Bad, ValueError, TypeError) as exc:
            bad.append(Malformed(collection, rid, str(exc)))

    @cached_property
    def members(self) -> dict[MemberId, Member]:
        return self._parse("members", parse_member)

    @cached_property
    def needs(self) -> dict[RecordId, Need]:
        return self._parse("needs", lambda r, x: parse_need(r, x, self.now))

    @cached_property
    def offers(self) -> dict[RecordId, Offer]:
        return self._parse("offers", lambda r, x: parse_offer(r, x, self.now))

    @cached_property
    def loans(self) -> dict[RecordId, Loan]:
        return self._parse("loans", lambda r, x: parse_loan(r, x, self.now))

    @cached_property
    def _raw_holds(self) -> dict[RecordId, Hold]:
        return self._parse("holds", parse_hold)

    @cached_property
    def tools(self) -> dict[RecordId, Tool]:
        if self._changed is not None and ({"loans", "holds"} & set(self._changed)):
            self._previous = None  # a tool's availability depends on every loan and hold of it
        active_loans: dict[RecordId, list[Loan]] = defaultdict(list)
        for loan in self.loans.values():
            if loan.status == LoanStatus.OUT:
                active_loans[loan.tool].append(loan)
        waiting: dict[RecordId, list[Hold]] = defaultdict(list)
        for hold in self._raw_holds.values():
            if hold.status == HoldStatus.WAITING:
                waiting[hold.tool].append(hold)

        def parse_tool(rid: str, rec: Record) -> Tool:
            base = parse_tool_base(rid, rec)
            queue = sorted(waiting.get(RecordId(rid), []), key=lambda h: h.order_key)
            availability, current, conflicts = tool_availability(
                base["state"], active_loans.get(RecordId(rid), []), queue  # type: ignore[arg-type]
            )
            return Tool(**base, availability=availability, current_loan=current,  # type: ignore[arg-type]
                        conflicting_loans=conflicts, queue=tuple(queue))

        return self._parse("tools", parse_tool)

    @cached_property
    def holds(self) -> dict[RecordId, Hold]:
        """Holds, with the first waiting hold of a free tool marked READY."""
        holds = dict(self._raw_holds)
        for tool in self.tools.values():
            if tool.ready_for is not None and tool.queue:
                first = tool.queue[0]
                holds[first.id] = replace(first, status=HoldStatus.READY)
        return holds

    @cached_property
    def epochs(self) -> dict[str, EpochRecord]:
        return self._parse("epochs", parse_epoch)

    @cached_property
    def relays(self) -> dict[str, RelayRecord]:
        return self._parse("relays", parse_relay)

    @property
    def malformed(self) -> list[Malformed]:
        for name in ("members", "needs", "offers", "tools", "holds", "epochs"):
            getattr(self, name)  # parse everything not parsed yet
        return [m for bad in self._malformed.values() for m in bad]


# Collections whose cached attribute has another name than the collection.
_ATTRS = {"holds": "_raw_holds"}


def build_view(doc: AmDoc, now: Millis, previous: BoardView | None = None,
               changed: dict[str, set[str]] | None = None) -> BoardView:
    return BoardView(doc, now, previous, changed)
