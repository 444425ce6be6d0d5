"""Relay benchmark: many clients in many circles through one real relay process.

    /work/venv/bin/python bench/bench_relay.py [--seconds 30] [--circles 20]
        [--clients-per-circle 5] [--workers CPUS-1] [--rate 0]

Starts `python -m circle.relay.server` on 127.0.0.1 (a free port, a temp
data dir), then `--workers` client processes; each owns some circles, and
every client of a circle is subscribed to the circle's mailbox while pushing
small (1 KiB-bucket) envelopes:

- `--rate 0` (default): closed loop, each client pushes its next envelope as
  soon as the previous one is acknowledged: this measures capacity.
- `--rate R`: each client pushes R envelopes per second: latency at a
  given load.

Reports envelopes stored per second, delivery latency (push -> arrival at
each of the circle's other subscribed clients) p50/p99, and the relay's RSS
sampled every 0.5 s (start, peak, and at each quarter of the run) to show
whether memory stays flat. Everything stays on loopback and stops after
`--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from circle.net.envelope import Kind, envelope_id, seal
from circle.net.keys import DeviceIdentity, new_epoch_key
from circle.net.relay_client import RelayConnection, RelayCredentials


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def run_circle(url: str, n_clients: int, seconds: float, rate: float,
                     latencies: list[float], counts: list[int]) -> None:
    key = new_epoch_key()
    creds = RelayCredentials.for_epoch(key)
    idents = [DeviceIdentity.generate() for _ in range(n_clients)]
    sent_at: dict[bytes, tuple[float, int]] = {}
    conns = [await RelayConnection.open(url, creds) for _ in range(n_clients)]
    for c in conns:
        await c.subscribe(c.head)
    deadline = time.perf_counter() + seconds

    async def reader(i: int, conn: RelayConnection) -> None:
        async for _cursor, env in conn.pushed():
            info = sent_at.get(envelope_id(env))
            if info is not None and info[1] != i:
                latencies.append(time.perf_counter() - info[0])

    async def writer(i: int, conn: RelayConnection) -> None:
        n = 0
        interval = 1.0 / rate if rate > 0 else 0.0
        next_t = time.perf_counter()
        while time.perf_counter() < deadline:
            env = seal(idents[i], 1, key, Kind.CHANGES, [os.urandom(64)])
            sent_at[envelope_id(env)] = (time.perf_counter(), i)
            await conn.push(env)
            n += 1
            if interval:
                next_t += interval
                delay = next_t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        counts.append(n)

    readers = [asyncio.create_task(reader(i, c)) for i, c in enumerate(conns)]
    await asyncio.gather(*(writer(i, c) for i, c in enumerate(conns)))
    await asyncio.sleep(1.0)  # let the last pushes arrive
    for t in readers:
        t.cancel()
    for c in conns:
        await c.close()


def worker(url: str, circles: int, n_clients: int, seconds: float, rate: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    latencies: list[float] = []
    counts: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(run_circle(url, n_clients, seconds, rate, latencies, counts)
                               for _ in range(circles)))

    asyncio.run(main())
    out.put((latencies, counts))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--circles", type=int, default=20)
    ap.add_argument("--clients-per-circle", type=int, default=5)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="client processes (default: CPUs - 1, leaving one for the relay)")
    ap.add_argument("--rate", type=float, default=0.0, help="envelopes/s per client (0 = closed loop)")
    args = ap.parse_args()
    if args.seconds > 300:
        ap.error("keep the benchmark bounded: --seconds at most 300")

    data = tempfile.mkdtemp(prefix="circle-bench-relay-")
    cmd = [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
           "--data", data, "--max-connections-per-ip", "1000", "--messages-per-second", "100000",
           "--message-burst", "100000", "--mailbox-quota-envelopes", "10000000",
           # every client is on 127.0.0.1: lift the per-address limits (they are for strangers)
           "--address-messages-per-second", "1000000", "--address-message-burst", "1000000",
           "--address-bytes-per-second", str(1024**3), "--address-byte-burst", str(1024**3),
           "--registrations-per-hour", "1000000", "--registration-burst", "100000",
           "--mailbox-quota-bytes", str(8 * 1024**3), "--total-quota-bytes", str(64 * 1024**3),
           "--log-level", "WARNING"]
    relay = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert relay.stdout is not None
    line = relay.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))
    url = f"ws://127.0.0.1:{port}/"

    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - t0, rss_kib(relay.pid)))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rss_start = rss_kib(relay.pid)

    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = [args.circles // args.workers + (1 if i < args.circles % args.workers else 0)
           for i in range(args.workers)]
    t0 = time.perf_counter()
    procs = [mp.Process(target=worker, args=(url, n, args.clients_per_circle, args.seconds, args.rate, q))
             for n in per if n > 0]
    for p in procs:
        p.start()
    results = [q.get(timeout=args.seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    elapsed = time.perf_counter() - t0
    stop.set()
    sampler.join()
    relay.terminate()
    relay.wait(30)
    db_size = sum(f.stat().st_size for f in Path(data).iterdir())
    for f in Path(data).iterdir():
        f.unlink()
    os.rmdir(data)

    latencies = [x for lat, _ in results for x in lat]
    pushed = sum(c for _, counts in results for c in counts)
    push_seconds = args.seconds
    peak = max((r for _, r in samples), default=0)
    quarters = [samples[min(len(samples) - 1, int(len(samples) * f))][1] for f in (0.25, 0.5, 0.75, 1.0)] if samples else []
    clients = args.circles * args.clients_per_circle
    print(f"relay benchmark: {clients} clients in {args.circles} circles, {args.seconds:.0f} s, "
          f"{'closed loop' if args.rate == 0 else f'{args.rate:g}/s per client'}, {len(procs)} client processes")
    print(f"  envelopes stored:     {pushed} ({pushed / push_seconds:.0f}/s)")
    print(f"  deliveries measured:  {len(latencies)} ({len(latencies) / push_seconds:.0f}/s to subscribers)")
    if latencies:
        print(f"  delivery latency:     p50 {pct(latencies, 50) * 1000:.1f} ms, "
              f"p99 {pct(latencies, 99) * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms")
    print(f"  relay RSS (MiB):      start {rss_start / 1024:.1f}, peak {peak / 1024:.1f}, "
          f"quarters {' / '.join(f'{r / 1024:.1f}' for r in quarters)}")
    print(f"  relay database:       {db_size / 1024 / 1024:.1f} MiB on disk")
    print(f"  wall time:            {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
