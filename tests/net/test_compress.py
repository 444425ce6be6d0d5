"""`inflate`: a peer's compressed bytes never cost more memory than the cap."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from circle.net.compress import MAX_DOCUMENT, InflateError, inflate

MIB = 1 << 20


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A few hundred KB that inflate past the largest document circle carries."""
    data = zlib.compress(bytes(MAX_DOCUMENT + MIB), 9)
    assert len(data) * 500 < MAX_DOCUMENT
    return data


def _peak(fn) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        fn()
    except InflateError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_round_trip_and_exact_cap() -> None:
    raw = b"circle " * 1000
    assert inflate(zlib.compress(raw)) == raw
    assert inflate(zlib.compress(raw), cap=len(raw)) == raw
    with pytest.raises(InflateError, match="cap"):
        inflate(zlib.compress(raw), cap=len(raw) - 1)
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = packed.compress(raw) + packed.flush()
    assert inflate(deflated, wbits=-15) == raw


def test_zlib_bomb_is_refused_at_the_default_cap(bomb: bytes) -> None:
    with pytest.raises(InflateError, match="cap"):
        inflate(bomb)


def test_bomb_is_refused_before_inflating_past_the_cap(bomb: bytes) -> None:
    """With a 1 MiB cap the bomb never costs more than ~1 MiB."""
    peak = _peak(lambda: inflate(bomb, cap=MIB))
    assert peak < 3 * MIB, peak
    peak = _peak(lambda: inflate(bomb))
    assert peak < MAX_DOCUMENT + 2 * MIB, peak


@pytest.mark.parametrize("mangle", [
    lambda d: d[: len(d) // 2],  # truncated
    lambda d: d + b"extra",  # bytes after the end
    lambda d: b"\x00" + d[1:],  # damaged header
    lambda d: b"",
])
def test_damaged_streams_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    good = zlib.compress(b"x" * 5000)
    with pytest.raises(InflateError):
        inflate(mangle(good))
