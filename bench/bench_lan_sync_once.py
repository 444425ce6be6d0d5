"""Issue 10 benchmark: how long a one-shot `circle sync` takes with one peer on a LAN.

Two hosts in private network namespaces (tests/netns.py; needs root, nothing
leaves the machine). On A: init, need add, `circle serve`; on B: a member
home (joined by invite). Then, R times each:

1. `circle sync --timeout 15` on B with mDNS discovery (the issue's walk);
2. `circle sync --no-discovery --peer A` on B (the same without mDNS: the
   floor set by Python start-up, imports and opening the home);
3. the same round in one already-started Python process (LiveSync start,
   sync_round, close), to separate the round from process start-up.

Reported: median and max wall time of 1 and 2, the round's own seconds as
`circle sync --json` reports them, and the phases of 3.

Run (as root): .venv/bin/python bench/bench_lan_sync_once.py [--runs 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns import Lan, netns_unavailable_reason  # noqa: E402

PHASES = """
import asyncio, sys, time
from pathlib import Path
t0 = time.monotonic()
from circle.node.home import Home
from circle.node.live import LiveSync
from circle.node.service import CircleService
t1 = time.monotonic()
svc = CircleService.open(Home.open(Path(sys.argv[1]), None))
async def main():
    live = LiveSync(svc, listen=("0.0.0.0", 0), interfaces=[sys.argv[2]])
    a = time.monotonic(); await live.start(keep_connected=False); b = time.monotonic()
    rows = await live.sync_round(15); c = time.monotonic()
    await live.close(); d = time.monotonic()
    print(__import__("json").dumps({"imports": t1 - t0, "start": b - a, "round": c - b, "close": d - c,
                                    "in_sync": all(r.in_sync for r in rows) and bool(rows)}))
asyncio.run(main())
"""


def circle(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "circle", "--home", str(home), *args]


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    reason = netns_unavailable_reason()
    if reason:
        sys.exit(f"cannot run: {reason}")
    out: dict[str, Any] = {}
    with Lan(2) as net, tempfile.TemporaryDirectory() as tmp:
        a, b = net.hosts
        ana, bo = Path(tmp) / "ana", Path(tmp) / "bo"
        net.run(a, circle(ana, "init", "--name", "Bench", "--handle", "ana", "--no-passphrase"))
        inviter = net.popen(a, circle(ana, "invite", "--listen", f"{a.ip}:0", "--json", "--no-qr"))
        events = inviter.wait_for(lambda ev: any(e.get("event") == "invite" for e in ev), 20, "code")
        code = next(e for e in events if e.get("event") == "invite")["code"]
        net.run(b, circle(bo, "join", code, "--handle", "bo", "--no-passphrase"))
        inviter.popen.wait(20)
        net.run(a, circle(ana, "need", "add", "Bench soup"))
        serve = net.popen(a, circle(ana, "serve", "--listen", f"{a.ip}:0", "--interface", a.ip, "--json"))
        ev = serve.wait_for(lambda ev: any(e.get("event") == "listening" for e in ev), 20, "serve")
        port = next(e for e in ev if e.get("event") == "listening")["port"]
        mdns, manual, rounds, phases = [], [], [], []
        for _ in range(args.runs):
            t = time.monotonic()
            res = net.run(b, circle(bo, "sync", "--timeout", "15", "--interface", b.ip, "--json"), timeout=60)
            mdns.append(time.monotonic() - t)
            assert res.returncode == 0, res.stdout + res.stderr
            rounds.append(max(r["seconds"] for r in json.loads(res.stdout)))
            t = time.monotonic()
            res = net.run(b, circle(bo, "sync", "--no-discovery", "--peer", f"{a.ip}:{port}", "--json"), timeout=60)
            manual.append(time.monotonic() - t)
            assert res.returncode == 0, res.stdout + res.stderr
            res = net.run(b, [sys.executable, "-c", PHASES, str(bo), b.ip], timeout=60)
            phases.append(json.loads(res.stdout))
        serve.stop()
    out["circle_sync_mdns_wall_s"] = stats(mdns)
    out["circle_sync_peer_wall_s"] = stats(manual)
    out["round_reported_s"] = stats(rounds)
    out["in_process_s"] = {k: stats([p[k] for p in phases]) for k in ("imports", "start", "round", "close")}
    out["in_process_all_in_sync"] = all(p["in_sync"] for p in phases)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
