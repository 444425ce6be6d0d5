"""Export and import carry skills, hours, events, bring lists and shifts:
a round trip into another circle keeps every record a member can vouch for,
a second import adds nothing, a bad record changes nothing, and the CSV
files of the new collections are spreadsheet-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circle.crdt.board import Board
from circle.crdt.csvio import GATHER_CSV, collection_csv, export_csv_files
from circle.crdt.gatherings import gatherings
from circle.crdt.transfer import export_json, import_records, parse_import
from circle.errors import ImportError_
from factories import Clock, add_member, exchange, make_board, member_homes, replica
from livehelp import open_service

HOUR = 3_600_000


def filled(clock: Clock) -> tuple[Board, Board]:
    sam = make_board(clock)
    bo = replica(sam, add_member(sam, "bo"))
    g, gb = gatherings(sam), gatherings(bo)
    g.add_skill("Bike repair", "repair", teach=True, details="=HYPERLINK(\"http://x\")")
    (eid,) = g.add_event("Potluck", clock() + 48 * HOUR, 180, "community room", zone="north")
    sid = g.add_shift(eid, "set-up", clock() + 47 * HOUR, 60, 2)
    g.rsvp(eid, "yes")
    g.take_shift(sid)
    g.add_bring(eid, "lentil soup")
    g.set_timebank(True)
    exchange(sam, bo)
    x = gb.log_hours(sam.me, 90, "fixed the brake", gave=True)  # type: ignore[arg-type]
    exchange(sam, bo)
    g.confirm(x)
    exchange(sam, bo)
    return sam, bo


def shape(board: Board) -> dict[str, object]:
    """What survives a move: the records' content, not who wrote them."""
    v = gatherings(board).view()
    return {
        "skills": sorted((s.title, s.category, s.teach, s.details) for s in v.skills.values()),
        "events": sorted((e.id, e.title, e.starts_at, e.minutes, e.place, e.zone, e.tz) for e in v.events.values()),
        "shifts": sorted((s.id, s.event, s.title, s.starts_at, s.slots) for s in v.shifts.values()),
        "bring": sorted((b.event, b.item) for b in v.bring.values()),
        "exchanges": sorted((x.minutes, x.note) for x in v.raw_exchanges.values()),
    }


def test_export_import_round_trip_of_the_new_collections(clock: Clock, tmp_path: Path) -> None:
    sam, _ = filled(clock)
    data = export_json(sam)
    assert [len(data[n]) for n in ("skills", "events", "shifts", "bring", "exchanges")] == [1, 1, 1, 1, 1]
    assert data["settings"] == {"timebank": True}
    assert data["exchanges"][0]["status"] == "confirmed"  # derived state is exported, import ignores it
    text = json.dumps(data)

    # Another circle on a real device (signed membership, the trust layer on),
    # founded before it ever used gatherings.
    (path,) = member_homes(tmp_path, ["kim"])
    kim = open_service(path)
    report = import_records(kim.board, parse_import(text))
    assert {n: report[n]["added"] for n in ("skills", "events", "shifts", "bring", "exchanges")} == \
        {"skills": 1, "events": 1, "shifts": 1, "bring": 1, "exchanges": 1}
    assert report["settings"] == {"added": 0, "not_imported": 1}
    assert shape(kim.board) == shape(sam)
    # The importer vouches for what it wrote, no more: the records are kim's,
    # and answers, takes and confirmations in other members' names do not count.
    g = gatherings(kim.board)
    (event,) = g.view().events.values()
    (shift,) = g.view().shifts.values()
    (x,) = g.view().exchanges.values()
    assert event.author == kim.me and event.rsvps == {} and shift.takes == {}
    assert x.logged_by == kim.me and x.sides == {} and not x.counted
    assert not g.settings().timebank  # the other circle's own choice
    # Saved, reopened: the same; a second import adds nothing and changes nothing.
    kim = open_service(path)
    assert shape(kim.board) == shape(sam)
    heads = kim.doc.heads()
    again = import_records(kim.board, parse_import(text))
    assert all(again[n]["added"] == 0 for n in ("skills", "events", "shifts", "bring", "exchanges"))
    assert kim.doc.heads() == heads
    counts = kim.status()["counts"]
    assert (counts["skills"], counts["upcoming_events"], counts["open_shifts"]) == (1, 1, 1)
    assert "confirmed_exchanges" not in counts  # time bank off: nothing about hours


@pytest.mark.parametrize("collection,field,value,words", [
    ("shifts", "slots", 0, "slots or minutes out of range"),
    ("events", "kind", "rave", "must be one of"),
    ("events", "rsvps", {"notanid!": "yes"}, "keys are member ids"),
    ("exchanges", "sides", {"abc": "sure"}, "confirmed or disputed"),
    ("skills", "teach", "yes", "true or false"),
])
def test_a_bad_new_record_rejects_the_import_and_changes_nothing(clock: Clock, collection: str, field: str,
                                                                 value: object, words: str) -> None:
    sam, _ = filled(clock)
    data = export_json(sam)
    data[collection][0][field] = value
    other = make_board(clock, "kim")
    heads = other.doc.heads()
    with pytest.raises(ImportError_) as err:
        import_records(other, parse_import(json.dumps(data)))
    assert collection in str(err.value) and words in str(err.value)
    assert other.doc.heads() == heads


def test_csv_files_of_the_new_collections(clock: Clock) -> None:
    sam, _ = filled(clock)
    view, gather = sam.view(), gatherings(sam).view()
    files = export_csv_files(view, gather=gather)
    assert {f"{c}.csv" for c in GATHER_CSV} <= set(files)
    skills = collection_csv(view, "skills", gather=gather)
    assert "'=HYPERLINK" in skills  # a formula is shown, never run
    events = collection_csv(view, "events", gather=gather).splitlines()
    assert events[0].startswith("id,title,kind,starts,ends") and ",sam," in events[1]
    assert "1.5" in collection_csv(view, "exchanges", gather=gather)
    assert set(export_csv_files(view)) == {f"{c}.csv" for c in ("needs", "offers", "tools", "loans", "holds",
                                                                 "members")}
