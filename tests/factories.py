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


def member_homes(tmp, handles: list[str], passphrase: str | None = None):  # type: ignore[no-untyped-def]
    """Real homes on disk for several members of one circle, as if each had
    joined by invite: the founder admits each member (with a grant of the
    epoch key) and the new device starts from the founder's saved document.

    Returns the list of home paths (founder first). Test-only shortcut for
    the invite flow, so sync tests need not depend on invites."""
    from pathlib import Path

    from circle.crdt.am import AmDoc
    from circle.crdt.board import Profile
    from circle.node import membership
    from circle.node.home import Home
    from circle.node.service import CircleService

    tmp = Path(tmp)
    founder_home = Home.create(tmp / handles[0], passphrase)
    founder = CircleService.create(founder_home, "Eastside", handles[0])
    paths = [founder_home.path]
    joiners = []
    for handle in handles[1:]:
        home = Home.create(tmp / handle, passphrase)
        ident = home.identity
        epoch = founder.board.current_epoch()
        assert epoch is not None
        sealed = membership.seal_grant(ident.box_public, founder.config.circle_id, epoch.number,
                                       founder.config.epoch_key)
        founder.board.add_member(ident.member_id, Profile(handle, ident.verify_key, ident.box_public, ""),
                                 founder.me, grant=(epoch.id, sealed))
        joiners.append(home)
        paths.append(home.path)
    for home in joiners:
        CircleService.create_from_doc(home, founder.config.circle_id, "Eastside",
                                      AmDoc.load(founder.doc.save()), founder.keyring(), founder.config.epoch)
    return paths
