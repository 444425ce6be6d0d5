"""Crash safety and several processes on one home, with real processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI

CHILD = str(Path(__file__).parent / "store_child.py")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    CLI(tmp_path / "h").run("init", "--name", "Crashy", "--handle", "sam", "--no-passphrase")
    return tmp_path / "h"


def test_kill_9_at_random_points_loses_nothing_reported(home: Path) -> None:
    rng = random.Random(1234)
    reported: list[str] = []
    for _ in range(12):
        child = subprocess.Popen([sys.executable, CHILD, str(home), "append"], stdout=subprocess.PIPE)
        assert child.stdout is not None
        fd = child.stdout.fileno()
        os.set_blocking(fd, False)
        raw = b""
        deadline = time.monotonic() + 30
        while not raw and time.monotonic() < deadline:  # start-up time varies with load
            with contextlib.suppress(BlockingIOError):
                raw = os.read(fd, 1 << 16)
            time.sleep(0.01)
        time.sleep(rng.random() * 0.5)  # then it appends as fast as it can: kill it mid-stream
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        while chunk := os.read(fd, 1 << 16):
            raw += chunk
        out = raw.decode()
        lines = out.splitlines()
        # A line cut by the kill was never fully reported: ignore a partial last one.
        if out and not out.endswith("\n"):
            lines = lines[:-1]
        reported.extend(lines)
        svc = CircleService.open(Home.open(home, None))  # every surviving store loads
        present = set(svc.board.view().needs)
        missing = [r for r in reported if r not in present]
        assert not missing, f"{len(missing)} saved edits lost"
    assert len(reported) > 50  # the kills really landed mid-stream


def test_two_processes_edit_one_home_and_follow_each_other(home: Path) -> None:
    cli = CLI(home)
    follower = subprocess.Popen([sys.executable, CHILD, str(home), "follow", "20"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None and follower.stdin is not None
    try:
        follower.stdout.readline()  # it is up
        for i in range(5):
            cli.run("need", "add", f"cli {i}")
        wanted = {"cli 4", "follower 19"}  # the CLI's last edit and all of its own
        deadline = time.time() + 30
        seen = False
        while time.time() < deadline:
            state = json.loads(follower.stdout.readline())
            if wanted <= set(state["titles"]):
                seen = True
                break
        assert seen, "the running process never saw the CLI's edits next to its own"
    finally:
        follower.stdin.close()
        follower.wait(timeout=10)
    titles = {n["title"] for n in cli.json("need", "list", "--status", "all")}
    assert {f"cli {i}" for i in range(5)} <= titles
    assert {f"follower {i}" for i in range(20)} <= titles
