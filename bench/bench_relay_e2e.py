"""Edit-to-visible latency through a relay between two live members.

One real relay process on 127.0.0.1; two members of one circle (real homes
on disk, real `CircleService`, `RelaySync` live in one asyncio loop, as
`LiveSync` runs it). Member A adds a need; the clock stops when member B's
service reports the remote change and B's board shows the need. Every edit is
persisted (fsync) on both sides, sealed, pushed, stored by the relay (SQLite),
pushed by the relay to B's subscription, opened and merged.

Run: /work/venv/bin/python bench/bench_relay_e2e.py [--edits 50]
Target (issue 5): median under 150 ms on loopback.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from circle.net.relay_client import Backoff  # noqa: E402
from circle.node.home import Home  # noqa: E402
from circle.node.relays import RelaySync  # noqa: E402
from circle.node.service import CircleService  # noqa: E402
from factories import member_homes  # noqa: E402


def start_relay(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
         "--data", str(data), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
    return proc, f"ws://127.0.0.1:{port}/"


async def run(edits: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        (tmpd / "relay").mkdir()
        relay, url = start_relay(tmpd / "relay")
        try:
            homes = member_homes(tmpd, ["sam", "alex"])
            a = CircleService.open(Home.open(homes[0], None))
            b = CircleService.open(Home.open(homes[1], None))
            a.board.add_relay(url)
            b.board.add_relay(url)
            fast = Backoff(initial=0.05, maximum=0.5)
            rs_a, rs_b = RelaySync(a, backoff=fast), RelaySync(b, backoff=fast)
            await rs_a.start()
            await rs_b.start()
            while not (rs_a._ready and rs_b._ready):
                await asyncio.sleep(0.01)
            await rs_a.flush(10)
            await rs_b.flush(10)
            await asyncio.sleep(0.5)  # first-use snapshots exchanged
            seen = asyncio.Event()
            want: list[str] = []

            def on_b(origin: str) -> None:
                if origin == "remote" and want and any(n.title == want[0] for n in b.board.needs("all")):
                    seen.set()

            b.subscribe(on_b)
            out: list[float] = []
            for i in range(edits):
                seen.clear()
                want[:] = [f"need {i}"]
                t0 = time.perf_counter()
                a.board.add_need(f"need {i}")
                await asyncio.wait_for(seen.wait(), 10)
                out.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.02)
            await rs_a.close()
            await rs_b.close()
            return out
        finally:
            relay.terminate()
            relay.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--edits", type=int, default=50)
    ns = p.parse_args()
    lat = asyncio.run(run(ns.edits))
    lat_sorted = sorted(lat)
    print(f"edits={len(lat)} median={statistics.median(lat):.1f} ms "
          f"p90={lat_sorted[int(0.9 * (len(lat) - 1))]:.1f} ms min={lat_sorted[0]:.1f} ms "
          f"max={lat_sorted[-1]:.1f} ms (target: median < 150 ms)")


if __name__ == "__main__":
    main()
