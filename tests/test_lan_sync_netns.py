"""Live sync between real hosts on a private LAN (issue 3's multi-host test).

Four hosts, each in its own network namespace on one virtual switch
(tests/netns.py). Hosts a, b and c hold homes of three members of one circle;
host d holds a different circle. Each runs the real `circle serve` (its own
home, mDNS bound to its namespace address only, no --peer given), and every
edit and check is the real CLI run inside that host's namespace:

1. a, b and c find each other by mDNS and converge; an edit on a reaches b
   and c.
2. c is unplugged until a and b have dropped their sessions with it; a and c
   both edit; c is plugged back in and all three converge.
3. d finds none of them, cannot sync with them even when it dials one
   directly, and never gains their data.
4. A capture of every frame on the switch holds no circle name, handle,
   member id or key (mDNS and TCP), and no need title or change bytes of the
   document in the clear (the sync sessions are end-to-end encrypted).

Nothing runs on the machine's own interfaces. Needs root; skips otherwise.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from zeroconf import DNSIncoming, DNSText

from circle.net.discovery import SERVICE_TYPE
from circle.node.home import Home
from circle.node.service import CircleService
from factories import member_homes
from netns import Capture, Host, Lan, NsProcess, lan

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PORT = 7420
HANDLES = ["marigold", "quince", "sorrel"]  # the members on hosts a, b, c
CIRCLE_NAME = "Eastside"  # what factories.member_homes names the circle
OUTSIDER_HANDLE = "tansy"
OUTSIDER_CIRCLE = "Hollow Creek Pantry"
TITLES = [
    "Ride to the eye clinic on Thursday",  # on a, all connected
    "Folding chairs for the potluck",  # on a, while c is cut off
    "Someone to water tomatoes in August",  # on c, while c is cut off
]

DISCOVER_TIMEOUT = 20.0  # serve start -> in sync with both other members
SPREAD_TIMEOUT = 10.0  # an edit on one connected host -> on the others
DROP_TIMEOUT = 45.0  # cut -> sessions with c dropped (15 s idle + 15 s unanswered ping)
# restore -> all three converged. The cut is lifted as soon as the sessions
# are gone, so the side that held each session redials within its first few
# backoff steps (1, 2, 4 s). A longer cut lets keep_connected's backoff grow
# toward its 60 s cap (x0.5-1.5 jitter), and healing can then take that long.
HEAL_TIMEOUT = 40.0


@dataclass
class Member:
    host: Host
    home: Path
    handle: str
    member_id: str
    verify_key: bytes
    box_public: bytes
    circle_id: str
    circle_name: str
    epoch_key: bytes
    heads: list[bytes]  # the document's heads before the test's edits
    serve: NsProcess | None = None


@pytest.fixture
def lan4() -> Iterator[Lan]:
    yield from lan(4)


def load(host: Host, home: Path) -> Member:
    svc = CircleService.open(Home.open(home, None))
    ident = svc.home.identity
    return Member(host, home, svc.board.view().members[ident.member_id].handle,
                  ident.member_id, ident.verify_key, ident.box_public, svc.config.circle_id,
                  svc.config.name, bytes(svc.config.epoch_key), svc.doc.heads())


def circle_cmd(m: Member, *args: str) -> list[str]:
    return [sys.executable, "-m", "circle", "--home", str(m.home), *args]


def cli(net: Lan, m: Member, *args: str) -> Any:
    """Run `circle ARGS --json` inside m's namespace, on m's home."""
    res = net.run(m.host, circle_cmd(m, *args, "--json"), timeout=30)
    assert res.returncode == 0, f"{m.handle}: circle {' '.join(args)} failed: {res.stderr}"
    return json.loads(res.stdout)


def titles(net: Lan, m: Member) -> set[str]:
    return {n["title"] for n in cli(net, m, "need", "list")}


def start_serve(net: Lan, m: Member) -> NsProcess:
    m.serve = net.popen(m.host, circle_cmd(m, "serve", "--listen", f"{m.host.ip}:{PORT}",
                                           "--interface", m.host.ip, "--json"),
                        env={"CIRCLE_HOME": str(m.home)})
    return m.serve


def peers_now(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest state of every peer entry `circle serve` reported."""
    latest: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("event") == "peer":
            latest[e["peer"]] = e
    return list(latest.values())


def connected(events: list[dict[str, Any]]) -> set[str]:
    return {p["member"] for p in peers_now(events) if p["connected"] and p["member"]}


def in_sync(events: list[dict[str, Any]]) -> set[str]:
    return {p["member"] for p in peers_now(events) if p["connected"] and p["in_sync"] and p["member"]}


def wait_titles(net: Lan, hosts: list[Member], want: set[str], timeout: float, what: str) -> float:
    """Poll `need list` on every host until each has all of `want`; returns seconds waited."""
    start = time.monotonic()
    pending = list(hosts)
    seen: dict[str, set[str]] = {}
    while pending:
        for m in list(pending):
            seen[m.handle] = titles(net, m)
            if want <= seen[m.handle]:
                pending.remove(m)
        if not pending:
            break
        if time.monotonic() - start > timeout:
            logs = "\n".join(
                f"--- {m.handle} serve:\n" + "\n".join(m.serve.lines[-15:]) + "\n" + m.serve.stderr[-1500:]
                for m in hosts if m.serve is not None
            )
            raise AssertionError(
                f"gave up after {timeout}s waiting for {what}: missing "
                + str({m.handle: sorted(want - seen[m.handle]) for m in pending}) + "\n" + logs
            )
        time.sleep(0.2)
    return time.monotonic() - start


def test_three_members_converge_across_a_partition_outsider_gains_nothing_wire_is_clean(
    lan4: Lan, tmp_path: Path
) -> None:
    net = lan4
    ha, hb, hc, hd = net.hosts
    homes = member_homes(tmp_path / "homes", HANDLES)
    outsider_home = tmp_path / "homes" / OUTSIDER_HANDLE
    init = net.run(hd, [sys.executable, "-m", "circle", "--home", str(outsider_home), "init",
                        "--name", OUTSIDER_CIRCLE, "--handle", OUTSIDER_HANDLE, "--no-passphrase"])
    assert init.returncode == 0, init.stderr
    a, b, c = (load(h, p) for h, p in zip((ha, hb, hc), homes, strict=True))
    d = load(hd, outsider_home)
    members = [a, b, c]
    ids = {m.member_id for m in members}
    assert d.circle_id != a.circle_id and d.epoch_key != a.epoch_key
    figures: dict[str, float] = {}

    with net.capture(tmp_path / "lan.cap") as cap:
        # --- 1. discovery -> in sync, then one edit everywhere ----------------------
        t0 = time.monotonic()
        for m in [*members, d]:
            start_serve(net, m)
        for m in [*members, d]:
            assert m.serve is not None
            m.serve.wait_for(lambda ev: any(e.get("event") == "listening" for e in ev), 15, "listening")
        for m in members:
            others = ids - {m.member_id}
            assert m.serve is not None
            m.serve.wait_for(lambda ev, others=others: in_sync(ev) >= others, DISCOVER_TIMEOUT,  # type: ignore[misc]
                             "in sync with both other members, found by mDNS")
        figures["discover_to_in_sync_s"] = time.monotonic() - t0

        cli(net, a, "need", "add", TITLES[0])
        figures["edit_spread_s"] = wait_titles(net, [b, c], {TITLES[0]}, SPREAD_TIMEOUT,
                                               "a's need to reach b and c")
        assert titles(net, d) == set(), "the outsider gained the circle's needs"

        # --- 2. partition: c unplugged, both sides edit, c plugged back in -------------
        net.cut(hc)
        t_cut = time.monotonic()
        cli(net, a, "need", "add", TITLES[1])
        cli(net, c, "need", "add", TITLES[2])
        wait_titles(net, [b], {TITLES[1]}, SPREAD_TIMEOUT, "a's edit to reach b while c is cut off")
        # hold the cut until a and b have really dropped their sessions with c
        for m in (a, b):
            assert m.serve is not None
            m.serve.wait_for(lambda ev: c.member_id not in connected(ev), DROP_TIMEOUT,
                             "the session with the cut-off host to be dropped")
        figures["cut_to_sessions_dropped_s"] = time.monotonic() - t_cut
        assert TITLES[1] not in titles(net, c), "c got an edit while cut off: the partition leaks"
        assert TITLES[2] not in titles(net, a) | titles(net, b), "c's edit escaped the partition"
        net.restore(hc)
        figures["restore_to_converged_s"] = wait_titles(net, members, set(TITLES), HEAL_TIMEOUT,
                                                        "all three to converge after the partition heals")

        # --- 3. the outsider: dialing a member directly fails and brings nothing -------
        probe = net.run(hd, circle_cmd(d, "sync", "--peer", f"{ha.ip}:{PORT}", "--no-discovery",
                                       "--timeout", "5", "--json"), timeout=30)
        assert probe.returncode == 6, f"outsider's sync did not fail: {probe.stdout} {probe.stderr}"
        [report] = json.loads(probe.stdout)
        assert report["in_sync"] is False and report["error"] and report["member"] is None, report
        time.sleep(1.0)  # let any (wrongful) sync from the probe land before checking
        assert titles(net, d) == set(), "the outsider gained the circle's needs"

        for m in [*members, d]:
            assert m.serve is not None
            assert m.serve.stop() == 0, f"{m.handle}'s serve did not exit cleanly: {m.serve.stderr[-2000:]}"

    # what everyone reported: the outsider never connected to, or synced with, anyone
    assert d.serve is not None
    outsider_peers = [e for e in d.serve.events if e.get("event") == "peer"]
    assert not any(e["connected"] or e["in_sync"] or e["member"] for e in outsider_peers), outsider_peers
    for m in members:
        assert m.serve is not None
        seen_members = {e["member"] for e in m.serve.events if e.get("event") == "peer"} - {None}
        assert seen_members <= ids - {m.member_id}, f"{m.handle} connected to a non-member"
    assert titles(net, d) == set()
    assert titles(net, a) == set(TITLES)

    check_capture(cap, members, d)
    print("\nLAN sync figures: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()))


def txt_pairs(text: bytes) -> dict[str, str]:
    pairs: dict[str, str] = {}
    i = 0
    while i < len(text):
        n = text[i]
        key, _, value = text[i + 1 : i + 1 + n].decode().partition("=")
        pairs[key] = value
        i += 1 + n
    return pairs


def _b64_forms(key: bytes) -> list[str]:
    return [key.hex(), base64.b64encode(key).decode().rstrip("="),
            base64.urlsafe_b64encode(key).decode().rstrip("=")]


def _windows(blob: bytes, size: int = 20) -> list[bytes]:
    return [blob[i : i + size] for i in range(12, len(blob) - size, size)]


def check_capture(cap: Capture, members: list[Member], outsider: Member) -> None:
    raw = cap.data()
    mdns = cap.udp_payloads(5353)
    tcp = cap.tcp_payloads(PORT)
    assert mdns, f"capture ({cap.tool}) saw no mDNS"
    tcp_stream = b"".join(tcp)
    assert len(tcp_stream) > 2000, f"capture ({cap.tool}) saw almost no sync traffic ({len(tcp_stream)} bytes)"

    # every name in every mDNS packet is the service type or a random label
    label = r"[0-9a-f]{16}"
    allowed = re.compile(rf"^({re.escape(SERVICE_TYPE)}|{label}\.{re.escape(SERVICE_TYPE)}|{label}\.local\.)$")
    for payload in mdns:
        msg = DNSIncoming(payload)
        for r in [*msg.questions, *msg.answers()]:
            assert allowed.match(r.name.lower()), f"unexpected name on the wire: {r.name!r}"
            if isinstance(r, DNSText):
                pairs = txt_pairs(r.text)
                assert set(pairs) == {"v", "n", "t"} and pairs["v"] == "2", pairs
                assert re.fullmatch(label * 2, pairs["t"]) and re.fullmatch(label * 2, pairs["n"]), pairs

    # nothing identifying, anywhere in the capture (mDNS, handshakes, sync)
    needles = [CIRCLE_NAME, OUTSIDER_CIRCLE, *OUTSIDER_CIRCLE.split(), *HANDLES, OUTSIDER_HANDLE,
               socket.gethostname()]
    blobs: list[bytes] = []
    for m in [*members, outsider]:
        needles += [m.member_id, m.circle_id, *_b64_forms(m.verify_key), *_b64_forms(m.box_public),
                    *_b64_forms(m.epoch_key)]
        blobs += [m.verify_key, m.box_public, m.epoch_key]
    lowered = raw.lower()
    for needle in needles:
        if len(needle) >= 4:
            assert needle.lower().encode() not in lowered, f"{needle!r} is on the wire"
    for blob in blobs:
        assert blob not in raw, "a key is on the wire in raw bytes"

    # no need title in the clear, and none of the document's change bytes verbatim
    # (automerge compresses changes, so a plaintext sync would carry them as-is)
    for title in TITLES:
        for part in (title, title.split()[0] + " " + title.split()[1]):
            assert part.encode() not in raw, f"need title {part!r} is on the wire"
    # the changes of the three needs: each crossed the switch (all hosts converged)
    svc = CircleService.open(Home.open(members[0].home, None))
    changes = svc.doc.changes_since(members[0].heads)
    assert len(changes) >= len(TITLES)
    for change in changes:
        for window in _windows(change):
            assert window not in tcp_stream, "document change bytes are on the wire in the clear"
