"""Skills, the time bank, gatherings and shifts: records, rules, actions.

Stored facts and derived states (DESIGN §3: store facts, derive states):

- Skill: listed, or removed if `removed_at`. `teach` says the member can
  teach it, not only do it.
- Event: cancelled if `cancelled_at`; else past once `starts_at + minutes`
  has gone by; else happening once `starts_at` has come; else upcoming.
  Times are instants (UTC milliseconds) plus the author's time zone name
  (`tz`), so "18:00 in Berlin" stays 18:00 in Berlin for repeats across a
  clock change, and every reader sees the time in their own zone. `place` is
  free text the author chooses; nothing ever asks for an address.
- RSVPs: a map {member: "yes"|"no"|"maybe"} inside the event. Each member
  writes only their own key, so concurrent answers from different members
  all survive a merge; one member answering on two devices offline is last
  writer wins for that member alone.
- Bring list: one record per entry (random id) in `bring`, so concurrent
  entries all survive; an entry is removed by its member (`removed_at`).
- Shift: a slot count and a map `takes` {member: time taken}. The takers, in
  (time taken, member id) order, fill the slots; when two members took the
  last slot offline, both stay and the later ones in that order are *over*:
  the shift shows as over-full until someone drops (like loan conflicts).
- Exchanges: see `timebank.py`. Settings: one record, `settings/circle`;
  `timebank` is off unless a member turned it on.

Collections added after the founding change. Existing circles lack them, and
two replicas creating a root map concurrently would hide one another's map
after a merge. So every device adds them with the *same* change: made in a
fresh document under a fixed actor, with no dependencies and a zero
timestamp, it is byte-identical everywhere, has one hash, and is applied
once however many devices make it (`ensure_collections`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any, TypeVar

from circle.crdt import board as board_module
from circle.crdt import change_ops
from circle.crdt.am import MALFORMED, AmDoc, Field, Record
from circle.crdt.board import Board
from circle.crdt.gather_records import (
    MAX_SLOTS,
    Bad,
    BringItem,
    Event,
    EventKind,
    EventStatus,
    Reminder,
    Rsvp,
    Settings,
    Shift,
    Skill,
    parse_bring,
    parse_event,
    parse_exchange,
    parse_shift,
    parse_skill,
)
from circle.crdt.model import Malformed, MemberId, Millis, RecordId
from circle.crdt.timebank import (
    MAX_MINUTES,
    PAIR_WINDOW_MS,
    Balance,
    Exchange,
    ExchangeStatus,
    Side,
    balances,
    resolve,
)
from circle.crdt.times import category as clean_category
from circle.crdt.times import check_minutes, clean_text, instant, show_time, tz_of
from circle.errors import (
    ActionRefused,
    AmbiguousId,
    MalformedDocument,
    NotAMember,
    NotFound,
    UsageError,
)

T = TypeVar("T")


def _new_id() -> RecordId:
    # Looked up at call time, so a test that makes the board's ids
    # deterministic makes these deterministic too.
    return board_module.new_record_id()

EXT_COLLECTIONS = ["skills", "exchanges", "events", "bring", "shifts", "settings"]
_EXT_ACTOR = hashlib.blake2b(b"circle: collections added after founding, v1", digest_size=16).digest()
MAX_TITLE, MAX_TEXT, MAX_PLACE = 200, 4000, 120
MAX_OCCURRENCES = 52
MAX_DECODED_CHANGES = 500  # more at once (a long-absent peer): one diff is as cheap
NESTED = ("events", "shifts", "exchanges")  # collections whose records hold maps
AUTHOR_FIELDS = {"skills": "author", "events": "author", "shifts": "author", "bring": "member",
                 "exchanges": "logged_by"}
MEMBER_MAPS = {"events": ("rsvps",), "shifts": ("takes",), "exchanges": ("sides", "notes")}
REMIND_EVENT_MS = 2 * 60 * 60 * 1000   # tell a member who said yes two hours ahead
REMIND_SHIFT_MS = 60 * 60 * 1000       # and a member on a shift one hour ahead


# --- the shared change that adds the collections ---------------------------------


@lru_cache(maxsize=1)
def extension_change() -> bytes:
    seed = AmDoc.new(actor=_EXT_ACTOR)
    with seed.edit() as ed:
        ed.create_collections(EXT_COLLECTIONS)
        ed.put_record("settings", "circle", {"timebank": False})
    (change,) = seed.changes_since([])
    return change


@lru_cache(maxsize=1)
def extension_hash() -> bytes:
    """The shared change's hash (SHA-256 of its bytes, as Automerge names it)."""
    doc = AmDoc.new()
    doc.apply_changes([extension_change()])
    (meta,) = doc.change_metas([])
    return meta.hash


def has_collections(doc: AmDoc) -> bool:
    return all(doc.has_collection(name) for name in EXT_COLLECTIONS)


def ensure_collections(doc: AmDoc) -> bool:
    """Add the collections with the shared change if missing. True if added."""
    if has_collections(doc):
        return False
    doc.apply_changes([extension_change()])
    if not has_collections(doc):
        raise UsageError("this circle's document has a collection in an unexpected shape")
    return True


# --- the view: parsed once per set of heads, re-reading only changed records ----------


class GatherView:
    """Every collection of this module, parsed lazily. Nothing here depends on
    the clock (states that do are methods taking `now`), so a view lives as
    long as the document's heads do; with `previous` and `changed`, only the
    records that changed are parsed again."""

    def __init__(self, doc: AmDoc, previous: GatherView | None = None,
                 changed: dict[str, set[str]] | None = None,
                 check: Callable[[str, str, Any, list[str]], Any] | None = None) -> None:
        self._doc = doc
        self._check = check
        self._previous = previous
        self._changed = changed
        self._malformed: dict[str, list[Malformed]] = {}

    def _parse(self, name: str, parse: Callable[[str, Record], T], attr: str | None = None) -> dict[Any, T]:
        """`attr`: the cached attribute holding this parse, when not `name`."""
        prev, changed = self._previous, self._changed
        out: dict[Any, T] = {}
        bad: list[Malformed] = []
        if prev is not None and changed is not None and name in prev._malformed:
            out = dict(prev.__dict__[attr or name])
            ids = changed.get(name, set())
            bad = [m for m in prev._malformed[name] if m.id not in ids]
            for rid in ids:
                out.pop(rid, None)
                one = self._doc.record(name, rid)
                if one is None:
                    if rid in self._doc.record_ids(name):
                        bad.append(Malformed(name, rid, "not a record"))
                    continue
                self._one(name, parse, rid, one, out, bad)
        else:
            for rid, rec in self._doc.records(name).items():
                self._one(name, parse, rid, rec, out, bad)
        self._malformed[name] = bad
        return out

    def _one(self, name: str, parse: Callable[[str, Record], T], rid: str, rec: object,
             out: dict[Any, T], bad: list[Malformed]) -> None:
        if rec is MALFORMED or not isinstance(rec, dict):
            bad.append(Malformed(name, rid, "not a record"))
            return
        try:
            parsed = parse(rid, rec)
        except (Bad, ValueError, TypeError) as exc:
            bad.append(Malformed(name, rid, str(exc)))
            return
        if self._check is None:
            out[rid] = parsed
            return
        notes: list[str] = []
        checked = self._check(name, rid, parsed, notes)
        bad.extend(Malformed(name, rid, note) for note in notes)
        if checked is not None:  # None: the check drops the record
            out[rid] = checked

    @cached_property
    def skills(self) -> dict[RecordId, Skill]:
        return self._parse("skills", parse_skill)

    @cached_property
    def events(self) -> dict[RecordId, Event]:
        return self._parse("events", parse_event)

    @cached_property
    def bring(self) -> dict[RecordId, BringItem]:
        return self._parse("bring", parse_bring)

    @cached_property
    def shifts(self) -> dict[RecordId, Shift]:
        return self._parse("shifts", parse_shift)

    @cached_property
    def raw_exchanges(self) -> dict[RecordId, Exchange]:
        return self._parse("exchanges", parse_exchange, attr="raw_exchanges")

    @cached_property
    def exchanges(self) -> dict[RecordId, Exchange]:
        """With statuses and double-log pairs (these depend on every exchange)."""
        return resolve(self.raw_exchanges)

    @cached_property
    def settings(self) -> Settings:
        rec = self._doc.record("settings", "circle") or {}
        return Settings(timebank=rec.get("timebank") is True)

    @cached_property
    def bring_by_event(self) -> dict[RecordId, list[BringItem]]:
        out: dict[RecordId, list[BringItem]] = {}
        for b in self.bring.values():
            if b.removed_at is None:
                out.setdefault(b.event, []).append(b)
        for items in out.values():
            items.sort(key=lambda b: (b.created_at, b.member, b.id))
        return out

    @cached_property
    def shifts_by_event(self) -> dict[RecordId, list[Shift]]:
        out: dict[RecordId, list[Shift]] = {}
        for s in self.shifts.values():
            out.setdefault(s.event, []).append(s)
        for items in out.values():
            items.sort(key=lambda s: (s.starts_at, s.title, s.id))
        return out

    @property
    def malformed(self) -> list[Malformed]:
        for name in ("skills", "events", "bring", "shifts", "raw_exchanges"):
            getattr(self, name)
        return [m for bad in self._malformed.values() for m in bad]


# --- actions ---------------------------------------------------------------------------


class Gatherings:
    """Skills, hours, events and shifts over a `Board` (its document, member
    and clock). One per board: use `gatherings(board)`."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self._view: GatherView | None = None
        self._heads: tuple[bytes, ...] | None = None
        self._index: _ObjectIndex | None = None  # built on the first change from elsewhere
        self._late_key: tuple[object, ...] | None = None
        # (heads before, heads after, records touched) of our last write
        self._local: tuple[tuple[bytes, ...], tuple[bytes, ...], dict[str, set[str]]] | None = None

    @property
    def doc(self) -> AmDoc:
        return self.board.doc

    @property
    def me(self) -> MemberId | None:
        return self.board.me

    def now(self) -> Millis:
        return self.board.clock()

    def view(self) -> GatherView:
        heads = tuple(self.doc.heads())
        late = self.doc.late_key()  # removed devices' late values are masked by the reads (crdt/am.py)
        if late != self._late_key:
            self._view, self._late_key = None, late  # new pins: re-read everything
        if self._view is None or heads != self._heads:
            changed = None
            local = self._local
            if local is not None and local[0] == self._heads and local[1] == heads:
                changed = local[2]  # only our own write since the last view: we know what it touched
            elif self._view is not None and self._heads is not None:
                # A peer's (or another process's) changes: read what they
                # touch from their ops; automerge's diff, which costs in
                # proportion to the whole document, only as a fallback.
                changed = self._touched_since(self._heads)
                if changed is None:
                    changed = self.doc.changed_records(list(self._heads), list(heads))
            check = None
            if self.board.members_source is not None:
                def check(name: str, rid: str, rec: Any, notes: list[str]) -> Any:
                    return self._verify(name, rid, rec, notes)
            self._view = GatherView(self.doc, self._view if changed is not None else None, changed, check)
            self._heads = heads
            if late is not None:  # what removed devices wrote late, reported (their values are not shown)
                notes = self._view._malformed.setdefault("after-removal", [])
                for name in EXT_COLLECTIONS:
                    notes += self.board.late_notes(name)
        return self._view

    def _verify(self, name: str, rid: str, rec: Any, notes: list[str] | None = None) -> Any:
        """Authorship from the signed changes, not from fields (DESIGN §8): a
        record's author (`member` of a bring entry, `logged_by` of an
        exchange) is the member whose device wrote it, and an RSVP, shift
        take or exchange side counts only if the member it names wrote it.

        What a removed device wrote after its removal (membership rule 6) is
        never seen here: the document's reads show every value as it was
        without those writes (crdt/am.py `_LateMask`), and the writers asked
        for are those of the values shown; `view` reports the late writes."""
        who_of = self.board.member_of_actor
        made = self.doc.record_writer(name, rid)
        field = AUTHOR_FIELDS.get(name)
        if field is not None:
            writer = who_of(made[0]) if made is not None else None
            if writer is not None and getattr(rec, field) != writer:
                rec = replace(rec, **{field: writer})
        for inner in MEMBER_MAPS.get(name, ()):
            entries = getattr(rec, inner)
            if not entries:
                continue
            writers = self.doc.entry_writers(name, rid, inner)
            keep = {k: v for k, v in entries.items() if k not in writers or who_of(writers[k][0]) in (None, k)}
            if len(keep) != len(entries):
                rec = replace(rec, **{inner: keep})
        return rec

    def _touched_since(self, heads: tuple[bytes, ...]) -> dict[str, set[str]] | None:
        """Records of these collections the changes since `heads` touch, or
        None when that is not cheap to tell (then: diff)."""
        try:
            changes = self.doc.changes_since(list(heads))
            if len(changes) > MAX_DECODED_CHANGES:
                self._index = None  # not kept up to date through a big batch
                return None
            if self._index is None:
                self._index = _ObjectIndex.build(self.doc)
            return self._index.apply(changes)
        except (ValueError, MalformedDocument):
            self._index = None
            return None

    # --- plumbing -----------------------------------------------------------

    def _member(self) -> MemberId:
        me = self.me
        if me is None or self.board.active_member(me) is None:
            raise NotAMember("this device is not an active member of this circle")
        return me

    def _write(self, fn: Callable[[Any], None]) -> None:
        added = ensure_collections(self.doc)
        before = tuple(self.doc.heads())
        with self.doc.edit() as ed:
            recorder = _Recorder(ed)
            fn(recorder)
        self._local = None if added else (before, tuple(self.doc.heads()), recorder.touched)
        if self._index is not None:
            try:  # keep the object index complete: our write may have made new maps
                self._index.apply(self.doc.changes_since(list(before)))
            except (ValueError, MalformedDocument):
                self._index = None
        if self.board.on_commit is not None:
            self.board.on_commit()

    def _exact(self, collection: str, rid: str, parse: Callable[[str, Record], T]) -> T | None:
        """A full id read straight from the document (one record, no view):
        actions and look-ups by id stay cheap however big the circle is and
        however recently a peer's change arrived."""
        rec = self.doc.record(collection, rid.strip().lower()) if rid.strip() else None
        if rec is None:
            return None
        rid = rid.strip().lower()
        try:
            parsed = parse(rid, rec)
        except (Bad, ValueError, TypeError):
            return None
        return self._verify(collection, rid, parsed) if self.board.members_source is not None else parsed

    @staticmethod
    def _find(table: dict[RecordId, T], prefix: str, what: str) -> T:
        p = prefix.strip().lower()
        if not p:
            raise UsageError(f"a {what} id is required")
        if p in table:
            return table[RecordId(p)]
        hits = sorted(rid for rid in table if rid.startswith(p))
        if not hits:
            raise NotFound(f"no {what} with id '{prefix}'")
        if len(hits) > 1:
            raise AmbiguousId(f"'{prefix}' matches several {what}s: {', '.join(hits[:5])}; type more of the id")
        return table[hits[0]]

    # --- settings -----------------------------------------------------------

    def settings(self) -> Settings:
        # One record read, not a view: every hours action asks this first.
        rec = self.doc.record("settings", "circle") or {}
        return Settings(timebank=rec.get("timebank") is True)

    def set_timebank(self, on: bool) -> Settings:
        me = self._member()
        self._write(lambda ed: ed.update("settings", "circle", {
            "timebank": bool(on), "updated_by": me, "updated_at": self.now()}))
        return self.settings()

    # --- skills -------------------------------------------------------------

    def skills(self, member: MemberId | None = None, search: str | None = None,
               include_removed: bool = False) -> list[Skill]:
        items = [s for s in self.view().skills.values() if include_removed or s.listed]
        if member is not None:
            items = [s for s in items if s.author == member]
        if search:
            words = search.lower().split()
            items = [s for s in items if all(w in f"{s.title} {s.category} {s.details}".lower() for w in words)]
        return sorted(items, key=lambda s: (s.title.lower(), s.author, s.id))

    def skill(self, prefix: str) -> Skill:
        return self._exact("skills", prefix, parse_skill) or self._find(self.view().skills, prefix, "skill")

    def add_skill(self, title: str, category: str = "", teach: bool = False, details: str = "") -> RecordId:
        me = self._member()
        rid, now = _new_id(), self.now()
        fields: dict[str, Field] = {
            "title": clean_text(title, "title", MAX_TITLE, True), "category": clean_category(category),
            "details": clean_text(details, "details", MAX_TEXT), "teach": bool(teach), "author": me,
            "created_at": now, "updated_at": now, "removed_at": None}
        self._write(lambda ed: ed.put_record("skills", rid, fields))
        return rid

    def edit_skill(self, prefix: str, *, title: str | None = None, category: str | None = None,
                   teach: bool | None = None, details: str | None = None) -> RecordId:
        me = self._member()
        s = self.skill(prefix)
        if s.author != me:
            raise ActionRefused("only the member who listed a skill can change it")
        fields: dict[str, Field] = {"updated_at": self.now()}
        if title is not None:
            fields["title"] = clean_text(title, "title", MAX_TITLE, True)
        if category is not None:
            fields["category"] = clean_category(category)
        if teach is not None:
            fields["teach"] = bool(teach)
        if details is not None:
            fields["details"] = clean_text(details, "details", MAX_TEXT)
        self._write(lambda ed: ed.update("skills", s.id, fields))
        return s.id

    def remove_skill(self, prefix: str) -> RecordId:
        me = self._member()
        s = self.skill(prefix)
        if s.author != me:
            raise ActionRefused("only the member who listed a skill can remove it")
        if not s.listed:
            raise ActionRefused(f"skill {s.id} is already removed")
        self._write(lambda ed: ed.update("skills", s.id, {"removed_at": self.now()}))
        return s.id

    # --- time bank ----------------------------------------------------------

    def _timebank(self) -> None:
        if not self.settings().timebank:
            raise ActionRefused("the time bank is off in this circle; any member can turn it on "
                                "with `circle settings timebank on`")

    def exchanges(self, member: MemberId | None = None) -> list[Exchange]:
        self._timebank()
        items = list(self.view().exchanges.values())
        if member is not None:
            items = [x for x in items if x.party(member)]
        return sorted(items, key=lambda x: (-x.created_at, x.id))

    def exchange(self, prefix: str) -> Exchange:
        self._timebank()
        return self._find(self.view().exchanges, prefix, "exchange")

    def balances(self) -> dict[MemberId, Balance]:
        self._timebank()
        return balances(self.view().exchanges)

    def log_hours(self, other: MemberId, minutes: int, note: str, *, gave: bool = True,
                  need: str | None = None, force: bool = False) -> RecordId:
        """Log an exchange with `other`; your side is confirmed by logging it.
        If `other` already logged the same exchange, confirm theirs instead
        (`force` logs anyway, e.g. a second lesson of the same length)."""
        me = self._member()
        self._timebank()
        if other == me:
            raise UsageError("an exchange is between two members; pick someone else with --with")
        if self.board.active_member(other) is None:
            raise NotFound("that member is not an active member of this circle")
        if not 0 < minutes <= MAX_MINUTES:
            raise UsageError(f"hours must be more than 0 and at most {MAX_MINUTES // 60}")
        need_id = self.board.need(need).id if need else None
        giver, receiver = (me, other) if gave else (other, me)
        theirs = [x for x in self.view().exchanges.values()
                  if (x.giver, x.receiver, x.need, x.logged_by) == (giver, receiver, need_id, other)]
        for x in theirs:
            if not force and x.minutes == minutes and x.status == ExchangeStatus.PENDING and x.duplicate_of is None:
                raise ActionRefused(f"they already logged this exchange ({x.id}); confirm it with "
                                    f"`circle hours confirm {x.id}` (or log with --new if it is another one)")
        rid, now = _new_id(), self.now()
        fields: dict[str, Field] = {
            "giver": giver, "receiver": receiver, "minutes": minutes,
            "note": clean_text(note, "what it was for", MAX_TITLE, True), "need": need_id, "logged_by": me,
            "created_at": now, "sides": {me: Side.CONFIRMED.value}, "notes": {}, "withdrawn_at": None,
            # What this log can never be a double of: the other side's logs we can see.
            "seen": " ".join(sorted(x.id for x in theirs if abs(now - x.created_at) <= PAIR_WINDOW_MS))}
        self._write(lambda ed: ed.put_record("exchanges", rid, fields))
        return rid

    def _answer(self, prefix: str, side: Side, note: str | None) -> RecordId:
        me = self._member()
        x = self.exchange(prefix)
        if not x.party(me):
            raise ActionRefused("only the two members of an exchange can confirm or dispute it")
        if x.status == ExchangeStatus.WITHDRAWN:
            raise ActionRefused(f"exchange {x.id} was withdrawn")

        def write(ed: Any) -> None:
            ed.map_put("exchanges", x.id, "sides", me, side.value)
            if note is not None:
                ed.map_put("exchanges", x.id, "notes", me, clean_text(note, "note", MAX_TEXT))
        self._write(write)
        return x.id

    def confirm(self, prefix: str) -> RecordId:
        return self._answer(prefix, Side.CONFIRMED, None)

    def dispute(self, prefix: str, note: str) -> RecordId:
        return self._answer(prefix, Side.DISPUTED, clean_text(note, "note", MAX_TEXT, True))

    def withdraw_exchange(self, prefix: str) -> RecordId:
        me = self._member()
        x = self.exchange(prefix)
        if x.logged_by != me:
            raise ActionRefused("only the member who logged an exchange can withdraw it")
        self._write(lambda ed: ed.update("exchanges", x.id, {"withdrawn_at": self.now()}))
        return x.id

    # --- events -------------------------------------------------------------

    def events(self, when: str = "upcoming", search: str | None = None) -> list[Event]:
        now = self.now()
        items = list(self.view().events.values())
        if when == "upcoming":
            items = [e for e in items if e.cancelled_at is None and e.ends_at > now]
        elif when == "past":
            items = [e for e in items if e.ends_at <= now]
        elif when != "all":
            raise UsageError(f"unknown event filter {when!r}")
        if search:
            words = search.lower().split()
            items = [e for e in items
                     if all(w in f"{e.title} {e.kind} {e.place} {e.zone} {e.details}".lower() for w in words)]
        if when == "past":
            return sorted(items, key=lambda e: (-e.starts_at, e.id))
        return sorted(items, key=lambda e: (e.starts_at, e.id))

    def event(self, prefix: str) -> Event:
        return self._exact("events", prefix, parse_event) or self._find(self.view().events, prefix, "event")

    def add_event(self, title: str, starts_at: Millis, minutes: int, place: str = "", *,
                  kind: EventKind = EventKind.OTHER, zone: str = "", details: str = "", tz: str = "UTC",
                  repeat_until: date | None = None) -> list[RecordId]:
        """One event, or a weekly series up to `repeat_until` (inclusive, in
        the author's zone: the wall-clock time stays put across clock changes)."""
        me = self._member()
        check_minutes(minutes)
        zone_info = tz_of(tz)
        starts = [starts_at]
        series: str | None = None
        if repeat_until is not None:
            first = datetime.fromtimestamp(starts_at / 1000, zone_info)
            if repeat_until < first.date():
                raise UsageError("--until is before the first date")
            local = first.replace(tzinfo=None)
            starts = []
            while (local + timedelta(weeks=len(starts))).date() <= repeat_until:
                if len(starts) >= MAX_OCCURRENCES:
                    raise UsageError(f"a series has at most {MAX_OCCURRENCES} dates; pick an earlier --until")
                starts.append(instant(local + timedelta(weeks=len(starts)), zone_info))
            series = _new_id()
        now = self.now()
        base: dict[str, Field] = {
            "title": clean_text(title, "title", MAX_TITLE, True), "kind": EventKind(kind).value,
            "details": clean_text(details, "details", MAX_TEXT), "place": clean_text(place, "place", MAX_PLACE),
            "zone": zone.strip()[:60], "minutes": minutes, "tz": tz, "author": me, "created_at": now,
            "updated_at": now, "cancelled_at": None, "series": series}
        ids = [_new_id() for _ in starts]

        def write(ed: Any) -> None:
            for rid, at in zip(ids, starts, strict=True):
                ed.put_record("events", rid, {**base, "starts_at": at, "rsvps": {}})
        self._write(write)
        return ids

    def edit_event(self, prefix: str, *, title: str | None = None, starts_at: Millis | None = None,
                   minutes: int | None = None, place: str | None = None, kind: EventKind | None = None,
                   zone: str | None = None, details: str | None = None, tz: str | None = None) -> RecordId:
        self._member()
        e = self.event(prefix)
        fields: dict[str, Field] = {"updated_at": self.now()}
        if title is not None:
            fields["title"] = clean_text(title, "title", MAX_TITLE, True)
        if starts_at is not None:
            fields["starts_at"] = starts_at
        if minutes is not None:
            fields["minutes"] = check_minutes(minutes)
        if place is not None:
            fields["place"] = clean_text(place, "place", MAX_PLACE)
        if kind is not None:
            fields["kind"] = EventKind(kind).value
        if zone is not None:
            fields["zone"] = zone.strip()[:60]
        if details is not None:
            fields["details"] = clean_text(details, "details", MAX_TEXT)
        if tz is not None:
            tz_of(tz)
            fields["tz"] = tz
        self._write(lambda ed: ed.update("events", e.id, fields))
        return e.id

    def cancel_event(self, prefix: str, cancelled: bool = True) -> RecordId:
        me = self._member()
        e = self.event(prefix)
        if e.author != me:
            raise ActionRefused("only the member who planned an event can cancel it")
        if (e.cancelled_at is not None) == cancelled:
            raise ActionRefused(f"event {e.id} is already {'cancelled' if cancelled else 'on'}")
        now = self.now()
        self._write(lambda ed: ed.update("events", e.id, {"cancelled_at": now if cancelled else None,
                                                          "updated_at": now}))
        return e.id

    def rsvp(self, prefix: str, answer: Rsvp | str) -> RecordId:
        me = self._member()
        try:
            value = Rsvp(answer)
        except ValueError:
            raise UsageError("answer yes, no or maybe") from None
        e = self.event(prefix)
        if e.status(self.now()) in (EventStatus.CANCELLED, EventStatus.PAST):
            raise ActionRefused(f"event {e.id} is {e.status(self.now())}")
        self._write(lambda ed: ed.map_put("events", e.id, "rsvps", me, value.value))
        return e.id

    def bring_list(self, event_id: RecordId) -> list[BringItem]:
        return list(self.view().bring_by_event.get(event_id, []))

    def add_bring(self, prefix: str, item: str) -> RecordId:
        me = self._member()
        e = self.event(prefix)
        if e.cancelled_at is not None:
            raise ActionRefused(f"event {e.id} is cancelled")
        rid = _new_id()
        fields: dict[str, Field] = {"event": e.id, "member": me, "item": clean_text(item, "item", MAX_TITLE, True),
                                    "created_at": self.now(), "removed_at": None}
        self._write(lambda ed: ed.put_record("bring", rid, fields))
        return rid

    def remove_bring(self, prefix: str) -> RecordId:
        me = self._member()
        b = self._exact("bring", prefix, parse_bring) or self._find(self.view().bring, prefix, "bring-list entry")
        if b.member != me:
            raise ActionRefused("only the member who said they would bring it can take it off the list")
        if b.removed_at is not None:
            raise ActionRefused("that entry is already off the list")
        self._write(lambda ed: ed.update("bring", b.id, {"removed_at": self.now()}))
        return b.id

    # --- shifts -------------------------------------------------------------

    def shifts_of(self, event_id: RecordId) -> list[Shift]:
        return list(self.view().shifts_by_event.get(event_id, []))

    def shift(self, prefix: str) -> Shift:
        return self._exact("shifts", prefix, parse_shift) or self._find(self.view().shifts, prefix, "shift")

    def add_shift(self, event_prefix: str, title: str, starts_at: Millis, minutes: int, slots: int) -> RecordId:
        me = self._member()
        e = self.event(event_prefix)
        check_minutes(minutes)
        if not 0 < slots <= MAX_SLOTS:
            raise UsageError(f"slots must be between 1 and {MAX_SLOTS}")
        rid = _new_id()
        fields: dict[str, Field] = {
            "event": e.id, "title": clean_text(title, "shift name", MAX_TITLE, True), "starts_at": starts_at,
            "minutes": minutes, "slots": slots, "author": me, "created_at": self.now(), "cancelled_at": None,
            "takes": {}}
        self._write(lambda ed: ed.put_record("shifts", rid, fields))
        return rid

    def take_shift(self, prefix: str) -> RecordId:
        me = self._member()
        s = self.shift(prefix)
        if s.cancelled_at is not None:
            raise ActionRefused(f"shift {s.id} was cancelled")
        if me in s.takes:
            raise ActionRefused(f"you are already on shift {s.id}")
        if s.open_slots == 0:
            raise ActionRefused(f"shift {s.id} ({s.title}) is full")
        self._write(lambda ed: ed.map_put("shifts", s.id, "takes", me, self.now()))
        return s.id

    def drop_shift(self, prefix: str) -> RecordId:
        me = self._member()
        s = self.shift(prefix)
        if me not in s.takes:
            raise ActionRefused(f"you are not on shift {s.id}")
        self._write(lambda ed: ed.map_delete("shifts", s.id, "takes", me))
        return s.id

    def open_shifts(self) -> list[tuple[Event, Shift]]:
        """Shifts of upcoming events that still need people (for the meeting report)."""
        view, out = self.view(), list[tuple[Event, Shift]]()
        for e in self.events("upcoming"):
            out.extend((e, s) for s in view.shifts_by_event.get(e.id, [])
                       if s.cancelled_at is None and s.open_slots > 0)
        return out

    # --- reminders ----------------------------------------------------------

    def reminders(self, now: Millis | None = None) -> list[Reminder]:
        """Events I said yes to and shifts I am on that start soon."""
        me = self.me
        if me is None:
            return []
        now = self.now() if now is None else now
        view, out = self.view(), list[Reminder]()
        for e in view.events.values():
            if e.cancelled_at is not None:
                continue
            if e.rsvps.get(me) == Rsvp.YES and now < e.starts_at <= now + REMIND_EVENT_MS:
                out.append(Reminder(f"event:{e.id}:{e.starts_at}", e.starts_at,
                                    f"{e.title} starts at {show_time(e.starts_at)}"
                                    + (f", {e.place}" if e.place else "")))
            for s in view.shifts_by_event.get(e.id, []):
                if s.cancelled_at is None and me in s.takes and now < s.starts_at <= now + REMIND_SHIFT_MS:
                    out.append(Reminder(f"shift:{s.id}:{s.starts_at}", s.starts_at,
                                        f"your shift “{s.title}” ({e.title}) starts at {show_time(s.starts_at)}"))
        return sorted(out, key=lambda r: (r.at, r.key))


class _ObjectIndex:
    """Which record of these collections each Automerge object belongs to:
    the record maps and the maps inside them (RSVPs, takes, sides). Kept
    complete by indexing every object a change creates under a known one;
    an op on an object not in the index is not in these collections."""

    def __init__(self) -> None:
        self.collections: dict[tuple[bytes, int], str] = {}
        self.objects: dict[tuple[bytes, int], tuple[str, str]] = {}

    @classmethod
    def build(cls, doc: AmDoc) -> _ObjectIndex:
        index = cls()
        for name in EXT_COLLECTIONS:
            cid, records = doc.object_ids(name)
            if cid is not None:
                index.collections[cid] = name
            for rid, oid in records.items():
                index.objects[oid] = (name, rid)
                if name in NESTED:
                    for oid2 in doc.field_writers(name, rid).values():
                        index.objects[oid2] = (name, rid)
        return index

    def apply(self, changes: list[bytes]) -> dict[str, set[str]] | None:
        touched: dict[str, set[str]] = {}
        for change in changes:
            for op in change_ops.ops(change):
                if op.obj is None:
                    if op.key in EXT_COLLECTIONS:
                        return None  # a collection itself (re)made: read everything
                    continue
                name = self.collections.get(op.obj)
                if name is not None:
                    if op.key is None:
                        return None
                    rid = op.key
                else:
                    owner = self.objects.get(op.obj)
                    if owner is None:
                        continue  # another collection's object
                    name, rid = owner
                touched.setdefault(name, set()).add(rid)
                if op.makes_object:
                    self.objects[op.id] = (name, rid)
        return touched


class _Recorder:
    """The transaction's writes, noting which records they touch."""

    def __init__(self, ed: Any) -> None:
        self._ed = ed
        self.touched: dict[str, set[str]] = {}

    def _note(self, collection: str, rid: str) -> None:
        self.touched.setdefault(collection, set()).add(rid)

    def put_record(self, collection: str, rid: str, fields: dict[str, Field]) -> None:
        self._note(collection, rid)
        self._ed.put_record(collection, rid, fields)

    def update(self, collection: str, rid: str, fields: dict[str, Field]) -> None:
        self._note(collection, rid)
        self._ed.update(collection, rid, fields)

    def map_put(self, collection: str, rid: str, field: str, key: str, value: Any) -> None:
        self._note(collection, rid)
        self._ed.map_put(collection, rid, field, key, value)

    def map_delete(self, collection: str, rid: str, field: str, key: str) -> None:
        self._note(collection, rid)
        self._ed.map_delete(collection, rid, field, key)


_CACHE: dict[int, tuple[Board, Gatherings]] = {}


def gatherings(board: Board) -> Gatherings:
    """The `Gatherings` of a board (one per board, so its view cache is shared)."""
    got = _CACHE.get(id(board))
    if got is None or got[0] is not board:
        if len(_CACHE) > 64:
            _CACHE.clear()
        got = (board, Gatherings(board))
        _CACHE[id(board)] = got
    return got[1]
