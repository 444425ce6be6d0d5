"""Issue 13: an alert goes ahead of a large sync on the same live session.

Real homes, real `LiveSync` on both sides, real TCP on 127.0.0.1. bo lacks
thousands of ana's records; ana raises an alert while that bulk is being
sent. bo must apply and show the alert before the bulk has arrived. The test
asserts the order of what bo's service saw, never a time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from circle.crdt.defence import COLLECTIONS_CHANGE, COLLECTIONS_CHANGE_HASH, Defence
from circle.node.authorship import UnverifiedChanges
from circle.node.live import LiveSync
from circle.node.service import CircleService
from factories import member_homes
from livehelp import open_service

RECORDS = 3000  # ~0.9 MB of sync data: 14 pieces an alert can pass between


def add_bulk(svc: CircleService, n: int) -> None:
    before = svc.doc.heads()
    with svc.doc.edit() as ed:
        for i in range(n):
            ed.put_record("needs", f"bulk{i:06d}", {
                "title": f"need number {i}", "details": "x" * 80, "category": "food", "tags": "bulk",
                "urgency": "anytime", "zone": "north", "author": svc.me, "created_at": 1, "updated_at": 1,
                "expires_at": 2**50, "claims": {}, "met_at": None, "withdrawn_at": None})
    svc.gate.sign_new(svc.doc, before)
    svc.persist()


async def test_alert_raised_mid_sync_is_shown_before_the_bulk_arrives(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    a, b = open_service(a_path), open_service(b_path)
    Defence(a.board).ensure_collections()
    add_bulk(a, RECORDS)
    seen: list[tuple[int, int]] = []  # (alerts, needs) each time bo's service reports a remote change

    def on_b(origin: str) -> None:
        if origin == "remote":
            seen.append((len(Defence(b.board).alerts()), len(b.doc.records("needs"))))

    b.subscribe(on_b)
    server = LiveSync(a, listen=("127.0.0.1", 0), discovery=False)
    await server.start()
    assert server.bound is not None
    client = LiveSync(b, listen=None, discovery=False, manual_peers=[f"127.0.0.1:{server.bound[1]}"])
    await client.start()
    try:
        deadline = time.monotonic() + 30
        # Wait until ana's session has queued the bulk (sync data well past one piece)...
        while not any(s.stats.sync_bytes_sent > 256 << 10 for s in server.node.sessions):
            assert time.monotonic() < deadline, "the bulk sync never started"
            await asyncio.sleep(0)
        assert not seen or seen[-1][1] < RECORDS  # (bo has not got it yet)
        rid = Defence(a.board).raise_alert("Two vans at 5th & Main")  # ...then raise the alert
        while not (seen and seen[-1][1] >= RECORDS):
            assert time.monotonic() < deadline, f"the sync never finished; bo saw {seen}"
            await asyncio.sleep(0.01)
    finally:
        await client.close()
        await server.close()
    first_with_alert = next(i for i, (alerts, _needs) in enumerate(seen) if alerts)
    assert seen[first_with_alert][1] < RECORDS, seen  # shown while the bulk was still on its way
    assert any(needs >= RECORDS for _alerts, needs in seen[first_with_alert + 1:]), seen
    alert = Defence(b.board).alert(rid)
    assert alert.verified and alert.raiser == a.me  # checked by authorship on arrival, like any change


def test_a_raised_alert_depends_only_on_the_collections_change(tmp_path: Path) -> None:
    """What lets it pass: bo can apply the alert's change without anything else ana holds."""
    a_path, b_path, k_path = member_homes(tmp_path, ["ana", "bo", "kim"])
    a, b = open_service(a_path), open_service(b_path)
    Defence(a.board).ensure_collections()
    add_bulk(a, 50)
    before = a.doc.heads()
    rid = Defence(a.board).raise_alert("Raid")
    standalone = a.doc.changes_on([COLLECTIONS_CHANGE_HASH], before)
    assert len(standalone) == 1 and a.doc.changes_since(before) == standalone
    b.apply_remote([COLLECTIONS_CHANGE, *standalone], a.gate.proofs_since(a.doc, before))
    assert [x.id for x in Defence(b.board).alerts()] == [rid] and len(b.doc.records("needs")) == 0
    assert Defence(b.board).alert(rid).verified
    # Without its proof it is refused like any change (the urgent lane skips no check).
    kim = open_service(k_path)
    with pytest.raises(UnverifiedChanges, match="signature"):
        kim.apply_remote([COLLECTIONS_CHANGE, *standalone], [])
