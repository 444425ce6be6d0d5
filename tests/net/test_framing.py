from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circle.errors import FrameTooLarge, LocalProtocolError
from circle.net.framing import FrameDecoder, encode_frame


def test_roundtrip_many_frames_in_one_chunk() -> None:
    bodies = [b"", b"a", b"hello" * 100]
    wire = b"".join(encode_frame(b) for b in bodies)
    dec = FrameDecoder()
    assert dec.feed(wire) == bodies
    assert dec.at_boundary


def test_byte_at_a_time() -> None:
    wire = encode_frame(b"xyz") + encode_frame(b"12345")
    dec = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(wire)):
        out += dec.feed(wire[i : i + 1])
        if i == 5:
            assert not dec.at_boundary
    assert out == [b"xyz", b"12345"]
    assert dec.at_boundary


def test_oversized_prefix_rejected_before_body_is_buffered() -> None:
    dec = FrameDecoder(max_size=100)
    # A 4 GiB announcement followed by some body bytes: nothing of the body is kept.
    with pytest.raises(FrameTooLarge):
        dec.feed(b"\xff\xff\xff\xff" + b"x" * 50)
    assert dec.buffered == 0
    with pytest.raises(FrameTooLarge):
        dec.feed(b"more")


def test_prefix_exactly_at_cap_is_fine_and_one_above_is_not() -> None:
    dec = FrameDecoder(max_size=8)
    assert dec.feed(encode_frame(b"12345678", max_size=8)) == [b"12345678"]
    with pytest.raises(FrameTooLarge):
        dec.feed((9).to_bytes(4, "big"))


def test_encoder_refuses_oversized() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 9, max_size=8)


def test_cap_can_be_raised_after_handshake() -> None:
    dec = FrameDecoder(max_size=4)
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_size=4).feed(encode_frame(b"12345"))
    dec.max_size = 16
    assert dec.feed(encode_frame(b"12345")) == [b"12345"]


@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(1, 50), min_size=1))
def test_any_split_decodes_the_same(bodies: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(b) for b in bodies)
    dec = FrameDecoder(max_size=300)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += dec.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert out == bodies
    assert dec.at_boundary


@given(st.binary(max_size=200))
def test_garbage_never_crashes_and_respects_cap(data: bytes) -> None:
    dec = FrameDecoder(max_size=64)
    try:
        frames = dec.feed(data)
    except FrameTooLarge:
        return
    assert all(len(f) <= 64 for f in frames)
    assert dec.buffered <= 4 + 64
