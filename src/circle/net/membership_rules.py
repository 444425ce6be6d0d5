"""Who is in the circle, derived from signed statements only (a pure function).

Every device runs `derive()` over the same set of statement blobs (a grow-only
set inside the document), so every device that holds the same statements
reaches the same membership and the same current epoch, whatever order they
arrived in. Nothing here trusts a field anyone can overwrite.

Rules
-----
1. Anchor. The circle id is the fingerprint of its FOUND statement
   (`circle_id_for`): a FOUND whose fingerprint is not this circle's id is
   ignored, so nobody can "re-found" a circle. Every other statement must name
   this circle and descend (through `deps`) from the FOUND.
2. Order. Statements are walked in one deterministic order: parents before
   children (deps), concurrent ones by id. Clocks (`at`) are shown, never used
   to order or decide anything.
3. Authority. A statement counts only if, at its place in the walk, its
   signing device is an active device of an active member (`member` field),
   and the kind allows it:
   - FOUND: only the anchor.
   - ADD_MEMBER: by any active member. Re-adding a removed member key is
     refused: removal is final; coming back takes a new identity and a new
     invite by another member.
   - ADD_DEVICE: by a device of the same member, carrying the member key's
     signature over the new device and its box key.
   - REMOVE: by any active member, of a member (all of its devices) or of one
     device; removing oneself is leaving.
   - PROFILE: a member's own handle and zone (later in the walk wins).
   - EPOCH: a number in 1..2^31-1 not used before (checked before any key is
     saved); grants may only name devices active at that point.
   - GRANT: one more active device for an existing epoch, same number.
4. Removal is pinned (as in Keyhive). A removal R of member or device X lists
   what its author had seen. Any statement by X that is not an ancestor of R
   is ignored — however it was dated or whatever deps it claims — so a removed
   member cannot add, remove, rotate or grant through a straggler that has not
   heard of R yet. Exception, *concurrent mutual removal*: if X concurrently
   removed R's author, both removals stand (both are out; neither can undo the
   other). The pinned rule needs the final set of removals, which itself
   depends on which statements count: the walk is repeated with the removals
   of the previous walk until it is stable (at most `MAX_PASSES`; in practice
   two or three).
5. Current epoch. The latest epoch in walk order that grants no device which
   is removed. Active devices it does not grant yet are listed in
   `missing_grants` (a holder of the key adds GRANTs; see node/membership.py).
   If none qualifies (e.g. two concurrent removals each granted the other's
   target), `current` is None and any active member writes a new epoch.
6. Edits by removed writers. A removal records, per actor of the removed
   devices, the last op its author had seen; document values those actors
   wrote later (or by an actor the remover never saw) do not count
   (`Membership.counts`), wherever they came from.
7. Everything ignored is reported with its author and a reason, for `circle
   status`: "1 membership change by rex ignored: rex was removed before it".
8. Void devices. A device added by a member *after* that member's removal
   (its ADD is ignored by rule 4) may still have written changes that a
   straggler took while it believed the addition. Such changes are accepted
   when their signature verifies under the added key (`void_devices`), and
   nothing they write counts (rule 6 with nothing seen). Refusing them would
   make every replica that knew of the removal first refuse every later batch
   from the others: the circle would split for good.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.encoding
import nacl.hash

from circle.crdt.model import MemberId
from circle.errors import RemoteProtocolError
from circle.net.keys import _b32, member_id_for, verify_signature
from circle.net.statements import Kind, Statement, decode, device_cert_message

MAX_PASSES = 6
MAX_STATEMENTS = 20_000


def circle_id_for(found_id: bytes) -> str:
    return _b32(found_id, 12)


def actor_for(circle: str, device: bytes) -> bytes:
    """The Automerge actor id a device writes with in one circle (16 bytes).
    Per circle, so one device's actors in two circles don't match."""
    return nacl.hash.blake2b(circle.encode() + device, digest_size=16, person=b"circle/actor",
                             encoder=nacl.encoding.RawEncoder)


@dataclass
class DeviceInfo:
    key: bytes
    member: bytes
    box: bytes
    actor: bytes
    added_at: int
    removed_at: int | None = None
    removed_by: bytes | None = None  # member key
    removed_in: int | None = None  # walk index of the removal statement
    #: After a removal: the last op of each of this device's actors (processes)
    #: that the remover had seen; later ops by them are ignored (rule 6).
    seen: dict[bytes, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass
class MemberInfo:
    key: bytes
    handle: str
    zone: str
    joined_at: int
    invited_by: bytes | None
    devices: list[bytes] = field(default_factory=list)
    removed_at: int | None = None
    removed_by: bytes | None = None
    removed_in: int | None = None
    left: bool = False

    @property
    def id(self) -> MemberId:
        return member_id_for(self.key)

    @property
    def active(self) -> bool:
        return self.removed_at is None


@dataclass
class EpochInfo:
    id: bytes
    number: int
    check: bytes
    author: bytes  # member key
    order: int
    grants: dict[bytes, bytes] = field(default_factory=dict)  # device key -> sealed key


@dataclass(frozen=True)
class Ignored:
    statement: bytes
    author: bytes  # member key ("" if unreadable)
    kind: str
    reason: str


@dataclass
class Membership:
    circle: str
    members: dict[bytes, MemberInfo] = field(default_factory=dict)
    devices: dict[bytes, DeviceInfo] = field(default_factory=dict)
    epochs: list[EpochInfo] = field(default_factory=list)
    current: EpochInfo | None = None
    missing_grants: list[bytes] = field(default_factory=list)  # active devices the current epoch lacks
    ignored: list[Ignored] = field(default_factory=list)
    waiting: int = 0  # statements whose deps have not arrived yet
    heads: list[bytes] = field(default_factory=list)  # deps for the next statement
    accepted: set[bytes] = field(default_factory=set)
    #: Devices named by an authentic ADD_MEMBER/ADD_DEVICE that is ignored
    #: because its author had been removed (rule 8): their changes are
    #: accepted (signature checked against this key) but nothing they write counts.
    void_devices: dict[bytes, DeviceInfo] = field(default_factory=dict)

    def member(self, member_id: str) -> MemberInfo | None:
        for m in self.members.values():
            if m.id == member_id:
                return m
        return None

    def active_device(self, key: bytes) -> DeviceInfo | None:
        d = self.devices.get(key)
        if d is None or not d.active:
            return None
        m = self.members.get(d.member)
        return d if m is not None and m.active else None

    def device_by_actor(self, actor: bytes) -> DeviceInfo | None:
        for d in self.devices.values():
            if d.actor == actor:
                return d
        return self.void_devices.get(actor)

    def counts(self, actor: bytes, op: int) -> bool:
        """Whether a document value written by `actor` as op `op` counts (rule 6)."""
        d = self.device_by_actor(actor[:16])
        if d is None:
            return False
        if self.active_device(d.key) is not None:
            return True
        return op <= d.seen.get(actor, 0)

    def active_devices(self) -> list[DeviceInfo]:
        return [d for d in self.devices.values() if self.active_device(d.key) is not None]


def _name(m: Membership, member: bytes) -> str:
    info = m.members.get(member)
    return info.handle if info and info.handle else member_id_for(member) if len(member) == 32 else "?"


_DECODED: dict[bytes, Statement | str] = {}
_DECODED_MAX = 100_000


def _decode_cached(raw: bytes) -> Statement:
    """decode() with its signature check done once per distinct blob."""
    got = _DECODED.get(raw)
    if got is None:
        try:
            got = decode(raw)
        except RemoteProtocolError as exc:
            got = exc.message
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[raw] = got
    if isinstance(got, str):
        raise RemoteProtocolError(got)
    return got


def derive(blobs: Iterable[bytes], circle: str) -> Membership:
    """Membership of `circle` from statement blobs (bad ones are reported, never raised)."""
    ignored: list[Ignored] = []
    stmts: dict[bytes, Statement] = {}
    for raw in list(blobs)[:MAX_STATEMENTS]:
        try:
            s = _decode_cached(raw)
        except RemoteProtocolError as exc:
            ignored.append(Ignored(b"", b"", "unreadable", exc.message))
            continue
        stmts[s.id] = s
    found = [s for s in stmts.values() if s.kind is Kind.FOUND and circle_id_for(s.id) == circle]
    genesis = found[0] if found else None
    # Kahn's walk: parents first, ties by id. Statements whose deps are missing wait.
    ready: list[bytes] = []
    children: dict[bytes, list[bytes]] = {}
    missing: dict[bytes, int] = {}
    for sid, s in stmts.items():
        if s is not genesis and s.kind is Kind.FOUND:
            ignored.append(Ignored(sid, s.member, s.kind.name, "a second founding statement"))
            continue
        if s is not genesis and (s.circle != circle or not s.deps):
            ignored.append(Ignored(sid, s.member, s.kind.name, "not part of this circle's history"))
            continue
        missing[sid] = len(s.deps)
        for d in s.deps:
            children.setdefault(d, []).append(sid)
        if not s.deps:
            heapq.heappush(ready, sid)
    order: list[Statement] = []
    while ready:
        sid = heapq.heappop(ready)
        order.append(stmts[sid])
        for child in children.get(sid, ()):
            if child in missing:
                missing[child] -= 1
                if missing[child] == 0:
                    heapq.heappush(ready, child)
    index = {s.id: i for i, s in enumerate(order)}
    anc: list[int] = []
    for s in order:
        bits = 0
        for d in s.deps:
            i = index[d]
            bits |= anc[i] | (1 << i)
        anc.append(bits)
    pins: dict[bytes, list[int]] = {}
    result = Membership(circle)
    for _ in range(MAX_PASSES):
        result = _walk(order, anc, pins, genesis, circle)
        new_pins: dict[bytes, list[int]] = {}
        for i, s in enumerate(order):
            if s.kind is Kind.REMOVE and s.id in result.accepted:
                new_pins.setdefault(s.subject, []).append(i)
        if new_pins == pins:
            break
        pins = new_pins
    result.ignored = ignored + result.ignored
    result.waiting = sum(1 for sid in missing if sid not in index)
    accepted_ids = [s.id for s in order if s.id in result.accepted]
    has_child = {d for s in order if s.id in result.accepted for d in s.deps}
    result.heads = sorted(sid for sid in accepted_ids if sid not in has_child)
    return result


def _walk(order: list[Statement], anc: list[int], pins: dict[bytes, list[int]],
          genesis: Statement | None, circle: str) -> Membership:
    m = Membership(circle)
    for i, s in enumerate(order):
        reason = _reason(m, s, i, order, anc, pins, genesis)
        if reason is not None:
            m.ignored.append(Ignored(s.id, s.member, s.kind.name, reason))
            _note_void(m, s, reason)
            continue
        _apply(m, s, i)
        m.accepted.add(s.id)
    _finish(m)
    return m


def _note_void(m: Membership, s: Statement, reason: str) -> None:
    """Rule 8: a device added by a member after its removal (a straggler saw
    the addition first) writes changes that some replicas already hold.
    Refusing them would split the circle for good (one replica refuses every
    batch that holds them); they are taken, and count for nothing."""
    if s.kind not in (Kind.ADD_MEMBER, Kind.ADD_DEVICE) or "was removed" not in reason:
        return
    if s.member not in m.members or s.subject in m.devices:
        return  # only additions by a real (now removed) member, of a key no member holds
    actor = actor_for(m.circle, s.subject)
    m.void_devices.setdefault(actor, DeviceInfo(s.subject, s.subject if s.kind is Kind.ADD_MEMBER else s.member,
                                                s.box, actor, s.at, removed_at=s.at, removed_by=s.member))


def _pinned_out(s: Statement, i: int, order: list[Statement], anc: list[int],
                pins: dict[bytes, list[int]]) -> Statement | None:
    """The removal that makes `s` come too late, if any (rule 4)."""
    for target in (s.member, s.device):
        for r in pins.get(target, ()):
            if r == i or (anc[r] >> i) & 1:
                continue  # s is the removal itself, or the remover had seen it
            removal = order[r]
            if not _mutual(s, i, removal, r, anc):
                return removal
    return None


def _mutual(s: Statement, i: int, removal: Statement, r: int, anc: list[int]) -> bool:
    """`s` removes the author of `removal`, and neither had seen the other."""
    return (s.kind is Kind.REMOVE and s.subject in (removal.member, removal.device)
            and not (anc[i] >> r) & 1 and not (anc[r] >> i) & 1)


def _reason(m: Membership, s: Statement, i: int, order: list[Statement], anc: list[int],
            pins: dict[bytes, list[int]], genesis: Statement | None) -> str | None:
    if s.kind is Kind.FOUND:
        return None if s is genesis and s.device == s.member == s.subject else "not this circle's founding"
    author = m.members.get(s.member)
    device = m.devices.get(s.device)
    if author is None or device is None or device.member != s.member:
        return "its author is not a member of this circle"
    if not author.active or not device.active:
        r = author.removed_in if not author.active else device.removed_in
        if not (r is not None and _mutual(s, i, order[r], r, anc)):
            by = f" by {_name(m, order[r].member)}" if r is not None else ""
            return f"{author.handle} was removed{by} before it"
    late = _pinned_out(s, i, order, anc, pins)
    if late is not None:
        return f"{author.handle} was removed by {_name(m, late.member)} before it"
    if s.kind is Kind.ADD_MEMBER:
        existing = m.members.get(s.subject)
        if existing is not None and not existing.active:
            return f"{existing.handle} was removed; coming back takes a new identity"
        if s.subject in m.devices and existing is None:
            return "that key is already a device of another member"
        return None
    if s.kind is Kind.ADD_DEVICE:
        if s.subject in m.devices:
            return None if m.devices[s.subject].member == s.member else "that device belongs to another member"
        cert = device_cert_message(m.circle, s.subject, s.box)
        return None if verify_signature(s.member, cert, s.cert) else "the device certificate does not verify"
    if s.kind is Kind.REMOVE:
        if s.subject in m.members or s.subject in m.devices:
            return None
        return "it removes someone who is not a member"
    if s.kind is Kind.PROFILE:
        return None
    if s.kind is Kind.EPOCH:
        if any(e.number == s.number for e in m.epochs):
            return f"epoch number {s.number} is already used"
        for dev, _sealed in s.grants:
            if m.active_device(dev) is None:
                return "it grants the key to a device that is not active"
        return None
    if s.kind is Kind.GRANT:
        epoch = next((e for e in m.epochs if e.id == s.epoch), None)
        if epoch is None or epoch.number != s.number:
            return "it grants a key of an unknown epoch"
        if m.active_device(s.grants[0][0]) is None:
            return "it grants the key to a device that is not active"
        return None
    return "unknown statement kind"


def _apply(m: Membership, s: Statement, i: int) -> None:
    k = s.kind
    if k in (Kind.FOUND, Kind.ADD_MEMBER):
        if s.subject in m.members:
            return
        m.members[s.subject] = MemberInfo(s.subject, s.handle, s.zone, s.at,
                                          None if k is Kind.FOUND else s.member, [s.subject])
        m.devices[s.subject] = DeviceInfo(s.subject, s.subject, s.box, actor_for(m.circle, s.subject), s.at)
    elif k is Kind.ADD_DEVICE:
        if s.subject in m.devices:
            return
        m.devices[s.subject] = DeviceInfo(s.subject, s.member, s.box, actor_for(m.circle, s.subject), s.at)
        m.members[s.member].devices.append(s.subject)
    elif k is Kind.REMOVE:
        seen = dict(s.seen)
        target = m.members.get(s.subject)
        keys = target.devices if target is not None else [s.subject]
        if target is not None and target.active:
            target.removed_at, target.removed_by, target.removed_in = s.at, s.member, i
            target.left = s.subject == s.member
        for key in keys:
            d = m.devices.get(key)
            if d is not None and d.active:
                d.removed_at, d.removed_by, d.removed_in = s.at, s.member, i
                d.seen = {a: op for a, op in seen.items() if a[:16] == d.actor}
        owner = m.members.get(m.devices[s.subject].member) if s.subject in m.devices else None
        if owner is not None and owner.active and not any(m.devices[k].active for k in owner.devices):
            owner.removed_at, owner.removed_by, owner.removed_in = s.at, s.member, i  # its last device is gone
    elif k is Kind.PROFILE:
        info = m.members[s.member]
        info.handle, info.zone = s.handle, s.zone
    elif k is Kind.EPOCH:
        m.epochs.append(EpochInfo(s.id, s.number, s.check, s.member, i, dict(s.grants)))
    elif k is Kind.GRANT:
        epoch = next(e for e in m.epochs if e.id == s.epoch)
        dev, sealed = s.grants[0]
        epoch.grants.setdefault(dev, sealed)


def _finish(m: Membership) -> None:
    # A key a void addition named and a valid one added later is that member's device.
    m.void_devices = {a: d for a, d in m.void_devices.items() if d.key not in m.devices}
    removed = {d.key for d in m.devices.values() if m.active_device(d.key) is None}
    eligible = [e for e in m.epochs if not (set(e.grants) & removed)]
    m.current = max(eligible, key=lambda e: e.order) if eligible else None
    if m.current is not None:
        m.missing_grants = sorted(d.key for d in m.active_devices() if d.key not in m.current.grants)


__all__ = ["DeviceInfo", "EpochInfo", "Ignored", "MemberInfo", "Membership", "actor_for",
           "circle_id_for", "derive"]
