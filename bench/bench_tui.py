"""TUI benchmark at 10k records: launch to first interactive frame, and
keystroke in the filter to updated table (Textual Pilot, headless).

    /work/venv/bin/python bench/bench_tui.py [--records 10000] [--runs 5]

Records: 60% needs, 30% offers, 10% tools. Prints medians (and min/max).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from benchcircle import founded_board
from textual import events
from textual.strip import Strip

from circle.crdt.model import Urgency
from circle.crdt.search import SearchIndex
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.app import CircleApp
from circle.tui.table import RecordTable, filter_indices

WORDS = "soup firewood ride clinic groceries coat sofa drill ladder dog walk bread bike garden kids tap".split()
ZONES = ["north", "south", "east", "west"]
URG = list(Urgency)


def make_home(root: Path, records: int) -> Path:
    home = Home.create(root / "home", None)
    me = home.identity
    # no on_commit: one save at the end, not 10k appends
    doc, board, cid, number, key = founded_board(me, "Bench", "me", int(time.time() * 1000))
    n_needs, n_offers = records * 6 // 10, records * 3 // 10
    for i in range(n_needs):
        w = WORDS[i % len(WORDS)], WORDS[(i * 7) % len(WORDS)]
        board.add_need(f"{w[0]} and {w[1]} #{i}", f"details {i}", w[0], [w[1]], URG[i % 4], ZONES[i % 4])
    for i in range(n_offers):
        board.add_offer(f"offer {WORDS[i % len(WORDS)]} #{i}", "", WORDS[(i * 3) % len(WORDS)], zone=ZONES[i % 4])
    for i in range(records - n_needs - n_offers):
        board.add_tool(f"tool {WORDS[i % len(WORDS)]} #{i}", "", "tools")
    svc = CircleService.create_from_doc(home, cid, "Bench", doc, {number: key}, number)
    svc.gate.resign_missing(svc.doc)  # every change signed, as a real device's would be
    return home.path


async def launch_once(path: Path) -> tuple[float, float, float, int]:
    """(open the circle, first frame painted, table filled and painted): each
    from the start, which is when `circle` would open the home."""
    _frames.clear()
    RecordTable.render_line = _spy  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        svc = CircleService.open(Home.open(path, None))
        svc.refresh()
        t_open = time.perf_counter() - t0
        app = CircleApp(svc, refresh_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(20_000):
                if "filled" in _frames:
                    break
                await asyncio.sleep(0.0005)
            await pilot.pause()
            assert app.board_screen is not None and app.board_screen.loaded
            rows = len(app.board_screen.query_one("#needs-table", RecordTable).shown)
    finally:
        RecordTable.render_line = _render_line  # type: ignore[method-assign]
    return t_open, _frames["first"] - t0, _frames["filled"] - t0, rows


KEYS = [*"soup 12", *["backspace"] * 7, *"clinic", *["backspace"] * 6]

# When the table paints its first data line for a given filter text: the
# moment the updated table is on screen (the compositor calls render_line
# while building the frame).
_painted: dict[str, float] = {}
_render_line = RecordTable.render_line


_frames: dict[str, float] = {}


def _spy(self: RecordTable, y: int) -> Strip:
    strip = _render_line(self, y)
    if y == 1 and self.id == "needs-table":
        now = time.perf_counter()
        _painted.setdefault(self.query_text, now)
        _frames.setdefault("first", now)
        if self.shown:
            _frames.setdefault("filled", now)
    return strip


async def filter_keys(path: Path) -> tuple[list[float], list[float], list[float], int]:
    """Per keystroke: (key event sent -> updated table painted), (Pilot.press
    round trip, which adds Pilot's idle detection), (filter computation alone)."""
    svc = CircleService.open(Home.open(path, None))
    app = CircleApp(svc, refresh_interval=3600)
    painted: list[float] = []
    via_pilot: list[float] = []
    pure: list[float] = []
    RecordTable.render_line = _spy  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert app.board_screen is not None
            table = app.board_screen.query_one("#needs-table", RecordTable)
            await pilot.press("f")
            driver = app._driver
            assert driver is not None
            for _ in range(3):
                for key in KEYS:
                    char = key if len(key) == 1 else None
                    expected = table.query_text + key if char else table.query_text[:-1]
                    _painted.pop(expected, None)
                    event = events.Key(key, char)
                    event.set_sender(app)
                    t0 = time.perf_counter()
                    driver.send_message(event)
                    for _ in range(20_000):
                        if expected in _painted:
                            break
                        await asyncio.sleep(0.0005)
                    assert expected in _painted, f"table never painted for {expected!r}"
                    painted.append(_painted[expected] - t0)
                    await pilot.pause()
            for _ in range(2):
                for key in KEYS:
                    t0 = time.perf_counter()
                    await pilot.press(key)
                    via_pilot.append(time.perf_counter() - t0)
                    t1 = time.perf_counter()
                    filter_indices(table.rows, table.query_text)
                    pure.append(time.perf_counter() - t1)
            total = len(table.rows)
    finally:
        RecordTable.render_line = _render_line  # type: ignore[method-assign]
    return painted, via_pilot, pure, total


SEARCH_KEYS = [*"drill 3", *["backspace"] * 7, *"soup", *["backspace"] * 4]


def search_keys(path: Path) -> tuple[float, list[float]]:
    """`/` search across every collection: (index build once, search per keystroke)."""
    svc = CircleService.open(Home.open(path, None))
    view = svc.board.view()
    t0 = time.perf_counter()
    index = SearchIndex.build(view)
    build = time.perf_counter() - t0
    per_key: list[float] = []
    for _ in range(3):
        text = ""
        for key in SEARCH_KEYS:
            text = text[:-1] if key == "backspace" else text + key
            t1 = time.perf_counter()
            index.search(text)
            per_key.append(time.perf_counter() - t1)
    return build, per_key


async def search_screen_keys(path: Path) -> list[float]:
    """The same through the app: key sent -> SearchScreen results updated (Pilot round trip)."""
    svc = CircleService.open(Home.open(path, None))
    app = CircleApp(svc, refresh_interval=3600)
    out: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("slash")
        await pilot.pause()
        for key in SEARCH_KEYS:
            t0 = time.perf_counter()
            await pilot.press(key)
            out.append(time.perf_counter() - t0)
    return out


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        path = make_home(Path(tmp), args.records)
        print(f"generated {args.records} records in {time.perf_counter() - t:.1f} s")
        opens, firsts, filled = [], [], []
        for _ in range(args.runs):
            t_open, t_first, t_filled, rows = asyncio.run(launch_once(path))
            opens.append(t_open)
            firsts.append(t_first)
            filled.append(t_filled)
        print(f"launch -> first frame painted: median {ms(statistics.median(firsts))} "
              f"(min {ms(min(firsts))}, max {ms(max(firsts))})")
        print(f"launch -> table filled and interactive: median {ms(statistics.median(filled))} "
              f"(min {ms(min(filled))}, max {ms(max(filled))}); needs table rows {rows}")
        print(f"  of which opening the circle (load + change log) median {ms(statistics.median(opens))}")
        painted, via_pilot, pure, total = asyncio.run(filter_keys(path))
        print(f"filter keystroke -> updated table painted: median {ms(statistics.median(painted))} "
              f"(max {ms(max(painted))}, n={len(painted)}) over {total} rows")
        print(f"  same through Pilot.press (adds Pilot's idle wait): median {ms(statistics.median(via_pilot))}")
        print(f"  filter computation alone: median {ms(statistics.median(pure))}")
        build, per_key = search_keys(path)
        print(f"search everything: index built in {ms(build)} when / opens; per keystroke median "
              f"{ms(statistics.median(per_key))} (max {ms(max(per_key))}, n={len(per_key)})")
        screen = asyncio.run(search_screen_keys(path))
        print(f"  through the search screen (Pilot.press round trip): median {ms(statistics.median(screen))}")


if __name__ == "__main__":
    main()
