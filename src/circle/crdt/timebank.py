"""Time bank rules: which logged exchanges count, and the balances they give.

An hour given is an hour, whatever the work. Stored facts per exchange:
giver, receiver, minutes, what it was for, who logged it and when, and one
word per side in a map `sides` {member: "confirmed" | "disputed"} (each side
writes only its own key, so both sides answering offline both survive).

Derived, at read time, never stored:
- withdrawn if `withdrawn_at` (the member who logged it took it back);
- else disputed if either side's word is "disputed";
- else confirmed if both the giver's and the receiver's word is "confirmed";
- else pending (waiting for the other side).
- Double logs: the giver and the receiver may each log the same exchange
  while offline. Every log stores `seen`: the ids of the other side's logs
  with the same giver, receiver and need that its author could see when
  logging. Two logs with the same giver, receiver, minutes and need, logged
  by *different* sides within `PAIR_WINDOW_MS` of each other, neither of
  which saw the other (so they were made concurrently), are one exchange: the later (by logged time, then id) is a `duplicate_of` the
  earlier, and the pair's words are pooled (each side confirmed its own log,
  so the pair is confirmed by both). Pairing is greedy in (time, id) order,
  so every replica pairs the same logs. A log by the other side that matches
  all but the minutes is flagged `possible_duplicate_of`: shown, never
  merged, never silently counted twice (each still needs both sides).
- Balances add up *counted* exchanges only: confirmed, not a duplicate.
  They are shown as given/received, never ranked, and nothing anywhere
  refuses help because of them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from enum import StrEnum

from circle.crdt.model import DAY_MS, MemberId, Millis, RecordId

PAIR_WINDOW_MS = 14 * DAY_MS
MAX_MINUTES = 100 * 60


class Side(StrEnum):
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"


class ExchangeStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    DISPUTED = "disputed"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class Exchange:
    id: RecordId
    giver: MemberId
    receiver: MemberId
    minutes: int
    note: str
    need: RecordId | None
    logged_by: MemberId
    created_at: Millis
    sides: dict[MemberId, Side]
    notes: dict[MemberId, str]  # dispute notes, one per side
    withdrawn_at: Millis | None
    seen: frozenset[RecordId] = frozenset()
    status: ExchangeStatus = ExchangeStatus.PENDING
    duplicate_of: RecordId | None = None
    possible_duplicate_of: RecordId | None = None

    @property
    def hours(self) -> float:
        return self.minutes / 60

    @property
    def counted(self) -> bool:
        return self.status == ExchangeStatus.CONFIRMED and self.duplicate_of is None

    def party(self, member: MemberId) -> bool:
        return member in (self.giver, self.receiver)

    def other_side(self, member: MemberId) -> MemberId:
        return self.receiver if member == self.giver else self.giver

    @property
    def order_key(self) -> tuple[int, str]:
        return (self.created_at, self.id)


def exchange_status(giver: MemberId, receiver: MemberId, sides: dict[MemberId, Side],
                    withdrawn_at: Millis | None) -> ExchangeStatus:
    if withdrawn_at is not None:
        return ExchangeStatus.WITHDRAWN
    words = (sides.get(giver), sides.get(receiver))
    if Side.DISPUTED in words:
        return ExchangeStatus.DISPUTED
    if words == (Side.CONFIRMED, Side.CONFIRMED):
        return ExchangeStatus.CONFIRMED
    return ExchangeStatus.PENDING


def _key(x: Exchange) -> tuple[str, str, str]:
    return (x.giver, x.receiver, x.need or "")


def resolve(raw: dict[RecordId, Exchange]) -> dict[RecordId, Exchange]:
    """Statuses, double-log pairs and near-duplicates for every exchange."""
    by_key: dict[tuple[str, str, str], list[Exchange]] = defaultdict(list)
    for x in raw.values():
        if x.withdrawn_at is None:
            by_key[_key(x)].append(x)
    out = {rid: replace(x, status=exchange_status(x.giver, x.receiver, x.sides, x.withdrawn_at))
           for rid, x in raw.items()}
    for group in by_key.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda x: x.order_key)
        paired: set[RecordId] = set()
        for i, first in enumerate(group):
            if first.id in paired:
                continue
            for second in group[i + 1:]:
                if (second.id in paired or second.logged_by == first.logged_by
                        or first.id in second.seen or second.id in first.seen
                        or second.created_at - first.created_at > PAIR_WINDOW_MS):
                    continue
                if second.minutes == first.minutes:
                    paired |= {first.id, second.id}
                    pooled: dict[MemberId, Side] = {}
                    for sides in (first.sides, second.sides):  # a dispute on either log wins
                        for k, v in sides.items():
                            if v == Side.DISPUTED or k not in pooled:
                                pooled[k] = v
                    status = exchange_status(first.giver, first.receiver, pooled, None)
                    out[first.id] = replace(out[first.id], status=status)
                    out[second.id] = replace(out[second.id], status=status, duplicate_of=first.id)
                    break
                if out[second.id].possible_duplicate_of is None:
                    out[second.id] = replace(out[second.id], possible_duplicate_of=first.id)
    return out


@dataclass(frozen=True)
class Balance:
    member: MemberId
    given_minutes: int
    received_minutes: int

    @property
    def net_minutes(self) -> int:
        return self.given_minutes - self.received_minutes


def balances(exchanges: dict[RecordId, Exchange]) -> dict[MemberId, Balance]:
    """Hours given and received per member, from counted exchanges only."""
    given: dict[MemberId, int] = defaultdict(int)
    received: dict[MemberId, int] = defaultdict(int)
    for x in exchanges.values():
        if x.counted:
            given[x.giver] += x.minutes
            received[x.receiver] += x.minutes
    return {m: Balance(m, given[m], received[m]) for m in set(given) | set(received)}


def format_hours(minutes: int) -> str:
    """1h30, 2h, 45m: an hour is an hour; no decimals to misread."""
    h, m = divmod(abs(minutes), 60)
    sign = "-" if minutes < 0 else ""
    if h and m:
        return f"{sign}{h}h{m:02d}"
    return f"{sign}{h}h" if h else f"{sign}{m}m"
