"""Issue 4 across real hosts: invite on one namespace, join from another,
then the two find each other by mDNS and sync. Needs root; skips otherwise."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clihelp import CLI
from netns import Lan, lan

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@pytest.fixture
def lan2() -> Iterator[Lan]:
    yield from lan(2)


def _circle(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "circle", "--home", str(home), *args]


def test_invite_and_join_across_hosts_then_discover_and_sync(lan2: Lan, tmp_path: Path) -> None:
    a, b = lan2.hosts
    ana_home, bo_home = tmp_path / "ana", tmp_path / "bo"
    CLI(ana_home).run("init", "--name", "Pantry Collective", "--handle", "ana", "--no-passphrase")
    CLI(ana_home).run("need", "add", "Rice and lentils")

    inviter = lan2.popen(a, _circle(ana_home, "invite", "--listen", f"{a.ip}:0", "--json", "--no-qr"))
    first = inviter.wait_for(lambda ev: any(e.get("event") == "invite" for e in ev), 20, "the invite code")
    code = next(e for e in first if e.get("event") == "invite")
    assert code["addresses"] and all(addr.startswith(a.ip + ":") for addr in code["addresses"])

    joined = lan2.run(b, _circle(bo_home, "join", code["code"], "--handle", "bo", "--no-passphrase", "--json"))
    assert joined.returncode == 0, joined.stderr
    result = json.loads(joined.stdout)
    # One safety number per member, the same on both screens (issue 11 item 3).
    assert result["inviter_handle"] == "ana" and result["inviter_safety_number"] == code["safety_number"]
    events = inviter.wait_for(lambda ev: any(e.get("event") == "joined" for e in ev), 20, "the joined event")
    done = next(e for e in events if e.get("event") == "joined")
    assert done["handle"] == "bo" and done["safety_number"] == result["safety_number"]

    # The same code a second time, from the same host: the invite is gone.
    again = lan2.run(b, _circle(tmp_path / "eve", "join", code["code"], "--handle", "eve", "--no-passphrase"))
    assert again.returncode != 0

    # Both now run the app's background sync and find each other by mDNS.
    serves = [lan2.popen(h, _circle(home, "serve", "--listen", f"{h.ip}:7420", "--interface", h.ip, "--json"))
              for h, home in ((a, ana_home), (b, bo_home))]
    for s in serves:
        s.wait_for(lambda ev: any(e.get("event") == "peer" and e.get("in_sync") for e in ev), 25,
                   "an in-sync peer found by mDNS")
    add = lan2.run(a, _circle(ana_home, "need", "add", "Diapers, size 4"))
    assert add.returncode == 0, add.stderr
    deadline = time.monotonic() + 15
    titles: set[str] = set()
    while time.monotonic() < deadline and "Diapers, size 4" not in titles:
        out = lan2.run(b, _circle(bo_home, "need", "list", "--json"))
        titles = {n["title"] for n in json.loads(out.stdout)} if out.returncode == 0 else set()
        time.sleep(0.3)
    assert {"Rice and lentils", "Diapers, size 4"} <= titles
    for s in serves:
        s.stop()


def test_short_code_found_by_mdns_across_hosts(lan2: Lan, tmp_path: Path) -> None:
    """The LAN case: the joiner types only the 12 digits and finds the inviter by mDNS."""
    a, b = lan2.hosts
    ana_home, bo_home = tmp_path / "ana", tmp_path / "bo"
    CLI(ana_home).run("init", "--name", "Pantry Collective", "--handle", "ana", "--no-passphrase")
    inviter = lan2.popen(a, _circle(ana_home, "invite", "--short", "--listen", f"{a.ip}:0", "--json", "--no-qr"))
    first = inviter.wait_for(lambda ev: any(e.get("event") == "invite" for e in ev), 20, "the invite code")
    code = next(e for e in first if e.get("event") == "invite")
    assert code["announced"] is True
    joined = lan2.run(b, _circle(bo_home, "join", code["short_code"], "--interface", b.ip, "--handle", "bo",
                                 "--no-passphrase", "--json"))
    assert joined.returncode == 0, joined.stderr
    result = json.loads(joined.stdout)
    assert result["inviter_safety_number"] == code["safety_number"]
    events = inviter.wait_for(lambda ev: any(e.get("event") == "joined" for e in ev), 20, "the joined event")
    done = next(e for e in events if e.get("event") == "joined")
    assert done["handle"] == "bo" and done["safety_number"] == result["safety_number"]
