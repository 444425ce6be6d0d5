"""Parts of a payload too big for one envelope (net/parts.py): the reassembly rules."""

from __future__ import annotations

import os
import random

import pytest

from circle.errors import LocalProtocolError, PartRejected
from circle.net import parts
from circle.net.envelope import Kind, open_envelope, seal_snapshot_parts
from circle.net.keys import DeviceIdentity, new_epoch_key

ALICE, BOB = b"a" * 32, b"b" * 32


def split(payload: bytes, size: int = 1000, meta: bytes = b"m") -> list[parts.Part]:
    return [parts.parse(p) for p in parts.split(payload, size, meta)]


def feed(asm: parts.Reassembler, author: bytes, ps: list[parts.Part]) -> bytes | None:
    whole = None
    for p in ps:
        _s, got = asm.add(author, p)
        whole = got if got is not None else whole
    return whole


def test_round_trip_in_any_order_with_duplicates() -> None:
    payload = os.urandom(10_500)
    ps = split(payload)
    assert len(ps) == 11 and {p.total for p in ps} == {11}
    shuffled = ps + ps[:3]
    random.Random(1).shuffle(shuffled)
    asm = parts.Reassembler()
    assert feed(asm, ALICE, shuffled) == payload
    assert asm.add(ALICE, ps[4]) == (None, None)  # a late copy after the set was rebuilt
    assert asm.pending() == []


def test_missing_part_never_yields_and_says_which() -> None:
    ps = split(os.urandom(5000))
    asm = parts.Reassembler()
    assert feed(asm, ALICE, ps[:2] + ps[3:]) is None
    (pending,) = asm.pending()
    assert pending.missing == [2] and "missing part 3" in pending.describe()


def test_part_from_another_set_or_author_is_not_spliced() -> None:
    payload = os.urandom(5000)
    mine, other = split(payload), split(os.urandom(5000))
    asm = parts.Reassembler()
    assert feed(asm, ALICE, mine[:2] + [other[2]] + mine[3:-1]) is None  # other[2] is in its own set
    assert len(asm.pending()) == 2
    assert feed(asm, BOB, [mine[-1]]) is None  # the same set id from another author is another set
    assert feed(asm, ALICE, [mine[2], mine[-1]]) == payload


def test_contradicting_parts_refuse_the_set() -> None:
    ps = split(os.urandom(5000))
    asm = parts.Reassembler()
    asm.add(ALICE, ps[0])
    forged = parts.Part(ps[1].set_id, 1, ps[1].total, ps[1].size + 1, ps[1].digest, ps[1].meta, ps[1].data)
    with pytest.raises(PartRejected, match="disagree"):
        asm.add(ALICE, forged)
    assert asm.pending() == []
    asm.add(ALICE, ps[0])
    changed = parts.Part(ps[0].set_id, 0, ps[0].total, ps[0].size, ps[0].digest, ps[0].meta, b"x" * 1000)
    with pytest.raises(PartRejected, match="twice"):
        asm.add(ALICE, changed)


def test_digest_of_the_whole_is_checked() -> None:
    ps = split(os.urandom(3000))
    bad = [parts.Part(p.set_id, p.index, p.total, p.size, p.digest, p.meta,
                      bytes(len(p.data)) if p.index == 1 else p.data) for p in ps]
    with pytest.raises(PartRejected, match="digest"):
        feed(parts.Reassembler(), ALICE, bad)


def test_strict_order_for_files() -> None:
    ps = split(os.urandom(5000))
    for bad in ([ps[1], ps[0]], [ps[0], ps[2]], [ps[0], ps[0]], [ps[0], split(os.urandom(5000))[0]]):
        with pytest.raises(PartRejected):
            feed(parts.Reassembler(strict=True), ALICE, bad)
    assert feed(parts.Reassembler(strict=True), ALICE, ps) is not None


def test_limits_before_keeping_anything() -> None:
    ps = split(os.urandom(5000))
    with pytest.raises(PartRejected, match="above"):
        parts.Reassembler(max_size=4000).add(ALICE, ps[0])
    asm = parts.Reassembler(max_pending=2500)
    feed(asm, ALICE, ps[:2])
    with pytest.raises(PartRejected, match="incomplete snapshots"):
        asm.add(ALICE, ps[2])
    huge = parts.Part(b"s" * 16, 0, 2, 10 << 30, bytes(32), b"", b"x")
    with pytest.raises(PartRejected, match="above the 256 MiB"):
        parts.Reassembler().add(ALICE, huge)
    with pytest.raises(LocalProtocolError):
        list(parts.split(b"x" * 10, 1, b"m" * (parts.MAX_META + 1)))


def test_parse_refuses_damaged_headers() -> None:
    good = next(parts.split(os.urandom(100), 10))
    for bad in (b"", b"CPRT", b"XXXX" + good[4:], good[:4] + b"\x09" + good[5:]):
        with pytest.raises(PartRejected):
            parts.parse(bad)


def test_sealed_parts_open_and_rebuild() -> None:
    ident, key = DeviceIdentity.generate(), new_epoch_key()
    payload = os.urandom(5_000_000)  # above one envelope
    envs = list(seal_snapshot_parts(ident, 1, key, payload, b"heads"))
    assert len(envs) == 5 and all(len(e) <= 1024 * 1024 + 64 for e in envs)
    asm = parts.Reassembler(strict=True)
    whole = None
    for env in envs:
        opened = open_envelope(env, {1: key}, lambda _k: True)
        assert opened.kind is Kind.SNAPSHOT and parts.is_part(opened.payloads[0])
        whole = asm.add(opened.author, parts.parse(opened.payloads[0]))[1] or whole
    assert whole == payload
    small = list(seal_snapshot_parts(ident, 1, key, b"small", b"heads"))
    assert len(small) == 1 and open_envelope(small[0], {1: key}, lambda _k: True).payloads == (b"small",)
