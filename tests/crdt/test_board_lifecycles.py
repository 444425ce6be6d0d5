"""Every lifecycle and derived state of the board (DESIGN §3)."""

from __future__ import annotations

import pytest

from circle.crdt.board import Board
from circle.crdt.model import (
    Availability,
    Condition,
    HoldStatus,
    LoanStatus,
    NeedStatus,
    OfferStatus,
    ToolState,
    Urgency,
)
from circle.errors import ActionRefused, AmbiguousId, NotAMember, NotFound, UsageError
from factories import Clock, add_member, exchange, remove_member, replica


def test_need_open_claim_met(board: Board) -> None:
    rid = board.add_need("Ride to clinic", category="Transport", tags=["#Medical"], urgency=Urgency.H48)
    need = board.need(rid)
    assert need.status == NeedStatus.OPEN
    assert need.category == "transport" and need.tags == {"medical"}
    board.claim_need(rid[:4])
    assert board.need(rid).status == NeedStatus.CLAIMED
    assert set(board.need(rid).claims) == {board.me}
    with pytest.raises(ActionRefused):
        board.claim_need(rid)
    board.unclaim_need(rid)
    assert board.need(rid).status == NeedStatus.OPEN
    board.met_need(rid)
    assert board.need(rid).status == NeedStatus.MET
    with pytest.raises(ActionRefused):
        board.claim_need(rid)
    board.reopen_need(rid)
    assert board.need(rid).status == NeedStatus.OPEN


def test_need_withdraw_only_by_author(board: Board, clock: Clock) -> None:
    other = add_member(board, "alex")
    rid = board.add_need("Boxes")
    theirs = replica(board, other)
    with pytest.raises(ActionRefused):
        theirs.withdraw_need(rid)
    board.withdraw_need(rid)
    assert board.need(rid).status == NeedStatus.WITHDRAWN
    assert rid not in {n.id for n in board.needs("active")}
    assert rid in {n.id for n in board.needs("withdrawn")}


def test_need_expiry_is_derived_from_time(board: Board, clock: Clock) -> None:
    rid = board.add_need("Soup", expires_days=2)
    clock.advance_days(1.9)
    assert board.need(rid).status == NeedStatus.OPEN
    clock.advance_days(0.2)
    assert board.need(rid).status == NeedStatus.EXPIRED
    with pytest.raises(ActionRefused):
        board.claim_need(rid)
    board.reopen_need(rid)
    assert board.need(rid).status == NeedStatus.OPEN


def test_default_need_expiry_is_14_days(board: Board, clock: Clock) -> None:
    rid = board.add_need("Soup")
    assert board.need(rid).expires_at - clock() == 14 * 86_400_000


def test_needs_sorted_by_urgency_then_newest(board: Board, clock: Clock) -> None:
    a = board.add_need("a", urgency=Urgency.ANYTIME)
    clock.advance()
    b = board.add_need("b", urgency=Urgency.NOW)
    clock.advance()
    c = board.add_need("c", urgency=Urgency.ANYTIME)
    assert [n.id for n in board.needs("all")] == [b, c, a]


def test_filters_by_category_and_words(board: Board) -> None:
    board.add_need("Ride to clinic", category="transport")
    board.add_need("Winter coat size M", category="clothing", details="warm")
    assert [n.title for n in board.needs("all", category="clothing")] == ["Winter coat size M"]
    assert [n.title for n in board.needs("all", search="WARM coat")] == ["Winter coat size M"]
    assert board.needs("all", search="nothing-like-this") == []


def test_offer_lifecycle(board: Board, clock: Clock) -> None:
    rid = board.add_offer("Soup on Sundays", quantity=4, recurring=True, expires_days=10)
    assert board.offer(rid).status == OfferStatus.OPEN
    board.pause_offer(rid)
    assert board.offer(rid).status == OfferStatus.PAUSED
    with pytest.raises(ActionRefused):
        board.pause_offer(rid)
    board.resume_offer(rid)
    clock.advance_days(11)
    assert board.offer(rid).status == OfferStatus.EXPIRED
    board.close_offer(rid)
    assert board.offer(rid).status == OfferStatus.CLOSED


def test_edit_replaces_tags_and_fields(board: Board) -> None:
    rid = board.add_need("Tent", tags=["camping", "summer"])
    board.edit_need(rid, title="Big tent", tags=["camping", "family"], urgency=Urgency.NOW)
    need = board.need(rid)
    assert need.title == "Big tent" and need.tags == {"camping", "family"} and need.urgency == Urgency.NOW


def test_validation_errors(board: Board) -> None:
    with pytest.raises(UsageError):
        board.add_need("   ")
    with pytest.raises(UsageError):
        board.add_need("x" * 500)
    with pytest.raises(UsageError):
        board.add_tool("Saw", loan_days=0)


def test_id_prefixes(board: Board) -> None:
    ids = [board.add_need(f"n{i}") for i in range(40)]
    with pytest.raises(NotFound):
        board.need("99999999x")
    full = ids[0]
    assert board.need(full.upper()).id == full
    # With 40 random ids some one-letter prefix is shared by two of them.
    firsts = [i[0] for i in ids]
    shared = next(ch for ch in firsts if firsts.count(ch) > 1)
    with pytest.raises(AmbiguousId):
        board.need(shared)


def test_tool_loan_return_and_overdue(board: Board, clock: Clock) -> None:
    tid = board.add_tool("Drill", category="power-tools", loan_days=7)
    assert board.tool(tid).availability == Availability.AVAILABLE
    loan_id = board.borrow(tid)
    tool = board.tool(tid)
    assert tool.availability == Availability.ON_LOAN and tool.current_loan and tool.current_loan.id == loan_id
    assert not tool.overdue
    clock.advance_days(8)
    assert board.tool(tid).overdue
    assert [t.id for t in board.overdue()] == [tid]
    with pytest.raises(ActionRefused):
        board.borrow(tid)
    board.return_tool(tid, Condition.WORN, note="chuck slips")
    tool = board.tool(tid)
    assert tool.availability == Availability.AVAILABLE and tool.condition == Condition.WORN
    assert tool.condition_note == "chuck slips"
    assert board.view().loans[loan_id].status == LoanStatus.RETURNED


def test_hold_queue_ready_and_renewal_refused(board: Board, clock: Clock) -> None:
    alex, kim = add_member(board, "alex"), add_member(board, "kim")
    tid = board.add_tool("Ladder")
    with pytest.raises(ActionRefused):
        board.hold(tid)  # available: borrow instead
    board.borrow(tid)
    board.renew(tid)  # nobody waiting: allowed
    a, k = replica(board, alex), replica(board, kim)
    a.hold(tid)
    exchange(board, a)
    clock.advance()
    k.hold(tid)
    exchange(board, k)
    exchange(a, k)
    tool = board.tool(tid)
    assert [h.member for h in tool.queue] == [alex, kim]
    with pytest.raises(ActionRefused):
        board.renew(tid)  # someone is waiting
    board.return_tool(tid)
    tool = board.tool(tid)
    assert tool.availability == Availability.HELD and tool.ready_for == alex
    exchange(board, k)
    with pytest.raises(ActionRefused):
        k.borrow(tid)  # held for alex, who asked first
    exchange(board, a)
    statuses = {h.member: h.status for h in a.holds_of(tid)}
    assert statuses == {alex: HoldStatus.READY, kim: HoldStatus.WAITING}
    a.borrow(tid)
    assert {h.member: h.status for h in a.holds_of(tid)}[alex] == HoldStatus.LOANED
    k.unhold(tid)
    exchange(a, k)
    assert a.tool(tid).queue == ()


def test_tool_states_and_lost(board: Board) -> None:
    tid = board.add_tool("Sander")
    board.edit_tool(tid, state=ToolState.MAINTENANCE)
    assert board.tool(tid).availability == Availability.MAINTENANCE
    with pytest.raises(ActionRefused):
        board.borrow(tid)
    board.edit_tool(tid, state=ToolState.ACTIVE)
    board.set_condition(tid, Condition.UNSAFE, "frayed cord")
    with pytest.raises(ActionRefused):
        board.borrow(tid)
    board.set_condition(tid, Condition.GOOD)
    board.borrow(tid)
    board.mark_lost(tid)
    tool = board.tool(tid)
    assert tool.availability == Availability.MISSING
    assert all(x.status == LoanStatus.LOST for x in board.loans_of(tid))
    board.edit_tool(tid, state=ToolState.RETIRED)
    assert board.tool(tid).availability == Availability.RETIRED


def test_removed_member_cannot_act(board: Board) -> None:
    alex = add_member(board, "alex")
    a = replica(board, alex)
    remove_member(board, alex)  # a signed removal statement
    exchange(board, a)
    with pytest.raises(NotAMember):
        a.add_need("anything")
    assert not board.member(alex).active


def test_concurrent_claims_both_survive(board: Board, clock: Clock) -> None:
    alex = add_member(board, "alex")
    rid = board.add_need("Help moving")
    a = replica(board, alex)
    board.claim_need(rid)
    a.claim_need(rid)
    exchange(board, a)
    assert set(board.need(rid).claims) == {board.me, alex} == set(a.need(rid).claims)


def test_concurrent_loans_one_current_one_conflict(board: Board, clock: Clock) -> None:
    alex = add_member(board, "alex")
    tid = board.add_tool("Trailer")
    a = replica(board, alex)
    clock.advance()
    a.borrow(tid)  # alex offline, a moment later than...
    clock.now -= 1
    board.borrow(tid)  # ...sam, offline too: sam's loan is earlier
    exchange(board, a)
    for view in (board, a):
        tool = view.tool(tid)
        assert tool.current_loan is not None and tool.current_loan.borrower == board.me
        assert [x.borrower for x in tool.conflicting_loans] == [alex]
    assert [t.id for t in board.loan_conflicts()] == [tid]
    # Resolving: alex returns the conflicting loan.
    a.return_tool(tid)
    exchange(board, a)
    assert board.loan_conflicts() == []


def test_same_time_loans_tie_broken_by_member_id(board: Board) -> None:
    alex = add_member(board, "alex")
    tid = board.add_tool("Trailer")
    a = replica(board, alex)
    board.borrow(tid)
    a.borrow(tid)
    exchange(board, a)
    expected = min(board.me, alex)
    assert board.tool(tid).current_loan.borrower == expected  # type: ignore[union-attr]
    assert a.tool(tid).current_loan.borrower == expected  # type: ignore[union-attr]


def test_relay_list_follows_every_edit_without_rebuilding_the_view(board: Board) -> None:
    """The live node reads the relay list after every edit; it must be right
    (a peer's relay, a removal) and must not rebuild the whole board view
    (the cost that made one edit take ~100 ms at 10k records)."""
    peer = replica(board, add_member(board, "bo"))
    board.add_relay("ws://127.0.0.1:9/")
    peer.add_relay("WS://Relay.Example:443/x")
    exchange(board, peer)
    board.add_need("more soup")  # a plain edit after the relays
    view = board._view
    assert [r.url for r in board.relays()] == ["ws://127.0.0.1:9/", "ws://relay.example:443/x"]
    assert board._view is view, "relays() rebuilt the board view"
    board.remove_relay("ws://127.0.0.1:9/")
    assert [r.url for r in board.relays()] == ["ws://relay.example:443/x"]
    assert [r.url for r in board.relays(include_removed=True)] == ["ws://127.0.0.1:9/", "ws://relay.example:443/x"]
    # The same answer as the full view's, once it is rebuilt.
    assert board.relays(include_removed=True) == sorted(board.view().relays.values(), key=lambda r: (r.url, r.id))
