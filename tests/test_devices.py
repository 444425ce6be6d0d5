"""One person, two laptops (issue 9): link in person with a one-time code,
write as the same member from either, revoke a lost one (a rotation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes
from livehelp import open_service, sync_pair


def test_link_a_second_laptop_then_revoke_it(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    ana, laptop2 = CLI(a_path), CLI(tmp_path / "ana-laptop2")
    link = subprocess.Popen([sys.executable, "-m", "circle", "device", "link", "--listen", "127.0.0.1:0",
                             "--json", "--no-qr"], env=ana.env, stdout=subprocess.PIPE, text=True)
    try:
        assert link.stdout is not None
        code = json.loads(link.stdout.readline())["code"]
        joined = laptop2.json("device", "join", code, "--no-passphrase")
        assert joined["linked"] and joined["handle"] == "ana"
        assert json.loads(link.stdout.readline())["event"] == "linked"
    finally:
        link.wait(timeout=30)
    first = ana.json("members")
    ana_id = next(m["id"] for m in first if m["handle"] == "ana")
    assert joined["member_id"] == ana_id  # one member id, whatever the device
    devices = ana.json("devices")
    assert sum(1 for d in devices if d["member"] == "ana" and d["active"]) == 2

    laptop2.run("need", "add", "Written on the second laptop")
    need = laptop2.json("need", "list")[0]
    assert need["author"] == ana_id


async def test_revoked_device_is_shut_out(tmp_path: Path) -> None:
    a_path, b_path = member_homes(tmp_path, ["ana", "bo"])
    ana, bo = open_service(a_path), open_service(b_path)
    from circle.node import membership

    home2 = Home.create(tmp_path / "laptop2", None)
    membership.link_device(ana, home2.identity.verify_key, home2.identity.box_public)
    laptop = CircleService.join_from_snapshot(home2, ana.config.circle_id, "Eastside", ana.packed_snapshot(),
                                              ana.keyring(), ana.config.epoch)
    laptop.config.settings["member_key"] = ana.member_key.hex()
    laptop.board.me = laptop.me
    membership.reconcile(laptop)
    assert laptop.me == ana.me and laptop.config.epoch_key == ana.config.epoch_key
    laptop.board.add_need("from the laptop")
    await sync_pair(ana, bo)  # bo learns of the new device from ana (until then it would refuse it)
    await sync_pair(bo, laptop)
    assert bo.board.need(next(n.id for n in bo.board.needs() if n.title == "from the laptop")).author == ana.me
    old_key = laptop.config.epoch_key
    membership.remove_device(ana, home2.identity.verify_key)  # the laptop was seized
    await sync_pair(ana, bo)
    assert bo.config.epoch_key == ana.config.epoch_key != old_key
    reports = await sync_pair(bo, laptop, timeout=5)
    assert not reports[0].in_sync  # type: ignore[attr-defined]
    ana.board.add_need("after the seizure")
    await sync_pair(ana, bo)
    assert "after the seizure" not in {n.title for n in laptop.board.needs("all")}
    assert ana.membership().members[ana.member_key].active  # ana herself is still in
