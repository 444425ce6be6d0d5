"""Records of skills, gatherings, shifts and time-bank exchanges, and their
parsers. The rules that derive their states are at the top of
`gatherings.py` (events, RSVPs, bring lists, shifts) and `timebank.py`
(exchanges). A field of the wrong type makes the record `Malformed` (listed,
left out of every view), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from circle.crdt.am import Record
from circle.crdt.model import MemberId, Millis, RecordId
from circle.crdt.timebank import MAX_MINUTES, Exchange, Side

MAX_SLOTS = 100
MAX_EVENT_MINUTES = 14 * 24 * 60


# --- kinds -------------------------------------------------------------------------


class EventKind(StrEnum):
    POTLUCK = "potluck"
    WORKSHOP = "workshop"
    MEETING = "meeting"
    CLEANUP = "cleanup"
    OTHER = "other"


class Rsvp(StrEnum):
    YES = "yes"
    NO = "no"
    MAYBE = "maybe"


class EventStatus(StrEnum):
    UPCOMING = "upcoming"
    HAPPENING = "happening"
    PAST = "past"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Skill:
    id: RecordId
    title: str
    category: str
    details: str
    teach: bool
    author: MemberId
    created_at: Millis
    updated_at: Millis
    removed_at: Millis | None

    @property
    def listed(self) -> bool:
        return self.removed_at is None


@dataclass(frozen=True)
class Event:
    id: RecordId
    title: str
    kind: EventKind
    details: str
    place: str
    zone: str
    starts_at: Millis
    minutes: int
    tz: str
    author: MemberId
    created_at: Millis
    updated_at: Millis
    cancelled_at: Millis | None
    series: str | None
    rsvps: dict[MemberId, Rsvp]

    @property
    def ends_at(self) -> Millis:
        return self.starts_at + self.minutes * 60_000

    def status(self, now: Millis) -> EventStatus:
        if self.cancelled_at is not None:
            return EventStatus.CANCELLED
        if now >= self.ends_at:
            return EventStatus.PAST
        if now >= self.starts_at:
            return EventStatus.HAPPENING
        return EventStatus.UPCOMING

    def answers(self, answer: Rsvp) -> list[MemberId]:
        return sorted(m for m, a in self.rsvps.items() if a == answer)

    def answers_yes(self) -> list[MemberId]:
        return self.answers(Rsvp.YES)


@dataclass(frozen=True)
class BringItem:
    id: RecordId
    event: RecordId
    member: MemberId
    item: str
    created_at: Millis
    removed_at: Millis | None


@dataclass(frozen=True)
class Shift:
    id: RecordId
    event: RecordId
    title: str
    starts_at: Millis
    minutes: int
    slots: int
    author: MemberId
    created_at: Millis
    cancelled_at: Millis | None
    takes: dict[MemberId, Millis]

    @property
    def ends_at(self) -> Millis:
        return self.starts_at + self.minutes * 60_000

    @property
    def takers(self) -> tuple[MemberId, ...]:
        """Everyone on the shift, in the deterministic order that fills slots."""
        return tuple(m for m, _ in sorted(self.takes.items(), key=lambda kv: (kv[1], kv[0])))

    @property
    def over(self) -> tuple[MemberId, ...]:
        """Takers beyond the slots (took the last slot offline at the same time)."""
        return self.takers[self.slots:]

    @property
    def over_full(self) -> bool:
        return len(self.takes) > self.slots

    @property
    def open_slots(self) -> int:
        return max(0, self.slots - len(self.takes))


@dataclass(frozen=True)
class Settings:
    timebank: bool


@dataclass(frozen=True)
class Reminder:
    key: str          # stable: (kind, record, start) so a reminder is shown once
    at: Millis        # when the event or shift starts
    text: str


# --- parsing ---------------------------------------------------------------------------


class Bad(Exception):
    pass


def _s(rec: Record, key: str, default: str | None = None) -> str:
    value = rec.get(key, default)
    if isinstance(value, str):
        return value
    if value is None and default is not None:
        return default
    raise Bad(f"field '{key}' is not text")


def _i(rec: Record, key: str) -> int:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"field '{key}' is not a number")
    return value


def _oi(rec: Record, key: str) -> int | None:
    return None if rec.get(key) is None else _i(rec, key)


def _os(rec: Record, key: str) -> str | None:
    value = rec.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Bad(f"field '{key}' is not text")


def _map(rec: Record, key: str) -> dict[str, Any]:
    value = rec.get(key, {})
    if not isinstance(value, dict):
        raise Bad(f"field '{key}' is not a map")
    return value


def parse_skill(rid: str, rec: Record) -> Skill:
    teach = rec.get("teach", False)
    if not isinstance(teach, bool):
        raise Bad("field 'teach' is not true/false")
    return Skill(RecordId(rid), _s(rec, "title"), _s(rec, "category", ""), _s(rec, "details", ""), teach,
                 MemberId(_s(rec, "author")), _i(rec, "created_at"), _i(rec, "updated_at"),
                 _oi(rec, "removed_at"))


def parse_event(rid: str, rec: Record) -> Event:
    rsvps = {MemberId(k): Rsvp(v) for k, v in _map(rec, "rsvps").items() if v in Rsvp.__members__.values()}
    minutes = _i(rec, "minutes")
    if not 0 < minutes <= MAX_EVENT_MINUTES:
        raise Bad("field 'minutes' is out of range")
    try:
        kind = EventKind(_s(rec, "kind", "other"))
    except ValueError:
        kind = EventKind.OTHER  # a kind from a newer version reads as "other", not as damage
    return Event(RecordId(rid), _s(rec, "title"), kind, _s(rec, "details", ""), _s(rec, "place", ""),
                 _s(rec, "zone", ""), _i(rec, "starts_at"), minutes, _s(rec, "tz", "UTC"),
                 MemberId(_s(rec, "author")), _i(rec, "created_at"), _i(rec, "updated_at"),
                 _oi(rec, "cancelled_at"), _os(rec, "series"), rsvps)


def parse_bring(rid: str, rec: Record) -> BringItem:
    return BringItem(RecordId(rid), RecordId(_s(rec, "event")), MemberId(_s(rec, "member")), _s(rec, "item"),
                     _i(rec, "created_at"), _oi(rec, "removed_at"))


def parse_shift(rid: str, rec: Record) -> Shift:
    takes = {MemberId(k): v for k, v in _map(rec, "takes").items()
             if isinstance(v, int) and not isinstance(v, bool)}
    slots, minutes = _i(rec, "slots"), _i(rec, "minutes")
    if not 0 < slots <= MAX_SLOTS or not 0 < minutes <= MAX_EVENT_MINUTES:
        raise Bad("slots or minutes out of range")
    return Shift(RecordId(rid), RecordId(_s(rec, "event")), _s(rec, "title"), _i(rec, "starts_at"), minutes,
                 slots, MemberId(_s(rec, "author")), _i(rec, "created_at"), _oi(rec, "cancelled_at"), takes)


def parse_exchange(rid: str, rec: Record) -> Exchange:
    sides = {MemberId(k): Side(v) for k, v in _map(rec, "sides").items() if v in Side.__members__.values()}
    notes = {MemberId(k): v for k, v in _map(rec, "notes").items() if isinstance(v, str)}
    minutes = _i(rec, "minutes")
    giver, receiver = MemberId(_s(rec, "giver")), MemberId(_s(rec, "receiver"))
    if not 0 < minutes <= MAX_MINUTES or giver == receiver:
        raise Bad("not a valid exchange")
    need = _os(rec, "need")
    return Exchange(RecordId(rid), giver, receiver, minutes, _s(rec, "note", ""),
                    RecordId(need) if need else None, MemberId(_s(rec, "logged_by")), _i(rec, "created_at"),
                    sides, notes, _oi(rec, "withdrawn_at"),
                    frozenset(RecordId(x) for x in _s(rec, "seen", "").split()))


