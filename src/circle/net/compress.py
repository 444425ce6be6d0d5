"""Inflate a peer's compressed bytes without ever holding more than a cap.

A 65 KB zlib stream can expand to 64 MiB; a peer's announced size is not a
bound either (it is the peer's word). `inflate` asks the decompressor for at
most 1 MiB at a time and refuses as soon as the output passes the cap, so
refusing a bomb never costs more than the cap.

Every place that inflates bytes another device sent uses this (LAN
snapshots today); Automerge's own compressed chunks are checked by
`circle.crdt.amscan` under the same cap.
"""

from __future__ import annotations

import zlib
from typing import Final

from circle.crdt import amscan
from circle.errors import RemoteProtocolError

#: The most a circle document can be, raw: one number for every path (crdt/amscan.py).
MAX_DOCUMENT: Final = amscan.MAX_DOCUMENT
_CHUNK: Final = 1 << 20


class InflateError(RemoteProtocolError):
    """Compressed bytes from a peer that do not inflate within the cap."""


def inflate(data: bytes, cap: int = MAX_DOCUMENT, *, wbits: int = zlib.MAX_WBITS) -> bytes:
    """The decompressed bytes of `data` (a complete zlib stream by default;
    `wbits=-15` for raw deflate). Raises InflateError if the stream is
    damaged, incomplete, followed by extra bytes, or inflates past `cap`.

    Memory: output is produced in `_CHUNK` pieces and the count checked after
    each, so refused input costs at most `cap + _CHUNK`; accepted output is
    joined once at the end (twice its size, briefly)."""
    if cap < 0:
        raise ValueError("cap must not be negative")
    inflater = zlib.decompressobj(wbits)
    pieces: list[bytes] = []
    total = 0
    pending = data
    try:
        while True:
            piece = inflater.decompress(pending, min(_CHUNK, cap + 1 - total))
            pending = inflater.unconsumed_tail
            total += len(piece)
            pieces.append(piece)
            if total > cap:
                raise InflateError(f"the peer's compressed data inflates past the {cap}-byte cap")
            if inflater.eof or not pending and not piece:
                break
    except zlib.error:
        raise InflateError("the peer's compressed data is damaged") from None
    if not inflater.eof:
        raise InflateError("the peer's compressed data is incomplete")
    if inflater.unused_data:
        raise InflateError("the peer's compressed data has bytes after its end")
    return b"".join(pieces)


__all__ = ["InflateError", "MAX_DOCUMENT", "inflate"]
