"""node/snapshots.RelayParts: parts of split snapshots kept on disk until their set is whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from circle.errors import PartRejected
from circle.net import parts
from circle.net.envelope import Kind, open_envelope, seal
from circle.node.home import Home
from circle.node.service import CircleService
from circle.node.snapshots import PARTS_KEEP_S, RelayParts, heads_meta, seal_document
from factories import member_homes


@pytest.fixture
def pair(tmp_path: Path) -> tuple[CircleService, CircleService]:
    sam, alex = member_homes(tmp_path, ["sam", "alex"])
    return CircleService.open(Home.open(sam, None)), CircleService.open(Home.open(alex, None))


def big_envelopes(svc: CircleService) -> list[bytes]:
    for i in range(3):
        svc.board.add_need(f"need {i}", details="x" * 100)
    payload = svc.packed_snapshot() + os.urandom(4_500_000)  # above one envelope (the tail is never parsed here)
    envs = list(seal_document(svc, svc.config.epoch, svc.config.epoch_key, payload, svc.doc.heads()))
    assert len(envs) == 5
    return envs


def opened(svc: CircleService, env: bytes):  # type: ignore[no-untyped-def]
    return open_envelope(env, svc.config.epoch_keys, svc.is_active_member)


def test_parts_survive_a_restart_and_complete(pair: tuple[CircleService, CircleService]) -> None:
    sam, alex = pair
    envs = big_envelopes(sam)
    rp = RelayParts(alex)
    for env in envs[:3]:
        assert rp.add(opened(alex, env), env) is None
    assert len(list(rp.dir.iterdir())) == 3
    msg = rp.waiting(alex.doc)
    assert msg is not None and "3 of 5 parts" in msg and "missing part 4" in msg
    again = RelayParts(alex)  # a new process
    assert again.waiting(alex.doc) == msg
    assert again.add(opened(alex, envs[3]), envs[3]) is None
    done = again.add(opened(alex, envs[4]), envs[4])
    assert done is not None and done.kind is Kind.SNAPSHOT and len(done.payloads[0]) > 4_500_000
    assert list(again.dir.iterdir()) == [] and again.waiting(alex.doc) is None


def test_contradicting_part_drops_the_whole_set(pair: tuple[CircleService, CircleService]) -> None:
    sam, alex = pair
    envs = big_envelopes(sam)
    rp = RelayParts(alex)
    for env in envs[:2]:
        rp.add(opened(alex, env), env)
    p = parts.parse(opened(alex, envs[2]).payloads[0])
    forged_part = parts.Part(p.set_id, 2, 6, p.size, p.digest, p.meta, p.data)  # a member lying about the total
    head = parts._HEAD.pack(parts.MAGIC, parts.VERSION, p.set_id, 2, 6, p.size, p.digest, len(p.meta))
    forged = seal(sam.home.identity, sam.config.epoch, sam.config.epoch_key, Kind.SNAPSHOT,
                  [head + forged_part.meta + forged_part.data])
    with pytest.raises(PartRejected, match="disagree"):
        rp.add(opened(alex, forged), forged)
    assert list(rp.dir.iterdir()) == [] and rp.waiting(alex.doc) is None


def test_superseded_and_expired_sets_are_forgotten(pair: tuple[CircleService, CircleService]) -> None:
    sam, alex = pair
    envs = big_envelopes(sam)
    rp = RelayParts(sam)  # sam holds every change the set covers: nothing to wait for
    rp.add(opened(sam, envs[0]), envs[0])
    assert rp.waiting(sam.doc) is None and list(rp.dir.iterdir()) == []
    rp = RelayParts(alex)
    rp.add(opened(alex, envs[0]), envs[0])
    (stored,) = rp.dir.iterdir()
    old = time.time() - PARTS_KEEP_S - 60
    os.utime(stored, (old, old))
    assert RelayParts(alex).waiting(alex.doc) is None and not stored.exists()
    assert heads_meta([b"h" * 32] * 65) == b""  # too many heads to list: never "covered"
