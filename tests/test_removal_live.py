"""Removal is enforced on open sessions at once (issue 9, attack 4).

Two real `circle serve` processes on 127.0.0.1, connected; `circle remove`
runs as a third process on the remover's home. The removed device must be
cut off before anything written after the removal is pushed, be told so in
words, and be unable to write through the old session or a new one.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from clihelp import CLI
from factories import member_homes


class Serve:
    def __init__(self, cli: CLI, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "circle", "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json", *args],
            env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self.wait(lambda e: e.get("event") == "listening", 30)["port"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.log.append(event)
            self.events.put(event)

    def wait(self, pred: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(event)
            if pred(event):
                return event
        raise AssertionError(f"timed out waiting for a serve event; saw {seen}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def titles(cli: CLI) -> set[str]:
    return {n["title"] for n in cli.json("need", "list", "--status", "all")}


def test_removal_closes_the_live_session_at_once(tmp_path: Path) -> None:
    a_path, b_path, c_path = member_homes(tmp_path, ["ana", "bo", "cy"])
    ana, cy = CLI(a_path), CLI(c_path)
    serve_a = Serve(ana)
    serve_c = Serve(cy, "--peer", f"127.0.0.1:{serve_a.port}")
    try:
        serve_c.wait(lambda e: e.get("event") == "peer" and e.get("in_sync"), 30)
        t0 = time.monotonic()
        ana.run("remove", "cy", "--yes")
        serve_c.wait(lambda e: "You were removed from Eastside by ana" in (e.get("error") or ""), 30)
        cut_after = time.monotonic() - t0
        ana.run("need", "add", "Written after the removal")
        cy.run("need", "add", "Written by cy after its removal")
        time.sleep(3)  # the "three seconds later"
        assert "Written after the removal" not in titles(cy)
        assert "Written by cy after its removal" not in titles(ana)
        # cy's serve keeps redialling: every new handshake is refused
        serve_c.wait(lambda e: e.get("event") == "peer" and not e.get("connected")
                     and "You were removed" not in (e.get("error") or "x You were removed"), 30)
        assert "Written after the removal" not in titles(cy)
        status = ana.json("status")
        assert status["counts"]["members"] == 2
        print(f"session closed {cut_after:.2f} s after `circle remove` started")
    finally:
        serve_c.stop()
        serve_a.stop()
