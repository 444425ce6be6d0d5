"""A removed member changing *fields* of existing records after its removal
(membership rule 6, DESIGN §8: a removed member must never write anything
after its removal, by any path).

The attacker keeps all its old keys and its copy of the document; it writes
to records that already exist (a need's title and status, a tool's
condition, a loan's due date, the time-bank switch) and hands the changes to
a straggler that has not heard of its removal yet. Everyone who knows of the
removal must see the values as they were without those changes; honest edits
made after them still count. Real services on disk, real proofs and gate
(as in test_trust_attacks.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circle.crdt.gatherings import gatherings
from circle.crdt.model import Condition, NeedStatus
from circle.node import membership
from circle.node.service import CircleService
from factories import member_homes
from livehelp import open_service


def services(tmp_path: Path, handles: list[str]) -> list[CircleService]:
    return [open_service(p) for p in member_homes(tmp_path, handles)]


def deliver(src: CircleService, dst: CircleService) -> None:
    dst.apply_remote(src.doc.changes_since([]), src.gate.proofs_since(src.doc, []))


def raw_update(svc: CircleService, collection: str, rid: str, fields: dict[str, object]) -> None:
    """A modified client: write any field of any record, no checks."""
    with svc.doc.edit() as ed:
        ed.update(collection, rid, fields)  # type: ignore[arg-type]
    svc._local_commit()


def board_state(svc: CircleService, need: str, tool: str, loan: str) -> tuple[object, ...]:
    n = svc.board.need(need)
    t = svc.board.tool(tool)
    ln = svc.board.view().loans[loan]  # type: ignore[index]
    return (n.title, n.details, n.status, t.name, t.condition, ln.due_at,
            gatherings(svc.board).settings().timebank, gatherings(svc.board).view().settings.timebank)


def setup(tmp_path: Path) -> tuple[CircleService, CircleService, CircleService, str, str, str, str]:
    """ana, bo and cy with a need of ana's, one of cy's, ana's tool lent to
    bo, the time bank off; then ana removes cy while bo is offline."""
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    need = ana.board.add_need("Ride to the clinic", details="Tuesday 9am")
    own = cy.board.add_need("Cy's ladder", details="before removal")
    tool = ana.board.add_tool("Drill")
    for a, b in ((ana, bo), (cy, bo)):
        deliver(a, b)
    loan = bo.board.borrow(tool, days=7)
    gatherings(ana.board).set_timebank(False)
    for a, b in ((bo, ana), (ana, bo), (ana, cy), (bo, cy), (cy, ana)):
        deliver(a, b)
    membership.remove(ana, "cy")  # bo has not heard yet: a straggler
    return ana, bo, cy, need, own, tool, loan


def late_edits(cy: CircleService, need: str, own: str, tool: str, loan: str) -> None:
    """What the removed cy writes after its removal, with all its old keys."""
    raw_update(cy, "needs", need, {"title": "Send money to cy", "details": "pay here", "met_at": cy.clock()})
    raw_update(cy, "needs", own, {"title": "Cy's ladder (edited late)", "details": "after removal"})
    raw_update(cy, "tools", tool, {"name": "Drill (gone)", "condition": Condition.UNSAFE.value})
    raw_update(cy, "loans", loan, {"due_at": cy.clock() + 10**12})
    raw_update(cy, "settings", "circle", {"timebank": True})


def test_late_field_edits_through_a_straggler_read_as_before(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    before = board_state(ana, need, tool, loan)
    assert before[:3] == ("Ride to the clinic", "Tuesday 9am", NeedStatus.OPEN) and before[6] is False
    late_edits(cy, need, own, tool, loan)
    deliver(cy, bo)  # the straggler takes them...
    assert bo.board.need(need).title == "Send money to cy"  # (what bo sees before it knows)
    deliver(ana, bo)  # ...then hears of the removal
    deliver(bo, ana)
    for svc in (ana, bo):
        assert board_state(svc, need, tool, loan) == before
        own_need = svc.board.need(own)  # created before removal, edited after
        assert (own_need.title, own_need.details) == ("Cy's ladder", "before removal")
        reasons = [m.reason for m in [*svc.board.view().malformed, *gatherings(svc.board).view().malformed]]
        assert any("field title was changed by cy after they were removed (ignored)" in r for r in reasons)
        assert any("field due_at was changed by cy" in r for r in reasons)
        assert any("field timebank was changed by cy" in r for r in reasons)
        assert any("after they were removed" in m["reason"] for m in svc.status()["malformed"])


def test_an_honest_edit_after_the_late_one_still_counts(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    late_edits(cy, need, own, tool, loan)
    deliver(cy, bo)
    bo.board.edit_need(need, title="Ride to the clinic (Wed)")  # bo has seen cy's edit: this follows it
    bo.board.set_condition(tool, Condition.WORN)
    deliver(ana, bo)
    deliver(bo, ana)
    for svc in (ana, bo):
        n, t = svc.board.need(need), svc.board.tool(tool)
        assert n.title == "Ride to the clinic (Wed)"  # the honest later edit
        assert n.details == "Tuesday 9am" and n.status == NeedStatus.OPEN  # cy's fields still rolled back
        assert t.condition == Condition.WORN and t.name == "Drill"


def test_a_late_edit_concurrent_with_an_honest_one_loses(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    ana.board.edit_need(need, title="Ride (honest, concurrent)")
    for i in range(40):  # cy's op counter climbs past ana's: Automerge alone would pick cy's value
        raw_update(cy, "needs", own, {"details": f"late {i}"})
    late_edits(cy, need, own, tool, loan)
    deliver(cy, bo)
    deliver(ana, bo)
    deliver(bo, ana)
    assert ana.board.need(need).title == bo.board.need(need).title == "Ride (honest, concurrent)"


def test_a_late_delete_of_a_field_is_undone(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    ana.board.claim_need(need)
    for a, b in ((ana, bo), (ana, cy)):
        deliver(a, b)
    with cy.doc.edit() as ed:
        ed.map_delete("needs", need, "claims", ana.me)  # cy un-claims ana's claim
    cy._local_commit()
    deliver(cy, bo)
    deliver(ana, bo)
    assert bo.board.need(need).status == NeedStatus.CLAIMED
    assert ana.me in bo.board.need(need).claims


def test_an_honest_delete_after_a_late_overwrite_stands(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    ana.board.claim_need(need)
    for a, b in ((ana, bo), (ana, cy)):
        deliver(a, b)
    with cy.doc.edit() as ed:
        ed.map_put("needs", need, "claims", ana.me, 1)  # cy rewrites ana's claim
    cy._local_commit()
    deliver(cy, bo)
    deliver(bo, ana)
    assert ana.board.need(need).claims[ana.me] != 1  # read as before
    ana.board.unclaim_need(need)  # then ana really unclaims
    deliver(ana, bo)
    for svc in (ana, bo):
        assert ana.me not in svc.board.need(need).claims
        assert svc.board.need(need).status == NeedStatus.OPEN


def test_late_edits_of_offers_relays_and_events_read_as_before(tmp_path: Path) -> None:
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    offer = ana.board.add_offer("Soup on Fridays")
    relay = ana.board.add_relay("wss://relay.example.org")
    (event,) = gatherings(ana.board).add_event("Repair cafe", ana.clock() + 86_400_000, 120, "Library")
    for a, b in ((ana, bo), (ana, cy)):
        deliver(a, b)
    membership.remove(ana, "cy")
    raw_update(cy, "offers", offer, {"title": "Soup (send money first)", "closed_at": cy.clock()})
    raw_update(cy, "relays", relay.id, {"url": "wss://evil.example.net"})
    raw_update(cy, "events", event, {"place": "Back alley", "title": "Repair cafe (moved)"})
    deliver(cy, bo)
    deliver(ana, bo)
    deliver(bo, ana)
    for svc in (bo, ana):
        o = svc.board.offer(offer)
        assert (o.title, o.closed_at) == ("Soup on Fridays", None)
        assert [r.url for r in svc.board.relays()] == [relay.url]
        e = gatherings(svc.board).event(event)
        assert (e.title, e.place) == ("Repair cafe", "Library")


def test_honest_gathering_values_a_removed_member_overwrote_stay(tmp_path: Path) -> None:
    """ana's own RSVP and ana's own cancellation, rewritten late by cy: shown
    as ana wrote them (not dropped as "not written by the member it names",
    not un-cancelled)."""
    ana, bo, cy = services(tmp_path, ["ana", "bo", "cy"])
    ga = gatherings(ana.board)
    (party,) = ga.add_event("Potluck", ana.clock() + 86_400_000, 120, "Hall")
    (fair,) = ga.add_event("Fair", ana.clock() + 86_400_000, 120, "Park")
    ga.rsvp(party, "yes")
    ga.cancel_event(fair)
    cancelled_at = ga.event(fair).cancelled_at
    for a, b in ((ana, bo), (ana, cy)):
        deliver(a, b)
    membership.remove(ana, "cy")
    with cy.doc.edit() as ed:
        ed.map_put("events", party, "rsvps", ana.me, "no")
        ed.update("events", fair, {"cancelled_at": cy.clock() + 5})
    cy._local_commit()
    deliver(cy, bo)
    deliver(ana, bo)
    deliver(bo, ana)
    for svc in (ana, bo):
        g = gatherings(svc.board)
        assert g.event(party).rsvps == {ana.me: "yes"}
        assert g.event(fair).cancelled_at == cancelled_at
        reasons = [m.reason for m in g.view().malformed]
        assert any("rsvps entry was changed by cy after they were removed" in r for r in reasons)


def test_a_late_replacement_of_a_whole_collection_is_undone(tmp_path: Path) -> None:
    """A modified client puts a fresh, empty map where every need lives."""
    import automerge.core as am  # a hostile client, not product code

    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    with cy.doc._doc.transaction() as tx:
        tx.put_object(am.ROOT, "needs", am.ObjType.Map)
    cy._local_commit()
    deliver(cy, bo)
    assert not bo.board.needs("all")  # (the straggler, before it knows)
    deliver(ana, bo)
    titles = {n.title for n in bo.board.needs("all")}
    assert titles == {"Ride to the clinic", "Cy's ladder"}
    bo.board.add_need("After the attack")  # and honest writes go on
    deliver(bo, ana)
    assert {n.title for n in ana.board.needs("all")} == titles | {"After the attack"}


def test_the_straggler_converges_when_it_learns_of_the_removal(tmp_path: Path) -> None:
    ana, bo, cy, need, own, tool, loan = setup(tmp_path)
    before = board_state(ana, need, tool, loan)
    late_edits(cy, need, own, tool, loan)
    deliver(cy, bo)
    assert board_state(bo, need, tool, loan) != before  # bo does not know yet
    bo_view = bo.board.view()
    deliver(ana, bo)
    assert bo.board.view() is not bo_view
    assert board_state(bo, need, tool, loan) == before
    bo.persist()
    again = open_service(bo.home.path)  # and the same from disk
    assert board_state(again, need, tool, loan) == before


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(["ana", "bo", "cy"]), honest_after=st.booleans())
def test_two_honest_members_merging_in_any_order_agree(order: list[str], honest_after: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ana, bo, cy, dee = services(Path(tmp), ["ana", "bo", "cy", "dee"])
        need = ana.board.add_need("Soup for 4")
        for a, b in ((ana, bo), (ana, cy), (ana, dee)):
            deliver(a, b)
        membership.remove(ana, "cy")
        raw_update(cy, "needs", need, {"title": "late title", "withdrawn_at": cy.clock()})
        deliver(cy, bo)
        if honest_after:
            bo.board.edit_need(need, details="honest, after the late edit")
        sources = {"ana": ana, "bo": bo, "cy": cy}
        for name in order:  # dee hears them in one order...
            deliver(sources[name], dee)
        for name in reversed(order):  # ...ana in the other
            deliver(sources[name], ana)
        seen = []
        for svc in (ana, dee):
            n = svc.board.need(need)
            seen.append((n.title, n.details, n.status))
        assert seen[0] == seen[1]
        assert seen[0][0] == "Soup for 4" and seen[0][2] == NeedStatus.OPEN
        assert seen[0][1] == ("honest, after the late edit" if honest_after else "")
