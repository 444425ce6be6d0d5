"""`circle bundle write` / `circle bundle read` through the real CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

from circle.net.bundle import CHECKSUM_LEN
from circle.node import membership
from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes


def open_svc(path: Path) -> CircleService:
    return CircleService.open(Home.open(path, None))


def need_titles(cli: CLI) -> set[str]:
    return {n["title"] for n in cli.json("need", "list", "--status", "all")}


def reseal_checksum(path: Path) -> None:
    """Fix up the (non-security) checksum after tampering, so the envelope check is what fails."""
    data = path.read_bytes()[:-CHECKSUM_LEN]
    head, body = data[:24], data[24:]  # version 2: the header, then the records
    inner = hashlib.blake2b(body, digest_size=CHECKSUM_LEN, person=b"circle/bundle").digest()
    h = hashlib.blake2b(digest_size=CHECKSUM_LEN, person=b"circle/bundle")
    h.update(head)
    h.update(inner)
    path.write_bytes(data + h.digest())


def test_bundle_round_trip_twice_and_old(tmp_path: Path) -> None:
    homes = member_homes(tmp_path, ["sam", "alex"])
    a, b = CLI(homes[0]), CLI(homes[1])
    a.json("need", "add", "Insulin cooler bag")
    old = tmp_path / "old.bundle"
    wrote = a.json("bundle", "write", str(old))
    assert wrote["envelopes"] == 1 and wrote["snapshots"] == 1
    assert b"Insulin" not in old.read_bytes() and b"sam" not in old.read_bytes()
    open_svc(homes[0]).board.add_need("Ride to the clinic")
    new = tmp_path / "new.bundle"
    a.json("bundle", "write", str(new))

    first = b.json("bundle", "read", str(new))
    assert first["changed"] is True and first["new_changes"] >= 2 and first["authors"] == ["sam"]
    assert need_titles(b) == {"Insulin cooler bag", "Ride to the clinic"}
    heads = open_svc(homes[1]).doc.heads()
    again = b.json("bundle", "read", str(new))
    assert again["changed"] is False and again["new_changes"] == 0
    older = b.json("bundle", "read", str(old))
    assert older["changed"] is False
    assert sorted(open_svc(homes[1]).doc.heads()) == sorted(heads)
    # and back the other way: B's edit reaches A by stick
    open_svc(homes[1]).board.add_need("Boots size 42")
    b.json("bundle", "write", str(tmp_path / "back.bundle"))
    assert a.json("bundle", "read", str(tmp_path / "back.bundle"))["changed"] is True
    assert "Boots size 42" in need_titles(a)


def test_bundle_tampered_foreign_and_removed_member(tmp_path: Path) -> None:
    homes = member_homes(tmp_path / "c1", ["sam", "alex", "cruz"])
    a, b, c = (CLI(h) for h in homes)
    sam = open_svc(homes[0])
    sam.board.add_need("Tarp for the garden")
    good = tmp_path / "good.bundle"
    a.json("bundle", "write", str(good))
    before = open_svc(homes[1]).doc.heads()

    # one flipped bit inside the ciphertext (checksum fixed up): the envelope fails, nothing is taken
    tampered = tmp_path / "tampered.bundle"
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    tampered.write_bytes(bytes(raw))
    reseal_checksum(tampered)
    proc = b.run("bundle", "read", str(tampered), check=False)
    assert proc.returncode != 0 and "altered" in proc.stderr
    # damaged without fixing the checksum: a clear "damaged" error
    damaged = tmp_path / "damaged.bundle"
    damaged.write_bytes(bytes(raw))
    proc = b.run("bundle", "read", str(damaged), check=False)
    assert proc.returncode != 0 and "damaged" in proc.stderr
    # another circle's bundle
    other = member_homes(tmp_path / "c2", ["zed"])
    z = CLI(other[0])
    z.json("need", "add", "Other circle's need")
    foreign = tmp_path / "foreign.bundle"
    z.json("bundle", "write", str(foreign))
    proc = b.run("bundle", "read", str(foreign), check=False)
    assert proc.returncode != 0
    assert sorted(open_svc(homes[1]).doc.heads()) == sorted(before)  # none of it changed B

    # sam removes cruz; alex learns of it by stick; cruz writes a bundle after the removal
    membership.remove(sam, "cruz")
    removal = tmp_path / "removal.bundle"
    a.json("bundle", "write", str(removal))
    read = b.json("bundle", "read", str(removal))  # alex had not heard: a straggler
    assert read["changed"] is True and read["skipped_unknown_epoch"] == 0
    assert open_svc(homes[1]).config.epoch == sam.config.epoch  # learnt the new epoch from the stick
    cruz = open_svc(homes[2])
    cruz.board.add_need("Cruz writes after removal")  # cruz has not heard of it
    from_cruz = tmp_path / "cruz.bundle"
    c.json("bundle", "write", str(from_cruz))
    proc = b.run("bundle", "read", str(from_cruz), check=False)
    assert proc.returncode != 0 and "not an active member" in proc.stderr
    assert "Cruz writes after removal" not in need_titles(b)
    # and cruz cannot read bundles written in the new epoch
    open_svc(homes[1]).board.add_need("After removal")
    after = tmp_path / "after.bundle"
    b.json("bundle", "write", str(after))
    got = c.json("bundle", "read", str(after))
    assert got["skipped_unknown_epoch"] == 1  # the current state: sealed under a key cruz never gets
    assert "After removal" not in need_titles(c)  # what it can open is the circle as of the rotation
    assert {m["handle"]: m["active"] for m in c.json("members")}["cruz"] is False
