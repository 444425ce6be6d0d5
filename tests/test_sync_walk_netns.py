"""Issue 10's walk, ten times in a row: `circle sync` must say in sync when it is.

Two hosts in network namespaces. On A: `circle init`, `circle invite --json`;
on B: `circle join CODE`; on A: `circle need add`, `circle serve`; on B:
`circle sync --timeout 15`. The serving side finds B's advertisement and
dials back while B's own session runs, so one of the two sessions loses the
duplicate race: that must never be reported as a failure (it was, in 5 runs
out of 6, with exit status 6 after 5 s although the need had arrived).

Every run uses fresh homes and fresh processes. How long each `circle sync`
took is printed (speed targets live in bench/, not in assertions). Needs
root; skips otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from circle.node.home import Home
from circle.node.service import CircleService
from netns import Lan, lan

pytestmark = [pytest.mark.netns, pytest.mark.slow]

RUNS = int(os.environ.get("CIRCLE_WALK_RUNS", "10"))


@pytest.fixture
def lan2() -> Iterator[Lan]:
    yield from lan(2)


def _circle(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "circle", "--home", str(home), *args]


def walk(net: Lan, tmp: Path, run: int) -> dict[str, object]:
    a, b = net.hosts
    ana, bo = tmp / f"ana{run}", tmp / f"bo{run}"
    init = net.run(a, _circle(ana, "init", "--name", "Pantry", "--handle", "ana", "--no-passphrase"))
    assert init.returncode == 0, init.stderr
    inviter = net.popen(a, _circle(ana, "invite", "--listen", f"{a.ip}:0", "--json", "--no-qr"))
    events = inviter.wait_for(lambda ev: any(e.get("event") == "invite" for e in ev), 20, "the invite code")
    code = next(e for e in events if e.get("event") == "invite")["code"]
    joined = net.run(b, _circle(bo, "join", code, "--handle", "bo", "--no-passphrase", "--json"))
    assert joined.returncode == 0, joined.stderr
    assert inviter.popen.wait(20) == 0, inviter.stderr
    title = f"Soup pot for Saturday, run {run}"
    added = net.run(a, _circle(ana, "need", "add", title))
    assert added.returncode == 0, added.stderr
    serve = net.popen(a, _circle(ana, "serve", "--listen", f"{a.ip}:0", "--interface", a.ip, "--json"))
    serve.wait_for(lambda ev: any(e.get("event") == "listening" for e in ev), 20, "serve listening")
    started = time.monotonic()
    synced = net.run(b, _circle(bo, "sync", "--timeout", "15", "--interface", b.ip, "--json"), timeout=60)
    took = time.monotonic() - started
    assert serve.stop() == 0, serve.stderr
    assert synced.returncode == 0, (
        f"run {run}: circle sync exited {synced.returncode} after {took:.1f} s\n"
        f"{synced.stdout}\n{synced.stderr}\n--- serve on A:\n" + "\n".join(serve.lines) + serve.stderr[-3000:])
    rows = json.loads(synced.stdout)
    assert len(rows) == 1, f"run {run}: one member, one line: {rows}"
    [row] = rows
    assert row["in_sync"] is True and row["error"] is None and row["handle"] == "ana", row
    assert title in {n.title for n in CircleService.open(Home.open(bo, None)).board.view().needs.values()}
    return {"wall_s": took, "reported_s": row["seconds"]}


def test_the_invite_serve_sync_walk_passes_ten_times_in_a_row(lan2: Lan, tmp_path: Path) -> None:
    figures = [walk(lan2, tmp_path, run) for run in range(RUNS)]
    walls = sorted(float(f["wall_s"]) for f in figures)  # type: ignore[arg-type]
    rounds = sorted(float(f["reported_s"]) for f in figures)  # type: ignore[arg-type]
    print(f"\ncircle sync wall time over {RUNS} runs: median {walls[RUNS // 2]:.2f} s, max {walls[-1]:.2f} s; "
          f"sync round median {rounds[RUNS // 2]:.2f} s, max {rounds[-1]:.2f} s")
