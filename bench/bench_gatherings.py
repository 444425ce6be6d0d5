"""Gatherings at 10k records of all kinds (needs, offers, tools, skills,
events, shifts, bring-list entries, exchanges):

1. `circle event list` against `circle need list` on the same home, as real
   CLI processes (median of --runs), and the in-process cold/warm/after-edit
   cost of the events list against the needs list;
2. the Events tab: switching to it until its table is painted, and a filter
   keystroke until the updated table is painted (headless, 120x40);
3. one new event edit -> visible on a live peer over an encrypted loopback
   session (LiveSync, 127.0.0.1 only), median/p90 over --trials.

    .venv/bin/python bench/bench_gatherings.py [--records 10000] [--runs 5] [--trials 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from textual import events as tevents
from textual.strip import Strip

from circle.crdt.gatherings import gatherings
from circle.crdt.model import Urgency
from circle.node import membership
from circle.node.home import Home
from circle.node.live import LiveSync
from circle.node.service import CircleService
from circle.tui.app import CircleApp
from circle.tui.table import RecordTable

WORDS = "soup firewood ride clinic groceries coat sofa drill ladder dog walk bread bike garden kids tap".split()
HOUR = 3_600_000


def make_homes(root: Path, records: int) -> tuple[Path, Path]:
    """Two members' homes of one circle holding `records` records of all kinds."""
    a_home = Home.create(root / "ana", None)
    svc = CircleService.create(a_home, "Bench", "ana")
    b_home = Home.create(root / "bo", None)
    ident = b_home.identity
    membership.add_member(svc, ident.verify_key, ident.box_public, "bo", "")
    board, g = svc.board, gatherings(svc.board)
    board.on_commit = None  # one append at the end, not 10k fsyncs
    g.set_timebank(True)
    now = board.clock()
    share = {"needs": 20, "offers": 10, "tools": 5, "skills": 15, "events": 20, "shifts": 10, "bring": 10,
             "exchanges": 10}
    n = {k: records * v // 100 for k, v in share.items()}
    for i in range(n["needs"]):
        w = WORDS[i % len(WORDS)], WORDS[(i * 7) % len(WORDS)]
        board.add_need(f"{w[0]} and {w[1]} #{i}", f"details {i}", w[0], [w[1]], list(Urgency)[i % 4])
    for i in range(n["offers"]):
        board.add_offer(f"offer {WORDS[i % len(WORDS)]} #{i}", "", WORDS[(i * 3) % len(WORDS)])
    for i in range(n["tools"]):
        board.add_tool(f"tool {WORDS[i % len(WORDS)]} #{i}", "", "tools")
    # The gathering records are written in batches with the same fields the
    # actions write (each action alone costs one small transaction; 6k of
    # them one by one only make this set-up slow).
    me, other = svc.me, ident.member_id
    kinds = ["potluck", "workshop", "meeting", "cleanup", "other"]
    event_ids = [(f"ev{i:06d}", now + (i - n["events"] // 3) * 6 * HOUR) for i in range(n["events"])]
    with board.doc.edit() as ed:
        for i in range(n["skills"]):
            ed.put_record("skills", f"sk{i:06d}", {
                "title": f"{WORDS[i % len(WORDS)]} skill #{i}", "category": WORDS[(i * 5) % len(WORDS)],
                "details": "", "teach": i % 3 == 0, "author": me, "created_at": now, "updated_at": now,
                "removed_at": None})
        for i, (eid, start) in enumerate(event_ids):  # a third past, the rest upcoming
            ed.put_record("events", eid, {
                "title": f"{WORDS[i % len(WORDS)]} gathering #{i}", "kind": kinds[i % 5], "details": "",
                "place": f"room {i % 9}", "zone": "", "minutes": 120, "tz": "UTC", "author": me,
                "created_at": now, "updated_at": now, "cancelled_at": None, "series": None, "starts_at": start,
                "rsvps": {me: "yes"} if i % 2 else {}})
        for i in range(n["shifts"]):
            eid, start = event_ids[i % len(event_ids)]
            ed.put_record("shifts", f"sh{i:06d}", {
                "event": eid, "title": f"shift {i}", "starts_at": start - HOUR, "minutes": 60,
                "slots": 1 + i % 3, "author": me, "created_at": now, "cancelled_at": None,
                "takes": {me: now} if i % 2 else {}})
        for i in range(n["bring"]):
            ed.put_record("bring", f"br{i:06d}", {
                "event": event_ids[i % len(event_ids)][0], "member": me, "item": f"{WORDS[i % len(WORDS)]} #{i}",
                "created_at": now, "removed_at": None})
        for i in range(n["exchanges"]):
            giver, receiver = (me, other) if i % 2 == 0 else (other, me)
            ed.put_record("exchanges", f"ex{i:06d}", {
                "giver": giver, "receiver": receiver, "minutes": 30 + 30 * (i % 4), "note": f"help #{i}",
                "need": None, "logged_by": me, "created_at": now - i * 1000,
                "sides": {me: "confirmed", other: "confirmed"} if i % 3 else {me: "confirmed"},
                "notes": {}, "withdrawn_at": None, "seen": ""})
    svc.board.on_commit = svc._local_commit
    svc._local_commit()  # sign and persist everything written above, once
    svc.compact()
    joined = CircleService.join_from_snapshot(b_home, svc.config.circle_id, "Bench", svc.packed_snapshot(),
                                              svc.keyring(), svc.config.epoch)
    membership.reconcile(joined)
    return a_home.path, b_home.path


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


def cli_times(path: Path, runs: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}
    env["CIRCLE_HOME"] = str(path)
    for args in (["need", "list"], ["event", "list"], ["event", "list", "--all"], ["skill", "list"]):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "circle", *args], env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        print(f"  circle {' '.join(args):<18} median {ms(statistics.median(times))} "
              f"(min {ms(min(times))}, max {ms(max(times))})")


def in_process(path: Path) -> None:
    svc = CircleService.open(Home.open(path, None))
    g = gatherings(svc.board)
    for name, fn in (("needs(active)", lambda: svc.board.needs("active")),
                     ("events(upcoming)", lambda: g.events("upcoming"))):
        t0 = time.perf_counter()
        rows = fn()
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn()
        warm = time.perf_counter() - t0
        print(f"  {name:<17} cold {ms(cold)}, warm {ms(warm)} ({len(rows)} rows)")
    g.add_event("one more", svc.clock() + HOUR, 60)
    t0 = time.perf_counter()
    g.events("upcoming")
    print(f"  events(upcoming) after one edit {ms(time.perf_counter() - t0)}")


_painted: dict[str, float] = {}
_render_line = RecordTable.render_line


def _spy(self: RecordTable, y: int) -> Strip:
    strip = _render_line(self, y)
    if y == 1 and self.id == "events-table" and self.rows:
        _painted.setdefault(self.query_text, time.perf_counter())
    return strip


async def events_tab(path: Path, runs: int) -> None:
    svc = CircleService.open(Home.open(path, None))
    app = CircleApp(svc, refresh_interval=3600)
    switch, keys = [], []
    RecordTable.render_line = _spy  # type: ignore[method-assign]
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            assert app.board_screen is not None
            table = app.board_screen.query_one("#events-table", RecordTable)
            driver = app._driver
            assert driver is not None
            for _ in range(runs):
                await pilot.press("1")
                app.board_screen._dirty.add("events")  # as after an edit
                await pilot.pause()
                _painted.clear()
                event = tevents.Key("7", "7")
                event.set_sender(app)
                t0 = time.perf_counter()
                driver.send_message(event)
                while "" not in _painted:
                    await asyncio.sleep(0.0005)
                switch.append(_painted[""] - t0)
                await pilot.pause()
            await pilot.press("f")  # the filter box (`/` is the search screen)
            for key in [*"soup 12", *["backspace"] * 7] * 2:
                expected = table.query_text + key if len(key) == 1 else table.query_text[:-1]
                _painted.pop(expected, None)
                event = tevents.Key(key, key if len(key) == 1 else None)
                event.set_sender(app)
                t0 = time.perf_counter()
                driver.send_message(event)
                for _ in range(20_000):
                    if expected in _painted:
                        break
                    await asyncio.sleep(0.0005)
                if expected in _painted:
                    keys.append(_painted[expected] - t0)
                await pilot.pause()
            rows = len(table.rows)
            pane = app.board_screen.tabs["events"]
            fills = []
            for _ in range(runs):
                t0 = time.perf_counter()
                pane.rebuild()
                fills.append(time.perf_counter() - t0)
            board = app.board_screen
            need_fills = []
            for _ in range(runs):
                t0 = time.perf_counter()
                board._dirty.add("needs")
                board._rebuild("needs")
                need_fills.append(time.perf_counter() - t0)
    finally:
        RecordTable.render_line = _render_line  # type: ignore[method-assign]
    print(f"  switch to Events (rebuild {rows} rows) -> painted: median {ms(statistics.median(switch))} "
          f"(max {ms(max(switch))})")
    print(f"  rows rebuilt alone: events {ms(statistics.median(fills))}, needs {ms(statistics.median(need_fills))}"
          " (median, same app)")
    print(f"  filter keystroke -> updated table painted: median {ms(statistics.median(keys))} "
          f"(max {ms(max(keys))}, n={len(keys)})")


async def live(a_path: Path, b_path: Path, trials: int) -> None:
    a = CircleService.open(Home.open(a_path, None))
    b = CircleService.open(Home.open(b_path, None))
    ga, gb = gatherings(a.board), gatherings(b.board)
    server = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await server.start()
    assert server.bound is not None
    client = LiveSync(b, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{server.bound[1]}"])
    await client.start()
    in_doc: list[float] = []
    in_list: list[float] = []
    try:
        deadline = time.monotonic() + 60
        while not any(p.in_sync for p in client.peers.values()):
            assert time.monotonic() < deadline, "no first sync"
            await asyncio.sleep(0.01)
        gb.view().events  # noqa: B018 - parse once, as an open app has
        for i in range(trials):
            t0 = time.perf_counter()
            (eid,) = ga.add_event(f"live event {i}", a.clock() + 24 * HOUR, 60, "hall")
            while b.doc.record("events", eid) is None:
                await asyncio.sleep(0.0005)
            in_doc.append(time.perf_counter() - t0)
            while eid not in gb.view().events:
                await asyncio.sleep(0.0005)
            in_list.append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)
    finally:
        await client.close()
        await server.close()
    for name, lat in (("readable by id on the peer (`circle event show ID`)", in_doc),
                      ("in the peer's parsed event list (Events tab data)", in_list)):
        lat.sort()
        print(f"  new event edit -> {name}: median {ms(statistics.median(lat))}, "
              f"p90 {ms(lat[int(len(lat) * 0.9) - 1])} (n={len(lat)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--only", choices=["cli", "tab", "live"], default=None,
                        help="run one part only (the others take minutes at 10k)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        a_path, b_path = make_homes(Path(tmp), args.records)
        print(f"generated {args.records} records of all kinds in {time.perf_counter() - t:.1f} s")
        if args.only in (None, "cli"):
            print("CLI (whole process: start, open, list):")
            cli_times(a_path, args.runs)
            print("in process:")
            in_process(a_path)
        if args.only in (None, "tab"):
            print("Events tab:")
            asyncio.run(events_tab(a_path, args.runs))
        if args.only in (None, "live"):
            print("live loopback peer:")
            asyncio.run(live(a_path, b_path, args.trials))


if __name__ == "__main__":
    main()
