"""Membership actions on this device: found, add, remove, leave, rotate, grant.

The rules that decide who is in are in `circle.net.membership_rules` (a pure
function of the signed statements); this module only *writes* statements
signed by this device and keeps this device's epoch keys in step:

- A removal (or leaving) and the new epoch that excludes the removed devices
  are written in ONE document change, so no device sees one without the other.
  Leaving writes only the removal: the leaver must not choose the next key;
  the others' `reconcile` rotates.
- `reconcile` runs after every change from outside. It adopts keys granted to
  this device (checked against the epoch's key commitment, bound to member,
  circle and epoch number); it rotates when no epoch qualifies (e.g. after a
  leave, or after two concurrent removals each granted the other's target);
  and it grants the current key to active devices that lack it (joiners).
- Keys are validated (number range, commitment) and saved *before* any
  statement that depends on them is written; an error while reconciling
  leaves at most an extra key on disk, never a half-rotated device.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable
from typing import Protocol

from circle.crdt.board import Board
from circle.crdt.model import Member, MemberId, Millis
from circle.errors import ActionRefused
from circle.net.keys import (
    DeviceIdentity,
    EpochKey,
    key_check,
    member_id_for,
    new_epoch_key,
    seal_to,
    unseal,
)
from circle.net.membership_rules import EpochInfo, MemberInfo, Membership, derive
from circle.net.statements import MAX_EPOCH_NUMBER, Kind, Statement, device_cert_message, sign
from circle.node.home import CircleConfig, Home

_GRANT_MAGIC = b"circle-grant-v2"


class CircleService(Protocol):
    """What membership needs of `service.CircleService` (a Protocol, so this
    module sits below the service that calls it)."""

    board: Board
    config: CircleConfig
    home: Home

    @property
    def me(self) -> MemberId: ...
    @property
    def member_key(self) -> bytes: ...
    def membership(self) -> Membership: ...
    def actor_clock(self, actors: Iterable[bytes]) -> dict[bytes, int]: ...
    def adopt_epoch_key(self, number: int, key: EpochKey) -> None: ...
    def set_current_epoch(self, number: int) -> None: ...
    def clock(self) -> Millis: ...


# --- grants -----------------------------------------------------------------


def _grant_payload(circle_id: str, member: MemberId, number: int, key: bytes) -> bytes:
    cid, mid = circle_id.encode(), str(member).encode()
    return (_GRANT_MAGIC + struct.pack(">B", len(cid)) + cid + struct.pack(">B", len(mid)) + mid
            + struct.pack(">I", number) + key)


def seal_grant(box_public: bytes, circle_id: str, member: MemberId, number: int, key: EpochKey) -> bytes:
    return seal_to(box_public, _grant_payload(circle_id, member, number, key))


def open_grant(identity: DeviceIdentity, sealed: bytes, circle_id: str, member: MemberId,
               number: int) -> EpochKey | None:
    """The epoch key in a grant addressed to us, or None if not ours or forged."""
    try:
        plain = unseal(identity, sealed)
    except Exception:
        return None
    prefix = _grant_payload(circle_id, member, number, b"")
    if len(plain) != len(prefix) + 32 or not plain.startswith(prefix):
        return None
    return EpochKey(plain[len(prefix):])


def _new_number(m: Membership, held: Iterable[int]) -> int:
    """A fresh epoch number: above every known one by a random step (two
    concurrent rotations then almost never collide; if they do, the later one
    in the walk is ignored and reconcile rotates again)."""
    top = max([e.number for e in m.epochs] + list(held), default=0)
    number = top + 1 + secrets.randbelow(1 << 12)
    if number > MAX_EPOCH_NUMBER:  # checked before any key is saved
        raise ActionRefused("the circle has run out of epoch numbers")
    return number


# --- statements -----------------------------------------------------------------


def _statement(svc: CircleService, kind: Kind, deps: list[bytes], **body: object) -> Statement:
    identity = svc.home.identity
    s = Statement(kind, svc.config.circle_id, identity.verify_key, svc.member_key, int(svc.clock()),
                  tuple(deps), **body)  # type: ignore[arg-type]
    return sign(identity, s)


def _write(svc: CircleService, statements: list[Statement]) -> None:
    svc.board.add_statements([(s.id.hex(), s.raw) for s in statements])


def founding_statements(identity: DeviceIdentity, handle: str, zone: str, at: int) -> Statement:
    """The genesis statement; its fingerprint is the circle id."""
    vk = identity.verify_key
    return sign(identity, Statement(Kind.FOUND, "", vk, vk, at, (), subject=vk, box=identity.box_public,
                                    handle=handle, zone=zone))


def founding_epoch(identity: DeviceIdentity, circle_id: str, found: Statement, key: EpochKey,
                   number: int) -> Statement:
    vk = identity.verify_key
    grant = seal_grant(identity.box_public, circle_id, member_id_for(vk), number, key)
    return sign(identity, Statement(Kind.EPOCH, circle_id, vk, vk, found.at, (found.id,), number=number,
                                    check=key_check(key), grants=((vk, grant),)))


def _epoch(svc: CircleService, m: Membership, deps: list[bytes], exclude: set[bytes]) -> Statement:
    """A new epoch granting every active device except `exclude` (keys saved first)."""
    number = _new_number(m, svc.config.epoch_keys)
    key = new_epoch_key()
    svc.adopt_epoch_key(number, key)  # durable before the document mentions it
    grants = tuple(
        (d.key, seal_grant(d.box, svc.config.circle_id, member_id_for(d.member), number, key))
        for d in sorted(m.active_devices(), key=lambda d: d.key) if d.key not in exclude
        and d.member not in exclude
    )
    return _statement(svc, Kind.EPOCH, deps, number=number, check=key_check(key), grants=grants)


def add_member(svc: CircleService, member_key: bytes, box: bytes, handle: str, zone: str) -> None:
    """An invite accepted: the new member, and the current key granted to it, in one change."""
    m = svc.membership()
    me = m.members.get(svc.member_key)
    if me is None or not me.active:
        raise ActionRefused("only an active member can add members")
    existing = m.members.get(member_key)
    if existing is not None:
        raise ActionRefused("this device is (or was) already a member of the circle; "
                            "a removed member comes back with a new identity")
    current = m.current
    if current is None or current.number not in svc.config.epoch_keys:
        raise ActionRefused("this device is not up to date with the circle's keys; try again after it syncs")
    add = _statement(svc, Kind.ADD_MEMBER, m.heads, subject=member_key, box=box, handle=handle, zone=zone)
    sealed = seal_grant(box, svc.config.circle_id, member_id_for(member_key), current.number,
                        svc.config.epoch_keys[current.number])
    grant = _statement(svc, Kind.GRANT, [add.id], epoch=current.id, number=current.number,
                       grants=((member_key, sealed),))
    _write(svc, [add, grant])


def link_device(svc: CircleService, device_key: bytes, box: bytes) -> None:
    """Certify another device of this member (needs the member key: only the
    member's first device holds it) and grant it the current key, in one change."""
    m = svc.membership()
    me = m.members.get(svc.member_key)
    if me is None or not me.active:
        raise ActionRefused("only an active member can link a device")
    if svc.member_key != svc.home.identity.verify_key:
        raise ActionRefused("link new devices from your first device (it holds your member key)")
    if device_key in m.devices:
        raise ActionRefused("that device is (or was) already part of this circle")
    current = m.current
    if current is None or current.number not in svc.config.epoch_keys:
        raise ActionRefused("this device is not up to date with the circle's keys; try again after it syncs")
    cert = svc.home.identity.sign(device_cert_message(svc.config.circle_id, device_key, box))
    add = _statement(svc, Kind.ADD_DEVICE, m.heads, subject=device_key, box=box, cert=cert)
    sealed = seal_grant(box, svc.config.circle_id, member_id_for(svc.member_key), current.number,
                        svc.config.epoch_keys[current.number])
    grant = _statement(svc, Kind.GRANT, [add.id], epoch=current.id, number=current.number,
                       grants=((device_key, sealed),))
    _write(svc, [add, grant])


def _target(m: Membership, prefix: str) -> MemberInfo:
    p = prefix.strip().lower()
    hits = [x for x in m.members.values() if x.handle.lower() == p] or \
        [x for x in m.members.values() if str(x.id).startswith(p)]
    if not hits:
        raise ActionRefused(f"no member '{prefix}'")
    if len(hits) > 1:
        raise ActionRefused(f"'{prefix}' matches several members; use more of the id")
    return hits[0]


def remove(svc: CircleService, prefix: str) -> tuple[Member, int]:
    """Remove a member: the signed removal and a new epoch without it, as one change."""
    m = svc.membership()
    me = m.members.get(svc.member_key)
    if me is None or not me.active:
        raise ActionRefused("only an active member can remove members")
    target = _target(m, prefix)
    if target.key == svc.member_key:
        raise ActionRefused("to remove yourself, use `circle leave`")
    if not target.active:
        raise ActionRefused(f"{target.handle} was already removed")
    actors = [m.devices[k].actor for k in target.devices if k in m.devices]
    seen = tuple(sorted(svc.actor_clock(actors).items()))
    removal = _statement(svc, Kind.REMOVE, m.heads, subject=target.key, seen=seen)
    epoch = _epoch(svc, m, [removal.id], set(target.devices) | {target.key})
    _write(svc, [removal, epoch])
    reconcile(svc)
    return to_member(target, m), epoch.number


def remove_device(svc: CircleService, device_key: bytes) -> int:
    """Revoke one device (a lost or seized laptop): a rotation, like removing a member."""
    m = svc.membership()
    d = m.active_device(device_key)
    if d is None:
        raise ActionRefused("no such active device")
    seen = tuple(sorted(svc.actor_clock([d.actor]).items()))
    removal = _statement(svc, Kind.REMOVE, m.heads, subject=device_key, seen=seen)
    epoch = _epoch(svc, m, [removal.id], {device_key})
    _write(svc, [removal, epoch])
    reconcile(svc)
    return epoch.number


def leave(svc: CircleService) -> None:
    """Remove oneself. The others rotate (the leaver must not pick the next key)."""
    m = svc.membership()
    me = m.members.get(svc.member_key)
    if me is None or not me.active:
        raise ActionRefused("you are not an active member of this circle")
    actors = [m.devices[k].actor for k in me.devices if k in m.devices]
    seen = tuple(sorted(svc.actor_clock(actors).items()))
    _write(svc, [_statement(svc, Kind.REMOVE, m.heads, subject=svc.member_key, seen=seen)])


def set_profile(svc: CircleService, handle: str, zone: str) -> None:
    m = svc.membership()
    _write(svc, [_statement(svc, Kind.PROFILE, m.heads, handle=handle, zone=zone)])


def holds_key(svc: CircleService, epoch: EpochInfo) -> bool:
    key = svc.config.epoch_keys.get(epoch.number)
    return key is not None and key_check(key) == epoch.check


def reconcile(svc: CircleService) -> bool:
    """Adopt granted keys; rotate or grant if needed. True if the current epoch changed."""
    m = svc.membership()
    identity = svc.home.identity
    me_dev = identity.verify_key
    me_id = member_id_for(svc.member_key)  # grants are bound to the member, sealed to the device
    for epoch in m.epochs:
        sealed = epoch.grants.get(me_dev)
        if sealed is not None and not holds_key(svc, epoch):
            key = open_grant(identity, sealed, svc.config.circle_id, me_id, epoch.number)
            if key is not None and key_check(key) == epoch.check and epoch.number not in svc.config.epoch_keys:
                svc.adopt_epoch_key(epoch.number, key)
    if m.active_device(me_dev) is not None:
        if m.current is None:
            _write(svc, [_epoch(svc, m, m.heads, set())])
            m = svc.membership()
        elif holds_key(svc, m.current) and m.missing_grants:
            cur = m.current
            key = svc.config.epoch_keys[cur.number]
            grants = []
            for dev_key in m.missing_grants:
                d = m.devices[dev_key]
                sealed = seal_grant(d.box, svc.config.circle_id, member_id_for(d.member), cur.number, key)
                grants.append(_statement(svc, Kind.GRANT, m.heads, epoch=cur.id, number=cur.number,
                                         grants=((dev_key, sealed),)))
            _write(svc, grants)
            m = svc.membership()
    before = svc.config.epoch
    if m.current is not None and holds_key(svc, m.current):
        svc.set_current_epoch(m.current.number)
    return svc.config.epoch != before


def generation(svc: CircleService) -> int:
    """Key generations up to the current one (1 = the founding key): what to show people."""
    m = svc.membership()
    if m.current is None:
        return max(1, len(m.epochs))
    return sum(1 for e in m.epochs if e.order <= m.current.order) or 1


def to_member(info: MemberInfo, m: Membership) -> Member:
    """The crdt layer's Member for a derived member (box key of its first device)."""
    first = m.devices.get(info.devices[0]) if info.devices else None
    removed_by = member_id_for(info.removed_by) if info.removed_by else None
    return Member(info.id, info.handle, info.key, first.box if first else b"", info.zone,
                  Millis(info.joined_at), member_id_for(info.invited_by) if info.invited_by else None,
                  Millis(info.removed_at) if info.removed_at is not None else None, removed_by)


def members_of(m: Membership) -> dict[MemberId, Member]:
    return {info.id: to_member(info, m) for info in m.members.values()}


def derive_for(board: Board, circle_id: str) -> Membership:
    return derive(board.statement_blobs(), circle_id)


__all__ = ["add_member", "link_device", "derive_for", "founding_epoch", "founding_statements", "generation", "holds_key",
           "leave", "members_of", "open_grant", "reconcile", "remove", "remove_device", "seal_grant",
           "set_profile", "to_member"]
