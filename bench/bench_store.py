"""Issue 2 benchmark: the local store at 1k, 10k and 100k records.

For each size, in a fresh subprocess (so peak RSS is per size):
- build a circle with N needs in memory, write it as a store, compact;
- load time (CircleService.open: snapshot + log, decrypt-free);
- one `need add` including its durable (fsync'd) append: median of 30;
- `need list` time: first (cold view), warm (same heads), and right after
  one more edit (the view re-reads only the changed record);
- store size on disk after compaction vs automerge's own save() size;
- peak RSS of the process.

Run: .venv/bin/python bench/bench_store.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_size(n: int) -> dict[str, float]:
    from circle.crdt.board import Board
    from circle.node.home import Home
    from circle.node.service import CircleService

    tmp = Path(tempfile.mkdtemp(prefix="circle-bench-"))
    home = Home.create(tmp / "home", None)
    svc = CircleService.create(home, "Bench", "sam")
    board: Board = svc.board
    board.on_commit = None  # bulk build in memory; the store is written once below
    t0 = time.perf_counter()
    for i in range(n):
        board.add_need(f"Need number {i}", details="Something useful for the circle",
                       category=("food", "transport", "housing")[i % 3], tags=[f"t{i % 7}"])
    build_s = time.perf_counter() - t0
    board.on_commit = svc._local_commit
    svc.persist()
    svc.compact()
    save_size = len(svc.doc.save())
    store_size = svc.store.snapshot_size() + svc.store.log_size() + 24

    t0 = time.perf_counter()
    svc2 = CircleService.open(Home.open(tmp / "home", None))
    load_s = time.perf_counter() - t0

    adds = []
    for i in range(30):
        t0 = time.perf_counter()
        svc2.board.add_need(f"Timed need {i}", category="food")
        adds.append(time.perf_counter() - t0)

    svc2.board.invalidate()
    t0 = time.perf_counter()
    listed = svc2.board.needs("active")
    list_cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    svc2.board.needs("active")
    list_warm_s = time.perf_counter() - t0
    svc2.board.add_need("One more", category="food")
    t0 = time.perf_counter()
    svc2.board.needs("active")
    list_after_edit_s = time.perf_counter() - t0
    assert len(listed) == n + 30
    return {
        "records": n, "build_s": build_s, "load_ms": load_s * 1000,
        "add_median_ms": statistics.median(adds) * 1000, "add_p90_ms": sorted(adds)[26] * 1000,
        "list_cold_ms": list_cold_s * 1000, "list_warm_ms": list_warm_s * 1000,
        "list_after_edit_ms": list_after_edit_s * 1000,
        "store_bytes": store_size, "save_bytes": save_size, "store_over_save": store_size / save_size,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one)))
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
    cols = ["records", "load_ms", "add_median_ms", "add_p90_ms", "list_cold_ms", "list_warm_ms", "list_after_edit_ms",
            "store_bytes", "save_bytes", "store_over_save", "peak_rss_mb", "build_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
