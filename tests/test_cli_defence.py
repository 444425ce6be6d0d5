"""Alerts, check-ins, resources, lock and wipe through the real CLI.

Every device is a real home and every `circle` is a real process; sync runs
over real TCP on 127.0.0.1 and through a real relay process.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clihelp import CLI
from factories import member_homes


class Proc:
    """A long-running `circle ...` whose stdout lines are read as they come."""

    def __init__(self, cli: CLI, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "circle", *args], env={**cli.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout}s; saw {self.seen}; "
                                     f"stderr: {self.stderr_now()}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and pred(event):
                return event

    def stderr_now(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def pair(tmp_path: Path) -> tuple[CLI, CLI]:
    ana, bo = member_homes(tmp_path, ["ana", "bo"])
    return CLI(ana), CLI(bo)


def _start(procs: list[Proc], cli: CLI, *args: str) -> Proc:
    p = Proc(cli, *args)
    procs.append(p)
    return p


def test_alert_commands_and_one_sentence_errors(pair: tuple[CLI, CLI]) -> None:
    ana, bo = pair
    a = ana.json("alert", "raise", "Two vans at 5th & Main", "--kind", "raid", "--zone", "north", "--expires", "30m")
    assert (a["state"], a["kind"], a["zone"]) == ("unconfirmed", "raid", "north")
    assert a["raised_by"]["handle"] == "ana" and a["expires_at"] - a["raised_at"] == 30 * 60_000
    proc = ana.run("alert", "confirm", a["id"], check=False)
    assert proc.returncode == 4
    assert proc.stderr.strip() == "circle: you raised this alert; another member has to confirm it"
    proc = ana.run("alert", "raise", "x", "--expires", "soon", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert [x["id"] for x in ana.json("alert", "list", "--active")] == [a["id"]]
    assert ana.json("alert", "retract", a["id"][:4], "--note", "false alarm")["state"] == "retracted"
    assert ana.json("alert", "list", "--active") == []
    assert "retract by ana" in ana.run("alert", "show", a["id"]).stdout


def test_checkin_and_resource_commands(pair: tuple[CLI, CLI]) -> None:
    ana, _bo = pair
    c = ana.json("checkin", "start", "Copwatch, 5th precinct", "--buddy", "bo", "--every", "30m")
    assert c["state"] == "ok" and [b["handle"] for b in c["buddies"]] == ["bo"]
    assert c["due_at"] - c["started_at"] == 30 * 60_000
    ok = ana.json("checkin", "ok", c["id"])
    assert ok["last_ok_at"] is not None
    proc = ana.run("checkin", "start", "x", "--buddy", "bo", check=False)
    assert proc.returncode == 2 and "exactly one of --every and --until" in proc.stderr
    assert ana.json("checkin", "end", c["id"])["state"] == "ended"
    assert ana.json("checkin", "list") == []
    until = ana.json("checkin", "start", "Court", "--buddy", "bo", "--until", "23:59")
    assert until["until_at"] is not None
    r = ana.json("resource", "add", "Legal support hotline", "--details", "555-0100", "--kind", "legal")
    ana.json("resource", "add", "Street medics", "--kind", "medical")
    ana.json("resource", "edit", r["id"], "--details", "555-0199")
    listed = ana.json("resource", "list")
    assert [(x["title"], x["details"]) for x in listed] == [("Legal support hotline", "555-0199"),
                                                            ("Street medics", "")]
    ana.json("resource", "remove", r["id"])
    assert "Legal" not in ana.run("resource", "list").stdout


def test_alert_on_one_serve_reaches_anothers_watch_over_loopback(pair: tuple[CLI, CLI], procs: list[Proc]) -> None:
    ana, bo = pair
    serve = _start(procs, ana, "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json")
    port = serve.expect(lambda e: e.get("event") == "listening")["port"]
    watch = _start(procs, bo, "alert", "watch", "--json", "--listen", "127.0.0.1:0", "--no-discovery",
                   "--peer", f"127.0.0.1:{port}")
    watch.expect(lambda e: e.get("event") == "watching")
    serve.expect(lambda e: e.get("event") == "peer" and e.get("in_sync") is True)
    raised = ana.json("alert", "raise", "Raid at the market", "--kind", "raid", "--zone", "south")
    got = watch.expect(lambda e: e.get("event") == "alert" and e.get("id") == raised["id"])
    assert (got["state"], got["text"], got["raised_by"]["handle"]) == ("unconfirmed", "Raid at the market", "ana")
    # bo confirms on his device; his watch (the live process on his home) shows the change,
    # and ana's device receives it.
    bo.json("alert", "confirm", raised["id"], "--note", "I see them too")
    got = watch.expect(lambda e: e.get("event") == "alert" and e.get("state") == "confirmed")
    assert [c["handle"] for c in got["confirmed_by"]] == ["bo"]
    deadline = time.monotonic() + 20
    while ana.json("alert", "show", raised["id"])["state"] != "confirmed":
        assert time.monotonic() < deadline, "the confirmation never reached ana"
        time.sleep(0.3)


def _start_relay(procs: list[Proc], tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    data = tmp / "relaydata"
    data.mkdir()
    relay = subprocess.Popen([sys.executable, "-m", "circle.relay.server", "--host", "127.0.0.1", "--port", "0",
                              "--data", str(data)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert relay.stdout is not None
    line = relay.stdout.readline().decode()
    assert "listening on" in line, line
    return relay, f"ws://127.0.0.1:{int(line.rsplit(':', 1)[1].strip().rstrip('/'))}/"


def test_alert_reaches_a_watch_through_a_real_relay(pair: tuple[CLI, CLI], procs: list[Proc], tmp_path: Path) -> None:
    ana, bo = pair
    relay, url = _start_relay(procs, tmp_path)
    try:
        ana.run("relay", "add", url)
        bo.run("relay", "add", url)
        serve = _start(procs, ana, "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json")
        serve.expect(lambda e: e.get("event") == "listening")
        watch = _start(procs, bo, "alert", "watch", "--json", "--listen", "127.0.0.1:0", "--no-discovery")
        watch.expect(lambda e: e.get("event") == "watching")
        raised = ana.json("alert", "raise", "ICE at the school gate", "--kind", "raid")
        got = watch.expect(lambda e: e.get("event") == "alert" and e.get("id") == raised["id"], timeout=30)
        assert got["text"] == "ICE at the school gate"
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(10)


def test_lock_stops_a_running_serve(pair: tuple[CLI, CLI], procs: list[Proc]) -> None:
    ana, _bo = pair
    serve = _start(procs, ana, "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json")
    serve.expect(lambda e: e.get("event") == "listening")
    out = ana.json("lock")
    assert out["locked"] is True and out["passphrase"] is False
    t0 = time.monotonic()
    serve.expect(lambda e: e.get("event") == "locked", timeout=5)
    serve.proc.wait(5)
    assert serve.proc.returncode == 0 and time.monotonic() - t0 < 5
    # A command started after the lock works as usual (it would ask for the passphrase again).
    assert ana.json("alert", "list") == []


def test_wipe_leaves_nothing_readable_and_every_command_fails_in_one_sentence(tmp_path: Path,
                                                                           procs: list[Proc]) -> None:
    home = tmp_path / "home"
    cli = CLI(home, passphrase="correct horse battery")
    cli.run("init", "--name", "Secret Circle Name", "--handle", "handle-ana")
    cli.json("alert", "raise", "Alert text that must vanish")
    cli.json("need", "add", "Need text that must vanish")
    # A running serve must stop and not write anything (peers, keys) back after the wipe.
    serve = _start(procs, cli, "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json")
    serve.expect(lambda e: e.get("event") == "listening")
    before = [p for p in home.rglob("*") if p.is_file()]
    assert len(before) >= 3
    proc = cli.run("wipe", check=False)  # no --yes and no terminal: refused, nothing touched
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert (home / "device.json").exists()
    out = cli.run("wipe", "--yes").stdout
    assert "cannot promise" in out and "SSD" in out
    serve.proc.wait(10)
    time.sleep(0.5)
    remaining = [p for p in home.rglob("*") if p.is_file()]
    assert [p.name for p in remaining] == ["WIPED"]
    marker = (home / "WIPED").read_text()
    assert len(marker) < 40 and "Secret" not in marker
    for args in (["need", "list"], ["alert", "list"], ["status"], ["lock"], ["wipe", "--yes"], ["serve"],
                 ["init", "--name", "x", "--handle", "y"], ["app"], ["checkin", "list"], ["resource", "list"]):
        proc = cli.run(*args, check=False)
        assert proc.returncode != 0, args
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("circle: this device's circle data was wiped"), (args, proc.stderr)


def test_missed_checkin_is_printed_by_the_buddys_watch_process(pair: tuple[CLI, CLI], procs: list[Proc]) -> None:
    """ana's check-in (every 30 min) reaches bo's `alert watch --json`, a real process whose
    clock (CIRCLE_NOW, tests only) runs 30 min + skew - 2 s ahead: the deadline passes
    while it watches, and it prints the missed check-in for its buddy."""
    ana, bo = pair
    started = ana.json("checkin", "start", "Copwatch, 5th precinct", "--buddy", "bo", "--every", "30m")
    serve = _start(procs, ana, "serve", "--listen", "127.0.0.1:0", "--no-discovery", "--json")
    port = serve.expect(lambda e: e.get("event") == "listening")["port"]
    ahead = 30 * 60_000 + 60_000 - 2_000  # CLOCK_SKEW is 60 s: missed 2 s after the watch starts
    bo.env["CIRCLE_NOW"] = f"+{ahead}"
    watch = _start(procs, bo, "alert", "watch", "--json", "--listen", "127.0.0.1:0", "--no-discovery",
                   "--peer", f"127.0.0.1:{port}")
    watch.expect(lambda e: e.get("event") == "watching")
    got = watch.expect(lambda e: e.get("event") == "checkin" and e.get("id") == started["id"], timeout=30)
    assert got["state"] == "missed" and got["buddy"] is True
    assert got["message"].startswith("ana missed their") and "Copwatch, 5th precinct" in got["message"]
    # Before the deadline (the watch's first look) nothing was printed for it: the line is the transition.
    assert not any(started["id"] in line for line in watch.seen[:-1])


def test_circle_now_must_be_milliseconds(pair: tuple[CLI, CLI]) -> None:
    ana, _ = pair
    ana.env["CIRCLE_NOW"] = "tomorrow"
    proc = ana.run("checkin", "list", check=False)
    assert proc.returncode == 2 and "CIRCLE_NOW" in proc.stderr and "Traceback" not in proc.stderr
