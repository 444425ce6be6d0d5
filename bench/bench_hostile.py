"""Issue 9 (hostile content) benchmark: what the read guard costs.

Builds one circle with N needs on disk, then times, each in a fresh process
(cold: nothing cached), "open the circle and list the needs" — the path every
`circle need list` takes — in wall time and in the process's CPU time (less
sensitive to other processes on a shared machine). Runs alternate between two source trees when
--base-src is given (e.g. an export of the commit before the change), so both
are measured in the same run under the same machine load. Also times the
same on a copy of the circle into which one hostile change (a Counter in one
need's field, written by JavaScript Automerge when node is present, else
skipped) was synced: the slow path, taken only by such documents.

Run: .venv/bin/python bench/bench_hostile.py [--records 10000] [--rounds 5] [--base-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(home_dir: Path, n: int) -> None:
    from circle.node.home import Home
    from circle.node.service import CircleService

    home = Home.create(home_dir, None)
    svc = CircleService.create(home, "Bench", "sam")
    svc.board.on_commit = None
    for i in range(n):
        svc.board.add_need(f"Need number {i}", details="Something useful for the circle",
                           category=("food", "transport", "housing")[i % 3], tags=[f"t{i % 7}"])
    svc.board.on_commit = svc._local_commit
    svc.persist()
    svc.compact()


def poison(home_dir: Path) -> bool:
    """Sync one change with a Counter in one need's urgency into the circle."""
    sys.path.insert(0, str(ROOT / "tests"))
    from jsam import JS_DIR, js_edit

    if shutil.which("node") is None or not (JS_DIR / "node_modules").is_dir():
        return False
    from circle.crdt.am import AmDoc
    from circle.node.home import Home
    from circle.node.service import CircleService

    svc = CircleService.open(Home.open(home_dir, None))
    need = svc.board.needs()[0].id
    before = svc.doc.heads()
    # A modified client on a member's device: written under its actor, signed by it.
    theirs = AmDoc.load(js_edit(svc.doc.save(), [{"path": ["needs", need, "urgency"], "value": {"counter": 1}}],
                                actor=svc.doc.actor()))
    svc.doc.apply_changes(theirs.changes_since(before))
    svc._local_commit()  # signs and persists it like any change of this device
    svc.compact()
    return True


def one(home_dir: str) -> None:
    """Child: open + list, timed."""
    t0 = time.perf_counter()
    from circle.node.home import Home
    from circle.node.service import CircleService

    t1, c1 = time.perf_counter(), time.process_time()
    svc = CircleService.open(Home.open(Path(home_dir), None))
    t2, c2 = time.perf_counter(), time.process_time()
    needs = svc.board.needs("active")
    t3, c3 = time.perf_counter(), time.process_time()
    print(json.dumps({"import_ms": (t1 - t0) * 1000, "open_ms": (t2 - t1) * 1000,
                      "list_cold_ms": (t3 - t2) * 1000, "open_list_ms": (t3 - t1) * 1000,
                      "open_list_cpu_ms": (c3 - c1) * 1000, "list_cold_cpu_ms": (c3 - c2) * 1000,
                      "n": len(needs)}))


def run(home_dir: Path, src: Path | None) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run([sys.executable, __file__, "--one", str(home_dir)], env=env,
                         capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--base-src", type=Path, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one)
        return
    tmp = Path(tempfile.mkdtemp(prefix="circle-bench-hostile-"))
    try:
        build(tmp / "clean", args.records)
        shutil.copytree(tmp / "clean", tmp / "hostile")
        hostile = poison(tmp / "hostile")
        trees: list[tuple[str, Path | None, Path]] = [("new", None, tmp / "clean")]
        if args.base_src is not None:
            trees.insert(0, ("base", args.base_src, tmp / "clean"))
        if hostile:
            trees.append(("new+hostile", None, tmp / "hostile"))
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in trees}
        for _ in range(args.rounds):
            for name, src, home in trees:
                results[name].append(run(home, src))
        print(f"{args.records} records, {args.rounds} rounds, median (min) in ms")
        cols = ("open_ms", "list_cold_ms", "open_list_ms", "list_cold_cpu_ms", "open_list_cpu_ms")
        print("tree | " + " | ".join(cols))
        for name, rows in results.items():
            cells = []
            for col in cols:
                values = [r[col] for r in rows]
                cells.append(f"{statistics.median(values):.1f} ({min(values):.1f})")
            print(f"{name} | " + " | ".join(cells))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
