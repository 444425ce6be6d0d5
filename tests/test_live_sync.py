"""Issue 3 on the service level: live sync between real homes on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from circle.node.live import LiveSync
from clihelp import CLI
from factories import member_homes
from livehelp import open_service


async def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_connected_peers_push_edits_both_ways_and_follow_other_processes(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    a, b = open_service(a_path), open_service(b_path)
    server = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await server.start()
    assert server.bound is not None
    client = LiveSync(b, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{server.bound[1]}"])
    await client.start()
    try:
        await _wait_for(lambda: any(p.in_sync for p in client.peers.values()), "the first sync")
        a.board.add_need("Live from ana")
        await _wait_for(lambda: "Live from ana" in {n.title for n in b.board.needs()}, "ana's edit on bo")
        b.board.add_need("Live from bo")
        await _wait_for(lambda: "Live from bo" in {n.title for n in a.board.needs()}, "bo's edit on ana")
        # An edit made by another process on ana's home (the CLI next to the app)
        # is picked up from disk and pushed on.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "circle", "need", "add", "From ana's CLI",
            env={**CLI(a_path).env}, stdout=subprocess.DEVNULL)
        assert await proc.wait() == 0
        await _wait_for(lambda: "From ana's CLI" in {n.title for n in b.board.needs()}, "the CLI edit on bo")
        peer = next(iter(client.peers.values()))
        assert peer.handle == "ana" and peer.connected and peer.error is None
    finally:
        await client.close()
        await server.close()
    # Everything that arrived was persisted: a fresh open of bo's home has it.
    assert {"Live from ana", "From ana's CLI"} <= {n.title for n in open_service(b_path).board.needs()}


def test_cli_sync_against_serve(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    ana, bo = CLI(a_path), CLI(b_path)
    ana.run("need", "add", "Blankets for the shelter")
    serve = subprocess.Popen([sys.executable, "-m", "circle", "serve", "--listen", "127.0.0.1:0",
                              "--no-discovery", "--json"], env=ana.env, stdout=subprocess.PIPE, text=True)
    try:
        assert serve.stdout is not None
        listening = json.loads(serve.stdout.readline())
        assert listening["event"] == "listening"
        out = bo.json("sync", "--peer", f"127.0.0.1:{listening['port']}", "--no-discovery",
                      "--listen", "127.0.0.1:0", "--timeout", "10")
        assert len(out) == 1 and out[0]["in_sync"] and out[0]["handle"] == "ana"
        assert out[0]["bytes_received"] > 0
        assert "Blankets for the shelter" in {n["title"] for n in bo.json("need", "list")}
        status = bo.json("status")
        assert any(p["handle"] == "ana" and p["has_all_ours"] for p in status["peers"])
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    # Nobody listening: a clear failure, non-zero exit, nothing lost.
    proc = bo.run("sync", "--peer", f"127.0.0.1:{listening['port']}", "--no-discovery",
                  "--listen", "127.0.0.1:0", "--timeout", "2", check=False)
    assert proc.returncode == 6 and "cannot reach" in proc.stdout + proc.stderr
    assert "Blankets for the shelter" in {n["title"] for n in bo.json("need", "list")}
