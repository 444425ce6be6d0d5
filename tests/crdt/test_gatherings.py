"""Skills, events, RSVPs, bring lists and shifts: lifecycles and offline merges."""

from __future__ import annotations

from datetime import date

import icalendar
import pytest

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.crdt.gatherings import (
    EXT_COLLECTIONS,
    EventStatus,
    Rsvp,
    ensure_collections,
    extension_change,
    gatherings,
    has_collections,
)
from circle.crdt.ics import calendar
from circle.crdt.times import parse_duration, parse_when, show_time
from circle.errors import ActionRefused, NotAMember, UsageError
from factories import Clock, add_member, exchange, make_board, replica

HOUR = 3_600_000


@pytest.fixture
def trio(clock: Clock):  # type: ignore[no-untyped-def]
    sam = make_board(clock)
    bo, kim = add_member(sam, "bo"), add_member(sam, "kim")
    return sam, replica(sam, bo), replica(sam, kim)


# --- the collections themselves ------------------------------------------------------


def test_old_circle_gains_collections_and_two_devices_adding_them_offline_lose_nothing(trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = trio
    assert not has_collections(sam.doc)  # a circle founded before this feature
    gatherings(sam).add_skill("Bike repair")
    gatherings(bo).add_skill("Sewing")  # bo added the collections too, offline
    exchange(sam, bo)
    for board in (sam, bo):
        assert {s.title for s in gatherings(board).skills()} == {"Bike repair", "Sewing"}
    # One shared change, applied once: the same bytes on both devices.
    assert sam.doc.heads() == bo.doc.heads()
    assert sum(c == extension_change() for c in sam.doc.changes_since([])) == 1


def test_ensure_is_idempotent_and_refuses_nothing_on_a_fresh_document() -> None:
    doc = AmDoc.new()
    assert ensure_collections(doc) is True
    assert ensure_collections(doc) is False
    assert all(doc.has_collection(n) for n in EXT_COLLECTIONS)


def test_a_removed_member_or_stranger_cannot_write(clock: Clock) -> None:
    sam = make_board(clock)
    stranger = Board(AmDoc.load(sam.doc.save()), None, clock)
    with pytest.raises(NotAMember):
        gatherings(stranger).add_skill("x")


# --- skills ----------------------------------------------------------------------------


def test_skill_lifecycle_and_only_the_author_changes_it(trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = trio
    g = gatherings(sam)
    sid = g.add_skill("Bike repair", "Repair", teach=True, details="brakes, gears")
    assert g.skill(sid).category == "repair" and g.skill(sid).teach
    g.edit_skill(sid, title="Bicycle repair", teach=False)
    assert g.skill(sid).title == "Bicycle repair" and not g.skill(sid).teach
    exchange(sam, bo)
    with pytest.raises(ActionRefused):
        gatherings(bo).remove_skill(sid)
    assert [s.id for s in g.skills(search="bicycle")] == [sid]
    assert g.skills(member=bo.me) == []
    g.remove_skill(sid)
    assert g.skills() == [] and g.skills(include_removed=True)[0].removed_at is not None
    with pytest.raises(UsageError):
        g.add_skill("   ")


# --- events ----------------------------------------------------------------------------


def test_event_lifecycle_times_and_status(clock: Clock, trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = trio
    g = gatherings(sam)
    start = clock() + 2 * 24 * HOUR
    (eid,) = g.add_event("Potluck", start, 180, "community room", zone="north", tz="Europe/Berlin")
    e = g.event(eid)
    assert e.status(clock()) == EventStatus.UPCOMING and e.tz == "Europe/Berlin"
    assert [x.id for x in g.events()] == [eid]
    g.edit_event(eid, place="the garden", minutes=120)
    assert g.event(eid).place == "the garden" and g.event(eid).ends_at == start + 2 * HOUR
    assert g.event(eid).status(start + HOUR) == EventStatus.HAPPENING
    assert g.event(eid).status(start + 3 * HOUR) == EventStatus.PAST
    exchange(sam, bo)
    with pytest.raises(ActionRefused):
        gatherings(bo).cancel_event(eid)  # only the member who planned it
    g.cancel_event(eid)
    assert g.event(eid).status(clock()) == EventStatus.CANCELLED and g.events() == []
    with pytest.raises(ActionRefused):
        g.rsvp(eid, "yes")
    g.cancel_event(eid, cancelled=False)
    assert g.events()[0].id == eid
    clock.now = start + 4 * HOUR
    assert g.events() == [] and [x.id for x in g.events("past")] == [eid]


def test_times_are_instants_with_the_authors_zone_and_shown_in_the_readers() -> None:
    berlin = parse_when("2026-12-12T18:00", "Europe/Berlin")
    assert berlin == parse_when("2026-12-12T17:00Z", "America/New_York")  # an offset wins over the zone
    assert show_time(berlin, "Europe/Berlin").endswith("18:00")
    assert show_time(berlin, "America/New_York").endswith("12:00")
    assert show_time(berlin, "UTC").endswith("17:00")
    assert [parse_duration(x) for x in ("3h", "90m", "1h30m", "1h30", "1d")] == [180, 90, 90, 90, 1440]
    for bad in ("", "3", "3x", "0m", "20d"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_when("next tuesday", "UTC")
    with pytest.raises(UsageError):
        parse_when("2026-12-12T18:00", "Mars/Olympus")


def test_weekly_series_keeps_the_wall_clock_time_across_a_clock_change(clock: Clock) -> None:
    sam = make_board(clock)
    g = gatherings(sam)
    start = parse_when("2027-03-20T18:00", "Europe/Berlin")  # Berlin moves to summer time on 28 March
    ids = g.add_event("Pantry", start, 60, "pantry", tz="Europe/Berlin", repeat_until=date(2027, 4, 10))
    events = sorted((g.event(i) for i in ids), key=lambda e: e.starts_at)
    assert len(events) == 4 and len({e.series for e in events}) == 1 and events[0].series
    assert {show_time(e.starts_at, "Europe/Berlin")[-5:] for e in events} == {"18:00"}
    assert events[2].starts_at - events[1].starts_at == 7 * 24 * HOUR - HOUR  # the short week
    with pytest.raises(UsageError):
        g.add_event("Forever", start, 60, tz="Europe/Berlin", repeat_until=date(2030, 1, 1))


def test_concurrent_rsvps_and_bring_entries_all_survive(trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, kim = trio
    (eid,) = gatherings(sam).add_event("Potluck", sam.clock() + 24 * HOUR, 180, "community room")
    exchange(sam, bo)
    exchange(sam, kim)
    gatherings(sam).rsvp(eid, "yes")
    gatherings(bo).rsvp(eid, Rsvp.MAYBE)
    gatherings(kim).rsvp(eid, "no")
    for board, item in ((sam, "lentil soup"), (bo, "bread"), (kim, "plates"), (bo, "salad")):
        gatherings(board).add_bring(eid, item)
    exchange(sam, bo)
    exchange(bo, kim)
    exchange(sam, kim)
    for board in (sam, bo, kim):
        g = gatherings(board)
        e = g.event(eid)
        assert e.rsvps == {sam.me: Rsvp.YES, bo.me: Rsvp.MAYBE, kim.me: Rsvp.NO}
        assert sorted(b.item for b in g.bring_list(eid)) == ["bread", "lentil soup", "plates", "salad"]
    # An answer changes, and only its own member's entry can be taken off.
    gatherings(bo).rsvp(eid, "yes")
    assert gatherings(bo).event(eid).answers(Rsvp.YES) == sorted([sam.me, bo.me])
    soup = next(b for b in gatherings(bo).bring_list(eid) if b.item == "lentil soup")
    with pytest.raises(ActionRefused):
        gatherings(bo).remove_bring(soup.id)
    gatherings(sam).remove_bring(soup.id)
    assert "lentil soup" not in {b.item for b in gatherings(sam).bring_list(eid)}


# --- shifts ----------------------------------------------------------------------------


def test_shift_lifecycle_full_refused_online(trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = trio
    g = gatherings(sam)
    (eid,) = g.add_event("Clean-up", sam.clock() + 24 * HOUR, 180, "the park", kind="cleanup")
    shid = g.add_shift(eid, "set-up", sam.clock() + 23 * HOUR, 60, 1)
    g.take_shift(shid)
    with pytest.raises(ActionRefused):
        g.take_shift(shid)  # already on it
    exchange(sam, bo)
    with pytest.raises(ActionRefused, match="full"):
        gatherings(bo).take_shift(shid)
    g.drop_shift(shid)
    exchange(sam, bo)
    gatherings(bo).take_shift(shid)
    assert gatherings(bo).shift(shid).takers == (bo.me,)
    with pytest.raises(UsageError):
        g.add_shift(eid, "x", sam.clock(), 60, 0)


def test_two_members_take_the_last_slot_offline_both_kept_over_full_until_one_drops(
        clock: Clock, trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, kim = trio
    g = gatherings(sam)
    (eid,) = g.add_event("Pantry", clock() + 24 * HOUR, 120, "pantry")
    shid = g.add_shift(eid, "door", clock() + 24 * HOUR, 60, 2)
    g.take_shift(shid)
    exchange(sam, bo)
    exchange(sam, kim)
    clock.advance(5000)
    gatherings(kim).take_shift(shid)  # offline, each saw one open slot
    clock.advance(1000)
    gatherings(bo).take_shift(shid)
    exchange(bo, kim)
    exchange(sam, bo)
    exchange(sam, kim)
    views = [gatherings(b).shift(shid) for b in (sam, bo, kim)]
    assert all(s.over_full and s.open_slots == 0 for s in views)
    # Deterministic on every replica: earlier take first; the later one is over.
    assert {s.takers for s in views} == {(sam.me, kim.me, bo.me)}
    assert {s.over for s in views} == {(bo.me,)}
    gatherings(kim).drop_shift(shid)
    exchange(bo, kim)
    s = gatherings(bo).shift(shid)
    assert not s.over_full and s.over == () and set(s.takers) == {sam.me, bo.me}


def test_reminders_for_a_yes_and_for_my_shift(clock: Clock, trio) -> None:  # type: ignore[no-untyped-def]
    sam, bo, _ = trio
    g = gatherings(sam)
    (eid,) = g.add_event("Workshop", clock() + 3 * HOUR, 60, "library", kind="workshop")
    shid = g.add_shift(eid, "chairs", clock() + 2 * HOUR + 30 * 60_000, 30, 1)
    g.rsvp(eid, "yes")
    assert g.reminders() == []  # too early
    clock.advance(90 * 60_000)
    assert [r.key.split(":")[0] for r in g.reminders()] == ["event"]
    g.take_shift(shid)
    clock.advance(10 * 60_000)
    assert [r.key.split(":")[0] for r in g.reminders()] == ["shift", "event"]
    exchange(sam, bo)
    assert gatherings(bo).reminders() == []  # bo said nothing and took nothing
    g.cancel_event(eid)
    assert g.reminders() == []


def test_hostile_records_are_malformed_not_fatal(trio) -> None:  # type: ignore[no-untyped-def]
    sam, _, _ = trio
    g = gatherings(sam)
    (eid,) = g.add_event("Ok", sam.clock() + HOUR, 60)
    with sam.doc.edit() as ed:
        ed.put_record("events", "bad1", {"title": 5, "starts_at": "soon"})
        ed.put_record("shifts", "bad2", {"event": eid, "title": "x", "starts_at": 0, "minutes": 60,
                                         "slots": -3, "author": "a", "created_at": 0, "takes": {}})
        ed.map_put("events", eid, "rsvps", "someone", "definitely")  # unknown answer: ignored
        ed.put_root_scalar("events", "junk", 7)
    assert [e.id for e in g.events()] == [eid] and g.event(eid).rsvps == {}
    assert {m.id for m in g.view().malformed} >= {"bad1", "bad2", "junk"}


def test_ics_parsed_back_with_a_standard_parser(trio) -> None:  # type: ignore[no-untyped-def]
    sam, _, _ = trio
    g = gatherings(sam)
    start = parse_when("2027-02-01T18:00", "Europe/Berlin")
    (eid,) = g.add_event("Potluck; soup, bread & ünïcode " + "x" * 80, start, 180, "room 2, back door",
                         kind="potluck", details="line one\nline two", tz="Europe/Berlin")
    shid = g.add_shift(eid, "set-up", start - HOUR, 60, 2)
    g.take_shift(shid)
    g.rsvp(eid, "yes")
    g.add_bring(eid, "lentil soup")
    (gone,) = g.add_event("Cancelled meeting", start, 60, kind="meeting")
    g.cancel_event(gone)
    handles = {m.id: m.handle for m in sam.members()}
    text = calendar("testcircle01", [(e, g.shifts_of(e.id), g.bring_list(e.id)) for e in g.events("all")],
                    handles, sam.clock())
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    cal = icalendar.Calendar.from_ical(text)
    events = {str(c["UID"]).split("@")[0]: c for c in cal.walk("VEVENT")}
    assert set(events) == {eid, shid, gone}
    pot = events[eid]
    assert str(pot["SUMMARY"]).startswith("Potluck; soup, bread & ünïcode x")
    assert str(pot["LOCATION"]) == "room 2, back door"
    assert int(pot.decoded("DTSTART").timestamp() * 1000) == start
    assert int(pot.decoded("DTEND").timestamp() * 1000) == start + 3 * HOUR
    assert "line one\nline two" in str(pot["DESCRIPTION"]) and "sam: lentil soup" in str(pot["DESCRIPTION"])
    assert int(events[shid].decoded("DTSTART").timestamp() * 1000) == start - HOUR
    assert str(events[gone]["STATUS"]) == "CANCELLED" and str(pot["STATUS"]) == "CONFIRMED"
