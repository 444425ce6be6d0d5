"""Issue 16 case 3: a circle too large for one snapshot envelope is never reported "in sync"."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path

from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes

from .conftest import RelayProcess

SYNC = ("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--timeout", "30")


def test_too_large_circle_says_nothing_was_sent(tmp_path: Path, relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    (home,) = member_homes(tmp_path, ["sam"])
    svc = CircleService.open(Home.open(home, None))
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits + string.punctuation + " "
    svc.board.on_commit = None  # build in memory, save once
    while len(svc.doc.save()) < 4_600_000:
        for _ in range(100):  # long details, each within the CLI's limits
            svc.board.add_need("long need", details="".join(rng.choices(alphabet, k=3990)))
    svc.persist()
    cli = CLI(home)
    cli.json("relay", "add", relay.url)
    proc = cli.run(*SYNC, "--json", check=False)
    assert proc.returncode == 6, proc.stdout  # was: "in sync", exit 0, with nothing stored
    assert "too large" in proc.stdout and "nothing was sent" in proc.stdout
