"""Circle keys over time: founding, removal with rotation, adopting new epochs.

Rules (DESIGN §4 "Removal"):
- Each epoch's 32-byte key is random. The document holds only *grants*: the
  key sealed (X25519 sealed box) to each member's box key, bound to the
  circle id and epoch number so a grant cannot be replayed into another
  circle or epoch.
- A removal writes the member's `removed_at` and a new epoch with grants for
  every remaining active member, in one change.
- The current epoch is the highest number, ties to the smallest record id.
  After any remote change each device *reconciles*:
  1. opens every grant addressed to it that it does not hold yet;
  2. if the current epoch still grants a removed member (two removals made
     concurrently, each rotating only around its own target), it rotates
     again, to every active member. Concurrent re-rotations all grant the same
     set, so this settles after one round, on one key;
  3. if an active member lacks a grant in the current epoch (joined
     concurrently with a rotation) and this device holds that key, it adds
     the grant.
- A removed device keeps every key and byte it already had; it gets no grant
  for later epochs, fails every handshake (identity check against the
  document), and cannot open envelopes sealed under later epochs.
"""

from __future__ import annotations

import secrets
import struct
from typing import Protocol

from circle.crdt.board import Board
from circle.crdt.model import EpochRecord, Member, MemberId
from circle.errors import ActionRefused
from circle.net.keys import DeviceIdentity, EpochKey, key_check, new_epoch_key, seal_to, unseal
from circle.node.home import CircleConfig, Home


class CircleService(Protocol):
    """What membership needs of `service.CircleService` (a Protocol, so this
    module sits below the service that calls it)."""

    board: Board
    config: CircleConfig
    home: Home
    @property
    def me(self) -> MemberId: ...

    def adopt_epoch_key(self, number: int, key: EpochKey) -> None: ...
    def set_current_epoch(self, number: int) -> None: ...

_GRANT_MAGIC = b"circle-grant-v1"


def _grant_payload(circle_id: str, number: int, key: bytes) -> bytes:
    cid = circle_id.encode()
    return _GRANT_MAGIC + struct.pack(">B", len(cid)) + cid + struct.pack(">I", number) + key


def seal_grant(box_public: bytes, circle_id: str, number: int, key: EpochKey) -> bytes:
    return seal_to(box_public, _grant_payload(circle_id, number, key))


def open_grant(identity: DeviceIdentity, sealed: bytes, circle_id: str, number: int) -> EpochKey | None:
    """The epoch key in a grant addressed to us, or None if it is not ours or forged."""
    try:
        plain = unseal(identity, sealed)
    except Exception:
        return None
    expected_prefix = _grant_payload(circle_id, number, b"")
    if len(plain) != len(expected_prefix) + 32 or not plain.startswith(expected_prefix):
        return None
    return EpochKey(plain[len(expected_prefix):])


def grants_for(members: list[Member], circle_id: str, number: int, key: EpochKey) -> dict[MemberId, bytes]:
    return {m.id: seal_grant(m.box_key, circle_id, number, key) for m in members if m.active}


def found(svc: CircleService) -> None:
    """Epoch 0 of a new circle: the founder grants the key to itself."""
    key = svc.config.epoch_keys[0]
    svc.board.record_epoch(0, key_check(key), grants_for(svc.board.members(), svc.config.circle_id, 0, key))


def remove(svc: CircleService, prefix: str) -> tuple[Member, int]:
    """Remove a member and rotate to a new epoch in one change."""
    member = svc.board.remove_member(prefix)
    if member.id == svc.me:
        raise ActionRefused("you cannot remove yourself; ask another member, or delete this device's data")
    number = _next_number(svc)
    key = new_epoch_key()
    remaining = [m for m in svc.board.members() if m.active and m.id != member.id]
    # Remember the key before writing: if we crashed between the two, we'd
    # hold a key the document doesn't mention (harmless), never the reverse.
    svc.adopt_epoch_key(number, key)
    svc.board.record_epoch(number, key_check(key), grants_for(remaining, svc.config.circle_id, number, key),
                           removed=[member.id])
    reconcile(svc)
    return member, number


def _next_number(svc: CircleService) -> int:
    """Above every known epoch, by a random step: two members rotating at the
    same moment then almost never pick the same number (which the handshake
    uses to look up the key); if they do, `reconcile` rotates once more."""
    known = [e.number for e in svc.board.epochs()] + list(svc.config.epoch_keys)
    return max(known, default=0) + 1 + secrets.randbelow(1 << 16)


def reconcile(svc: CircleService) -> bool:
    """Adopt keys granted to us; repair the current epoch if needed. True if the current epoch changed."""
    board = svc.board
    me = svc.me
    cid = svc.config.circle_id
    epochs = board.epochs()
    for epoch in epochs:
        if me in epoch.grants and not holds_key(svc, epoch):
            key = open_grant(svc.home.identity, epoch.grants[me], cid, epoch.number)
            if key is not None and key_check(key) == epoch.check and epoch.number not in svc.config.epoch_keys:
                svc.adopt_epoch_key(epoch.number, key)
    current = board.current_epoch()
    if current is None:
        return False
    active = {m.id: m for m in board.members() if m.active}
    if me in active:
        collided = current.number in svc.config.epoch_keys and not holds_key(svc, current)
        if _grants_removed(current, active) or collided:
            number = _next_number(svc)
            key = new_epoch_key()
            svc.adopt_epoch_key(number, key)
            board.record_epoch(number, key_check(key), grants_for(list(active.values()), cid, number, key))
            current = board.current_epoch()
            assert current is not None
        elif holds_key(svc, current):
            for member_id in sorted(set(active) - set(current.grants)):
                board.add_grant(current.id, member_id, seal_grant(
                    active[member_id].box_key, cid, current.number, svc.config.epoch_keys[current.number]))
    before = svc.config.epoch
    if holds_key(svc, current):
        svc.set_current_epoch(current.number)
    return svc.config.epoch != before


def _grants_removed(epoch: EpochRecord, active: dict[MemberId, Member]) -> bool:
    return any(member_id not in active for member_id in epoch.grants)


def holds_key(svc: CircleService, epoch: EpochRecord) -> bool:
    key = svc.config.epoch_keys.get(epoch.number)
    return key is not None and key_check(key) == epoch.check


def generation(svc: CircleService) -> int:
    """How many key generations the circle has had up to the current one (1 =
    the founding key). Epoch numbers grow by random steps, so this is what to
    show people."""
    current = svc.config.epoch
    return len({e.number for e in svc.board.epochs() if e.number <= current}) or 1
