"""Relay processes over one PostgreSQL vs one SQLite relay, same load.

    .venv/bin/python bench/bench_relay_pg.py [--seconds 20] [--circles 25]
        [--clients-per-circle 4] [--workers 1] [--rate 2] [--configs sqlite,pg1,pg2,pg4]

Starts a throwaway PostgreSQL server (tests/pghelp.py: initdb in a temp dir,
Unix socket only, default durability settings: fsync and synchronous_commit
on), then for each configuration a fresh store and its relay processes
(`python -m circle.relay.server --store ...` on 127.0.0.1):

- sqlite: one relay on an SQLite file (the default deployment);
- pgN: N relay processes over one fresh PostgreSQL database.

The clients of each circle are spread round-robin over the configuration's
relay processes, so with N >= 2 most deliveries cross processes (stored
through one, pushed by another after LISTEN/NOTIFY). Each configuration runs
twice, `--seconds` each: closed loop (every client pushes its next envelope
when the previous is acknowledged: capacity), then `--rate` envelopes/s per
client (latency at a fixed load; 100 clients x 2/s = 200 envelopes/s).

Reports envelopes/s stored, deliveries/s, delivery latency p50/p99 (push ->
arrival at each other subscribed member of the circle), the relays' RSS
(sum over processes, peak) and PostgreSQL's memory (sum of PSS over its
processes, peak). Everything stays on 127.0.0.1 and a Unix socket, and
stops after the bounded run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from circle.net.envelope import Kind, envelope_id, seal  # noqa: E402
from circle.net.keys import DeviceIdentity, new_epoch_key  # noqa: E402
from circle.net.relay_client import RelayConnection, RelayCredentials  # noqa: E402

RELAY_FLAGS = ["--max-connections-per-ip", "10000", "--max-connections", "10000",
               "--messages-per-second", "100000", "--message-burst", "100000",
               "--mailbox-quota-envelopes", "10000000", "--mailbox-quota-bytes", str(8 * 1024**3),
               "--total-quota-bytes", str(64 * 1024**3), "--log-level", "WARNING",
               # every client is 127.0.0.1: lift the per-address limits as bench_relay.py does
               "--address-messages-per-second", "1000000", "--address-message-burst", "1000000",
               "--address-bytes-per-second", str(1024**3), "--address-byte-burst", str(1024**3),
               "--registrations-per-hour", "1000000", "--registration-burst", "100000"]


def mem_kib(pid: int, field_name: str = "VmRSS:") -> int:
    """VmRSS from status, or Pss from smaps_rollup (field_name='Pss:')."""
    path = f"/proc/{pid}/smaps_rollup" if field_name == "Pss:" else f"/proc/{pid}/status"
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


# --- clients ------------------------------------------------------------------


async def run_circle(urls: list[str], offset: int, n_clients: int, seconds: float, rate: float,
                     latencies: list[float], counts: list[int]) -> None:
    key = new_epoch_key()
    creds = RelayCredentials.for_epoch(key)
    idents = [DeviceIdentity.generate() for _ in range(n_clients)]
    sent_at: dict[bytes, tuple[float, int]] = {}
    conns = [await RelayConnection.open(urls[(offset + i) % len(urls)], creds) for i in range(n_clients)]
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
        next_t = time.perf_counter() + (interval * i / n_clients if interval else 0.0)
        while time.perf_counter() < deadline:
            if interval:
                delay = next_t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_t += interval
            env = seal(idents[i], 1, key, Kind.CHANGES, [os.urandom(64)])
            sent_at[envelope_id(env)] = (time.perf_counter(), i)
            await conn.push(env)
            n += 1
        counts.append(n)

    readers = [asyncio.create_task(reader(i, c)) for i, c in enumerate(conns)]
    await asyncio.gather(*(writer(i, c) for i, c in enumerate(conns)))
    await asyncio.sleep(1.5)  # let the last pushes arrive
    for t in readers:
        t.cancel()
    for c in conns:
        await c.close()


def worker(urls: list[str], first: int, circles: int, n_clients: int, seconds: float, rate: float,
           out: mp.Queue) -> None:  # type: ignore[type-arg]
    latencies: list[float] = []
    counts: list[int] = []

    async def main() -> None:
        await asyncio.gather(*(run_circle(urls, first + k, n_clients, seconds, rate, latencies, counts)
                               for k in range(circles)))

    t = time.process_time()
    asyncio.run(main())
    out.put((latencies, counts, time.process_time() - t))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# --- one configuration ----------------------------------------------------------


@dataclass
class Result:
    name: str
    mode: str
    stored: int
    seconds: float
    latencies: list[float]
    relay_rss_peak: int
    db_pss_peak: int
    relay_cpu: float = 0.0
    db_cpu: float = 0.0
    client_cpu: float = 0.0
    samples: list[tuple[int, int]] = field(default_factory=list)


def start_relay(store: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
           "--store", store, *RELAY_FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"relay did not start: {line!r}")
    proc.port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))  # type: ignore[attr-defined]
    return proc


def run_load(name: str, mode: str, urls: list[str], relay_pids: list[int], db_pids: list[int],
             args: argparse.Namespace, rate: float, db_pids_fn: Callable[[], list[int]] | None = None) -> Result:
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((sum(mem_kib(p) for p in relay_pids), sum(mem_kib(p, "Pss:") for p in db_pids)))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = [sum(cpu_seconds(p) for p in pids) for pids in (relay_pids, db_pids)]
    db_pids_now = db_pids_fn or (lambda: db_pids)
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    per = [args.circles // args.workers + (1 if i < args.circles % args.workers else 0)
           for i in range(args.workers)]
    firsts = [sum(per[:i]) for i in range(len(per))]
    procs = [mp.Process(target=worker, args=(urls, f, n, args.clients_per_circle, args.seconds, rate, q))
             for f, n in zip(firsts, per, strict=True) if n > 0]
    for p in procs:
        p.start()
    results = [q.get(timeout=args.seconds + 300) for _ in procs]
    # backends started during the run (the relays' pools grow) count in full
    cpu1 = [sum(cpu_seconds(p) for p in pids) for pids in (relay_pids, sorted(set(db_pids_now()) | set(db_pids)))]
    client_cpu = sum(r[2] for r in results)
    for p in procs:
        p.join(30)
    stop.set()
    sampler.join()
    latencies = [x for lat, _, _ in results for x in lat]
    stored = sum(c for _, counts, _ in results for c in counts)
    return Result(name, mode, stored, args.seconds, latencies,
                  max((s[0] for s in samples), default=0), max((s[1] for s in samples), default=0),
                  relay_cpu=cpu1[0] - cpu0[0], db_cpu=cpu1[1] - cpu0[1], client_cpu=client_cpu, samples=samples)


def run_config(name: str, pg: object | None, args: argparse.Namespace) -> list[Result]:
    tmp = tempfile.mkdtemp(prefix="circle-bench-pg-")
    relays: list[subprocess.Popen[bytes]] = []
    out: list[Result] = []
    try:
        for i, (mode, rate) in enumerate((("closed loop", 0.0), (f"{args.rate:g}/s per client", args.rate))):
            if name == "sqlite":
                store = f"sqlite:{tmp}/run{i}.sqlite3"
                n, db_pids = 1, []
            else:
                assert pg is not None
                store = pg.create_database()  # type: ignore[attr-defined]
                n, db_pids = int(name[2:]), pg.pids()  # type: ignore[attr-defined]
            relays = [start_relay(store) for _ in range(n)]
            urls = [f"ws://127.0.0.1:{r.port}/" for r in relays]  # type: ignore[attr-defined]
            if pg is not None:
                db_pids = pg.pids()  # type: ignore[attr-defined]  # now including the relays' backends
            out.append(run_load(name, mode, urls, [r.pid for r in relays], db_pids, args, rate,
                                pg.pids if pg is not None else None))  # type: ignore[attr-defined]
            for r in relays:
                r.terminate()
            for r in relays:
                r.wait(30)
            relays = []
            report(out[-1], args)
    finally:
        for r in relays:
            r.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def report(r: Result, args: argparse.Namespace) -> None:
    lat = r.latencies
    print(f"{r.name:7s} {r.mode:18s} stored {r.stored / r.seconds:7.0f}/s  "
          f"deliveries {len(lat) / r.seconds:7.0f}/s  "
          f"p50 {pct(lat, 50) * 1000:7.1f} ms  p99 {pct(lat, 99) * 1000:7.1f} ms  "
          f"mean {statistics.fmean(lat) * 1000 if lat else float('nan'):6.1f} ms  "
          f"relays RSS {r.relay_rss_peak / 1024:6.1f} MiB  DB PSS {r.db_pss_peak / 1024:6.1f} MiB",
          flush=True)
    n = max(1, r.stored)
    print(f"{'':27s}CPU per stored envelope: relays {r.relay_cpu / n * 1000:5.2f} ms, "
          f"database {r.db_cpu / n * 1000:5.2f} ms, clients {r.client_cpu / n * 1000:5.2f} ms", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--circles", type=int, default=25)
    ap.add_argument("--clients-per-circle", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="client processes")
    ap.add_argument("--rate", type=float, default=2.0, help="envelopes/s per client in the fixed-rate run")
    ap.add_argument("--configs", default="sqlite,pg1,pg2,pg4")
    args = ap.parse_args()
    if args.seconds > 120:
        ap.error("keep the benchmark bounded: --seconds at most 120")
    from pghelp import PgServer, postgres_unavailable_reason

    configs = args.configs.split(",")
    pg = None
    if any(c.startswith("pg") for c in configs):
        reason = postgres_unavailable_reason()
        if reason:
            print(f"cannot run PostgreSQL configurations: {reason}")
            return 1
        pg = PgServer().start()
    clients = args.circles * args.clients_per_circle
    print(f"{clients} clients in {args.circles} circles, {args.seconds:g} s per run, "
          f"{args.workers} client process(es), {os.cpu_count()} CPUs", flush=True)
    try:
        for name in configs:
            run_config(name, pg if name.startswith("pg") else None, args)
    finally:
        if pg is not None:
            pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
