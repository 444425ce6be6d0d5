"""The byte scan that keeps reads away from the binding's panicking path.

It must never say "clean" for bytes holding a value the binding cannot
convert (a miss means a Rust panic on stderr), and should say "clean" for
everything circle and plain JavaScript text edits write (else every read
pays for the slow path)."""

from __future__ import annotations

import hashlib
import zlib

import pytest

from circle.crdt.am import AmDoc
from circle.crdt.amscan import has_exotic_values
from factories import Clock, make_board
from jsam import js_edit


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _compressed(change: bytes) -> bytes:
    """The same change as a compressed chunk (type 2): header, raw-deflated body."""
    assert change[8] == 1
    pos, length, shift = 9, 0, 0
    while True:
        byte = change[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = change[pos : pos + length]
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = packer.compress(body) + packer.flush()
    return change[:8] + b"\x02" + _uleb(len(packed)) + packed


def test_what_circle_writes_is_clean(clock: Clock) -> None:
    board = make_board(clock)
    for i in range(300):  # enough ops for save() to deflate the columns
        board.add_need(f"Need {i}", details="x" * (i % 40), tags=[f"t{i % 7}"])
    board.claim_need(board.needs()[0].id)
    assert not has_exotic_values(board.doc.save())
    assert not has_exotic_values(b"".join(board.doc.changes_since([])))


def test_javascript_text_edits_are_clean(clock: Clock) -> None:
    board = make_board(clock)
    need = board.add_need("Soup")
    saved = js_edit(board.doc.save(), [{"path": ["needs", need, "title"], "value": {"text": "Soup for six"}}])
    assert not has_exotic_values(saved)


@pytest.mark.parametrize("value", [{"counter": 1}, {"timestamp": 5}, {"increment": 2}])
def test_counters_and_timestamps_are_found(clock: Clock, value: dict[str, int]) -> None:
    board = make_board(clock)
    for i in range(300):
        board.add_need(f"Need {i}")
    need = board.add_need("Soup")
    ops: list[dict[str, object]] = [{"path": ["needs", need, "urgency"], "value": {"counter": 0}}]
    if "increment" not in value:
        ops = [{"path": ["needs", need, "urgency"], "value": value}]
    saved = js_edit(board.doc.save(), ops)
    if "increment" in value:  # a later change that only increments
        saved = js_edit(saved, [{"path": ["needs", need, "urgency"], "value": value}])
    assert has_exotic_values(saved)  # a document chunk, deflated columns
    theirs = AmDoc.load(saved)
    new = theirs.changes_since(board.doc.heads())
    assert has_exotic_values(b"".join(new))  # change chunks
    last = new[-1]
    assert has_exotic_values(last)
    if last[8] == 1:
        assert has_exotic_values(_compressed(last))


def test_compressed_chunks_are_scanned_like_plain_ones(clock: Clock) -> None:
    board = make_board(clock)
    need = board.add_need("Soup " * 30, details="hot " * 200)
    board.claim_need(need)
    founding, big, small = board.doc.changes_since([])
    assert small[8] == 1 and big[8] == 2  # automerge itself sends large changes compressed
    assert not has_exotic_values(big)
    packed = _compressed(small)
    assert not has_exotic_values(packed)
    other = AmDoc.load(founding)
    other.apply_changes([big, packed])  # automerge accepts it: a real chunk form
    assert other.heads() == board.doc.heads()


def test_anything_not_understood_counts_as_exotic(clock: Clock) -> None:
    saved = make_board(clock).doc.save()
    assert has_exotic_values(saved[:-5])
    assert has_exotic_values(b"not automerge")
    assert has_exotic_values(saved[:8] + b"\x07" + saved[9:])  # unknown chunk type
    # a compressed chunk that inflates past the cap is not inflated further
    body = b"\x00" * (2 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = packer.compress(body) + packer.flush()
    checksum = hashlib.sha256(b"\x01" + _uleb(len(body)) + body).digest()[:4]
    chunk = b"\x85\x6f\x4a\x83" + checksum + b"\x02" + _uleb(len(bomb)) + bomb
    assert has_exotic_values(chunk, inflate_cap=1 << 20)
