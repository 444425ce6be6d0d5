"""Does a run of Automerge chunks hold a value the Python binding cannot read?

automerge 1.0.0rc1 panics (pyo3 `PanicException`, and the Rust panic hook
prints a trace on fd 2) when it converts a Counter, an Unknown value, a
Timestamp out of Python's datetime range or a Table object for Python. One such
value in a map makes `values()` of that whole map panic. A peer can write all
of them (the JavaScript reference implementation does in one line), and the
binding offers no way to ask a value's type without converting it.

So before reading, `am.py` asks this module whether any op in the document
ever carried such a value, by reading the binary format directly: the value
metadata column (low nibble = type: 8 counter, 9 timestamp, 10-15 unknown) and
the action column (5 increment, 6 make-table) of every document and change
chunk. That is a byte-level scan, no Automerge object is built. Only when it
says yes does `am.py` pay for a full patch diff to learn exactly which keys to
avoid (documents written only by circle never take that path).

Anything this parser does not understand counts as exotic: a parsing miss
costs time (the careful path), never a panic.

Format: https://alexjg.github.io/automerge-storage-docs/
"""

from __future__ import annotations

import zlib
from typing import Final

_MAGIC: Final = b"\x85\x6f\x4a\x83"
_DOCUMENT, _CHANGE, _COMPRESSED = 0, 1, 2
_ACTION_COL: Final = (4 << 4) | 2  # column id 4, type integer
_VALMETA_COL: Final = (5 << 4) | 6  # column id 5, type value metadata
_DEFLATE: Final = 0b1000
_EXOTIC_ACTIONS: Final = frozenset({5, 6})  # increment (a counter exists), make table
_FIRST_EXOTIC_TYPE: Final = 8  # 8 counter, 9 timestamp, 10-15 unknown
MAX_INFLATE: Final = 64 << 20  # one message or change from a peer
# The largest document circle carries by every path (a whole snapshot from a
# peer, a bundle, a relay's snapshot parts: net/parts.py MAX_SIZE). Local edits
# stop a margin below it (crdt/am.py EDIT_LIMIT), so no member can write a
# document that another member's path refuses.
MAX_DOCUMENT: Final = 256 << 20


class _Stop(Exception):
    """The bytes are not a chunk layout this parser knows."""


class _Reader:
    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def _leb(self) -> tuple[int, int, int]:
        """One LEB128 number: (value bits, how many bits, last byte)."""
        data, pos, end = self.data, self.pos, self.end
        result, shift = 0, 0
        while True:
            if pos >= end or shift > 63:
                raise _Stop
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                self.pos = pos
                return result, shift, byte

    def uleb(self) -> int:
        return self._leb()[0]

    def sleb(self) -> int:
        value, shift, last = self._leb()
        return value - (1 << shift) if last & 0x40 else value

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _Stop
        self.pos += n

    def skip_prefixed(self, count_each: int | None = None) -> None:
        """Skip a uleb count of items: fixed-size (`count_each`) or each uleb-length-prefixed."""
        count = self.uleb()
        if count_each is not None:
            self.skip(count * count_each)
            return
        for _ in range(count):
            self.skip(self.uleb())


def _columns(r: _Reader) -> list[tuple[int, int]]:
    count = r.uleb()
    if count > 64:
        raise _Stop
    return [(r.uleb(), r.uleb()) for _ in range(count)]


def _rle_any(data: bytes, actions: bool) -> bool:
    """True if the uleb RLE column holds an exotic action (`actions`) or, for
    value metadata, a type nibble >= 8. Only the first byte of each uleb is
    looked at: it holds the type nibble, and every action we accept is < 128.
    Inlined by hand: this loop runs once per op of the document."""
    pos, end = 0, len(data)
    try:
        while pos < end:
            # sleb run header
            count, shift = 0, 0
            while True:
                b = data[pos]
                pos += 1
                count |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 63:
                    return True
            if b & 0x40:
                count -= 1 << shift
            if count == 0:  # a run of nulls: skip its uleb length
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
                continue
            n = 1 if count > 0 else -count
            while n:
                b = data[pos]
                pos += 1
                if actions:
                    if b & 0x80 or b in _EXOTIC_ACTIONS:
                        return True
                else:
                    if (b & 0x0F) >= _FIRST_EXOTIC_TYPE:
                        return True
                    while b & 0x80:
                        b = data[pos]
                        pos += 1
                n -= 1
    except IndexError:
        return True
    return pos != end


def _ops_exotic(r: _Reader, columns: list[tuple[int, int]], inflate_cap: int) -> bool:
    offset = r.pos
    for spec, length in columns:
        if offset + length > r.end:
            raise _Stop
        kind = spec & ~_DEFLATE
        if kind in (_ACTION_COL, _VALMETA_COL):
            data = bytes(r.data[offset : offset + length])
            if spec & _DEFLATE:
                inflater = zlib.decompressobj(-15)
                try:
                    data = inflater.decompress(data, inflate_cap + 1)
                except zlib.error:
                    raise _Stop from None
                if len(data) > inflate_cap:
                    raise _Stop
            if _rle_any(data, actions=kind == _ACTION_COL):
                return True
        offset += length
    return False


def _change_exotic(body: bytes | memoryview, inflate_cap: int) -> bool:
    r = _Reader(body)
    r.skip_prefixed(32)  # deps
    r.skip(r.uleb())  # actor
    r.uleb()  # seq
    r.uleb()  # start op
    r.sleb()  # time
    r.skip(r.uleb())  # message
    r.skip_prefixed()  # other actors
    return _ops_exotic(r, _columns(r), inflate_cap)


def _document_exotic(body: bytes | memoryview, inflate_cap: int) -> bool:
    r = _Reader(body)
    r.skip_prefixed()  # actors
    r.skip_prefixed(32)  # heads
    change_cols = _columns(r)
    ops_cols = _columns(r)
    r.skip(sum(length for _spec, length in change_cols))
    return _ops_exotic(r, ops_cols, inflate_cap)


def has_exotic_values(data: bytes, inflate_cap: int = MAX_INFLATE) -> bool:
    """True unless every chunk in `data` (a saved document and/or change
    chunks, concatenated) is understood and holds only values we can read."""
    view = memoryview(data)
    r = _Reader(view)
    try:
        while r.pos < r.end:
            if bytes(view[r.pos : r.pos + 4]) != _MAGIC:
                return True
            r.skip(8)  # magic, checksum
            kind = view[r.pos]
            r.skip(1)
            length = r.uleb()
            start = r.pos
            r.skip(length)
            body = view[start : start + length]
            if kind == _DOCUMENT:
                found = _document_exotic(body, inflate_cap)
            elif kind == _CHANGE:
                found = _change_exotic(body, inflate_cap)
            elif kind == _COMPRESSED:
                inflater = zlib.decompressobj(-15)
                try:
                    inner = inflater.decompress(body, inflate_cap + 1)
                except zlib.error:
                    return True
                if len(inner) > inflate_cap:
                    return True
                found = _change_exotic(inner, inflate_cap)
            else:
                return True
            if found:
                return True
    except _Stop:
        return True
    return False


# --- inflation caps ------------------------------------------------------
#
# Automerge inflates compressed change chunks and deflated document columns
# with no limit (flate2 `read_to_end`): a 260 KB compressed change chunk
# carrying a 256 MiB message was measured to grow the process by 1.3 GB and
# take 10 s inside `apply_changes`. These checks count what a chunk stream or
# sync message would inflate to, in 1 MiB steps that are thrown away, and
# refuse it before Automerge sees it.


class Oversized(Exception):
    """Bytes from a peer that would inflate past the cap."""


def _inflated_len(data: bytes | memoryview, cap: int) -> int:
    inflater = zlib.decompressobj(-15)
    total, pending = 0, bytes(data)
    try:
        while True:
            out = inflater.decompress(pending, 1 << 20)
            pending = inflater.unconsumed_tail
            total += len(out)
            if total > cap:
                raise Oversized(f"compressed data inflates past the {cap}-byte cap")
            if inflater.eof or (not pending and not out):
                return total
    except zlib.error:
        return len(data)  # not inflatable: Automerge refuses it itself


def _document_inflated(body: memoryview, cap: int) -> int:
    r = _Reader(body)
    r.skip_prefixed()
    r.skip_prefixed(32)
    columns = _columns(r) + _columns(r)
    offset, total = r.pos, len(body)
    for spec, length in columns:
        if spec & _DEFLATE:  # the column's inflated bytes replace its deflated ones
            total += _inflated_len(body[offset : offset + length], cap) - length
            if total > cap:
                raise Oversized(f"a document inflates past the {cap}-byte cap")
        offset += length
    return total


def check_inflation(data: bytes, cap: int = MAX_INFLATE) -> int:
    """Raise Oversized if the chunks in `data` (a saved document and/or change
    chunks) hold more than `cap` bytes raw or once inflated; else return that
    size. Chunks this parser cannot read are left to Automerge, which refuses them."""
    return _chunks_inflated(data, cap)


def _chunks_inflated(data: bytes, cap: int) -> int:
    if len(data) > cap:
        raise Oversized(f"{len(data)} bytes is past the {cap}-byte cap")
    view = memoryview(data)
    r = _Reader(view)
    total = 0
    try:
        while r.pos < r.end:
            if bytes(view[r.pos : r.pos + 4]) != _MAGIC:
                break
            r.skip(8)
            kind = view[r.pos]
            r.skip(1)
            length = r.uleb()
            start = r.pos
            r.skip(length)
            body = view[start : start + length]
            if kind == _COMPRESSED:
                total += _inflated_len(body, cap - total)
            elif kind == _DOCUMENT:
                total += _document_inflated(body, cap - total)
            else:
                total += length
            if total > cap:
                raise Oversized(f"the data inflates past the {cap}-byte cap")
    except _Stop:
        pass
    return total


def check_sync_message(data: bytes, cap: int = MAX_INFLATE) -> int:
    """`check_inflation` for the chunks an Automerge sync message carries."""
    if len(data) > cap:
        raise Oversized(f"{len(data)} bytes is past the {cap}-byte cap")
    if not data or data[0] not in (0x42, 0x43):
        return 0
    r = _Reader(data, 1)
    total = 0
    try:
        r.skip_prefixed(32)  # heads
        r.skip_prefixed(32)  # need
        for _ in range(r.uleb()):  # have: last_sync hashes, bloom filter
            r.skip_prefixed(32)
            r.skip(r.uleb())
        for _ in range(r.uleb()):
            length = r.uleb()
            start = r.pos
            r.skip(length)
            total += _chunks_inflated(data[start : start + length], cap - total)
    except _Stop:
        pass
    return total


__all__ = ["MAX_DOCUMENT", "MAX_INFLATE", "Oversized", "check_inflation", "check_sync_message", "has_exotic_values"]
