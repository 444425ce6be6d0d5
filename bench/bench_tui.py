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

from circle.crdt.board import Board, Profile
from circle.crdt.model import Urgency
from circle.home import Home
from circle.net.keys import new_epoch_key
from circle.service import CircleService, new_circle_id
from circle.tui.app import CircleApp
from circle.tui.table import RecordTable, filter_indices

WORDS = "soup firewood ride clinic groceries coat sofa drill ladder dog walk bread bike garden kids tap".split()
ZONES = ["north", "south", "east", "west"]
URG = list(Urgency)


def make_home(root: Path, records: int) -> Path:
    home = Home.create(root / "home", None)
    me = home.identity
    cid = new_circle_id()
    doc = Board.create_document("Bench", cid, me.member_id, Profile("me", me.verify_key, me.box_public, "north"),
                                int(time.time() * 1000))
    board = Board(doc, me.member_id)  # no on_commit: one save at the end, not 10k appends
    n_needs, n_offers = records * 6 // 10, records * 3 // 10
    for i in range(n_needs):
        w = WORDS[i % len(WORDS)], WORDS[(i * 7) % len(WORDS)]
        board.add_need(f"{w[0]} and {w[1]} #{i}", f"details {i}", w[0], [w[1]], URG[i % 4], ZONES[i % 4])
    for i in range(n_offers):
        board.add_offer(f"offer {WORDS[i % len(WORDS)]} #{i}", "", WORDS[(i * 3) % len(WORDS)], zone=ZONES[i % 4])
    for i in range(records - n_needs - n_offers):
        board.add_tool(f"tool {WORDS[i % len(WORDS)]} #{i}", "", "tools")
    CircleService.create_from_doc(home, cid, "Bench", doc, {0: new_epoch_key()}, 0)
    return home.path


async def launch_once(path: Path) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    svc = CircleService.open(Home.open(path, None))
    svc.refresh()
    t_open = time.perf_counter() - t0
    app = CircleApp(svc, refresh_interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()  # first frame with the table filled; keys are handled from here
        t_frame = time.perf_counter() - t0
        assert app.board_screen is not None
        rows = len(app.board_screen.query_one("#needs-table", RecordTable).shown)
    return t_open, t_frame, rows


async def filter_keys(path: Path) -> tuple[list[float], list[float], int]:
    svc = CircleService.open(Home.open(path, None))
    app = CircleApp(svc, refresh_interval=3600)
    per_key: list[float] = []
    pure: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.board_screen is not None
        table = app.board_screen.query_one("#needs-table", RecordTable)
        await pilot.press("slash")
        keys = [*"soup 12", *["backspace"] * 7, *"clinic", *["backspace"] * 6]
        for _ in range(3):
            for key in keys:
                before = table.query_text
                t0 = time.perf_counter()
                await pilot.press(key)
                per_key.append(time.perf_counter() - t0)
                assert table.query_text != before, "the keystroke did not reach the table"
                t1 = time.perf_counter()
                filter_indices(table.rows, table.query_text)
                pure.append(time.perf_counter() - t1)
        total = len(table.rows)
    return per_key, pure, total


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
        opens, frames = [], []
        for _ in range(args.runs):
            t_open, t_frame, rows = asyncio.run(launch_once(path))
            opens.append(t_open)
            frames.append(t_frame)
        print(f"launch -> first interactive frame: median {ms(statistics.median(frames))} "
              f"(min {ms(min(frames))}, max {ms(max(frames))}); of which opening the circle "
              f"(decrypt/load/parse) median {ms(statistics.median(opens))}; needs table rows {rows}")
        per_key, pure, total = asyncio.run(filter_keys(path))
        print(f"filter keystroke -> updated table (Pilot press, incl. render): median "
              f"{ms(statistics.median(per_key))} (max {ms(max(per_key))}, n={len(per_key)}) over {total} rows")
        print(f"filter computation alone: median {ms(statistics.median(pure))}")


if __name__ == "__main__":
    main()
