"""Views carried over from the previous one (crdt/board.py Board.view):
judged again when only the minute changes, and never keeping earlier views alive."""

from __future__ import annotations

import gc
import weakref

from circle.crdt.model import DAY_MS, NeedStatus
from factories import Clock, make_board


def test_a_long_session_keeps_only_the_latest_views() -> None:
    board = make_board(Clock())
    refs = []
    for i in range(20):
        board.add_need(f"need {i}")
        view = board.view()
        view.needs  # noqa: B018
        refs.append(weakref.ref(view))
    del view
    gc.collect()
    assert sum(1 for r in refs if r() is not None) <= 2  # was 20: each view held every earlier one


def test_a_new_minute_rejudges_carried_over_records() -> None:
    clock = Clock()
    board = make_board(clock)
    soup = board.add_need("Soup", expires_days=1)
    assert board.view().needs[soup].status == NeedStatus.OPEN
    clock.advance(DAY_MS + 60_000)  # same heads, later minute: carried over, not re-read
    assert board.view().needs[soup].status == NeedStatus.EXPIRED
    assert board.needs("active") == []
