"""The meeting report lists upcoming gatherings (with who is coming), the
shifts that still need people, and the pinned resources, in Markdown and in
HTML, with members' text escaped in both."""

from __future__ import annotations

from circle.crdt.board import Board
from circle.crdt.defence import Defence, ResourceKind
from circle.crdt.gatherings import gatherings
from circle.crdt.report import build_for, html, markdown
from factories import Clock, add_member, exchange, make_board, replica

HOUR = 3_600_000
DAY = 24 * HOUR
HOSTILE = "<script>alert(1)</script> | #"


def board_with_plans(clock: Clock) -> Board:
    sam = make_board(clock)
    bo = replica(sam, add_member(sam, "bo"))
    g = gatherings(sam)
    (potluck,) = g.add_event("Potluck", clock() + 3 * DAY, 180, "community room")
    (later,) = g.add_event("Spring fair", clock() + 30 * DAY, 240, "park")  # past the 14-day horizon
    (off,) = g.add_event("Cancelled meeting", clock() + 2 * DAY, 60, "hall")
    g.cancel_event(off)
    (pantry,) = g.add_event(HOSTILE, clock() + 5 * DAY, 120, "")
    g.add_shift(potluck, "set-up", clock() + 3 * DAY - HOUR, 60, 2)
    full = g.add_shift(pantry, "door", clock() + 5 * DAY, 60, 1)
    g.add_shift(later, "stalls", clock() + 30 * DAY, 60, 4)
    g.rsvp(potluck, "yes")
    g.take_shift(full)
    exchange(sam, bo)
    gatherings(bo).rsvp(potluck, "yes")
    exchange(sam, bo)
    d = Defence(sam)
    d.add_resource("Legal hotline", "0800 000 000, 24/7", ResourceKind.LEGAL)
    d.add_resource("Street medics", "", ResourceKind.MEDICAL)
    return sam


def test_report_has_gatherings_open_shifts_and_resources_in_markdown(clock: Clock) -> None:
    sam = board_with_plans(clock)
    rep = build_for(sam, clock())
    md = markdown(rep)
    assert "- 2 gatherings in the next 14 days, 1 shift still need people" in md
    gatherings_part = md.split("## Upcoming gatherings (next 14 days)")[1].split("## Open shifts")[0]
    assert "| Potluck | community room | bo, sam |" in gatherings_part
    assert "place to be decided" in gatherings_part  # no place given
    assert "Spring fair" not in md and "Cancelled meeting" not in md
    shifts_part = md.split("## Open shifts")[1].split("## Resources")[0]
    assert "| set-up | Potluck |" in shifts_part and "1 of 2 open" not in shifts_part and "2 of 2 open" in shifts_part
    assert "door" not in shifts_part  # taken: covered
    resources_part = md.split("## Resources")[1]
    assert "| legal | Legal hotline | 0800 000 000, 24/7 |" in resources_part
    assert "| medical | Street medics |  |" in resources_part
    assert "\\| #" in md and "<script>alert(1)</script> \\|" in md  # a pipe cannot break the table


def test_report_has_gatherings_open_shifts_and_resources_in_html(clock: Clock) -> None:
    sam = board_with_plans(clock)
    page = html(build_for(sam, clock()))
    assert "<h2>Upcoming gatherings (next 14 days)</h2>" in page and "<h2>Open shifts</h2>" in page
    assert "<h2>Resources</h2>" in page
    assert "<td>Legal hotline</td><td>0800 000 000, 24/7</td>" in page
    assert "<td>2 of 2 open</td>" in page and "<td>bo, sam</td>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_report_says_so_when_nothing_is_planned(clock: Clock) -> None:
    sam = make_board(clock)
    md, page = markdown(build_for(sam, clock())), html(build_for(sam, clock()))
    for text in (md, page):
        assert "No gatherings planned in the next 14 days." in text and "Every shift is covered." in text
        assert "No pinned resources yet" in text
