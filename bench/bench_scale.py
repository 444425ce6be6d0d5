"""Issue 16 case 8: scale edges, every figure from a whole `circle` process.

1. import of N needs (a JSON export of about 400 bytes per record);
2. `circle status` and `circle need list` on that home (cold process each),
   with nothing changed and right after an edit (`need add` keeps the board
   view for the next process: node/viewstore.py), and a command that still
   loads the document (`tool list`) for comparison;
3. `circle bundle read` of a crafted file of about 250 MB whose checksum is
   wrong (peak memory before it is refused).

Wall time and peak RSS are measured per child with wait4(), so each figure
is one process from exec to exit (interpreter start-up included).

Run: .venv/bin/python bench/bench_scale.py [--records 100000] [--bundle-mb 250]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MB, exit code, CPU seconds) of one `circle` process.

    CPU seconds (user + system) are the figure to compare on a shared machine:
    wall time there includes waiting for a core."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "circle", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,) and proc.stderr is not None:
        sys.stderr.write(proc.stderr.read().decode()[-400:])
    return seconds, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def export_file(path: Path, n: int, author: str) -> int:
    now = int(time.time() * 1000)
    needs = [{
        "id": f"b{i:07d}", "title": f"Need number {i}: a ride to the clinic",
        "details": "Something useful for the circle, described in a sentence or two. " * 4,
        "category": ["food", "rides", "tools", "care"][i % 4], "tags": ["bench", f"t{i % 50}"],
        "urgency": "anytime", "zone": "north", "author": author, "created_at": now - i, "updated_at": now - i,
        "expires_at": now + 14 * 86400_000, "claims": {}, "met_at": None, "withdrawn_at": None,
    } for i in range(n)]
    data = {"format": "circle-export", "version": 1, "circle": {}, "needs": needs}
    path.write_text(json.dumps(data))
    return path.stat().st_size


def crafted_bundle(path: Path, megabytes: int) -> None:
    """A bundle header and envelopes of the largest allowed size, then a wrong checksum."""
    from circle.net.bundle import _HEAD_V1, MAGIC
    from circle.net.envelope import MAX_ENVELOPE_SIZE

    count = max(1, megabytes * 1024 * 1024 // MAX_ENVELOPE_SIZE)
    blob = os.urandom(MAX_ENVELOPE_SIZE)
    with open(path, "wb") as f:
        f.write(_HEAD_V1.pack(MAGIC, 1, 0, count))  # version 1: no size in the header, read to the end
        for _ in range(count):
            f.write(struct.pack(">I", len(blob)) + blob)
        f.write(b"\0" * 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--bundle-mb", type=int, default=250)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--make-export", nargs=3, metavar=("PATH", "AUTHOR", "N"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.make_export:
        export_file(Path(opts.make_export[0]), int(opts.make_export[2]), opts.make_export[1])
        return
    tmp = Path(tempfile.mkdtemp(prefix="circle-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}
    env["CIRCLE_HOME"] = str(tmp / "home")
    try:
        out = subprocess.run([sys.executable, "-m", "circle", "init", "--name", "Bench", "--handle", "sam",
                              "--no-passphrase", "--json"], env=env, capture_output=True, check=True)
        me = json.loads(out.stdout)["member_id"]
        # Built in a child: a child's peak RSS (wait4) includes what the parent held when it forked.
        subprocess.run([sys.executable, __file__, "--make-export", str(tmp / "export.json"), me,
                        str(opts.records)], check=True)
        size = (tmp / "export.json").stat().st_size
        results: dict[str, object] = {"records": opts.records, "export_mb": round(size / 1e6, 1)}
        def record(name: str, args: list[str], repeat: int = 1, where: dict[str, str] = env) -> None:
            runs = [run(args, where) for _ in range(repeat)]
            results[name] = {"wall_s": [round(r[0], 2) for r in runs], "cpu_s": [round(r[3], 2) for r in runs],
                             "peak_mb": round(max(r[1] for r in runs)), "peak_mb_each": [round(r[1]) for r in runs],
                             "exit": runs[-1][2]}

        record("baseline: circle --version", ["--version"], opts.repeat)
        record("import", ["import", str(tmp / "export.json")])
        record("status (first after import)", ["status"])
        record("status (nothing changed)", ["status"], opts.repeat)
        record("need list (nothing changed)", ["need", "list"], opts.repeat)
        # The case the kept view is for: an edit, then the first reads after it.
        for i in range(opts.repeat):
            record(f"need add #{i + 1} (keeps the view)", ["need", "add", f"bench edit {i}"])
            record(f"status after edit #{i + 1}", ["status"])
            record(f"need list after edit #{i + 1}", ["need", "list"])
        record("offer list", ["offer", "list"])
        record("need list --json", ["need", "list", "--json"])
        record("tool list (loads the document)", ["tool", "list"])
        crafted_bundle(tmp / "crafted.bundle", opts.bundle_mb)
        results["bundle_file_mb"] = round((tmp / "crafted.bundle").stat().st_size / 1e6)
        small = dict(env, CIRCLE_HOME=str(tmp / "small"))  # an empty circle: the figure is the bundle's
        subprocess.run([sys.executable, "-m", "circle", "init", "--name", "S", "--handle", "s", "--no-passphrase"],
                       env=small, capture_output=True, check=True)
        record("bundle read (crafted, refused)", ["bundle", "read", str(tmp / "crafted.bundle")], 1, small)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
