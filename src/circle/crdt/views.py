"""Read side: turn raw Automerge records into typed, derived views.

A record written by a newer or hostile peer in an unexpected shape never
crashes a reader: it becomes a `Malformed` entry (listed by `status`) and is
left out of every view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property
from typing import Any, TypeVar

from circle.crdt.am import MALFORMED, AmDoc, Record
from circle.crdt.clock import effective_shift, order_holds, seen_key
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
    RelayRecord,
    Tool,
    ToolState,
    Urgency,
    loan_status,
    need_status,
    offer_status,
    tool_availability,
)
from circle.crdt.rows import SEEDED, need_from_row, offer_from_row
from circle.crdt.text import LIMITS as TEXT_LIMITS

E = TypeVar("E")
T = TypeVar("T")


class _Bad(Exception):
    """A record cannot be used at all (not a map, or a field it cannot do without)."""


# Fallbacks for unreadable fields. Visible rather than hidden (a record must
# not vanish because one field is odd), and on the safe side where safety is
# at stake (a tool whose condition is unreadable is shown as unsafe; a member
# whose removal date is unreadable counts as removed).
UNREADABLE_TEXT = "(unreadable)"
NEVER: Millis = 2**53 - 1
MAX_TAGS_TEXT = 4096


class _Fields:
    """Reads one record. A field with the wrong type gets a fallback value and
    its name is noted in `bad`: the rest of the record stays readable."""

    __slots__ = ("rec", "bad")

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.bad: list[str] = []

    def _miss(self, key: str, fallback: T) -> T:
        self.bad.append(key)
        return fallback

    def _fits(self, key: str, value: str) -> bool:
        # issue 10: lengths hold on the sync path too (a peer's client may skip the board's checks)
        limit = TEXT_LIMITS.get(key)
        return limit is None or len(value) <= limit

    def text(self, key: str, fallback: str = "") -> str:
        """Optional text: absent reads as `fallback` without complaint."""
        value = self.rec.get(key)
        if isinstance(value, str) and self._fits(key, value):
            return value
        return fallback if value is None else self._miss(key, fallback)

    def required_text(self, key: str, fallback: str = UNREADABLE_TEXT) -> str:
        value = self.rec.get(key)
        return value if isinstance(value, str) and self._fits(key, value) else self._miss(key, fallback)

    def opt_text(self, key: str) -> str | None:
        value = self.rec.get(key)
        if value is None or isinstance(value, str):
            return value
        return self._miss(key, None)

    def int_(self, key: str, fallback: int) -> int:
        value = self.rec.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return self._miss(key, fallback)

    def opt_int(self, key: str, fallback: int | None = None) -> int | None:
        value = self.rec.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        return self._miss(key, fallback)

    def bool_(self, key: str) -> bool:
        value = self.rec.get(key, False)
        return value if isinstance(value, bool) else self._miss(key, False)

    def tags(self, key: str) -> frozenset[str]:
        value = self.rec.get(key, "")
        if isinstance(value, str) and len(value) <= MAX_TAGS_TEXT:
            return frozenset(value.split())
        return self._miss(key, frozenset())

    def enum(self, enum: type[E], key: str, fallback: E) -> E:
        value = self.rec.get(key)
        if isinstance(value, str):
            try:
                return enum(value)  # type: ignore[call-arg]
            except ValueError:
                pass
        return self._miss(key, fallback)

    def essential_bytes(self, key: str) -> bytes:
        value = self.rec.get(key)
        if not isinstance(value, bytes):
            raise _Bad(f"field '{key}' is unreadable and the record cannot be used without it")
        return value

    def essential_int(self, key: str) -> int:
        value = self.rec.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"field '{key}' is unreadable and the record cannot be used without it")
        return value

    def essential_text(self, key: str) -> str:
        value = self.rec.get(key)
        if not isinstance(value, str):
            raise _Bad(f"field '{key}' is unreadable and the record cannot be used without it")
        return value

    def map_of(self, key: str, kind: type | tuple[type, ...]) -> dict[str, object]:
        """A nested map (claims, grants): good entries kept, each bad one noted
        as `key.entry`; a field that is not a map at all reads as empty."""
        value = self.rec.get(key, {})
        if not isinstance(value, dict):
            return self._miss(key, {})
        out: dict[str, object] = {}
        for k, v in value.items():
            if isinstance(v, kind) and not isinstance(v, bool):
                out[k] = v
            else:
                self.bad.append(f"{key}.{k}")
        return out


def parse_member(rid: str, rec: Record, bad: list[str] | None = None) -> Member:
    f = _Fields(rec)
    invited, removed_by = f.opt_text("invited_by"), f.opt_text("removed_by")
    member = Member(
        id=MemberId(rid), handle=f.required_text("handle", "?"), sign_key=f.essential_bytes("sign_key"),
        box_key=f.essential_bytes("box_key"), zone=f.text("zone"), joined_at=f.int_("joined_at", 0),
        invited_by=MemberId(invited) if invited else None,
        removed_at=f.opt_int("removed_at", fallback=0),  # unreadable removal: fail closed, removed
        removed_by=MemberId(removed_by) if removed_by else None,
    )
    if bad is not None:
        bad.extend(f.bad)
    return member


def _moved(value: int, shift: Millis) -> int:
    """A derived time moved by a record's clock shift (crdt/clock.py); NEVER stays NEVER."""
    return value if value >= NEVER or not shift else max(0, min(NEVER, value + shift))


def parse_need(rid: str, rec: Record, now: Millis, bad: list[str] | None = None,
               first_seen: Millis | None = None) -> Need:
    """`first_seen`: when this device first saw a need whose `created_at` was
    implausible then (crdt/clock.py); its created and expiry times move by the clamp."""
    f = _Fields(rec)
    claims = {MemberId(k): v for k, v in f.map_of("claims", int).items() if isinstance(v, int)}
    met_at, withdrawn_at = f.opt_int("met_at"), f.opt_int("withdrawn_at")
    created_at = f.int_("created_at", 0)
    shift = effective_shift(created_at, first_seen)
    expires_at = _moved(f.int_("expires_at", NEVER), shift)
    need = Need(
        id=RecordId(rid), title=f.required_text("title"), details=f.text("details"),
        category=f.text("category"), tags=f.tags("tags"),
        urgency=f.enum(Urgency, "urgency", Urgency.ANYTIME), zone=f.text("zone"),
        author=MemberId(f.required_text("author", "")), created_at=_moved(created_at, shift),
        updated_at=f.int_("updated_at", 0), expires_at=expires_at, claims=claims,
        met_at=met_at, withdrawn_at=withdrawn_at,
        status=need_status(claims=claims, met_at=met_at, withdrawn_at=withdrawn_at, expires_at=expires_at, now=now),
    )
    if bad is not None:
        bad.extend(f.bad)
    return need


def parse_offer(rid: str, rec: Record, now: Millis, bad: list[str] | None = None,
                first_seen: Millis | None = None) -> Offer:
    f = _Fields(rec)
    created_at = f.int_("created_at", 0)
    shift = effective_shift(created_at, first_seen)
    paused, closed_at = f.bool_("paused"), f.opt_int("closed_at")
    expires_at = _moved(f.int_("expires_at", NEVER), shift)
    offer = Offer(
        id=RecordId(rid), title=f.required_text("title"), details=f.text("details"),
        category=f.text("category"), tags=f.tags("tags"), zone=f.text("zone"),
        author=MemberId(f.required_text("author", "")), quantity=f.opt_int("quantity"),
        recurring=f.bool_("recurring"), created_at=_moved(created_at, shift),
        updated_at=f.int_("updated_at", 0), expires_at=expires_at, paused=paused, closed_at=closed_at,
        status=offer_status(paused=paused, closed_at=closed_at, expires_at=expires_at, now=now),
    )
    if bad is not None:
        bad.extend(f.bad)
    return offer


def parse_loan(rid: str, rec: Record, now: Millis, bad: list[str] | None = None,
               first_seen: Millis | None = None) -> Loan:
    """`first_seen` as for needs: a loan written with a slow clock is not overdue on arrival."""
    f = _Fields(rec)
    out_at = f.int_("out_at", 0)
    shift = effective_shift(out_at, first_seen)
    returned_at, lost_at = f.opt_int("returned_at"), f.opt_int("lost_at")
    due_at = _moved(f.int_("due_at", NEVER), shift)
    status = loan_status(returned_at, lost_at)
    cond_in = f.opt_text("condition_in")
    loan = Loan(
        id=RecordId(rid), tool=RecordId(f.essential_text("tool")), borrower=MemberId(f.essential_text("borrower")),
        # out_at stays as written: which of concurrent loans is current must be
        # the same on every device (model.py); only the due date is judged here.
        out_at=out_at, due_at=due_at, returned_at=returned_at, lost_at=lost_at,
        condition_out=f.enum(Condition, "condition_out", Condition.UNSAFE),
        condition_in=Condition(cond_in) if cond_in in set(Condition) else None,
        renewals=f.opt_int("renewals") or 0, status=status,
        overdue=status == LoanStatus.OUT and now > due_at,
    )
    if bad is not None:
        bad.extend(f.bad)
    return loan


def parse_hold(rid: str, rec: Record, bad: list[str] | None = None) -> Hold:
    f = _Fields(rec)
    cancelled, fulfilled = f.opt_int("cancelled_at"), f.opt_int("fulfilled_at")
    status = HoldStatus.CANCELLED if cancelled is not None else (
        HoldStatus.LOANED if fulfilled is not None else HoldStatus.WAITING
    )
    hold = Hold(
        id=RecordId(rid), tool=RecordId(f.essential_text("tool")), member=MemberId(f.essential_text("member")),
        created_at=f.int_("created_at", 0), cancelled_at=cancelled, fulfilled_at=fulfilled, status=status,
    )
    if bad is not None:
        bad.extend(f.bad)
    return hold


def parse_relay(rid: str, rec: Record, bad: list[str] | None = None) -> RelayRecord:
    f = _Fields(rec)
    removed_by = f.opt_text("removed_by")
    relay = RelayRecord(
        id=rid, url=f.essential_text("url"), added_by=MemberId(f.required_text("added_by", "")),
        added_at=f.int_("added_at", 0), removed_at=f.opt_int("removed_at", fallback=0),
        removed_by=MemberId(removed_by) if removed_by else None,
    )
    if bad is not None:
        bad.extend(f.bad)
    return relay


def parse_tool_base(rid: str, rec: Record, bad: list[str] | None = None) -> dict[str, object]:
    f = _Fields(rec)
    base = dict(
        id=RecordId(rid), name=f.required_text("name"), description=f.text("description"),
        category=f.text("category"), steward=MemberId(f.required_text("steward", "")),
        condition=f.enum(Condition, "condition", Condition.UNSAFE), condition_note=f.text("condition_note"),
        loan_days=f.int_("loan_days", 7), state=f.enum(ToolState, "state", ToolState.ACTIVE),
        created_at=f.int_("created_at", 0),
    )
    if bad is not None:
        bad.extend(f.bad)
    return base


def at_time(rec: T, now: Millis) -> T:
    """A parsed record with its clock-derived state judged at `now` (a view
    carried over to a later minute re-derives, it does not re-read)."""
    if isinstance(rec, Need):
        return replace(rec, status=need_status(claims=rec.claims, met_at=rec.met_at,
                                               withdrawn_at=rec.withdrawn_at, expires_at=rec.expires_at, now=now))
    if isinstance(rec, Offer):
        return replace(rec, status=offer_status(paused=rec.paused, closed_at=rec.closed_at,
                                                expires_at=rec.expires_at, now=now))
    if isinstance(rec, Loan):
        return replace(rec, overdue=rec.status == LoanStatus.OUT and now > rec.due_at)
    return rec


# Singular names for reports ("unreadable field urgency of need 4ruw...").
_SINGULAR = {"members": "member", "needs": "need", "offers": "offer", "tools": "tool", "loans": "loan",
             "holds": "hold", "relays": "relay"}
_Parse = Callable[[str, Record, list[str]], T]


class BoardView:
    """Everything in the document at one set of heads, parsed and derived.

    Each collection is parsed on first use only: `circle need list` on a
    10k-record board never pays for tools, loans and holds."""

    def __init__(self, doc: AmDoc, now: Millis, previous: BoardView | None = None,
                 changed: dict[str, set[str]] | None = None,
                 member_of_actor: Callable[[bytes], MemberId | None] | None = None,
                 first_seen: Mapping[str, Millis] | None = None,
                 fallback: Callable[[], tuple[BoardView, dict[str, set[str]]] | None] | None = None) -> None:
        """With `previous` and `changed`, collections the previous view had
        parsed are carried over and only the changed records are re-read:
        one edit on a 10k-record board costs a few records, not 10k.
        `fallback` offers another such (view, changes) for collections the
        previous view did not parse, asked only when one is first read.

        `member_of_actor` names the member behind an Automerge actor (the
        trust layer's binding) in reports of unreadable fields. `first_seen`:
        this device's first-seen times of records whose clock was implausible
        (crdt/clock.py), keyed by `seen_key`."""
        self._doc = doc
        self._first_seen: Mapping[str, Millis] = first_seen or {}
        self._member_of_actor = member_of_actor
        self.now = now
        self._malformed: dict[str, list[Malformed]] = {}
        self._previous = previous
        self._changed = changed
        #: Collections re-read whole even with a previous view.
        self._whole: set[str] = set()
        #: Where a collection was carried over from (its reports carry over with it).
        self.carried_from: dict[str, tuple[BoardView, dict[str, set[str]]]] = {}
        self._fallback = fallback

    def carried(self, collection: str) -> dict[Any, Any] | None:
        """This view's parsed records of `collection`, if it parsed them (what
        a later view carries over)."""
        parsed = self.__dict__.get(_ATTRS.get(collection, collection))
        return parsed if isinstance(parsed, dict) else None

    def source_of(self, collection: str) -> tuple[BoardView, dict[str, set[str]]] | None:
        """An earlier view that holds `collection` parsed, and which records
        changed since it: the previous view, else the fallback (a view kept by
        an earlier process, Board.view); None to parse it whole."""
        if collection in self._whole:
            return None
        if self._previous is not None and self._changed is not None and collection in self._previous._malformed:
            return self._previous, self._changed
        got = self._fallback() if self._fallback is not None and collection in SEEDED else None
        if got is not None and collection in got[0]._malformed:
            return got
        return None

    def _parse(self, collection: str, parse: _Parse[T]) -> dict[Any, T]:
        source = self.source_of(collection)
        if source is not None:
            parsed = source[0].carried(collection)
            if parsed is not None:
                self.carried_from[collection] = source
                return self._update(collection, parse, parsed, source[0], source[1].get(collection, set()))
        out: dict[Any, T] = {}
        bad: list[Malformed] = []
        for rid, rec in self._doc.records(collection).items():
            self._parse_one(collection, parse, rid, rec, out, bad)
        self._malformed[collection] = bad
        return out

    def _update(self, collection: str, parse: _Parse[T], parsed: dict[Any, T],
                source: BoardView, ids: set[str]) -> dict[Any, T]:
        out = dict(parsed)
        if getattr(source, "now", self.now) != self.now:
            out = {rid: at_time(rec, self.now) for rid, rec in out.items()}
        bad = [m for m in source._malformed[collection] if m.id not in ids]
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

    def _parse_one(self, collection: str, parse: _Parse[T], rid: str, rec: Record | object,
                   out: dict[Any, T], bad: list[Malformed]) -> None:
        if rec is MALFORMED or not isinstance(rec, dict):
            bad.append(Malformed(collection, rid, "not a record"))
            return
        fields: list[str] = []
        try:
            out[rid] = parse(rid, rec, fields)
        except (_Bad, ValueError, TypeError) as exc:
            bad.append(Malformed(collection, rid, str(exc)))
            return
        for name in dict.fromkeys(fields):  # once per field, in order
            bad.append(Malformed(collection, rid, self._unreadable(collection, rid, name)))

    def _unreadable(self, collection: str, rid: str, name: str) -> str:
        """"unreadable field urgency of need 4ruw... (written by rex)"."""
        field, _, entry = name.partition(".")
        who = (self._doc.entry_writer(collection, rid, field, entry) if entry
               else self._doc.field_writers(collection, rid).get(field))
        if who is None:
            writer = "written by an unknown device" if field in self._raw_keys(collection, rid) else "missing"
        else:
            member = self._member_of_actor(who[0]) if self._member_of_actor is not None else None
            writer = f"written by {self._handle(member)}" if member else f"written by device {who[0].hex()[:8]}"
        what = f"{field} entry {entry}" if entry else field
        return f"unreadable field {what} of {_SINGULAR.get(collection, collection)} {rid[:4]}\u2026 ({writer})"

    def _handle(self, member: MemberId) -> str:
        """A member's handle: from the members the board set on this view
        (signed statements), else straight from a member record (never by
        parsing members here: that may be the collection being parsed)."""
        members = self.__dict__.get("members")
        if isinstance(members, dict) and member in members:
            return str(members[member].handle)
        rec = self._doc.record("members", member)
        handle = rec.get("handle") if rec is not None else None
        return handle if isinstance(handle, str) and handle else member

    def _raw_keys(self, collection: str, rid: str) -> set[str]:
        rec = self._doc.record(collection, rid)
        return set(rec) if rec is not None else set()

    @cached_property
    def members(self) -> dict[MemberId, Member]:
        return self._parse("members", parse_member)

    @cached_property
    def needs(self) -> dict[RecordId, Need]:
        seen = self._first_seen
        return self._parse("needs", lambda r, x, b: parse_need(r, x, self.now, b, seen.get(seen_key("needs", r))))

    @cached_property
    def offers(self) -> dict[RecordId, Offer]:
        seen = self._first_seen
        return self._parse("offers", lambda r, x, b: parse_offer(r, x, self.now, b, seen.get(seen_key("offers", r))))

    @cached_property
    def loans(self) -> dict[RecordId, Loan]:
        seen = self._first_seen
        return self._parse("loans", lambda r, x, b: parse_loan(r, x, self.now, b, seen.get(seen_key("loans", r))))

    @cached_property
    def _raw_holds(self) -> dict[RecordId, Hold]:
        return self._parse("holds", parse_hold)

    @cached_property
    def tools(self) -> dict[RecordId, Tool]:
        source = self.source_of("tools")
        if source is not None and (getattr(source[0], "now", self.now) != self.now
                                   or {"loans", "holds"} & set(source[1])):
            self._whole.add("tools")  # a tool's availability depends on every loan and hold of it
        active_loans: dict[RecordId, list[Loan]] = defaultdict(list)
        for loan in self.loans.values():
            if loan.status == LoanStatus.OUT:
                active_loans[loan.tool].append(loan)
        waiting: dict[RecordId, list[Hold]] = defaultdict(list)
        for hold in self._raw_holds.values():
            if hold.status == HoldStatus.WAITING:
                waiting[hold.tool].append(hold)

        def parse_tool(rid: str, rec: Record, bad: list[str]) -> Tool:
            base = parse_tool_base(rid, rec, bad)
            queue = order_holds(sorted(waiting.get(RecordId(rid), []), key=lambda h: h.order_key),
                                self._hold_precedes)
            availability, current, conflicts = tool_availability(
                base["state"], active_loans.get(RecordId(rid), []), queue  # type: ignore[arg-type]
            )
            return Tool(**base, availability=availability, current_loan=current,  # type: ignore[arg-type]
                        conflicting_loans=conflicts, queue=tuple(queue))

        return self._parse("tools", parse_tool)

    def _hold_precedes(self, a: Hold, b: Hold) -> bool:
        """Whether `b`'s writer had seen hold `a` (causal order, crdt/clock.py)."""
        wa, wb = self._doc.record_writer("holds", a.id), self._doc.record_writer("holds", b.id)
        return wa is not None and wb is not None and self._doc.op_precedes(wa, wb)

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
    def relays(self) -> dict[str, RelayRecord]:
        return self._parse("relays", parse_relay)

    @property
    def malformed(self) -> list[Malformed]:
        for name in ("members", "needs", "offers", "tools", "holds"):
            getattr(self, name)  # parse everything not parsed yet
        return [m for bad in self._malformed.values() for m in bad]


# Collections whose cached attribute has another name than the collection.
_ATTRS = {"holds": "_raw_holds"}


def build_view(doc: AmDoc, now: Millis, previous: BoardView | None = None,
               changed: dict[str, set[str]] | None = None,
               member_of_actor: Callable[[bytes], MemberId | None] | None = None,
               first_seen: Mapping[str, Millis] | None = None,
               fallback: Callable[[], tuple[BoardView, dict[str, set[str]]] | None] | None = None) -> BoardView:
    return BoardView(doc, now, previous, changed, member_of_actor, first_seen, fallback)


class SeedView(BoardView):
    """Needs and offers kept by an earlier process (crdt/rows.py), as a view
    later views carry over from; rows become records only when first asked."""

    def __init__(self, now: Millis, rows: dict[str, list[Any]], malformed: dict[str, list[Malformed]]) -> None:
        self.now = now
        self._rows = rows
        self._malformed = malformed

    def carried(self, collection: str) -> dict[Any, Any] | None:
        made = self.__dict__.get(collection)
        if made is None and collection in self._rows:
            convert = need_from_row if collection == "needs" else offer_from_row
            try:
                made = self.__dict__[collection] = {r[0]: convert(r, self.now) for r in self._rows.pop(collection)}
            except (ValueError, TypeError, KeyError, IndexError):
                return None  # a damaged row: that collection is parsed whole instead
        return made if isinstance(made, dict) else None


def meta_warnings(doc: AmDoc, circle_id: str) -> list[str]:
    """What is wrong with the circle's `meta` map, in words for `status`.

    Any member can overwrite these last-writer-wins fields, so none of them
    may stop the circle from opening: the circle opens and this says why it
    looks odd."""
    meta = doc.root_scalars("meta")
    out: list[str] = []
    if not meta:
        return ["the circle's settings (meta) are unreadable: some device overwrote them; "
                f"this device keeps using circle {circle_id}"]
    got = meta.get("circle_id")
    if got is MALFORMED:
        out.append(f"the circle id stored in the document is unreadable (some device wrote an odd value); "
                   f"this device keeps using circle {circle_id}")
    elif got != circle_id:
        out.append(f"the document says it is circle {got!r}, but this device joined circle {circle_id}: "
                   "some device overwrote the id; this device keeps using its own")
    for key in ("schema", "name"):
        if meta.get(key) is MALFORMED:
            out.append(f"the circle's {key} in the document is unreadable (some device wrote an odd value)")
    return out
