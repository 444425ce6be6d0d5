"""Issue 16 case 8: `status` from a cache of derived results (node/viewcache.py).

Real homes and real `circle` processes. What each test proves: the cache
is used (the cached file answers, the document is not loaded), never
answers for a document, membership, settings or clock it was not computed
for, is sealed with a passphrase, and a damaged cache is only a miss.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from circle.crdt.model import DAY_MS
from circle.node import membership, viewcache
from circle.node.home import Home
from circle.node.service import CircleService
from clihelp import CLI
from factories import member_homes


def _cache(home: Path) -> Path:
    (circle,) = list((home / "circles").iterdir())
    return circle / "cache-status"


def test_status_is_answered_from_the_cache_until_anything_changes(tmp_path: Path) -> None:
    sam = CLI(tmp_path / "sam")
    sam.run("init", "--name", "Eastside", "--handle", "sam", "--no-passphrase")
    first = sam.json("status")
    assert _cache(tmp_path / "sam").exists()
    assert sam.json("status") == first
    # Proof the answer comes from the cache: the snapshot overwritten in place
    # (same inode, size and mtime, so the same token) still gives the cached
    # answer; a real load would refuse the damaged file.
    (circle,) = list((tmp_path / "sam" / "circles").iterdir())
    snap = circle / "doc" / "snapshot"
    st, original = snap.stat(), snap.read_bytes()
    with open(snap, "r+b") as f:
        f.write(b"\x00" * len(original))
    os.utime(snap, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sam.json("status") == first
    assert sam.run("need", "list", check=False).returncode != 0  # uncached commands see the damage
    with open(snap, "r+b") as f:
        f.write(original)
    os.utime(snap, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Another process edits: the next status sees it.
    sam.run("need", "add", "Soup")
    assert sam.json("status")["counts"]["open_needs"] == first["counts"]["open_needs"] + 1
    sam.run("offer", "add", "Ladder")
    assert sam.json("status")["counts"]["open_offers"] == 1


def test_a_membership_change_is_never_answered_from_the_cache(tmp_path: Path) -> None:
    ana_path, bo_path = member_homes(tmp_path, ["ana", "bo"])
    ana_cli = CLI(ana_path)
    assert ana_cli.json("status")["counts"]["members"] == 2
    ana = CircleService.open(Home.open(ana_path, None))
    membership.remove(ana, "bo")
    del ana
    after = ana_cli.json("status")
    assert after["counts"]["members"] == 1
    assert after == ana_cli.json("status")  # and that answer is cached in turn


def test_the_cache_expires_with_the_first_deadline(tmp_path: Path) -> None:
    sam = CLI(tmp_path / "sam")
    sam.run("init", "--name", "Eastside", "--handle", "sam", "--no-passphrase")
    need = sam.json("need", "add", "Soup", "--expires-days", "1")
    assert sam.json("status")["counts"]["open_needs"] == 1
    raw = json.loads(_cache(tmp_path / "sam").read_bytes())
    assert raw["valid_until"] == need["expires_at"]
    home = Home.open(tmp_path / "sam", None)
    (circle,) = home.circle_ids()
    key = viewcache.token(home, circle)
    assert viewcache.get(home, circle, "status", key, need["expires_at"] - 1) is not None
    assert viewcache.get(home, circle, "status", key, need["expires_at"]) is None  # the need expires: recompute
    assert viewcache.get(home, circle, "status", key, raw["computed_at"] - DAY_MS) is None  # clock set back


def test_the_cache_is_sealed_with_a_passphrase_and_damage_is_a_miss(tmp_path: Path) -> None:
    sam = CLI(tmp_path / "sam", passphrase="correct horse battery")
    sam.run("init", "--name", "Eastside", "--handle", "samwise", "--zone", "Northbank")
    sam.run("need", "add", "Insulin pickup")
    before = sam.json("status")
    blob = _cache(tmp_path / "sam").read_bytes()
    for secret in (b"Eastside", b"samwise", b"Northbank", b"open_needs", b"members"):
        assert secret not in blob
    _cache(tmp_path / "sam").write_bytes(blob[:-5] + b"xxxxx")
    assert sam.json("status") == before
    _cache(tmp_path / "sam").write_bytes(b"\x00" * 10)
    assert sam.json("status") == before


def test_need_list_is_cached_as_rows_and_follows_every_edit(tmp_path: Path) -> None:
    sam = CLI(tmp_path / "sam", passphrase="correct horse battery")
    sam.run("init", "--name", "Eastside", "--handle", "sam")
    sam.run("need", "add", "Insulin pickup")
    first = sam.run("need", "list").stdout
    (circle,) = list((tmp_path / "sam" / "circles").iterdir())
    cache = circle / "cache-needs-active"
    assert cache.exists() and b"Insulin" not in cache.read_bytes()
    def without_ages(text: str) -> str:
        return re.sub(r"\d+[smhd] ago", "", text)

    assert without_ages(sam.run("need", "list").stdout) == without_ages(first)
    sam.run("need", "add", "Firewood")
    listing = sam.run("need", "list").stdout
    assert "Firewood" in listing and "Insulin pickup" in listing
    need_id = sam.json("need", "list")[0]["id"]
    sam.run("need", "met", need_id)
    assert need_id not in sam.run("need", "list").stdout
    assert need_id in sam.run("need", "list", "--status", "met").stdout
