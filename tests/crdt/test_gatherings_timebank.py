"""The time bank: opt-in, both sides confirm, double logs never count twice."""

from __future__ import annotations

import pytest

from circle.crdt.gatherings import gatherings
from circle.crdt.timebank import ExchangeStatus, format_hours
from circle.errors import ActionRefused, UsageError
from factories import Clock, add_member, exchange, make_board, replica


@pytest.fixture
def pair(clock: Clock):  # type: ignore[no-untyped-def]
    sam = make_board(clock)
    bo = add_member(sam, "bo")
    kim = add_member(sam, "kim")
    gatherings(sam).set_timebank(True)
    return sam, replica(sam, bo), replica(sam, kim)


def test_off_by_default_and_nothing_about_hours_while_off(clock: Clock) -> None:
    sam = make_board(clock)
    bo = add_member(sam, "bo")
    g = gatherings(sam)
    assert g.settings().timebank is False
    for call in (lambda: g.log_hours(bo, 60, "x"), g.balances, g.exchanges):
        with pytest.raises(ActionRefused, match="time bank is off"):
            call()
    g.set_timebank(True)
    g.log_hours(bo, 60, "x")
    g.set_timebank(False)
    with pytest.raises(ActionRefused):
        g.exchanges()


def test_an_exchange_counts_only_when_both_sides_confirm(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    xid = gatherings(sam).log_hours(bo.me, 90, "fixed the back brake")
    assert gatherings(sam).exchange(xid).status == ExchangeStatus.PENDING
    assert gatherings(sam).balances() == {}  # logged by one side: counts for nothing yet
    exchange(sam, bo)
    gatherings(bo).confirm(xid)
    exchange(sam, bo)
    for board in (sam, bo):
        g = gatherings(board)
        assert g.exchange(xid).status == ExchangeStatus.CONFIRMED
        bal = g.balances()
        assert (bal[sam.me].given_minutes, bal[bo.me].received_minutes) == (90, 90)
        assert bal[sam.me].net_minutes == 90 and bal[bo.me].net_minutes == -90
    assert format_hours(90) == "1h30" and format_hours(-120) == "-2h" and format_hours(45) == "45m"


def test_dispute_withdraw_and_who_may_answer(pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, kim = pair
    exchange(sam, bo)
    exchange(sam, kim)
    xid = gatherings(sam).log_hours(bo.me, 60, "cooking lesson", gave=False)  # sam received
    x = gatherings(sam).exchange(xid)
    assert (x.giver, x.receiver, x.logged_by) == (bo.me, sam.me, sam.me)
    exchange(sam, kim)
    with pytest.raises(ActionRefused):
        gatherings(kim).confirm(xid)  # not a side of it
    exchange(sam, bo)
    gatherings(bo).dispute(xid, "it was 30 minutes")
    exchange(sam, bo)
    x = gatherings(sam).exchange(xid)
    assert x.status == ExchangeStatus.DISPUTED and x.notes[bo.me] == "it was 30 minutes"
    assert gatherings(sam).balances() == {}
    with pytest.raises(ActionRefused):
        gatherings(bo).withdraw_exchange(xid)  # only who logged it
    gatherings(sam).withdraw_exchange(xid)
    assert gatherings(sam).exchange(xid).status == ExchangeStatus.WITHDRAWN
    exchange(sam, bo)
    with pytest.raises(ActionRefused, match="withdrawn"):
        gatherings(bo).confirm(xid)
    with pytest.raises(UsageError):
        gatherings(sam).log_hours(sam.me, 60, "myself")
    with pytest.raises(UsageError):
        gatherings(sam).log_hours(bo.me, 0, "nothing")


def test_both_sides_log_the_same_exchange_offline_counted_once(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 90, "brakes", gave=True)
    clock.advance(60_000)
    b = gatherings(bo).log_hours(sam.me, 90, "fixed my brakes", gave=False)
    exchange(sam, bo)
    for board in (sam, bo):
        g = gatherings(board)
        first, second = g.exchange(a), g.exchange(b)
        assert first.status == second.status == ExchangeStatus.CONFIRMED  # each side said so once
        assert second.duplicate_of == a and first.duplicate_of is None
        assert first.counted and not second.counted
        bal = g.balances()
        assert bal[sam.me].given_minutes == 90 and bal[bo.me].received_minutes == 90  # not 180
    # Confirming the other's log too changes nothing.
    gatherings(sam).confirm(b)
    gatherings(bo).confirm(a)
    exchange(sam, bo)
    assert gatherings(sam).balances()[sam.me].given_minutes == 90


def test_once_synced_a_second_log_is_refused_in_favour_of_confirming(pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 60, "lesson")
    exchange(sam, bo)
    with pytest.raises(ActionRefused, match=f"confirm {a}"):
        gatherings(bo).log_hours(sam.me, 60, "lesson", gave=False)
    # A genuinely second exchange of the same length, logged on purpose:
    b = gatherings(bo).log_hours(sam.me, 60, "second lesson", gave=False, force=True)
    gatherings(bo).confirm(a)
    exchange(sam, bo)
    gatherings(sam).confirm(b)
    g = gatherings(sam)
    # b was logged after bo saw a: two real exchanges, each counted once.
    assert g.exchange(a).counted and g.exchange(b).counted
    assert g.balances()[sam.me].given_minutes == 120


def test_next_weeks_lesson_logged_by_the_other_side_is_not_taken_for_a_double(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 60, "lesson 1")
    exchange(sam, bo)
    gatherings(bo).confirm(a)
    clock.advance_days(7)
    b = gatherings(bo).log_hours(sam.me, 60, "lesson 2", gave=False)  # not refused: a is confirmed
    exchange(sam, bo)
    gatherings(sam).confirm(b)
    g = gatherings(sam)
    assert g.exchange(b).duplicate_of is None and g.balances()[sam.me].given_minutes == 120


def test_differing_hours_flagged_as_possible_duplicate_never_merged(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 90, "brakes")
    clock.advance(1000)
    b = gatherings(bo).log_hours(sam.me, 120, "brakes", gave=False)
    exchange(sam, bo)
    g = gatherings(sam)
    assert g.exchange(b).possible_duplicate_of == a and g.exchange(b).duplicate_of is None
    assert g.exchange(a).status == g.exchange(b).status == ExchangeStatus.PENDING
    assert g.balances() == {}


def test_a_dispute_on_either_log_of_a_pair_wins(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 60, "x")
    b = gatherings(bo).log_hours(sam.me, 60, "x", gave=False)
    exchange(sam, bo)
    gatherings(bo).dispute(a, "wrong day")
    exchange(sam, bo)
    assert gatherings(sam).exchange(a).status == ExchangeStatus.DISPUTED
    assert gatherings(sam).exchange(b).status == ExchangeStatus.DISPUTED
    assert gatherings(sam).balances() == {}


def test_withdrawing_one_log_of_a_pair_unpairs_the_other_in_a_live_view(clock: Clock, pair) -> None:  # type: ignore[no-untyped-def]
    """The view is updated record by record; derived pairs must still be exact."""
    sam, bo, _ = pair
    exchange(sam, bo)
    a = gatherings(sam).log_hours(bo.me, 60, "x")
    clock.advance(1000)
    b = gatherings(bo).log_hours(sam.me, 60, "x", gave=False)
    exchange(sam, bo)
    g = gatherings(sam)
    assert g.exchange(b).duplicate_of == a  # the view now caches the pair
    g.withdraw_exchange(a)  # only `a` changes; `b` is carried over from the last view
    assert g.exchange(b).duplicate_of is None and g.exchange(b).status == ExchangeStatus.PENDING
    assert g.balances() == {}
