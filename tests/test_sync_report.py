"""`circle sync` reports members, not sessions (issue 10: "Sync that says it failed when it worked").

Real loopback TCP between real homes. The duplicate race is forced: the
served side has already dialled the syncing side when the syncing side's own
session completes, so one of the two sessions is closed as a duplicate.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from circle.cli.sync import sync_failed
from circle.crdt.am import AmDoc
from circle.net.keys import DeviceIdentity, new_epoch_key
from circle.net.tcp import SyncNode, Timeouts
from circle.node.live import MIN_BROWSE_S, LiveSync, browse_finished
from factories import member_homes
from livehelp import open_service

HOST = "127.0.0.1"
FAST = Timeouts(connect=2.0, handshake=2.0, idle=5.0, write=2.0)
KEY = new_epoch_key()


def make_doc(n: int) -> AmDoc:
    doc = AmDoc.new()
    with doc.edit() as ed:
        ed.create_collections(["needs"])
    for i in range(n):
        with doc.edit() as ed:
            ed.put_record("needs", f"r{i}", {"title": f"need {i}", "zone": "north"})
    return doc


def _pair_sorted() -> tuple[DeviceIdentity, DeviceIdentity]:
    a, b = DeviceIdentity.generate(), DeviceIdentity.generate()
    return (a, b) if a.verify_key < b.verify_key else (b, a)


@pytest.mark.parametrize("syncer_wins", [False, True])
async def test_a_lost_duplicate_race_is_reported_in_sync(syncer_wins: bool) -> None:
    low, high = _pair_sorted()
    # the session whose initiator has the smaller key survives
    syncer, served = (low, high) if syncer_wins else (high, low)
    members = {low.verify_key, high.verify_key}
    syncer_doc, served_doc = AmDoc.new(), make_doc(20)
    a = SyncNode(served_doc, served, {0: KEY}, members.__contains__, timeouts=FAST)
    b = SyncNode(syncer_doc, syncer, {0: KEY}, members.__contains__, timeouts=FAST)
    _, a_port = await a.start_server(HOST, 0)
    _, b_port = await b.start_server(HOST, 0)
    try:
        dial_back = await a.connect(HOST, b_port)  # the served side found us first
        assert await dial_back.wait_in_sync(10)
        report = await b.sync_once(HOST, a_port, timeout=10)
        assert report.in_sync, report.error
        assert report.error is None
        assert report.superseded is (not syncer_wins)
        assert report.seconds < 10  # it did not wait for the time-out
        assert set(syncer_doc.heads()) == set(served_doc.heads())
    finally:
        await b.close()
        await a.close()


async def test_a_round_reports_each_member_once_whatever_the_sessions(tmp_path: Path) -> None:
    ana_home, bo_home = member_homes(tmp_path, ["ana", "bo"])
    ana, bo = open_service(ana_home), open_service(bo_home)
    served = LiveSync(ana, listen=(HOST, 0), discovery=False)
    await served.start()
    assert served.bound is not None
    syncer = LiveSync(bo, listen=(HOST, 0), discovery=False,
                      manual_peers=[f"{HOST}:{served.bound[1]}", f"localhost:{served.bound[1]}"])
    await syncer.start(keep_connected=False)
    assert syncer.bound is not None
    try:
        served._dial(HOST, syncer.bound[1], "manual")  # and ana dials bo back
        results = await syncer.sync_round(10)
    finally:
        await syncer.close()
        await served.close()
    assert len(results) == 1, results
    [row] = results
    assert row.member_id == ana.me and row.handle == "ana"
    assert row.in_sync and row.error is None
    assert len(row.addresses) >= 2  # both dialled addresses (and maybe ana's dial-back) in one line


async def test_an_address_where_nobody_answers_is_its_own_line_in_words(tmp_path: Path) -> None:
    [bo_home] = member_homes(tmp_path, ["bo"])
    bo = open_service(bo_home)
    listener = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)  # hangs up at once
    port = listener.sockets[0].getsockname()[1]
    syncer = LiveSync(bo, listen=None, discovery=False, manual_peers=[f"{HOST}:{port}"])
    await syncer.start(keep_connected=False)
    try:
        [row] = await syncer.sync_round(5)
    finally:
        await syncer.close()
        listener.close()
    assert row.member_id is None and not row.in_sync
    assert row.error and "None" not in row.error and "handshake" in row.error


def test_browse_stops_when_every_member_is_in_sync_or_the_found_ones_are_done() -> None:
    # every other member already in sync: stop at once, however early
    assert browse_finished(0.05, 3.0, others_left=0, found=1, pending=0)
    # found some, all done, past the second browse query: stop
    assert browse_finished(MIN_BROWSE_S, 3.0, others_left=2, found=1, pending=0)
    assert not browse_finished(MIN_BROWSE_S - 0.1, 3.0, others_left=2, found=1, pending=0)
    # still syncing with someone, or nothing found yet: keep browsing until discover_for
    assert not browse_finished(2.0, 3.0, others_left=2, found=1, pending=1)
    assert not browse_finished(2.0, 3.0, others_left=2, found=0, pending=0)
    assert browse_finished(3.0, 3.0, others_left=2, found=0, pending=0)


def _row(member: str | None, in_sync: bool) -> dict[str, object]:
    return {"member": member, "in_sync": in_sync}


def test_exit_status_follows_members_that_answered() -> None:
    assert not sync_failed([])
    assert not sync_failed([_row("ana", True)])
    assert sync_failed([_row("ana", True), _row("bo", False)])  # a member answered but is not in sync
    assert not sync_failed([_row("ana", True), _row(None, False)])  # an empty address beside a synced member
    assert sync_failed([_row(None, False)])  # nothing synced at all


async def test_an_unreachable_peer_is_explained_in_words() -> None:
    probe = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()  # now nothing listens on that port
    node = SyncNode(AmDoc.new(), DeviceIdentity.generate(), {0: KEY}, lambda vk: True, timeouts=FAST)
    report = await node.sync_once(HOST, port, timeout=5)
    assert not report.in_sync
    assert "nothing is listening there" in str(report.error)
    assert "Errno" not in str(report.error)


async def test_a_lan_peer_lost_by_discovery_leaves_the_list_unless_a_session_is_open(tmp_path: Path) -> None:
    from circle.net.discovery import PeerLost

    ana_home, bo_home = member_homes(tmp_path, ["ana", "bo"])
    ana, bo = open_service(ana_home), open_service(bo_home)
    served = LiveSync(ana, listen=(HOST, 0), discovery=False)
    await served.start()
    assert served.bound is not None
    live = LiveSync(bo, listen=(HOST, 0), discovery=False)
    await live.start()
    changes: list[int] = []
    live.on_change = lambda: changes.append(len(live.peers))
    try:
        live._dial("10.255.255.1", 7420, "lan")  # a peer that vanished (never answers)
        live._dial(HOST, served.bound[1], "lan")  # a peer with a live session
        for _ in range(100):
            if any(p.connected for p in live.peers.values()):
                break
            await asyncio.sleep(0.05)
        live._on_discovery(PeerLost("10.255.255.1", 7420))
        live._on_discovery(PeerLost(HOST, served.bound[1]))
        assert "10.255.255.1:7420" not in live.peers
        assert f"{HOST}:{served.bound[1]}" in live.peers  # its session is open: still listed
    finally:
        await live.close()
        await served.close()


async def test_the_previous_keys_grace_counts_from_when_this_device_adopted_the_epoch(tmp_path: Path) -> None:
    [home] = member_homes(tmp_path, ["ana"])
    svc = open_service(home)
    live = LiveSync(svc, listen=None, discovery=False, relays=False)
    await live.start(keep_connected=False)
    try:
        rec = svc.config.settings["epoch_adopted"]
        assert rec["epoch"] == svc.config.epoch
        assert live._adopted_at(svc.config.epoch) == rec["at"]
        # persisted: a later process starts from the same moment, not from its own start
        assert open_service(home).config.settings["epoch_adopted"] == rec
        await asyncio.sleep(0.01)
        assert live._adopted_at(svc.config.epoch + 1) > rec["at"]  # an epoch not seen yet: now
    finally:
        await live.close()
