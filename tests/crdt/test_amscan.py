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


def _read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _bomb(clock: Clock, size: int) -> tuple[bytes, bytes]:
    """(a document, a valid ~size/1000-byte compressed change chunk for it
    whose message inflates to `size` bytes)."""
    board = make_board(clock)
    board.claim_need(board.add_need("x"))
    *history, small = board.doc.changes_since([])
    assert small[8] == 1
    length, pos = _read_uleb(small, 9)
    body = small[pos : pos + length]
    q = 0
    deps, q = _read_uleb(body, q)
    q += 32 * deps
    actor, q = _read_uleb(body, q)
    q += actor
    _, q = _read_uleb(body, q)  # seq
    _, q = _read_uleb(body, q)  # start op
    _, q = _read_uleb(body, q)  # time (one sleb: same shape)
    message, after = _read_uleb(body, q)
    assert message == 0
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = body[:q] + _uleb(size)
    packed = packer.compress(head)
    step = b"a" * (1 << 20)
    for _ in range(size >> 20):
        packed += packer.compress(step)
    packed += packer.compress(body[after:]) + packer.flush()
    digest = hashlib.sha256(b"\x01" + _uleb(len(head) + size + len(body) - after))
    digest.update(head)
    for _ in range(size >> 20):
        digest.update(step)
    digest.update(body[after:])
    chunk = small[:4] + digest.digest()[:4] + b"\x02" + _uleb(len(packed)) + packed
    return b"".join(history), chunk


def test_a_compressed_change_bomb_is_refused_before_automerge_sees_it(clock: Clock) -> None:
    import tracemalloc

    from circle.crdt.amscan import Oversized, check_inflation, check_sync_message

    history, chunk = _bomb(clock, 80 << 20)
    assert len(chunk) < 100_000
    tracemalloc.start()
    with pytest.raises(Oversized):
        check_inflation(chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20, peak  # counted in 1 MiB steps, never held
    message = b"\x42" + _uleb(0) * 3 + _uleb(1) + _uleb(len(chunk)) + chunk
    with pytest.raises(Oversized):
        check_sync_message(message)
    bloom = bytes(range(40))  # a `have` entry (last-sync hashes + Bloom filter) before the changes
    with_have = (b"\x42" + _uleb(0) * 2 + _uleb(1) + _uleb(1) + bytes(32) + _uleb(len(bloom)) + bloom
                 + _uleb(1) + _uleb(len(chunk)) + chunk)
    with pytest.raises(Oversized):
        check_sync_message(with_have)
    # the same shape under the cap is a real change automerge accepts
    history, small_bomb = _bomb(clock, 2 << 20)
    check_inflation(small_bomb)
    doc = AmDoc.load(history)
    doc.apply_changes([small_bomb])
    assert len(doc.heads()) == 1 and doc.heads() != AmDoc.load(history).heads()


def test_what_circle_sends_passes_the_inflation_check(clock: Clock) -> None:
    from circle.crdt.amscan import check_inflation, check_sync_message

    board = make_board(clock)
    for i in range(300):
        board.add_need(f"Need {i}", details="hot " * 50)
    check_inflation(board.doc.save())
    check_inflation(b"".join(board.doc.changes_since([])))
    other = AmDoc.new()
    ours, theirs = board.doc.new_sync_state(), other.new_sync_state()
    sizes = []
    for _ in range(10):  # a real sync, every message checked on the way
        sent = False
        for src, dst, s_src, s_dst in ((board.doc, other, ours, theirs), (other, board.doc, theirs, ours)):
            message = src.generate_sync_message(s_src)
            if message is not None:
                check_sync_message(message)
                sizes.append(len(message))
                dst.receive_sync_message(s_dst, message)
                sent = True
        if not sent:
            break
    assert other.heads() == board.doc.heads()
    assert max(sizes) > 20_000  # the changes went through the checked messages
