"""Issue 16 case 2: a relay out of quota is never reported as "in sync".

A real relay process with a tiny mailbox quota refuses the envelope of a new
need; `circle sync` must say so (not "in sync", exit 6), the envelope must stay
queued across processes, and once the relay has room the next `circle sync`
delivers it and the other member receives the need."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from clihelp import CLI
from factories import member_homes

from .conftest import RelayProcess

SYNC = ("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--timeout", "20")


def test_refused_envelopes_stay_queued_and_are_delivered_later(
        tmp_path: Path, relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory("--mailbox-quota-envelopes", "1")
    homes = member_homes(tmp_path, ["sam", "alex"])
    a, b = CLI(homes[0]), CLI(homes[1])
    a.json("relay", "add", relay.url)
    b.json("relay", "add", relay.url)
    first = a.run(*SYNC, "--json", check=False)  # the snapshot takes the mailbox's only slot
    assert first.returncode == 0, first.stderr
    a.json("need", "add", "Insulin run to the pharmacy")
    full = a.run(*SYNC, "--json", check=False)
    assert full.returncode == 6, full.stdout  # was: "in sync", exit 0, relay stored nothing
    assert "relay full" in full.stdout and "still queued" in full.stdout
    again = a.run(*SYNC, "--json", check=False)  # a new process: the edit is still owed to the relay
    assert again.returncode == 6
    assert a.json("status")["relays_undelivered_changes"] >= 1

    relay.stop()
    relay.args = ["--mailbox-quota-envelopes", "1000"]
    relay.start()  # same port, same data: now it has room
    relay_ok = a.run(*SYNC, "--json", check=False)
    assert relay_ok.returncode == 0, relay_ok.stdout
    assert a.json("status")["relays_undelivered_changes"] == 0
    b.run(*SYNC, "--json")
    assert [n["title"] for n in b.json("need", "list")] == ["Insulin run to the pharmacy"]
