"""Builders for tests: a controllable clock, boards, replicas of one circle."""

from __future__ import annotations

from circle.crdt.am import AmDoc
from circle.crdt.board import Board, Profile
from circle.crdt.model import DAY_MS, MemberId
from circle.net.keys import DeviceIdentity

T0 = 1_800_000_000_000  # a fixed instant (2027-01-15) so tests never depend on today


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int = 1) -> None:
        self.now += ms

    def advance_days(self, days: float) -> None:
        self.now += int(days * DAY_MS)


def profile(identity: DeviceIdentity, handle: str) -> Profile:
    return Profile(handle, identity.verify_key, identity.box_public, "north")


def make_board(clock: Clock, handle: str = "sam") -> Board:
    ident = DeviceIdentity.generate()
    doc = Board.create_document("Eastside", "testcircle01", ident.member_id, profile(ident, handle), clock())
    return Board(doc, ident.member_id, clock)


def add_member(founder: Board, handle: str) -> MemberId:
    ident = DeviceIdentity.generate()
    founder.add_member(ident.member_id, profile(ident, handle), founder.me)
    return ident.member_id


def replica(of: Board, me: MemberId) -> Board:
    """Another device's copy of the same circle (acting as member `me`)."""
    return Board(AmDoc.load(of.doc.save()), me, of.clock)


def exchange(a: Board, b: Board) -> None:
    """Sync two replicas both ways (every change; applying is idempotent)."""
    to_b, to_a = a.doc.changes_since([]), b.doc.changes_since([])
    b.doc.apply_changes(to_b)
    a.doc.apply_changes(to_a)
    a.invalidate()
    b.invalidate()
