"""Community defence: alerts, buddy check-ins and pinned resources.

Only facts are stored; every state below is derived at read time from the
facts, the clock of *this* device and the verified writer of each record
(`Board.writer_of`: the member whose device wrote the record's creating op,
as the trust layer binds Automerge actors to devices). A self-declared
`author` field is kept for display and for the trust layer's mismatch flag,
but never decides anything here.

Alert (first rule that matches):
  retracted    a `retract` fact whose verified writer raised the alert
  resolved     a `resolve` fact by any verified active member
  expired      now >= expires_at (default 2 h after it was raised)
  confirmed    at least one `confirm` fact by a verified active member who
               is NOT the raiser; confirmations count per distinct member
  unconfirmed  otherwise
  A fact whose writer cannot be verified, a retraction by someone else than
  the raiser, or a confirmation by the raiser is listed (`ignored`) with the
  reason, and counts for nothing. Rate: when one verified member raised at
  least RATE_LIMIT alerts within RATE_WINDOW of an alert's raise time, every
  device shows that alert as `flagged` ("ana raised 4 alerts within 30 min").
  Nothing is hidden or suppressed: the flag is shown next to the alert.

Check-in (owner = verified writer of the check-in record):
  ended     an `end` fact by the owner or one of its buddies
  ok        --until T: once any ok by the owner exists (settled, no deadline)
  missed    now > due_at + CLOCK_SKEW
  due-soon  now >= due_at - DUE_SOON
  ok        otherwise
  due_at = (--every D) D after the later of the start and the owner's last
  ok; (--until T) T. Only `ok` facts by the owner count.
  Clock-skew rule: every device judges by its own clock. A check-in is
  missed only once this device's clock is more than CLOCK_SKEW (60 s) past
  the due time, so members' laptops may disagree by up to a minute without a
  false alarm. An ok dated more than CLOCK_SKEW in the future of this
  device's clock is ignored (listed, "dated in the future"): a fast clock can
  never postpone a deadline; the failure mode is a false alarm, not silence.

Resources: title, details, kind; removed if `removed_at`. Any member may
add, edit or remove (horizontal, no owner); edits merge field by field.

New collections in an existing document (DESIGN §3 trap): if two replicas
each put a new map at root key `alerts`, the merge keeps one map and hides
the other's records. So the four collections are created by ONE constant
change (`COLLECTIONS_CHANGE` below), written once with a fixed actor, no
dependencies and time 0: every device applies the very same bytes, which
have the same hash, so Automerge stores it once and every replica's
`alerts` is the same object. It is applied lazily before the first write
(`ensure_collections`); reads treat a missing collection as empty. Never add
these names to `model.COLLECTIONS`: a founding change that created them too
would conflict with this change. The trust layer must accept this change by
its hash (`is_collections_change`): it carries no signature because it
carries no content.

Standalone alerts: a raised alert is written on top of the collections
change alone (`AmDoc.edit_at`), by a fresh actor of this device (the same
16-byte device prefix as every process actor, new last 8 bytes), then merged
in. Its change needs nothing but that fixed change, so a member who lacks
thousands of other changes applies it first, when a live session sends it
ahead of the bulk (net/session.py rule 10). It is signed like any change
(the trust layer binds the actor prefix to the device). A removed device's
fresh actor has no pin, so whatever it writes after its removal is late.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from circle.crdt.am import MALFORMED, Field, Record
from circle.crdt.board import Board, new_record_id
from circle.crdt.model import MemberId, Millis, RecordId
from circle.errors import ActionRefused, AmbiguousId, NotFound, UsageError

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DEFAULT_ALERT_MS = 2 * HOUR_MS
MAX_ALERT_MS = 7 * 24 * HOUR_MS
RATE_WINDOW_MS = 30 * MINUTE_MS
RATE_LIMIT = 3
DUE_SOON_MS = 10 * MINUTE_MS
CLOCK_SKEW_MS = 60_000
MAX_CHECKIN_MS = 24 * HOUR_MS
MAX_ALERT_TEXT = 280
MAX_NOTE = 500
MAX_DETAILS = 2000
MAX_BUDDIES = 10

DEFENCE_COLLECTIONS = ("alerts", "defence_facts", "checkins", "resources")
#: put_object(ROOT, name, Map) for each of DEFENCE_COLLECTIONS, actor
#: b"circle/defence/1", seq 1, no deps, time 0 (see the module docstring).
COLLECTIONS_CHANGE = bytes.fromhex(
    "856f4a83af77ad0c01520010636972636c652f646566656e63652f3101010000000515293401420256027002"
    "7c06616c657274730d646566656e63655f666163747308636865636b696e73097265736f75726365730404"
    "0004000400"
)
COLLECTIONS_CHANGE_HASH = hashlib.sha256(COLLECTIONS_CHANGE[8:]).digest()


def is_collections_change(change_hash: bytes) -> bool:
    """For the trust layer: the one unsigned change every device accepts."""
    return change_hash == COLLECTIONS_CHANGE_HASH


class AlertKind(StrEnum):
    RAID = "raid"
    HARASSMENT = "harassment"
    POLICE = "police"
    MEDICAL = "medical"
    OTHER = "other"


class AlertState(StrEnum):
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    RESOLVED = "resolved"
    RETRACTED = "retracted"
    EXPIRED = "expired"

    @property
    def active(self) -> bool:
        return self in (AlertState.UNCONFIRMED, AlertState.CONFIRMED)


class FactKind(StrEnum):
    CONFIRM = "confirm"
    RESOLVE = "resolve"
    RETRACT = "retract"
    OK = "ok"
    END = "end"


class CheckinState(StrEnum):
    OK = "ok"
    DUE_SOON = "due-soon"
    MISSED = "missed"
    ENDED = "ended"


class ResourceKind(StrEnum):
    LEGAL = "legal"
    MEDICAL = "medical"
    KNOW_YOUR_RIGHTS = "know-your-rights"
    OTHER = "other"


@dataclass(frozen=True)
class Fact:
    """One confirm/resolve/retract/ok/end, with the member who provably wrote it."""

    id: RecordId
    on: RecordId
    kind: FactKind
    at: Millis
    note: str
    writer: MemberId | None  # verified; None = cannot be told
    declared: str | None  # the record's own `author` field (display only)
    verified: bool
    ignored: str | None = None  # why it counts for nothing, if it does not count


@dataclass(frozen=True)
class Alert:
    id: RecordId
    text: str
    kind: AlertKind
    zone: str
    raised_at: Millis
    expires_at: Millis
    raiser: MemberId | None
    declared: str | None
    verified: bool
    state: AlertState
    confirmed_by: tuple[MemberId, ...]
    resolved_by: MemberId | None
    facts: tuple[Fact, ...]
    rate: int  # alerts by the same verified raiser within RATE_WINDOW of this one
    flagged: bool

    @property
    def active(self) -> bool:
        return self.state.active

    @property
    def ignored(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.ignored)


@dataclass(frozen=True)
class Checkin:
    id: RecordId
    title: str
    owner: MemberId | None
    declared: str | None
    verified: bool
    buddies: tuple[MemberId, ...]
    every_ms: int | None
    until_at: Millis | None
    started_at: Millis
    last_ok_at: Millis | None
    due_at: Millis | None
    ended_at: Millis | None
    ended_by: MemberId | None
    state: CheckinState
    facts: tuple[Fact, ...] = field(default=())

    @property
    def ignored(self) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.ignored)


@dataclass(frozen=True)
class Resource:
    id: RecordId
    title: str
    details: str
    kind: ResourceKind
    created_by: MemberId | None
    declared: str | None
    verified: bool
    created_at: Millis
    updated_at: Millis


class _Bad(Exception):
    pass


def _s(rec: Record, key: str, default: str | None = None, keep_newlines: bool = False) -> str:
    """Text from a peer, without control characters: `alert watch` prints it
    to terminals, where an escape sequence could rewrite what is shown."""
    v = rec.get(key, default)
    if not isinstance(v, str):
        raise _Bad(f"field '{key}' is not text")
    if v.isprintable():
        return v
    return "".join(c for c in v if c.isprintable() or (keep_newlines and c == "\n"))


def _i(rec: Record, key: str, optional: bool = False) -> int | None:
    v = rec.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"field '{key}' is not a number")
    return v


def _req_i(rec: Record, key: str) -> int:
    v = _i(rec, key)
    assert v is not None
    return v


def _declared(rec: Record) -> str | None:
    v = rec.get("author")
    return v if isinstance(v, str) else None


def parse_duration(text: str) -> int:
    """'90s', '30m', '2h', '1d', or plain minutes -> milliseconds."""
    t = text.strip().lower()
    units = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": 24 * HOUR_MS}
    try:
        if t and t[-1] in units:
            value = float(t[:-1]) * units[t[-1]]
        else:
            value = float(t) * MINUTE_MS
    except ValueError:
        raise UsageError(f"cannot read duration '{text}' (use e.g. 30m, 2h)") from None
    if not value > 0 or value != value:
        raise UsageError(f"a duration must be positive, not '{text}'")
    return int(value)


def trust_layer_active(board: Board) -> bool:
    """True once the node's trust layer resolves actors (issue 9 wires it);
    until then `Board.member_of_actor` is the Board's own stand-in."""
    return getattr(board.member_of_actor, "__qualname__", "") != "Board.__init__.<locals>.<lambda>"


class Defence:
    """Alerts, check-ins and resources over one Board.

    `declared_fallback` (default: only while no trust layer is wired) reads
    a record's `author` field when its writer cannot be verified, and marks
    everything so read `verified=False`. With a trust layer, unverified
    facts never count."""

    def __init__(self, board: Board, declared_fallback: bool | None = None) -> None:
        self.board = board
        self.fallback = (not trust_layer_active(board)) if declared_fallback is None else declared_fallback
        self._cache: tuple[tuple[bytes, ...], dict[str, dict[str, Record]]] | None = None

    # --- reading -------------------------------------------------------------

    def _raw(self) -> dict[str, dict[str, Record]]:
        heads = tuple(self.board.doc.heads())
        if self._cache is None or self._cache[0] != heads:
            # The trust layer names devices that wrote past their removal (issue 9:
            # `Board.late_actors`); their records are not shown, as in every other view.
            late_of = getattr(self.board, "late_actors", None)
            late: set[bytes] = set(late_of()) if callable(late_of) else set()
            raw: dict[str, dict[str, Record]] = {}
            for name in DEFENCE_COLLECTIONS:
                recs = self.board.doc.records(name)
                raw[name] = {k: v for k, v in recs.items() if v is not MALFORMED and isinstance(v, dict)
                             and not (late and _actor(self.board.doc.record_writer(name, k)) in late)}
            self._cache = (heads, raw)
        return self._cache[1]

    def _writer(self, collection: str, rid: str, rec: Record) -> tuple[MemberId | None, bool]:
        who = self.board.writer_of(collection, rid)
        if who is not None:
            return who, True
        declared = _declared(rec)
        if self.fallback and declared:
            return MemberId(declared), False
        return None, False

    def _active(self, member: MemberId | None) -> bool:
        m = None if member is None else self.board.view().members.get(member)
        return m is not None and m.active

    def _facts(self) -> dict[str, list[Fact]]:
        out: dict[str, list[Fact]] = {}
        for rid, rec in self._raw()["defence_facts"].items():
            try:
                kind = FactKind(_s(rec, "what"))
                on = RecordId(_s(rec, "on"))
                at = _req_i(rec, "at")
                note = _s(rec, "note", "")[:MAX_NOTE]
            except (_Bad, ValueError):
                continue
            writer, verified = self._writer("defence_facts", rid, rec)
            out.setdefault(on, []).append(
                Fact(RecordId(rid), on, kind, at, note, writer, _declared(rec), verified))
        for facts in out.values():
            facts.sort(key=lambda f: (f.at, f.id))
        return out

    def alerts(self, active_only: bool = False) -> list[Alert]:
        now = self.board.clock()
        facts = self._facts()
        parsed: list[tuple[str, Record, MemberId | None, bool]] = []
        for rid, rec in self._raw()["alerts"].items():
            writer, verified = self._writer("alerts", rid, rec)
            parsed.append((rid, rec, writer, verified))
        times: dict[MemberId, list[int]] = {}
        for _rid, rec, writer, _v in parsed:
            at = rec.get("raised_at")
            if writer is not None and isinstance(at, int) and not isinstance(at, bool):
                times.setdefault(writer, []).append(at)
        out: list[Alert] = []
        for rid, rec, writer, verified in parsed:
            try:
                alert = self._alert(rid, rec, writer, verified, facts.get(rid, []), times, now)
            except (_Bad, ValueError):
                continue
            if not active_only or alert.active:
                out.append(alert)
        return sorted(out, key=lambda a: (not a.active, -a.raised_at, a.id))

    def _alert(self, rid: str, rec: Record, raiser: MemberId | None, verified: bool, facts: list[Fact],
               times: dict[MemberId, list[int]], now: Millis) -> Alert:
        raised_at = _req_i(rec, "raised_at")
        # A modified client cannot keep an alert up for longer than any client may ask for.
        expires_at = min(_req_i(rec, "expires_at"), raised_at + MAX_ALERT_MS)
        judged: list[Fact] = []
        confirmed: list[MemberId] = []
        resolved_by: MemberId | None = None
        retracted = False
        for f in facts:
            why = None
            if f.writer is None:
                why = "its writer cannot be verified"
            elif not self._active(f.writer):
                why = "its writer is not an active member"
            elif f.kind == FactKind.CONFIRM:
                if raiser is not None and f.writer == raiser:
                    why = "the raiser cannot confirm their own alert"
                elif f.writer in confirmed:
                    why = "this member already confirmed"
                else:
                    confirmed.append(f.writer)
            elif f.kind == FactKind.RESOLVE:
                resolved_by = resolved_by or f.writer
            elif f.kind == FactKind.RETRACT:
                if raiser is not None and f.writer == raiser:
                    retracted = True
                else:
                    why = "only the member who raised an alert can retract it"
            else:
                why = f"'{f.kind}' does not apply to an alert"
            judged.append(f if why is None else _ignore(f, why))
        if retracted:
            state = AlertState.RETRACTED
        elif resolved_by is not None:
            state = AlertState.RESOLVED
        elif now >= expires_at:
            state = AlertState.EXPIRED
        elif confirmed:
            state = AlertState.CONFIRMED
        else:
            state = AlertState.UNCONFIRMED
        rate = 0
        if raiser is not None:
            rate = sum(1 for t in times.get(raiser, []) if abs(t - raised_at) <= RATE_WINDOW_MS)
        return Alert(
            id=RecordId(rid), text=_s(rec, "text")[:MAX_ALERT_TEXT], kind=AlertKind(_s(rec, "kind")),
            zone=_s(rec, "zone", "")[:60], raised_at=raised_at, expires_at=expires_at, raiser=raiser,
            declared=_declared(rec), verified=verified, state=state, confirmed_by=tuple(confirmed),
            resolved_by=resolved_by, facts=tuple(judged), rate=rate, flagged=rate >= RATE_LIMIT,
        )

    def checkins(self, include_ended: bool = False) -> list[Checkin]:
        now = self.board.clock()
        facts = self._facts()
        out: list[Checkin] = []
        for rid, rec in self._raw()["checkins"].items():
            writer, verified = self._writer("checkins", rid, rec)
            try:
                c = self._checkin(rid, rec, writer, verified, facts.get(rid, []), now)
            except (_Bad, ValueError):
                continue
            if include_ended or c.state != CheckinState.ENDED:
                out.append(c)
        order = {CheckinState.MISSED: 0, CheckinState.DUE_SOON: 1, CheckinState.OK: 2, CheckinState.ENDED: 3}
        return sorted(out, key=lambda c: (order[c.state], c.due_at or 0, c.id))

    def _checkin(self, rid: str, rec: Record, owner: MemberId | None, verified: bool, facts: list[Fact],
                 now: Millis) -> Checkin:
        started = _req_i(rec, "started_at")
        every, until = _i(rec, "every_ms", True), _i(rec, "until_at", True)
        if (every is None) == (until is None) or (every is not None and every <= 0):
            raise _Bad("a check-in needs exactly one of every_ms and until_at")
        buddies = tuple(MemberId(b) for b in _s(rec, "buddies", "").split()[:MAX_BUDDIES])
        judged: list[Fact] = []
        last_ok: int | None = None
        ended_at: int | None = None
        ended_by: MemberId | None = None
        for f in facts:
            why = None
            if f.writer is None:
                why = "its writer cannot be verified"
            elif f.kind == FactKind.OK:
                if owner is None or f.writer != owner:
                    why = "only the member who started a check-in can say they are ok"
                elif f.at > now + CLOCK_SKEW_MS:
                    why = "dated in the future (that device's clock is ahead)"
                else:
                    last_ok = f.at if last_ok is None else max(last_ok, f.at)
            elif f.kind == FactKind.END:
                if f.writer == owner or f.writer in buddies:
                    if ended_at is None:
                        ended_at, ended_by = f.at, f.writer
                else:
                    why = "only the member or their buddies can end a check-in"
            else:
                why = f"'{f.kind}' does not apply to a check-in"
            judged.append(f if why is None else _ignore(f, why))
        due: int | None
        if every is not None:
            due = max(started, last_ok or started) + every
        else:
            due = None if last_ok is not None and last_ok >= started else until
        if ended_at is not None:
            state = CheckinState.ENDED
        elif due is None:
            state = CheckinState.OK
        elif now > due + CLOCK_SKEW_MS:
            state = CheckinState.MISSED
        elif now >= due - DUE_SOON_MS:
            state = CheckinState.DUE_SOON
        else:
            state = CheckinState.OK
        return Checkin(
            id=RecordId(rid), title=_s(rec, "title")[:200], owner=owner, declared=_declared(rec),
            verified=verified, buddies=buddies, every_ms=every, until_at=until, started_at=started,
            last_ok_at=last_ok, due_at=due, ended_at=ended_at, ended_by=ended_by, state=state,
            facts=tuple(judged),
        )

    def resources(self) -> list[Resource]:
        out: list[Resource] = []
        for rid, rec in self._raw()["resources"].items():
            if rec.get("removed_at") is not None:
                continue
            writer, verified = self._writer("resources", rid, rec)
            try:
                out.append(Resource(
                    id=RecordId(rid), title=_s(rec, "title")[:200], details=_s(rec, "details", "", keep_newlines=True)[:MAX_DETAILS],
                    kind=ResourceKind(_s(rec, "kind", "other")), created_by=writer, declared=_declared(rec),
                    verified=verified, created_at=_req_i(rec, "created_at"), updated_at=_req_i(rec, "updated_at"),
                ))
            except (_Bad, ValueError):
                continue
        order = list(ResourceKind)
        return sorted(out, key=lambda r: (order.index(r.kind), r.title.lower(), r.id))

    def _find(self, items: Iterable[RecordId], prefix: str, what: str) -> RecordId:
        p = prefix.strip().lower()
        if not p:
            raise UsageError("an id is required")
        ids = list(items)
        if p in ids:
            return RecordId(p)
        hits = [i for i in ids if i.startswith(p)]
        if not hits:
            raise NotFound(f"no {what} with id '{prefix}'")
        if len(hits) > 1:
            raise AmbiguousId(f"'{prefix}' matches several {what}s: {', '.join(sorted(hits)[:5])}; type more of the id")
        return hits[0]

    def alert(self, prefix: str) -> Alert:
        items = {a.id: a for a in self.alerts()}
        return items[self._find(items, prefix, "alert")]

    def checkin(self, prefix: str) -> Checkin:
        items = {c.id: c for c in self.checkins(include_ended=True)}
        return items[self._find(items, prefix, "check-in")]

    def resource(self, prefix: str) -> Resource:
        items = {r.id: r for r in self.resources()}
        return items[self._find(items, prefix, "resource")]

    def missed_for(self, member: MemberId | None) -> list[Checkin]:
        """Missed check-ins in which `member` is a buddy (None: every missed one)."""
        return [c for c in self.checkins() if c.state == CheckinState.MISSED
                and (member is None or member in c.buddies)]

    def handle(self, member: MemberId | None) -> str:
        if member is None:
            return "someone unverified"
        m = self.board.view().members.get(member)
        return m.handle if m else member

    def missed_message(self, c: Checkin) -> str:
        from time import localtime, strftime

        def hm(ms: int) -> str:
            return strftime("%H:%M", localtime(ms / 1000))

        last = f"last ok {hm(c.last_ok_at)}" if c.last_ok_at is not None else f"no ok since the start at {hm(c.started_at)}"
        due = hm(c.due_at) if c.due_at is not None else "?"
        return f"{self.handle(c.owner)} missed their {due} check-in ({c.title}); {last}"

    # --- writing ---------------------------------------------------------------

    def ensure_collections(self) -> None:
        """Apply the shared collections change if this document lacks it."""
        doc = self.board.doc
        if not all(doc.has_collection(n) for n in DEFENCE_COLLECTIONS):
            doc.apply_changes([COLLECTIONS_CHANGE])

    def _put(self, collection: str, fields: dict[str, Field], standalone: bool = False) -> RecordId:
        me = self.board._require_member()
        self.ensure_collections()
        rid = new_record_id()
        doc = self.board.doc
        if standalone:
            # An alert depends on the collections change only, written by a fresh
            # actor of this device (its first 16 bytes name the device, as every
            # process actor's do): a member who lacks everything else can apply
            # it at once, ahead of a large sync (net/session.py rule 10).
            with doc.edit_at([COLLECTIONS_CHANGE_HASH], doc.actor()[:16] + os.urandom(8)) as ed:
                ed.put_record(collection, rid, {**fields, "author": me})
        else:
            with doc.edit() as ed:
                ed.put_record(collection, rid, {**fields, "author": me})
        self.board._commit()
        return rid

    def _fact(self, on: RecordId, kind: FactKind, note: str = "") -> RecordId:
        return self._put("defence_facts", {
            "on": on, "what": kind.value, "at": self.board.clock(), "note": _text(note, "note", MAX_NOTE),
        })

    def raise_alert(self, text: str, kind: AlertKind = AlertKind.OTHER, zone: str = "",
                    expires_ms: int = DEFAULT_ALERT_MS) -> RecordId:
        if not 0 < expires_ms <= MAX_ALERT_MS:
            raise UsageError("an alert expires after at most 7 days")
        now = self.board.clock()
        return self._put("alerts", {
            "text": _text(text, "alert text", MAX_ALERT_TEXT, required=True), "kind": AlertKind(kind).value,
            "zone": _text(zone, "zone", 60), "raised_at": now, "expires_at": now + expires_ms,
        }, standalone=True)

    def _open_alert(self, prefix: str) -> Alert:
        alert = self.alert(prefix)
        if not alert.active:
            raise ActionRefused(f"alert {alert.id} is {alert.state.value}")
        return alert

    def confirm(self, prefix: str, note: str = "") -> RecordId:
        me = self.board._require_member()
        alert = self._open_alert(prefix)
        if alert.raiser == me:
            raise ActionRefused("you raised this alert; another member has to confirm it")
        if me in alert.confirmed_by:
            raise ActionRefused(f"you already confirmed alert {alert.id}")
        return self._fact(alert.id, FactKind.CONFIRM, note)

    def resolve(self, prefix: str, note: str = "") -> RecordId:
        self.board._require_member()
        return self._fact(self._open_alert(prefix).id, FactKind.RESOLVE, note)

    def retract(self, prefix: str, note: str = "") -> RecordId:
        me = self.board._require_member()
        alert = self._open_alert(prefix)
        if alert.raiser != me:
            raise ActionRefused("only the member who raised an alert can retract it; resolve it instead")
        return self._fact(alert.id, FactKind.RETRACT, note)

    def start_checkin(self, title: str, buddies: Iterable[MemberId], *, every_ms: int | None = None,
                      until_at: Millis | None = None) -> RecordId:
        me = self.board._require_member()
        if (every_ms is None) == (until_at is None):
            raise UsageError("give exactly one of --every and --until")
        now = self.board.clock()
        if every_ms is not None and not MINUTE_MS <= every_ms <= MAX_CHECKIN_MS:
            raise UsageError("--every must be between 1 minute and 24 hours")
        if until_at is not None and not now < until_at <= now + MAX_CHECKIN_MS:
            raise UsageError("--until must be within the next 24 hours")
        chosen: list[MemberId] = []
        for b in buddies:
            if b == me:
                raise UsageError("you cannot be your own buddy")
            if not self._active(b):
                raise ActionRefused(f"{b} is not an active member")
            if b not in chosen:
                chosen.append(b)
        if not chosen:
            raise UsageError("a check-in needs at least one buddy (--buddy)")
        if len(chosen) > MAX_BUDDIES:
            raise UsageError(f"at most {MAX_BUDDIES} buddies")
        return self._put("checkins", {
            "title": _text(title, "title", 200, required=True), "buddies": " ".join(chosen),
            "every_ms": every_ms, "until_at": until_at, "started_at": now,
        })

    def checkin_ok(self, prefix: str) -> RecordId:
        me = self.board._require_member()
        c = self.checkin(prefix)
        if c.owner != me:
            raise ActionRefused("only the member who started a check-in can say they are ok")
        if c.state == CheckinState.ENDED:
            raise ActionRefused(f"check-in {c.id} has ended")
        return self._fact(c.id, FactKind.OK)

    def checkin_end(self, prefix: str) -> RecordId:
        me = self.board._require_member()
        c = self.checkin(prefix)
        if me != c.owner and me not in c.buddies:
            raise ActionRefused("only the member or their buddies can end a check-in")
        if c.state == CheckinState.ENDED:
            raise ActionRefused(f"check-in {c.id} has already ended")
        return self._fact(c.id, FactKind.END)

    def add_resource(self, title: str, details: str = "", kind: ResourceKind = ResourceKind.OTHER) -> RecordId:
        now = self.board.clock()
        return self._put("resources", {
            "title": _text(title, "title", 200, required=True), "details": _text(details, "details", MAX_DETAILS),
            "kind": ResourceKind(kind).value, "created_at": now, "updated_at": now, "removed_at": None,
        })

    def edit_resource(self, prefix: str, *, title: str | None = None, details: str | None = None,
                      kind: ResourceKind | None = None) -> RecordId:
        self.board._require_member()
        r = self.resource(prefix)
        fields: dict[str, Field] = {"updated_at": self.board.clock()}
        if title is not None:
            fields["title"] = _text(title, "title", 200, required=True)
        if details is not None:
            fields["details"] = _text(details, "details", MAX_DETAILS)
        if kind is not None:
            fields["kind"] = ResourceKind(kind).value
        with self.board.doc.edit() as ed:
            ed.update("resources", r.id, fields)
        self.board._commit()
        return r.id

    def remove_resource(self, prefix: str) -> RecordId:
        self.board._require_member()
        r = self.resource(prefix)
        with self.board.doc.edit() as ed:
            ed.update("resources", r.id, {"removed_at": self.board.clock()})
        self.board._commit()
        return r.id


def _actor(who: tuple[bytes, int] | None) -> bytes | None:
    return None if who is None else who[0]


def _ignore(f: Fact, why: str) -> Fact:
    return Fact(f.id, f.on, f.kind, f.at, f.note, f.writer, f.declared, f.verified, why)


def _text(value: str, what: str, limit: int, required: bool = False) -> str:
    text = " ".join(value.split()) if what != "details" else value.strip()
    if required and not text:
        raise UsageError(f"{what} must not be empty")
    if len(text) > limit:
        raise UsageError(f"{what} is longer than {limit} characters")
    return text
