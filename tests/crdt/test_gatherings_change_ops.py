"""Finding the records a peer's change touched from its ops (not automerge's
diff): exact for small and deflated changes, a clean refusal otherwise."""

from __future__ import annotations

import pytest

from circle.crdt import change_ops
from circle.crdt.gatherings import GatherView, gatherings
from factories import Clock, add_member, exchange, make_board, replica

HOUR = 3_600_000


def test_a_peers_changes_are_read_from_their_ops_not_diffed(clock: Clock) -> None:
    sam = make_board(clock)
    bo = replica(sam, add_member(sam, "bo"))
    g = gatherings(sam)
    (eid,) = g.add_event("Potluck", clock() + 24 * HOUR, 120, "hall")
    sid = g.add_shift(eid, "door", clock() + 23 * HOUR, 60, 1)
    exchange(sam, bo)
    g.view()
    gatherings(bo).rsvp(eid, "yes")           # a put in an existing nested map
    gatherings(bo).take_shift(sid)
    gatherings(bo).add_bring(eid, "bread")    # a new record
    gatherings(bo).add_skill("Sewing")
    sam.needs()                                # (the board's own view is no concern here)
    calls: list[object] = []
    real = sam.doc.changed_records
    sam.doc.changed_records = lambda *a: calls.append(a) or real(*a)  # type: ignore[method-assign]
    exchange(sam, bo)
    view = g.view()
    assert calls == [], "fell back to automerge's diff"
    fresh = GatherView(sam.doc)
    for name in ("skills", "events", "bring", "shifts"):
        assert getattr(view, name) == getattr(fresh, name), name
    assert view.events[eid].rsvps == {bo.me: "yes"} and view.shifts[sid].takers == (bo.me,)


def test_a_big_deflated_change_is_read_exactly(clock: Clock) -> None:
    sam = make_board(clock)
    bo = replica(sam, add_member(sam, "bo"))
    gatherings(sam).add_skill("seed")
    exchange(sam, bo)
    gatherings(sam).view()
    with bo.doc.edit() as ed:  # one change with hundreds of ops: automerge deflates it
        for i in range(300):
            ed.put_record("skills", f"s{i:05d}", {"title": f"skill {i} " + "x" * 40, "category": "c",
                                                   "details": "", "teach": False, "author": bo.me or "",
                                                   "created_at": 1, "updated_at": 1, "removed_at": None})
    big = bo.doc.changes_since(gatherings(sam).doc.heads())
    assert any(c[8] == 2 for c in big)  # chunk type 2: a deflated change
    exchange(sam, bo)
    view = gatherings(sam).view()
    assert view.skills == GatherView(sam.doc).skills and len(view.skills) == 301


def test_unreadable_bytes_are_refused_not_guessed() -> None:
    with pytest.raises(ValueError):
        change_ops.ops(b"not a change at all")
    with pytest.raises(ValueError):
        change_ops.ops(change_ops.MAGIC + b"\x00" * 4 + b"\x01\x7f")  # length past the end


def test_a_run_count_is_capped_before_it_is_expanded() -> None:
    import zlib
    # RLE: a run of 2^40 nulls must be refused, not expanded.
    with pytest.raises(ValueError, match="more ops"):
        list(change_ops._rle(b"\x00\x80\x80\x80\x80\x80\x20", "int"))
    bomb = zlib.compressobj(wbits=-15)
    data = bomb.compress(b"\x00" * (80 * 1024 * 1024)) + bomb.flush()
    with pytest.raises(ValueError, match="inflates"):
        change_ops._inflate(data)
