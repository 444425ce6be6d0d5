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


# Boards built here carry real signed statements (the trust layer's pure
# rules decide membership), without a service, a home or keys on disk.
_IDENTITIES: dict[MemberId, DeviceIdentity] = {}


def _wire(board: Board, circle_id: str) -> Board:
    from circle.net.membership_rules import derive
    from circle.node.membership import members_of

    cache: dict[tuple[str, ...], dict[MemberId, object]] = {}

    def source():  # type: ignore[no-untyped-def]
        ids = tuple(sorted(board.statement_ids()))
        if ids not in cache:
            cache.clear()
            cache[ids] = members_of(derive(board.statement_blobs(), circle_id))  # type: ignore[assignment]
        return cache[ids]

    board.members_source = source  # type: ignore[assignment]
    board._test_circle = circle_id  # type: ignore[attr-defined]
    return board


def make_board(clock: Clock, handle: str = "sam") -> Board:
    from circle.net.membership_rules import actor_for, circle_id_for
    from circle.node.membership import founding_statements

    ident = DeviceIdentity.generate()
    found = founding_statements(ident, handle, "north", clock())
    circle_id = circle_id_for(found.id)
    doc = Board.create_document("Eastside", circle_id, clock(), [(found.id.hex(), found.raw)],
                                actor_for(circle_id, ident.verify_key) + bytes(8))
    _IDENTITIES[ident.member_id] = ident
    return _wire(Board(doc, ident.member_id, clock), circle_id)


def add_member(founder: Board, handle: str) -> MemberId:
    from circle.net.membership_rules import derive
    from circle.net.statements import Kind, Statement, sign

    ident = DeviceIdentity.generate()
    me = _IDENTITIES[founder.me]  # type: ignore[index]
    circle_id = founder._test_circle  # type: ignore[attr-defined]
    heads = derive(founder.statement_blobs(), circle_id).heads
    st = sign(me, Statement(Kind.ADD_MEMBER, circle_id, me.verify_key, me.verify_key, founder.clock(),
                            tuple(heads), subject=ident.verify_key, box=ident.box_public, handle=handle,
                            zone="north"))
    founder.add_statements([(st.id.hex(), st.raw)])
    _IDENTITIES[ident.member_id] = ident
    return ident.member_id


def remove_member(by: Board, member_id: MemberId) -> None:
    """`by` signs the removal of `member_id` (no keys here: that is the service's part)."""
    from circle.net.membership_rules import derive
    from circle.net.statements import Kind, Statement, sign

    me = _IDENTITIES[by.me]  # type: ignore[index]
    circle_id = by._test_circle  # type: ignore[attr-defined]
    heads = derive(by.statement_blobs(), circle_id).heads
    st = sign(me, Statement(Kind.REMOVE, circle_id, me.verify_key, me.verify_key, by.clock(), tuple(heads),
                            subject=_IDENTITIES[member_id].verify_key))
    by.add_statements([(st.id.hex(), st.raw)])


def replica(of: Board, me: MemberId) -> Board:
    """Another device's copy of the same circle (acting as member `me`)."""
    return _wire(Board(AmDoc.load(of.doc.save()), me, of.clock), of._test_circle)  # type: ignore[attr-defined]


def exchange(a: Board, b: Board) -> None:
    """Sync two replicas both ways (every change; applying is idempotent)."""
    to_b, to_a = a.doc.changes_since([]), b.doc.changes_since([])
    b.doc.apply_changes(to_b)
    a.doc.apply_changes(to_a)
    a.invalidate()
    b.invalidate()


def member_homes(tmp, handles: list[str], passphrase: str | None = None):  # type: ignore[no-untyped-def]
    """Real homes on disk for several members of one circle, as if each had
    joined by invite: the founder admits each member (signed statements and a
    grant of the epoch key) and the new device starts from the founder's
    verified snapshot.

    Returns the list of home paths (founder first). Test-only shortcut for
    the invite flow, so sync tests need not depend on invites."""
    from pathlib import Path

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
        membership.add_member(founder, ident.verify_key, ident.box_public, handle, "")
        joiners.append(home)
        paths.append(home.path)
    for home in joiners:
        svc = CircleService.join_from_snapshot(home, founder.config.circle_id, "Eastside", founder.packed_snapshot(),
                                               founder.keyring(), founder.config.epoch)
        membership.reconcile(svc)
    return paths
