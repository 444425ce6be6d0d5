"""Alerts, check-ins and resources: lifecycles, derived states and who wrote what.

Three replicas of one circle (ana, bo, kim), each with its own Automerge
actor; `member_of_actor` plays the trust layer (issue 9) and binds each
actor to its member, as signed device statements will.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.crdt.defence import (
    CLOCK_SKEW_MS,
    COLLECTIONS_CHANGE,
    DEFENCE_COLLECTIONS,
    HOUR_MS,
    MINUTE_MS,
    AlertKind,
    AlertState,
    CheckinState,
    Defence,
    ResourceKind,
    trust_layer_active,
)
from circle.crdt.model import MemberId
from circle.errors import ActionRefused, UsageError
from factories import Clock, add_member, make_board, replica


@dataclass
class Circle:
    clock: Clock
    boards: dict[str, Board]
    ids: dict[str, MemberId]

    def d(self, who: str) -> Defence:
        return Defence(self.boards[who])

    def sync(self) -> None:
        boards = list(self.boards.values())
        changes = [b.doc.changes_since([]) for b in boards]
        for b in boards:
            for ch in changes:
                b.doc.apply_changes(ch)

    def raw(self, who: str, collection: str, rid: str, fields: dict[str, object]) -> None:
        """What a modified client can write: any field, any claimed author."""
        board = self.boards[who]
        Defence(board).ensure_collections()
        with board.doc.edit() as ed:
            ed.put_record(collection, rid, fields)  # type: ignore[arg-type]


@pytest.fixture
def circle() -> Circle:
    clock = Clock()
    ana = make_board(clock, "ana")
    bo_id, kim_id = add_member(ana, "bo"), add_member(ana, "kim")
    assert ana.me is not None
    boards = {"ana": ana, "bo": replica(ana, bo_id), "kim": replica(ana, kim_id)}
    ids = {"ana": ana.me, "bo": bo_id, "kim": kim_id}
    # As the trust layer does: an actor's first 16 bytes name the device (a raised
    # alert is written by a fresh actor of the device, see defence.py).
    actors = {b.doc.actor()[:16]: ids[name] for name, b in boards.items()}
    assert len(actors) == 3
    for b in boards.values():
        b.member_of_actor = lambda actor: actors.get(actor[:16])
    return Circle(clock, boards, ids)


# --- alerts ------------------------------------------------------------------------


def test_alert_lifecycle_unconfirmed_confirmed_resolved(circle: Circle) -> None:
    rid = circle.d("ana").raise_alert("Two vans at 5th & Main", AlertKind.RAID, "north")
    a = circle.d("ana").alert(rid)
    assert (a.state, a.raiser, a.verified, a.kind, a.zone) == (
        AlertState.UNCONFIRMED, circle.ids["ana"], True, AlertKind.RAID, "north")
    assert a.expires_at - a.raised_at == 2 * HOUR_MS
    circle.sync()
    circle.d("bo").confirm(rid[:4], "I see them too")
    circle.sync()
    a = circle.d("ana").alert(rid)
    assert a.state == AlertState.CONFIRMED
    assert a.confirmed_by == (circle.ids["bo"],)
    assert [f.note for f in a.facts] == ["I see them too"]
    circle.d("kim").resolve(rid, "they left")
    circle.sync()
    a = circle.d("bo").alert(rid)
    assert (a.state, a.resolved_by) == (AlertState.RESOLVED, circle.ids["kim"])
    assert circle.d("bo").alerts(active_only=True) == []
    with pytest.raises(ActionRefused, match="resolved"):
        circle.d("bo").confirm(rid)


def test_alert_expires_and_retract(circle: Circle) -> None:
    d = circle.d("ana")
    rid = d.raise_alert("Checkpoint", AlertKind.POLICE, expires_ms=30 * MINUTE_MS)
    circle.clock.advance(30 * MINUTE_MS - 1)
    assert d.alert(rid).state == AlertState.UNCONFIRMED
    circle.clock.advance(1)
    assert d.alert(rid).state == AlertState.EXPIRED
    other = d.raise_alert("False alarm")
    circle.sync()
    with pytest.raises(ActionRefused, match="only the member who raised"):
        circle.d("bo").retract(other)
    d.retract(other)
    assert d.alert(other).state == AlertState.RETRACTED
    with pytest.raises(UsageError):
        d.raise_alert("  ")
    with pytest.raises(UsageError):
        d.raise_alert("x", expires_ms=8 * 24 * HOUR_MS)


def test_raisers_own_confirmation_is_not_a_confirmation(circle: Circle) -> None:
    rid = circle.d("ana").raise_alert("Harassment outside the clinic", AlertKind.HARASSMENT)
    with pytest.raises(ActionRefused, match="another member"):
        circle.d("ana").confirm(rid)
    # A modified client writes the confirmation anyway, even naming bo as its author.
    circle.raw("ana", "defence_facts", "fakeconf", {"on": rid, "what": "confirm", "at": circle.clock(),
                                                     "note": "", "author": circle.ids["bo"]})
    circle.sync()
    for who in ("ana", "bo", "kim"):
        a = circle.d(who).alert(rid)
        assert a.state == AlertState.UNCONFIRMED
        assert a.confirmed_by == ()
        (ignored,) = a.ignored
        assert ignored.writer == circle.ids["ana"] and ignored.declared == circle.ids["bo"]
        assert "cannot confirm their own" in (ignored.ignored or "")


def test_forged_author_of_an_alert_is_ignored(circle: Circle) -> None:
    """bo writes an alert claiming ana raised it: every view shows bo, and
    ana's confirmation of "her" alert counts, bo's own does not."""
    circle.raw("bo", "alerts", "forged01", {"text": "fake", "kind": "raid", "zone": "", "author": circle.ids["ana"],
                                            "raised_at": circle.clock(), "expires_at": circle.clock() + HOUR_MS})
    circle.sync()
    a = circle.d("kim").alert("forged01")
    assert a.raiser == circle.ids["bo"] and a.declared == circle.ids["ana"]
    circle.d("ana").confirm("forged01")  # ana did not raise it, so she may confirm
    with pytest.raises(ActionRefused):
        circle.d("bo").confirm("forged01")
    circle.sync()
    assert circle.d("kim").alert("forged01").confirmed_by == (circle.ids["ana"],)


def test_confirmations_count_distinct_verified_members(circle: Circle) -> None:
    rid = circle.d("ana").raise_alert("Raid")
    circle.sync()
    circle.d("bo").confirm(rid)
    # bo's modified client confirms twice more, once claiming to be kim.
    for n in range(2):
        circle.raw("bo", "defence_facts", f"dup{n}", {"on": rid, "what": "confirm", "at": circle.clock(),
                                                       "note": "", "author": circle.ids["kim"]})
    circle.sync()
    a = circle.d("ana").alert(rid)
    assert a.confirmed_by == (circle.ids["bo"],)
    assert sorted(f.ignored or "" for f in a.ignored) == ["this member already confirmed"] * 2
    circle.d("kim").confirm(rid)
    circle.sync()
    assert set(circle.d("ana").alert(rid).confirmed_by) == {circle.ids["bo"], circle.ids["kim"]}


def test_unverifiable_writer_counts_for_nothing(circle: Circle) -> None:
    rid = circle.d("ana").raise_alert("Raid")
    circle.sync()
    circle.d("bo").confirm(rid)
    circle.sync()
    # The trust layer cannot place bo's actor (e.g. its device statement is missing).
    bo_actor = circle.boards["bo"].doc.actor()
    resolver = circle.boards["ana"].member_of_actor
    circle.boards["ana"].member_of_actor = lambda actor: None if actor == bo_actor else resolver(actor)
    a = circle.d("ana").alert(rid)
    assert a.state == AlertState.UNCONFIRMED
    assert a.ignored[0].ignored == "its writer cannot be verified"


def test_many_alerts_in_a_short_time_are_flagged_for_everyone(circle: Circle) -> None:
    d = circle.d("ana")
    first = d.raise_alert("one")
    circle.clock.advance(10 * MINUTE_MS)
    d.raise_alert("two")
    circle.d("bo").raise_alert("bo's only alert")
    assert not circle.d("ana").alert(first).flagged
    circle.clock.advance(10 * MINUTE_MS)
    third = d.raise_alert("three")
    # bo forges three alerts in ana's name: they count against bo, not ana.
    for n in range(3):
        circle.raw("bo", "alerts", f"frame{n}", {"text": "x", "kind": "other", "zone": "",
                                                 "author": circle.ids["ana"], "raised_at": circle.clock(),
                                                 "expires_at": circle.clock() + HOUR_MS})
    circle.sync()
    for who in ("ana", "bo", "kim"):
        alerts = {a.id: a for a in circle.d(who).alerts()}
        assert alerts[first].flagged and alerts[third].rate == 3
        assert alerts["frame0"].raiser == circle.ids["bo"] and alerts["frame0"].rate == 4
    circle.clock.advance(2 * HOUR_MS)
    fresh = d.raise_alert("much later")
    assert not d.alert(fresh).flagged


def test_concurrent_confirm_resolve_converge(circle: Circle) -> None:
    rid = circle.d("ana").raise_alert("Raid")
    circle.sync()
    circle.d("bo").confirm(rid)
    circle.d("kim").confirm(rid, "seen")
    circle.d("kim").resolve(rid, "gone")
    circle.d("ana").resolve(rid, "over")
    circle.sync()
    views = [circle.d(w).alert(rid) for w in ("ana", "bo", "kim")]
    assert all(v == views[0] for v in views)
    assert views[0].state == AlertState.RESOLVED
    assert set(views[0].confirmed_by) == {circle.ids["bo"], circle.ids["kim"]}
    assert len({frozenset(b.doc.heads()) for b in circle.boards.values()}) == 1


def test_two_replicas_creating_the_collections_concurrently_keep_both(circle: Circle) -> None:
    """The collections do not exist in the founding change: two devices
    that each write their first alert offline must both survive the merge."""
    assert not circle.boards["bo"].doc.has_collection("alerts")
    a = circle.d("bo").raise_alert("from bo")
    b = circle.d("kim").raise_alert("from kim")
    circle.sync()
    for who in ("ana", "bo", "kim"):
        assert {x.id for x in circle.d(who).alerts()} == {a, b}


def test_naive_collection_creation_would_hide_records() -> None:
    """Why the shared change exists: each replica creating its own map loses one side."""
    clock = Clock()
    one = make_board(clock)
    two = Board(AmDoc.load(one.doc.save()), one.me, clock)
    for board, rid in ((one, "r1"), (two, "r2")):
        with board.doc.edit() as ed:
            ed.create_collections(["alerts"])
            ed.put_record("alerts", rid, {"text": rid})
    one.doc.merge(two.doc)
    assert len(one.doc.record_ids("alerts")) == 1


def test_collections_change_is_the_one_every_device_writes() -> None:
    import automerge.core as am

    doc = am.Document(b"circle/defence/1")
    with doc.transaction() as tx:
        for name in DEFENCE_COLLECTIONS:
            tx.put_object(am.ROOT, name, am.ObjType.Map)
    assert bytes(doc.get_changes([])[0].bytes) == COLLECTIONS_CHANGE


def test_hostile_records_are_skipped_not_fatal(circle: Circle) -> None:
    ok = circle.d("ana").raise_alert("real")
    circle.raw("bo", "alerts", "bad00001", {"text": 5, "kind": "raid", "raised_at": 1, "expires_at": 2})
    circle.raw("bo", "alerts", "bad00002", {"text": "x", "kind": "nuclear", "raised_at": 1, "expires_at": 2})
    circle.raw("bo", "defence_facts", "bad00003", {"on": ok, "what": "confirm", "at": "soon"})
    circle.raw("bo", "checkins", "bad00004", {"title": "x", "every_ms": 5, "until_at": 6, "started_at": 1})
    circle.sync()
    assert [a.id for a in circle.d("kim").alerts()] == [ok]
    assert circle.d("kim").checkins() == []


def test_terminal_escapes_are_stripped_and_expiry_is_capped(circle: Circle) -> None:
    """An alert is printed to terminals by `alert watch`: a peer's escape
    sequences must not reach them; nor may a modified client pin an alert up."""
    now = circle.clock()
    circle.raw("bo", "alerts", "escape01", {"text": "\x1b[2J\x1b]0;pwned\x07Raid", "kind": "raid",
                                            "zone": "n\rorth", "raised_at": now, "expires_at": now + 10**12})
    circle.sync()
    a = circle.d("ana").alert("escape01")
    assert a.text == "[2J]0;pwnedRaid" and a.zone == "north"
    assert a.expires_at == now + 7 * 24 * HOUR_MS


def test_records_a_removed_device_wrote_late_are_not_shown(circle: Circle) -> None:
    """The trust layer names actors that wrote past their removal; their
    alerts and confirmations vanish from every view, as other records do."""
    rid = circle.d("ana").raise_alert("Raid")
    circle.sync()
    circle.d("bo").confirm(rid)
    circle.d("bo").raise_alert("late alert")
    circle.sync()
    ana = circle.boards["ana"]
    bo_actor = circle.boards["bo"].doc.actor()
    late = {m.actor for m in ana.doc.change_metas([]) if m.actor[:16] == bo_actor[:16]}  # every actor of bo's device
    ana.late_actors = lambda: late  # type: ignore[attr-defined]
    d = circle.d("ana")
    assert [a.text for a in d.alerts()] == ["Raid"]
    assert d.alert(rid).state == AlertState.UNCONFIRMED and d.alert(rid).facts == ()


def test_without_a_trust_layer_the_declared_author_is_shown_unverified() -> None:
    clock = Clock()
    board = make_board(clock, "ana")
    assert not trust_layer_active(board)
    d = Defence(board)
    a = d.alert(d.raise_alert("Raid"))
    assert (a.raiser, a.verified) == (board.me, False)
    assert Defence(board, declared_fallback=False).alert(a.id).raiser is None


# --- check-ins -------------------------------------------------------------------


def test_checkin_every_ok_due_soon_missed(circle: Circle) -> None:
    t0 = circle.clock()
    d = circle.d("ana")
    cid = d.start_checkin("Copwatch, 5th precinct", [circle.ids["bo"]], every_ms=30 * MINUTE_MS)
    circle.sync()
    bo = circle.d("bo")  # the buddy's device, with its own (here: the same fixed) clock
    assert bo.checkin(cid).state == CheckinState.OK
    circle.clock.advance(20 * MINUTE_MS)
    assert bo.checkin(cid).state == CheckinState.DUE_SOON
    circle.clock.advance(10 * MINUTE_MS + CLOCK_SKEW_MS)  # due + grace: still within the skew rule
    assert bo.checkin(cid).state == CheckinState.DUE_SOON
    assert bo.missed_for(circle.ids["bo"]) == []
    circle.clock.advance(1)
    c = bo.checkin(cid)
    assert c.state == CheckinState.MISSED and c.due_at == t0 + 30 * MINUTE_MS
    assert bo.missed_for(circle.ids["bo"]) == [c]
    assert bo.missed_for(circle.ids["kim"]) == []
    assert "ana missed their" in bo.missed_message(c) and "Copwatch, 5th precinct" in bo.missed_message(c)
    assert "no ok since the start" in bo.missed_message(c)
    d.checkin_ok(cid)  # late, but she is safe: the timer restarts from now
    circle.sync()
    c = bo.checkin(cid)
    assert c.state == CheckinState.OK and c.last_ok_at == circle.clock()
    assert c.due_at == circle.clock() + 30 * MINUTE_MS


def test_only_the_owner_can_say_ok_and_future_oks_do_not_postpone(circle: Circle) -> None:
    cid = circle.d("ana").start_checkin("Night walk", [circle.ids["bo"]], every_ms=15 * MINUTE_MS)
    circle.sync()
    with pytest.raises(ActionRefused):
        circle.d("bo").checkin_ok(cid)
    # bo's modified client says "ana is ok" in her name; ana's clock-skewed device dates one in the future.
    circle.raw("bo", "defence_facts", "fakeok01", {"on": cid, "what": "ok", "at": circle.clock(),
                                                   "note": "", "author": circle.ids["ana"]})
    circle.raw("ana", "defence_facts", "future01", {"on": cid, "what": "ok", "note": "",
                                                    "at": circle.clock() + HOUR_MS, "author": circle.ids["ana"]})
    circle.sync()
    circle.clock.advance(16 * MINUTE_MS + CLOCK_SKEW_MS)
    c = circle.d("kim").checkin(cid)
    assert c.state == CheckinState.MISSED and c.last_ok_at is None
    reasons = sorted(f.ignored or "" for f in c.ignored)
    assert reasons == ["dated in the future (that device's clock is ahead)",
                       "only the member who started a check-in can say they are ok"]


def test_checkin_until_and_end(circle: Circle) -> None:
    t0 = circle.clock()
    d = circle.d("ana")
    cid = d.start_checkin("Court support", [circle.ids["bo"], circle.ids["kim"]], until_at=t0 + HOUR_MS)
    circle.sync()
    circle.clock.advance(HOUR_MS + CLOCK_SKEW_MS + 1)
    assert circle.d("kim").checkin(cid).state == CheckinState.MISSED
    d.checkin_ok(cid)
    circle.sync()
    assert circle.d("kim").checkin(cid).state == CheckinState.OK
    assert circle.d("kim").checkin(cid).due_at is None
    circle.d("bo").checkin_end(cid)
    circle.sync()
    c = circle.d("ana").checkin(cid)
    assert (c.state, c.ended_by) == (CheckinState.ENDED, circle.ids["bo"])
    assert circle.d("ana").checkins() == []
    with pytest.raises(UsageError):
        d.start_checkin("x", [], every_ms=HOUR_MS)
    with pytest.raises(UsageError):
        d.start_checkin("x", [circle.ids["bo"]], every_ms=HOUR_MS, until_at=circle.clock() + 1)
    with pytest.raises(UsageError):
        d.start_checkin("x", [circle.ids["ana"]], every_ms=HOUR_MS)


# --- resources --------------------------------------------------------------------


def test_resources_add_edit_remove_and_concurrent_edits(circle: Circle) -> None:
    d = circle.d("ana")
    rid = d.add_resource("Legal support hotline", "555-0100, 24/7", ResourceKind.LEGAL)
    d.add_resource("Street medics", "", ResourceKind.MEDICAL)
    circle.sync()
    circle.d("bo").edit_resource(rid, details="555-0199, 24/7")
    circle.d("kim").edit_resource(rid, title="Legal hotline (NLG)")
    circle.sync()
    r = circle.d("ana").resource(rid)
    assert (r.title, r.details, r.kind, r.created_by) == (
        "Legal hotline (NLG)", "555-0199, 24/7", ResourceKind.LEGAL, circle.ids["ana"])
    assert [x.kind for x in circle.d("kim").resources()] == [ResourceKind.LEGAL, ResourceKind.MEDICAL]
    circle.d("kim").remove_resource(rid)
    circle.sync()
    assert [x.title for x in circle.d("ana").resources()] == ["Street medics"]
