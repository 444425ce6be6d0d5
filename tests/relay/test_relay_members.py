"""Members of one circle syncing through REAL relay processes on 127.0.0.1.

The circle's homes are real (`member_homes`), the services are the real
`CircleService`, and `RelaySync` drives the real `RelayPool`. Members are
never online at the same time unless a test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from circle.errors import CircleError
from circle.net.envelope import Kind, open_envelope, peek_header
from circle.net.relay_client import Backoff, RelayConnection, RelayCredentials
from circle.node import membership
from circle.node.home import Home
from circle.node.relays import RelaySync
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes

from .conftest import RelayProcess

FAST = Backoff(initial=0.05, maximum=0.3)
GUARD = 30.0  # hang guard only: nothing asserts on time


def open_svc(path: Path) -> CircleService:
    return CircleService.open(Home.open(path, None))


async def until(pred: Callable[[], bool], what: str) -> None:
    async def loop() -> None:
        while not pred():
            await asyncio.sleep(0.02)
    try:
        await asyncio.wait_for(loop(), GUARD)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


def titles(svc: CircleService) -> set[str]:
    svc.board.invalidate()
    return {n.title for n in svc.board.needs("all")} | {o.title for o in svc.board.offers("all")}


async def one_shot(path: Path, edit: Callable[[CircleService], object] | None = None) -> tuple[CircleService, RelaySync]:
    """A member comes online, syncs once through the relays, goes offline."""
    svc = open_svc(path)
    if edit is not None:
        edit(svc)
    rs = RelaySync(svc, backoff=FAST)
    results = await rs.sync_round(timeout=GUARD)
    await rs.close()
    assert results and all(r.error is None for r in results if r.epoch == "current"), results
    return svc, rs


async def relay_envelopes(url: str, creds: RelayCredentials) -> list[bytes]:
    async with await RelayConnection.open(url, creds) as conn:
        items, _ = await conn.fetch_all(0)
    return [env for _, env in items]


def assert_no_plaintext(relay: RelayProcess, needles: list[bytes]) -> None:
    relay.stop()
    blobs = {p.name: p.read_bytes() for p in relay.data.iterdir()}
    blobs["log"] = relay.log.read_bytes()
    assert any(len(v) > 0 for k, v in blobs.items() if "sqlite3" in k)
    for name, blob in blobs.items():
        for needle in needles:
            assert needle not in blob, f"{needle!r} found in {name}"


# --- through the CLI -----------------------------------------------------------


def test_cli_members_never_online_together(tmp_path: Path, relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex"])
    a, b = CLI(homes[0]), CLI(homes[1])
    added = a.json("relay", "add", relay.url)
    assert added["url"] == relay.url and added["added_by_handle"] == "sam"
    b.json("relay", "add", relay.url.upper().replace("WS://", "ws://"))  # same relay, typed differently
    assert [r["url"] for r in b.json("relays")["relays"]] == [relay.url]
    sync = ("sync", "--no-discovery", "--listen", "127.0.0.1:0", "--timeout", "20")

    a.json("need", "add", "Firewood for Birchwood street", "--details", "two cords, dry")
    rows = a.json(*sync)  # A pushes, then goes offline (the process exits)
    assert [(r["path"], r["in_sync"]) for r in rows] == [("relay", True)]

    assert b.json("need", "list") == []
    rows = b.json(*sync)  # B was never online with A
    assert rows[0]["in_sync"] and rows[0]["snapshot_received"]
    assert [n["title"] for n in b.json("need", "list")] == ["Firewood for Birchwood street"]
    b.json("offer", "add", "Wheelbarrow to lend")
    b.json(*sync)
    a.json(*sync)
    assert [o["title"] for o in a.json("offer", "list")] == ["Wheelbarrow to lend"]
    # the relay list itself merged into one record (both added the same URL)
    assert len(a.json("relays")["relays"]) == 1
    assert_no_plaintext(relay, [b"Firewood", b"Birchwood", b"two cords", b"Wheelbarrow", b"sam", b"alex",
                                b"Eastside", homes[0].name.encode()])


def test_cli_relay_add_remove_and_server_options(tmp_path: Path) -> None:
    homes = member_homes(tmp_path, ["sam"])
    a = CLI(homes[0])
    bad = a.run("relay", "add", "http://example.org/", check=False)
    assert bad.returncode != 0 and "ws://" in bad.stderr
    insecure = a.run("relay", "add", "ws://relay.example.org/circle", check=False)
    assert insecure.returncode != 0 and "use wss://relay.example.org/circle" in insecure.stderr
    assert "Traceback" not in insecure.stderr
    a.json("relay", "add", "wss://relay.example.org/circle")
    dup = a.run("relay", "add", "WSS://Relay.Example.org/circle", check=False)
    assert dup.returncode != 0 and "already" in dup.stderr
    removed = a.json("relay", "remove", "wss://relay.example.org/circle")
    assert removed["active"] is False
    assert a.json("relays")["relays"] == []
    assert [r["active"] for r in a.json("relays", "--all")["relays"]] == [False]
    # `circle relay` without a subcommand still runs a server, and needs --data
    no_data = a.run("relay", "--port", "0", check=False)
    assert no_data.returncode != 0 and "--data" in no_data.stderr + no_data.stdout
    helptext = a.run("relay", "--help").stdout
    assert "--quota-mib" in helptext and "add" in helptext and "remove" in helptext


# --- in-process services ------------------------------------------------------------


async def test_two_relays_one_killed_one_wiped_converge(tmp_path: Path,
                                                        relay_factory: Callable[..., RelayProcess]) -> None:
    r1, r2 = relay_factory(), relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex"])
    for path in homes:
        svc = open_svc(path)
        svc.board.add_relay(r1.url)
        svc.board.add_relay(r2.url)

    # A is live: ten edits reach both relays, then r1 dies in the middle of ten more.
    a = open_svc(homes[0])
    rs_a = RelaySync(a, backoff=FAST)
    await rs_a.start()
    await until(lambda: rs_a._ready, "A caught up")
    for i in range(10):
        a.board.add_need(f"batch one {i}")
    await rs_a.flush(GUARD)
    for i in range(10):
        a.board.add_need(f"batch two {i}")
        if i == 3:
            r1.kill()
    await until(lambda: all(r.pending == 0 for r in rs_a.status() if r.url == r2.url), "r2 has everything")
    assert any(r.pending > 0 for r in rs_a.status() if r.url == r1.url)
    await rs_a.close()  # A goes offline; r1 never got batch two

    # r2 loses everything, r1 comes back with what it had. B comes online.
    await asyncio.to_thread(r2.wipe)
    await asyncio.to_thread(r1.start)
    b, rs_b = await one_shot(homes[1], lambda s: s.board.add_offer("ladder from B"))
    assert {f"batch one {i}" for i in range(10)} <= titles(b)
    assert rs_b.stats.snapshots_sent >= 1  # B registered the wiped relay's mailbox and filled it

    # A comes back: notices r2 was wiped, pushes what r1 missed; then B converges.
    a, rs_a = await one_shot(homes[0])
    assert "ladder from B" in titles(a)
    b, rs_b = await one_shot(homes[1])
    assert titles(b) == titles(a)
    assert {f"batch two {i}" for i in range(10)} <= titles(b)
    assert sorted(a.doc.heads()) == sorted(b.doc.heads())


async def test_new_member_catches_up_from_a_snapshot(tmp_path: Path,
                                                     relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex", "kim"])
    for path in homes:
        open_svc(path).board.add_relay(relay.url)
    a = open_svc(homes[0])
    rs_a = RelaySync(a, backoff=FAST)
    await rs_a.start()
    await until(lambda: rs_a._ready, "A caught up")
    for i in range(60):
        a.board.add_need(f"need number {i}", details="x" * 200)
    await rs_a.flush(GUARD)
    await rs_a.close()
    assert rs_a.stats.snapshots_sent >= 2  # first use, then once the log outweighed a snapshot

    envs = await relay_envelopes(relay.url, RelayCredentials.for_relay(a.config.epoch_key, relay.url))
    kinds = [peek_header(e).kind for e in envs]
    last_snapshot = max(i for i, k in enumerate(kinds) if k is Kind.SNAPSHOT)
    changes_total = kinds.count(Kind.CHANGES)
    changes_after = kinds[last_snapshot:].count(Kind.CHANGES)
    assert changes_after < changes_total

    # kim (a member whose copy is from before all this) comes online for the first time
    kim, rs_k = await one_shot(homes[2])
    assert {f"need number {i}" for i in range(60)} <= titles(kim)
    assert rs_k.stats.snapshots_new >= 1  # the snapshot carried the state...
    assert rs_k.stats.change_envelopes == changes_total  # ...the log was read (dedupe needs it)...
    assert rs_k.stats.change_envelopes_new <= changes_after  # ...but only what followed the snapshot was new


async def test_removed_member_reads_nothing_written_after_removal(
        tmp_path: Path, relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex", "cruz"])
    for path in homes:
        open_svc(path).board.add_relay(relay.url)
    for path in homes:  # everyone has everyone's state before the removal
        await one_shot(path)
    await one_shot(homes[0], lambda s: s.board.add_need("before removal"))
    cruz, _ = await one_shot(homes[2])
    assert "before removal" in titles(cruz)
    old_epoch = cruz.config.epoch
    cruz_keys = dict(cruz.config.epoch_keys)

    # sam removes cruz while online, then writes; alex is offline (a straggler)
    sam = open_svc(homes[0])
    rs_s = RelaySync(sam, backoff=FAST)
    await rs_s.start()
    await until(lambda: rs_s._ready, "sam caught up")
    membership.remove(sam, "cruz")
    assert sam.config.epoch != old_epoch
    sam.board.add_need("after removal: safe house address")
    await rs_s.flush(GUARD)
    await until(lambda: rs_s.previous is not None and rs_s.previous.status()[0].pending == 0,
                "the removal itself reached the old mailbox")
    await rs_s.close()

    # alex edits offline before hearing of the removal, then syncs: reads first, seals after
    alex, rs_x = await one_shot(homes[1], lambda s: s.board.add_need("alex offline edit"))
    assert alex.config.epoch == sam.config.epoch
    assert {"after removal: safe house address", "before removal"} <= titles(alex)
    await one_shot(homes[0])

    # cruz, with its old keys and its old mailbox credentials, gets everything it can
    cruz, rs_c = await one_shot(homes[2])
    assert cruz.config.epoch == old_epoch
    assert "after removal: safe house address" not in titles(cruz)
    assert "alex offline edit" not in titles(cruz)
    assert cruz.board.view().members[cruz.me].removed_at is not None  # it does learn it was removed
    old_envs = await relay_envelopes(relay.url, RelayCredentials.for_relay(cruz_keys[old_epoch], relay.url))
    for env in old_envs:  # nothing in the old mailbox carries post-removal content
        for payload in open_envelope(env, cruz_keys, lambda _k: True).payloads:
            assert b"safe house" not in payload and b"alex offline" not in payload
    new_envs = await relay_envelopes(relay.url, RelayCredentials.for_relay(sam.config.epoch_key, relay.url))
    assert new_envs
    opened_by_cruz = 0
    for env in new_envs:
        try:
            open_envelope(env, cruz_keys, lambda _k: True)
            opened_by_cruz += 1
        except CircleError:
            pass
    assert opened_by_cruz == 0
    # and cruz's own writes after removal are refused by the others
    await one_shot(homes[2], lambda s: s.doc.is_empty() or _force_edit(s, "cruz after removal"))
    alex2, _ = await one_shot(homes[1])
    assert "cruz after removal" not in titles(alex2)
    assert_no_plaintext(relay, [b"safe house", b"alex offline", b"before removal", b"cruz", b"alex", b"Eastside"])


def _force_edit(svc: CircleService, title: str) -> bool:
    """What a modified client of a removed member could still write locally."""
    from circle.crdt.board import Board

    board = Board(svc.doc, svc.me, svc.clock, on_commit=svc._local_commit)
    board._require_member = lambda: svc.me  # type: ignore[method-assign]
    board.add_need(title)
    return True


async def test_straggler_learns_of_a_removal_made_while_relays_were_off(
        tmp_path: Path, relay_factory: Callable[..., RelayProcess]) -> None:
    relay = relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex", "cruz"])
    for path in homes:
        open_svc(path).board.add_relay(relay.url)
    for path in homes:
        await one_shot(path)
    old_key = open_svc(homes[2]).config.epoch_key
    sam = open_svc(homes[0])  # like `circle remove cruz` then `circle need add` with nothing running
    membership.remove(sam, "cruz")
    sam.board.add_need("after removal, made offline")
    sam, rs_s = await one_shot(homes[0])
    alex, _ = await one_shot(homes[1])  # reads only the old mailbox at first
    assert alex.config.epoch == sam.config.epoch
    assert "after removal, made offline" in titles(alex)
    cruz, _ = await one_shot(homes[2])
    assert "after removal, made offline" not in titles(cruz)
    for env in await relay_envelopes(relay.url, RelayCredentials.for_relay(old_key, relay.url)):
        for payload in open_envelope(env, dict(cruz.config.epoch_keys), lambda _k: True).payloads:
            assert b"made offline" not in payload


async def test_sync_round_reports_bytes_and_changes_per_relay(tmp_path: Path,
                                                              relay_factory: Callable[..., RelayProcess]) -> None:
    """`circle sync` showed None/None bytes and 0 changes for a relay that delivered changes."""
    relay = relay_factory()
    homes = member_homes(tmp_path, ["sam", "alex"])
    for path in homes:
        open_svc(path).board.add_relay(relay.url)
    await one_shot(homes[0], lambda svc: (svc.board.add_need("Firewood"), svc.board.add_need("Blankets")))
    b = open_svc(homes[1])
    rs_b = RelaySync(b, backoff=FAST)
    results = await rs_b.sync_round(timeout=GUARD)
    await rs_b.close()
    [row] = [r for r in results if r.epoch == "current"]
    assert row.error is None
    assert row.bytes_received > 0 and row.bytes_sent > 0
    assert row.changes_applied >= 2  # both needs (in a snapshot or as changes)
    assert {"Firewood", "Blankets"} <= titles(b)
