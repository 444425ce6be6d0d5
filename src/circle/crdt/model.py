"""The circle's domain: typed records and the rules that derive their states.

Stored vs derived (DESIGN §3). Only facts are stored, each as a scalar field
so concurrent edits merge field by field; every *state* is computed at read
time from those facts and the clock:

- Need: withdrawn if `withdrawn_at`; else met if `met_at`; else expired if
  `now >= expires_at`; else claimed if anyone is in `claims`; else open.
  Claims are a map {member: time}: two members claiming offline both stay.
- Offer: closed if `closed_at`; else expired if past `expires_at`; else paused
  if `paused`; else open.
- Loan: lost if `lost_at`; returned if `returned_at`; else out (overdue when
  `now > due_at`).
- Tool: retired/missing/maintenance are stored (`state`); otherwise on loan if
  a loan is out; held if a hold waits; else available. When several loans of
  one tool are out at once (made offline on two laptops), the *current* one is
  the earliest `out_at`, then the smallest borrower id; the others are
  conflicts to resolve by returning them.
- Hold: cancelled if `cancelled_at`; loaned if `fulfilled_at`; otherwise
  waiting, and the first waiting hold (causal order first, then
  `created_at`, then member id) is *ready* when the tool is free.

Times are writers' claims: how far they are trusted is `crdt/clock.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

MemberId = NewType("MemberId", str)
RecordId = NewType("RecordId", str)
Millis = int

DAY_MS = 24 * 60 * 60 * 1000
DEFAULT_NEED_DAYS = 14
DEFAULT_OFFER_DAYS = 30
SCHEMA_VERSION = 2

#: Schema 2: membership is signed statements (`statements`: id -> blob), never
#: plain member or epoch records a peer could overwrite.
COLLECTIONS = ["meta", "statements", "needs", "offers", "tools", "loans", "holds", "relays"]


class Urgency(StrEnum):
    ANYTIME = "anytime"
    THIS_WEEK = "this-week"
    H48 = "48h"
    NOW = "now"

    @property
    def rank(self) -> int:
        return [Urgency.ANYTIME, Urgency.THIS_WEEK, Urgency.H48, Urgency.NOW].index(self)


class NeedStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    MET = "met"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


class OfferStatus(StrEnum):
    OPEN = "open"
    PAUSED = "paused"
    CLOSED = "closed"
    EXPIRED = "expired"


class Condition(StrEnum):
    GOOD = "good"
    WORN = "worn"
    NEEDS_REPAIR = "needs-repair"
    UNSAFE = "unsafe"


class ToolState(StrEnum):
    """What a steward sets; loans and holds add the rest."""

    ACTIVE = "active"
    MAINTENANCE = "maintenance"
    MISSING = "missing"
    RETIRED = "retired"


class Availability(StrEnum):
    AVAILABLE = "available"
    ON_LOAN = "on-loan"
    HELD = "held"
    MAINTENANCE = "maintenance"
    MISSING = "missing"
    RETIRED = "retired"


class LoanStatus(StrEnum):
    OUT = "out"
    RETURNED = "returned"
    LOST = "lost"


class HoldStatus(StrEnum):
    WAITING = "waiting"
    READY = "ready"
    LOANED = "loaned"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Member:
    id: MemberId
    handle: str
    sign_key: bytes
    box_key: bytes
    zone: str
    joined_at: Millis
    invited_by: MemberId | None
    removed_at: Millis | None = None
    removed_by: MemberId | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass(frozen=True)
class Need:
    id: RecordId
    title: str
    details: str
    category: str
    tags: frozenset[str]
    urgency: Urgency
    zone: str
    author: MemberId
    created_at: Millis
    updated_at: Millis
    expires_at: Millis
    claims: dict[MemberId, Millis]
    met_at: Millis | None
    withdrawn_at: Millis | None
    status: NeedStatus


@dataclass(frozen=True)
class Offer:
    id: RecordId
    title: str
    details: str
    category: str
    tags: frozenset[str]
    zone: str
    author: MemberId
    quantity: int | None
    recurring: bool
    created_at: Millis
    updated_at: Millis
    expires_at: Millis
    paused: bool
    closed_at: Millis | None
    status: OfferStatus


@dataclass(frozen=True)
class Loan:
    id: RecordId
    tool: RecordId
    borrower: MemberId
    out_at: Millis
    due_at: Millis
    returned_at: Millis | None
    lost_at: Millis | None
    condition_out: Condition
    condition_in: Condition | None
    renewals: int
    status: LoanStatus
    overdue: bool

    @property
    def order_key(self) -> tuple[int, str, str]:
        """Which of concurrent loans is current: earliest, then member id."""
        return (self.out_at, self.borrower, self.id)


@dataclass(frozen=True)
class Hold:
    id: RecordId
    tool: RecordId
    member: MemberId
    created_at: Millis
    cancelled_at: Millis | None
    fulfilled_at: Millis | None
    status: HoldStatus

    @property
    def order_key(self) -> tuple[int, str, str]:
        return (self.created_at, self.member, self.id)


@dataclass(frozen=True)
class Tool:
    id: RecordId
    name: str
    description: str
    category: str
    steward: MemberId
    condition: Condition
    condition_note: str
    loan_days: int
    state: ToolState
    created_at: Millis
    availability: Availability
    current_loan: Loan | None = None
    conflicting_loans: tuple[Loan, ...] = ()
    queue: tuple[Hold, ...] = field(default=())  # waiting holds, in order

    @property
    def overdue(self) -> bool:
        return self.current_loan is not None and self.current_loan.overdue

    @property
    def ready_for(self) -> MemberId | None:
        """The member whose hold is ready, if the tool is free for them."""
        if self.availability == Availability.HELD and self.queue:
            return self.queue[0].member
        return None


@dataclass(frozen=True)
class Malformed:
    """A record that another device wrote in a shape this code cannot read."""

    collection: str
    id: str
    reason: str


def need_status(
    *, claims: dict[MemberId, Millis], met_at: Millis | None, withdrawn_at: Millis | None,
    expires_at: Millis, now: Millis,
) -> NeedStatus:
    if withdrawn_at is not None:
        return NeedStatus.WITHDRAWN
    if met_at is not None:
        return NeedStatus.MET
    if now >= expires_at:
        return NeedStatus.EXPIRED
    if claims:
        return NeedStatus.CLAIMED
    return NeedStatus.OPEN


def offer_status(*, paused: bool, closed_at: Millis | None, expires_at: Millis, now: Millis) -> OfferStatus:
    if closed_at is not None:
        return OfferStatus.CLOSED
    if now >= expires_at:
        return OfferStatus.EXPIRED
    if paused:
        return OfferStatus.PAUSED
    return OfferStatus.OPEN


def loan_status(returned_at: Millis | None, lost_at: Millis | None) -> LoanStatus:
    if lost_at is not None:
        return LoanStatus.LOST
    if returned_at is not None:
        return LoanStatus.RETURNED
    return LoanStatus.OUT


def tool_availability(
    state: ToolState, active_loans: list[Loan], waiting: list[Hold]
) -> tuple[Availability, Loan | None, tuple[Loan, ...]]:
    """Derive availability, the current loan and any conflicting loans."""
    ordered = sorted(active_loans, key=lambda loan: loan.order_key)
    current = ordered[0] if ordered else None
    conflicts = tuple(ordered[1:])
    if state == ToolState.RETIRED:
        return Availability.RETIRED, current, conflicts
    if state == ToolState.MISSING:
        return Availability.MISSING, current, conflicts
    if current is not None:
        return Availability.ON_LOAN, current, conflicts
    if state == ToolState.MAINTENANCE:
        return Availability.MAINTENANCE, None, ()
    if waiting:
        return Availability.HELD, None, ()
    return Availability.AVAILABLE, None, ()


@dataclass(frozen=True)
class RelayRecord:
    """A relay the circle uses (DESIGN §1: a circle may list several).

    Keyed in the document by a hash of the normalised URL, so two members
    adding the same relay offline end up with one record."""

    id: str
    url: str
    added_by: MemberId
    added_at: Millis
    removed_at: Millis | None = None
    removed_by: MemberId | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None
