"""A removed member keeps its old keys and a copy of the circle. Whatever it
writes into skills, hours, events, RSVPs, bring lists and shifts after its
removal reaches the others through a straggler that has not heard of the
removal yet; once the straggler has, no honest member's view shows any of it
(membership rule 6, as for needs and offers), and nothing is credited to the
member a late record names.

Real services on disk, signed statements and change proofs (no transport:
`deliver` hands over what a session or relay envelope would carry).
"""

from __future__ import annotations

from pathlib import Path

from circle.crdt.gatherings import gatherings
from circle.node import membership
from circle.node.service import CircleService
from factories import member_homes
from livehelp import open_service

HOUR = 3_600_000


def deliver(src: CircleService, dst: CircleService) -> None:
    dst.apply_remote(src.doc.changes_since([]), src.gate.proofs_since(src.doc, []))


def test_a_removed_members_late_rsvps_shift_takes_hours_and_records_are_ignored(tmp_path: Path) -> None:
    ana, bo, cy = (open_service(p) for p in member_homes(tmp_path, ["ana", "bo", "cy"]))
    ga = gatherings(ana.board)
    ga.set_timebank(True)
    (eid,) = ga.add_event("Potluck", ana.clock() + 48 * HOUR, 180, "hall")
    sid = ga.add_shift(eid, "set-up", ana.clock() + 47 * HOUR, 60, 2)
    gatherings(cy.board).add_skill("Knitting")  # before the removal: stays
    with cy.doc.edit() as ed:  # before the removal, a modified client lists a skill "by ana"
        ed.put_record("skills", "forged00", {"title": "Sewing", "author": ana.me, "category": "",
                                             "details": "", "teach": False, "created_at": cy.clock(),
                                             "updated_at": cy.clock(), "removed_at": None})
    cy._local_commit()
    deliver(ana, cy)
    deliver(cy, ana)
    lesson = gatherings(bo.board)
    deliver(ana, bo)
    x_bo = lesson.log_hours(cy.me, 60, "knitting lesson", gave=False)  # bo received an hour from cy
    deliver(bo, cy)
    deliver(bo, ana)

    membership.remove(ana, "cy")  # bo is offline: a straggler

    # cy, with its old keys, writes on as if nothing happened.
    gc = gatherings(cy.board)
    gc.rsvp(eid, "yes")
    gc.take_shift(sid)
    gc.add_bring(eid, "poisoned cake")
    gc.add_skill("Lock picking")
    (party,) = gc.add_event("Meet cy alone", cy.clock() + 24 * HOUR, 60, "the car park")
    gc.log_hours(bo.me, 600, "ten hours of everything", gave=True)
    gc.confirm(x_bo)  # the other side of bo's log
    with cy.doc.edit() as ed:  # a modified client: a skill in ana's name
        ed.put_record("skills", "forged01", {"title": "Lends money, ask in private", "author": ana.me,
                                             "category": "", "details": "", "teach": False,
                                             "created_at": cy.clock(), "updated_at": cy.clock(),
                                             "removed_at": None})
        ed.update("events", eid, {"cancelled_at": cy.clock()})  # and calls ana's potluck off
    cy._local_commit()

    deliver(cy, bo)  # the straggler takes it all...
    assert "Meet cy alone" in {e.title for e in gatherings(bo.board).events("all")}
    deliver(ana, bo)  # ...then hears of the removal
    deliver(bo, ana)

    for svc in (ana, bo):
        g = gatherings(svc.board)
        event = g.event(eid)
        assert cy.me not in event.rsvps, svc.board.name
        assert event.cancelled_at is None and eid in {e.id for e in g.events("upcoming")}
        assert cy.me not in g.shift(sid).takes
        assert [b.item for b in g.bring_list(eid)] == []
        titles = {s.title for s in g.skills()}
        assert titles == {"Knitting", "Sewing"}, titles  # the late forged "ana" skill is not shown at all
        assert not g.skills(ana.me)  # and the early one is shown as cy's, its verified writer
        assert g.skill("forged00").author == cy.me
        assert "Meet cy alone" not in {e.title for e in g.events("all")}
        assert party not in g.view().events
        logs = g.exchanges()
        assert [x.id for x in logs] == [x_bo]
        assert logs[0].status.value == "pending"  # cy's late confirmation does not count
        assert cy.me not in g.balances() or g.balances()[cy.me].given_minutes == 0
        late = [m for m in g.view().malformed if "after they were removed" in m.reason]
        assert late, "the ignored writes are reported"
