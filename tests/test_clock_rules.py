"""Issue 16 case 7: a writer's clock is a claim, not a fact (crdt/clock.py).

Each member is a real home and service on disk with its own fixed clock (a
slow or fast laptop, or a modified client writing whatever times it likes);
changes travel as verified snapshots (`merge_snapshot`, what a relay or a
bundle delivers). Each test fails on the code that trusted the writer's
clock as-is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from circle.crdt.model import DAY_MS, Availability, NeedStatus
from circle.node.home import Home
from circle.node.service import CircleService
from factories import member_homes

HOUR_MS = 3600_000


class DeviceClock:
    """One laptop's clock: real time plus a fixed error, movable by the test."""

    def __init__(self, error_ms: int = 0) -> None:
        self.error = error_ms

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.error


@pytest.fixture
def circle(tmp_path: Path) -> Iterator[dict[str, tuple[CircleService, DeviceClock]]]:
    paths = member_homes(tmp_path, ["ana", "bo", "cy"])
    out: dict[str, tuple[CircleService, DeviceClock]] = {}
    for path, handle in zip(paths, ["ana", "bo", "cy"], strict=True):
        clock = DeviceClock()
        out[handle] = (CircleService.open(Home.open(path, None), clock=clock), clock)
    sync(*(svc for svc, _ in out.values()))
    yield out


def sync(*services: CircleService) -> None:
    """Everyone gets everything (twice round, so each holds all changes)."""
    for _ in range(2):
        for a in services:
            for b in services:
                if a is not b:
                    b.merge_snapshot(a.packed_snapshot())


def test_a_hold_from_a_slow_clock_does_not_jump_the_queue(circle: dict[str, tuple[CircleService, DeviceClock]]) -> None:
    (ana, _), (bo, _), (cy, cy_clock) = circle["ana"], circle["bo"], circle["cy"]
    drill = ana.board.add_tool("Drill")
    ana.board.borrow(drill)
    sync(ana, bo, cy)
    bo.board.hold(drill)
    sync(ana, bo, cy)
    cy_clock.error = -DAY_MS  # cy's laptop is a day behind: its hold claims to be older than bo's
    cy.board.hold(drill)
    sync(ana, bo, cy)
    for svc in (ana, bo, cy):
        queue = [h.member for h in svc.board.tool(drill).queue]
        assert queue == [bo.me, cy.me], "cy had seen bo's hold: it queues behind it whatever its clock says"
    ana.board.return_tool(drill)
    sync(ana, bo, cy)
    for svc in (ana, bo, cy):
        tool = svc.board.tool(drill)
        assert tool.availability == Availability.HELD and tool.ready_for == bo.me
    with pytest.raises(Exception, match="held for another member"):
        cy.board.borrow(drill)


def test_a_need_from_a_clock_15_days_slow_is_not_expired_for_everyone(
        circle: dict[str, tuple[CircleService, DeviceClock]]) -> None:
    (ana, _), (bo, bo_clock) = circle["ana"], circle["bo"]
    bo_clock.error = -15 * DAY_MS
    rid = bo.board.add_need("Ride to the clinic")  # 14 days from a clock 15 days slow: "expired" already
    sync(bo, ana)
    need = ana.board.need(rid)
    assert need.status == NeedStatus.OPEN
    assert need in ana.board.needs("open")
    # The rule moves the need's whole life, not just today's answer: it still expires, in about 11 days.
    assert ana.clock() + 10 * DAY_MS < need.expires_at < ana.clock() + 12 * DAY_MS
    # Another process of ana's home reads the same (the first-seen time is on disk, not in memory).
    again = CircleService.open(ana.home, clock=ana.clock)
    assert again.board.need(rid).status == NeedStatus.OPEN


def test_a_need_from_a_clock_a_year_fast_does_not_stay_open_a_year(
        circle: dict[str, tuple[CircleService, DeviceClock]]) -> None:
    (ana, ana_clock), (bo, bo_clock) = circle["ana"], circle["bo"]
    bo_clock.error = 365 * DAY_MS
    rid = bo.board.add_need("Firewood")
    sync(bo, ana)
    assert ana.board.need(rid).status == NeedStatus.OPEN
    assert ana.board.need(rid).created_at <= ana.clock() + 3600_000, "not listed first for a year"
    ana_clock.error = 15 * DAY_MS  # 15 days later on ana's laptop: past its 14 days
    assert ana.board.need(rid).status == NeedStatus.EXPIRED
    reopened = CircleService.open(ana.home, clock=ana_clock)
    assert reopened.board.need(rid).status == NeedStatus.EXPIRED


def test_a_borrow_from_a_clock_10_days_slow_is_not_overdue_at_once(
        circle: dict[str, tuple[CircleService, DeviceClock]]) -> None:
    (ana, ana_clock), (bo, bo_clock) = circle["ana"], circle["bo"]
    drill = ana.board.add_tool("Drill", loan_days=7)
    sync(ana, bo)
    bo_clock.error = -10 * DAY_MS
    bo.board.borrow(drill)  # due 7 days after a time 10 days ago
    sync(bo, ana)
    assert ana.board.tool(drill).availability == Availability.ON_LOAN
    assert not ana.board.tool(drill).overdue and ana.board.overdue() == []
    assert ana.status()["counts"]["overdue"] == 0
    ana_clock.error = 6 * DAY_MS  # the loan is still judged: a week on, it is overdue
    assert ana.board.tool(drill).overdue


def test_an_honest_record_is_read_as_written(circle: dict[str, tuple[CircleService, DeviceClock]]) -> None:
    """The rule changes nothing when clocks are right (no first-seen entry at all)."""
    (ana, _), (bo, _) = circle["ana"], circle["bo"]
    rid = bo.board.add_need("Soup", expires_days=3)
    sync(bo, ana)
    raw = ana.doc.record("needs", rid)
    assert raw is not None
    need = ana.board.need(rid)
    assert (need.created_at, need.expires_at) == (raw["created_at"], raw["expires_at"])
    assert ana.board.first_seen == {}
    assert not (ana.home.circle_dir(ana.config.circle_id) / "seen").exists()


def test_first_seen_times_are_sealed_with_a_passphrase(tmp_path: Path) -> None:
    paths = member_homes(tmp_path, ["ana", "bo"], passphrase="correct horse battery")
    ana = CircleService.open(Home.open(paths[0], "correct horse battery"))
    bo = CircleService.open(Home.open(paths[1], "correct horse battery"), clock=DeviceClock(-15 * DAY_MS))
    rid = bo.board.add_need("Ride")
    ana.merge_snapshot(bo.packed_snapshot())
    seen = ana.home.circle_dir(ana.config.circle_id) / "seen"
    assert seen.exists() and rid.encode() not in seen.read_bytes() and b"needs" not in seen.read_bytes()
    assert ana.board.need(rid).status == NeedStatus.OPEN


def test_a_joiner_reads_history_as_written_except_claims_from_the_future(tmp_path: Path) -> None:
    from circle.node import membership

    (path,) = member_homes(tmp_path, ["ana"])
    clock = DeviceClock(-20 * DAY_MS)
    ana = CircleService.open(Home.open(path, None), clock=clock)
    old = ana.board.add_need("Last month's soup")  # honestly old: expired for everyone, joiners too
    clock.error = 365 * DAY_MS
    future = ana.board.add_need("From a clock a year ahead")
    home = Home.create(tmp_path / "cy", None)
    membership.add_member(ana, home.identity.verify_key, home.identity.box_public, "cy", "")
    cy = CircleService.join_from_snapshot(home, ana.config.circle_id, "Eastside", ana.packed_snapshot(),
                                          ana.keyring(), ana.config.epoch)
    assert cy.board.need(old).status == NeedStatus.EXPIRED
    assert cy.board.need(future).created_at <= int(time.time() * 1000) + HOUR_MS
    assert cy.board.need(future).expires_at <= int(time.time() * 1000) + 15 * DAY_MS
