"""Edit-to-visible latency through a relay under attack (issue 10).

One real relay process on 127.0.0.1 (SQLite); an attacker process running,
for the whole time, subscribers that never read, a registration flood,
pre-auth frames announcing 4 MiB, garbage and a pipelined Fetch flood (see
tests/relay/soak.py); two honest members (real homes, `CircleService` +
`RelaySync`) in this process. Member A adds needs one after another; the
clock stops when B's board shows each.

Run: .venv/bin/python bench/bench_relay_soak.py [--seconds 60] [--quiet-first]
Target: median edit-to-visible under 150 ms while under attack.
`--quiet-first` also measures the same members with no attacker, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "relay")]

from soak import SOAK_RELAY_ARGS, HonestResult, honest_members, start_hostile  # noqa: E402


def start_relay(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
         "--data", str(data), "--log-level", "WARNING", *SOAK_RELAY_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    return proc, int(line.rsplit(":", 1)[1].strip().rstrip("/"))


def report(label: str, r: HonestResult) -> None:
    lat = sorted(r.latencies_ms)
    if not lat:
        print(f"{label}: no edit arrived ({r.late} late)")
        return
    print(f"{label}: edits={len(lat)} late={r.late} median={statistics.median(lat):.1f} ms "
          f"p90={lat[int(0.9 * (len(lat) - 1))]:.1f} ms max={lat[-1]:.1f} ms (target: median < 150 ms)")


async def run(seconds: float, hostile: bool) -> tuple[HonestResult, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        (tmpd / "relay").mkdir()
        relay, port = start_relay(tmpd / "relay")
        attacker = start_hostile(port, seconds + 2) if hostile else None
        try:
            honest = await honest_members(tmpd, f"ws://127.0.0.1:{port}/", seconds)
            counts: dict[str, int] = {}
            if attacker is not None:
                out, _err = attacker.communicate(timeout=seconds + 60)
                counts = json.loads(out.decode().strip().splitlines()[-1])
            return honest, counts
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
            relay.terminate()
            relay.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--quiet-first", action="store_true")
    ns = p.parse_args()
    if ns.quiet_first:
        quiet, _ = asyncio.run(run(min(ns.seconds, 20.0), hostile=False))
        report("no attacker", quiet)
    honest, counts = asyncio.run(run(ns.seconds, hostile=True))
    report(f"under attack for {ns.seconds:.0f} s", honest)
    print("attacks: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
