"""Everyday CLI commands as whole processes on a 1k-record home, side by side
with `python -c pass` in the same run (the floor every command pays).

    .venv/bin/python bench/bench_cli.py [--records 1000] [--runs 15]

Target (issue 11): `need list`, `need add`, `status` under 100 ms each.
Also prints the import cost of the CLI alone (`-X importtime` top entries).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_tui import make_home  # noqa: E402

CPU: dict[str, list[float]] = {}


def run(args: list[str], env: dict[str, str], runs: int, name: str = "") -> list[float]:
    """Wall-clock seconds per run; CPU seconds (user + system) go to CPU[name]:
    on a loaded machine the CPU time is the steadier figure."""
    out = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        CPU.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp), args.records)
        env = {**os.environ, "CIRCLE_HOME": str(home)}
        env.pop("CIRCLE_PASSPHRASE", None)
        # An installed package has its bytecode compiled; let the warm-up runs
        # write it (this machine sets PYTHONDONTWRITEBYTECODE, which would make
        # every run compile the sources again).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        py = sys.executable
        cases = [
            ("python -c pass", [py, "-c", "pass"]),
            ("import circle.cli.main", [py, "-c", "import circle.cli.main"]),
            ("circle --help", [py, "-m", "circle", "--help"]),
            ("circle need list", [py, "-m", "circle", "need", "list"]),
            ("circle need add", [py, "-m", "circle", "need", "add", "bench need"]),
            ("circle status", [py, "-m", "circle", "status"]),
            ("circle search drill", [py, "-m", "circle", "search", "drill"]),
        ]
        results = {}
        for _name, cmd in cases:
            run(cmd, env, 2)  # warm the page cache
        for name, cmd in cases:
            results[name] = run(cmd, env, args.runs, name)
        base = statistics.median(results["python -c pass"])
        print(f"{args.records}-record home, {args.runs} runs each, medians (load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
        for name, times in results.items():
            med = statistics.median(times)
            extra = "" if name == "python -c pass" else f"  (+{(med - base) * 1000:.0f} ms over python)"
            cpu = statistics.median(CPU[name])
            print(f"  {name:<24} wall {med * 1000:6.0f} ms (min {min(times) * 1000:.0f})  cpu {cpu * 1000:5.0f} ms{extra}")


if __name__ == "__main__":
    main()
