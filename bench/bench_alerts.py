"""Alert raise -> visible on another member's device; missed check-in -> buddy's app.

Member A (ana) runs in this process: a real home, `CircleService` and
`LiveSync`. Member B (bo) is a real `circle alert watch --json` process on
its own home; the clock stops when B prints the alert's line (B has applied
the change, derived the alert and written it out).

Scenarios:
  lan    A and B connected over loopback TCP (encrypted session).
  relay  A and B share only a relay process (`circle.relay.server`).
  bulk   B lacks 10k records A added: the alert is raised just as B's
         session with A starts, so the initial sync of those records runs on
         the same session. The alert travels in the session's urgent lane
         (net/session.py rule 10) ahead of that sync.
  checkin  B's app (Textual, headless) with a check-in of A's that becomes
         missed: deadline -> banner shown.

Run: .venv/bin/python bench/bench_alerts.py [--alerts 30] [--bulk-runs 3] [--records 10000]
Targets (issue 13): lan median < 50 ms, relay < 150 ms, bulk < 200 ms, checkin < 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from circle.crdt.defence import CLOCK_SKEW_MS, MINUTE_MS, Defence  # noqa: E402
from circle.node.home import Home  # noqa: E402
from circle.node.live import LiveSync  # noqa: E402
from circle.node.service import CircleService  # noqa: E402
from factories import member_homes  # noqa: E402


def start_relay(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
         "--data", str(data), "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    return proc, f"ws://127.0.0.1:{int(line.rsplit(':', 1)[1].strip().rstrip('/'))}/"


async def start_watch(home: Path, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCLE_")}
    env.update(CIRCLE_HOME=str(home), PYTHONUNBUFFERED="1", CIRCLE_DISCOVERY_FORBID_ALL="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "circle", "alert", "watch", "--json", "--no-discovery", "--listen", "127.0.0.1:0",
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=1 << 24)
    await wait_line(proc, '"watching"', 60)
    return proc


async def wait_line(proc: asyncio.subprocess.Process, needle: str, timeout: float) -> float:
    """Wait for a stdout line containing `needle`; returns perf_counter() at its arrival."""
    assert proc.stdout is not None
    deadline = time.perf_counter() + timeout
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.01, deadline - time.perf_counter()))
        if not line:
            raise RuntimeError("the watch process ended")
        if needle.encode() in line:
            return time.perf_counter()


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        await proc.wait()


async def raise_and_time(d: Defence, proc: asyncio.subprocess.Process, n: int) -> float:
    t0 = time.perf_counter()
    rid = d.raise_alert(f"bench alert {n}")
    t1 = await wait_line(proc, rid, 30)
    return (t1 - t0) * 1000


async def lan(tmp: Path, alerts: int) -> list[float]:
    a_path, b_path = member_homes(tmp, ["ana", "bo"])
    a = CircleService.open(Home.open(a_path, None))
    live = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await live.start()
    assert live.bound is not None
    watch = await start_watch(b_path, "--peer", f"127.0.0.1:{live.bound[1]}")
    try:
        while not any(p.in_sync for p in live.peers.values()):
            await asyncio.sleep(0.05)
        d = Defence(a.board)
        out = []
        for n in range(alerts):
            out.append(await raise_and_time(d, watch, n))
            await asyncio.sleep(0.05)
        return out
    finally:
        await stop(watch)
        await live.close()


async def relay(tmp: Path, alerts: int) -> list[float]:
    (tmp / "relay").mkdir()
    proc, url = start_relay(tmp / "relay")
    try:
        a_path, b_path = member_homes(tmp, ["ana", "bo"])
        a = CircleService.open(Home.open(a_path, None))
        a.board.add_relay(url)
        CircleService.open(Home.open(b_path, None)).board.add_relay(url)
        live = LiveSync(a, listen=None, discovery=False)
        await live.start()
        watch = await start_watch(b_path)
        try:
            d = Defence(a.board)
            await asyncio.sleep(1.0)  # both subscribed
            out = []
            for n in range(alerts):
                out.append(await raise_and_time(d, watch, n))
                await asyncio.sleep(0.05)
            return out
        finally:
            await stop(watch)
            await live.close()
    finally:
        proc.terminate()
        proc.wait(10)


async def bulk(tmp: Path, runs: int, records: int) -> list[float]:
    a_path, b_path = member_homes(tmp, ["ana", "bo"])
    pristine = tmp / "bo-pristine"
    shutil.copytree(b_path, pristine)
    a = CircleService.open(Home.open(a_path, None))
    Defence(a.board).ensure_collections()
    with a.doc.edit() as ed:  # 10k records in one go (the bench measures the sync, not the typing)
        for i in range(records):
            ed.put_record("needs", f"bulk{i:06d}", {
                "title": f"need number {i}", "details": "x" * 80, "category": "food", "tags": "bulk",
                "urgency": "anytime", "zone": "north", "author": a.me, "created_at": 1, "updated_at": 1,
                "expires_at": 2**50, "claims": {}, "met_at": None, "withdrawn_at": None})
    a.gate.sign_new(a.doc, [])  # as every local commit does (the alert no longer signs them by chance)
    a.persist()
    live = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await live.start()
    assert live.bound is not None
    d = Defence(a.board)
    out = []
    try:
        for n in range(runs):
            shutil.rmtree(b_path)
            shutil.copytree(pristine, b_path)
            watch = await start_watch(b_path, "--peer", f"127.0.0.1:{live.bound[1]}")
            try:
                while not any(p.connected for p in live.peers.values()):
                    await asyncio.sleep(0.001)
                t_connected = time.perf_counter()
                out.append(await raise_and_time(d, watch, n))
                while not any(p.in_sync and p.has_all_ours for p in live.peers.values()):
                    await asyncio.sleep(0.005)
                print(f"  bulk run {n}: alert {out[-1]:.0f} ms after the session started; the whole sync "
                      f"was done {1000 * (time.perf_counter() - t_connected):.0f} ms after it started")
            finally:
                await stop(watch)
            for p in live.peers.values():  # the next run must not count this run's statuses
                p.connected = p.in_sync = p.has_all_ours = False
    finally:
        await live.close()
    return out


async def checkin(tmp: Path, runs: int) -> list[float]:
    from circle.tui.app import CircleApp
    from circle.tui.defence import AlertBanner

    a_path, b_path = member_homes(tmp, ["ana", "bo"])
    out = []
    for _ in range(runs):
        lead = 2000  # the check-in becomes missed 2 s after it is written
        offset = 30 * MINUTE_MS + CLOCK_SKEW_MS - lead
        a = CircleService.open(Home.open(a_path, None), clock=lambda off=offset: int(time.time() * 1000) - off)
        bo = CircleService.open(Home.open(b_path, None))
        app = CircleApp(bo, refresh_interval=0.1)
        app.bell = lambda: None  # type: ignore[method-assign]
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            cid = Defence(a.board).start_checkin("bench", [bo.me], every_ms=30 * MINUTE_MS)
            started = Defence(a.board).checkin(cid).started_at
            missed_at = (started + 30 * MINUTE_MS + CLOCK_SKEW_MS + 1) / 1000  # bo's (real) clock passes due + skew
            gate = getattr(a, "gate", None)
            proofs = [gate.proofs_since(a.doc, [])] if gate is not None else []
            CircleService.open(Home.open(b_path, None)).apply_remote(a.doc.changes_since([]), *proofs)
            while True:
                shown = [b for b in app.screen.query(AlertBanner) if b.display]
                if shown and any(cid in key for key in app.defence_ui.pending):
                    out.append((time.time() - missed_at) * 1000)
                    break
                await pilot.pause(0.01)
    return out


def report(name: str, ms: list[float], target: float) -> None:
    ms = sorted(ms)
    med = statistics.median(ms)
    print(f"{name:8} n={len(ms):3}  median {med:7.1f} ms  min {ms[0]:7.1f}  max {ms[-1]:7.1f}  "
          f"target < {target:.0f} ms: {'met' if med < target else 'NOT met'}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=30)
    ap.add_argument("--bulk-runs", type=int, default=3)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--only", choices=["lan", "relay", "bulk", "checkin"])
    args = ap.parse_args()
    for name, target in (("lan", 50), ("relay", 150), ("bulk", 200), ("checkin", 5000)):
        if args.only and args.only != name:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if name == "lan":
                ms = await lan(Path(tmp), args.alerts)
            elif name == "relay":
                ms = await relay(Path(tmp), args.alerts)
            elif name == "bulk":
                ms = await bulk(Path(tmp), args.bulk_runs, args.records)
            else:
                ms = await checkin(Path(tmp), 3)
        report(name, ms, target)


if __name__ == "__main__":
    asyncio.run(main())
