"""Parts: one payload too big for one envelope, split across several (sans-I/O).

A saved document can outgrow one envelope (`envelope.MAX_BLOCK`, 4 MiB): a
circle of 1,500 long needs is 4.6 MB. Relays keep their envelope cap (they
are untrusted and need a limit), so such a payload travels as a *set* of
parts, each sealed in its own snapshot envelope (signed by the author and
authenticated by the circle key like any envelope), through relays and in
bundles alike.

Part layout (inside the envelope's signed, encrypted block)::

    magic    b"CPRT"
    version  u8 = 1
    set_id   16 random bytes, new for every split
    index    u32   0 .. total-1
    total    u32   number of parts in the set (>= 2)
    size     u64   bytes of the whole payload
    digest   32    BLAKE2b-256 of the whole payload
    meta_len u16, meta  opaque to this module (the node puts the
                        document heads the snapshot covers there)
    data     this part's slice of the payload

Rules, and what each one stops:

- Every part names its set, its index, the total, the size and the digest
  of the whole, and all of it is covered by the author's signature: a part
  cannot be moved to another position (its index is signed) or spliced into
  another set (its set id is signed; a set is also keyed by its author).
- A set is complete when every index 0..total-1 is present; only then is
  the payload rebuilt, and it is used only if its length and digest match.
  A dropped part leaves the set incomplete: nothing of it is used, the parts
  received are kept (`pending()`), and the caller says what is missing.
- The same index twice with identical bytes is a duplicate (ignored); with
  different bytes the set is refused (`PartRejected`) and forgotten.
- Parts that disagree on total, size, digest or meta refuse the set.
- `strict` (bundles): a file is written in order, so its parts must arrive
  in order, each set whole and uninterrupted; anything else is tampering.
  Relays deliver across several relays and may reorder: not strict there,
  the signed index puts every part in its place.
- Bounded: a set may announce at most `max_size` bytes (checked on its
  first part, before anything is kept) and all sets together hold at most
  `max_pending` bytes of parts; beyond, the new part is refused.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from circle.errors import LocalProtocolError, PartRejected

MAGIC = b"CPRT"
VERSION = 1
SET_ID_LEN = 16
DIGEST_LEN = 32
MAX_META = 4096
_HEAD = struct.Struct(">4sB16sIIQ32sH")
HEAD_LEN = _HEAD.size
#: Largest payload split into parts (a whole saved document).
MAX_SIZE = 256 << 20
#: Most parts one set may have.
MAX_PARTS = 4096
_PERSON = b"circle/parts"


def digest(payload: bytes | memoryview) -> bytes:
    return hashlib.blake2b(payload, digest_size=DIGEST_LEN, person=_PERSON).digest()


def is_part(payload: bytes) -> bool:
    return payload[:4] == MAGIC


@dataclass(frozen=True)
class Part:
    set_id: bytes
    index: int
    total: int
    size: int
    digest: bytes
    meta: bytes
    data: bytes


def split(payload: bytes, part_size: int, meta: bytes = b"") -> Iterator[bytes]:
    """The part payloads of `payload`, `part_size` bytes of it in each (the
    whole header comes on top). Lazy: one part at a time."""
    if len(payload) > MAX_SIZE:
        raise LocalProtocolError(f"a payload of {len(payload)} bytes is above the {MAX_SIZE >> 20} MiB limit")
    if len(meta) > MAX_META:
        raise LocalProtocolError("part meta is too long")
    if part_size < 1:
        raise LocalProtocolError("part size must be positive")
    total = max(2, -(-len(payload) // part_size))
    if total > MAX_PARTS:
        raise LocalProtocolError(f"a payload of {len(payload)} bytes needs more than {MAX_PARTS} parts")
    set_id = os.urandom(SET_ID_LEN)
    whole = digest(payload)
    view = memoryview(payload)
    step = -(-len(payload) // total)
    for i in range(total):
        head = _HEAD.pack(MAGIC, VERSION, set_id, i, total, len(payload), whole, len(meta))
        yield head + meta + bytes(view[i * step : (i + 1) * step])


def parse(payload: bytes) -> Part:
    if len(payload) < HEAD_LEN or payload[:4] != MAGIC:
        raise PartRejected("not a part of a larger snapshot")
    magic, version, set_id, index, total, size, dig, meta_len = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise PartRejected(f"a part of version {version} is not supported (knows {VERSION})")
    if not 2 <= total <= MAX_PARTS or index >= total:
        raise PartRejected(f"a part claims to be number {index + 1} of {total}")
    if meta_len > MAX_META or HEAD_LEN + meta_len > len(payload):
        raise PartRejected("a part's header is damaged")
    meta = payload[HEAD_LEN : HEAD_LEN + meta_len]
    return Part(set_id, index, total, size, dig, meta, payload[HEAD_LEN + meta_len :])


@dataclass
class PendingSet:
    """A set some of whose parts arrived (the caller says what is missing)."""

    author: bytes
    set_id: bytes
    total: int
    size: int
    digest: bytes
    meta: bytes
    parts: dict[int, bytes] = field(default_factory=dict)
    tags: dict[int, object] = field(default_factory=dict)  # the caller's handle per part (e.g. a file)

    @property
    def missing(self) -> list[int]:
        return [i for i in range(self.total) if i not in self.parts]

    @property
    def held(self) -> int:
        return sum(len(d) for d in self.parts.values())

    def describe(self) -> str:
        return (f"{len(self.parts)} of {self.total} parts of a {self.size / 1e6:.1f} MB snapshot "
                f"(missing part {self.missing[0] + 1}{' and more' if len(self.missing) > 1 else ''})")


class Reassembler:
    """Collects parts by (author, set id); returns a payload once its set is complete."""

    def __init__(self, *, strict: bool = False, max_size: int = MAX_SIZE, max_pending: int = MAX_SIZE) -> None:
        self.strict = strict
        self.max_size = max_size
        self.max_pending = max_pending
        self._sets: dict[tuple[bytes, bytes], PendingSet] = {}
        self._current: tuple[bytes, bytes] | None = None  # strict: the set being read
        self._done: deque[tuple[bytes, bytes]] = deque(maxlen=64)  # sets already rebuilt

    def pending(self) -> list[PendingSet]:
        return list(self._sets.values())

    def held(self) -> int:
        return sum(s.held for s in self._sets.values())

    def forget(self, author: bytes, set_id: bytes) -> PendingSet | None:
        if self._current == (author, set_id):
            self._current = None
        return self._sets.pop((author, set_id), None)

    def add(self, author: bytes, part: Part, tag: object = None) -> tuple[PendingSet | None, bytes | None]:
        """Keep `part`; returns its set and, if that set is now complete, the
        whole payload (the set is then forgotten). A late copy of a part of a
        set already rebuilt returns (None, None) (strict: refused). Raises
        PartRejected (the set is forgotten) if the part contradicts its set
        or the limits."""
        key = (author, part.set_id)
        if key in self._done:
            if self.strict:
                raise PartRejected(f"part {part.index + 1} of {part.total} arrived twice")
            return None, None
        s = self._sets.get(key)
        if self.strict and self._current is not None and self._current != key:
            raise PartRejected("a part of another snapshot is in the middle of one (parts were spliced)")
        if s is None:
            if self.strict and part.index != 0:
                raise PartRejected(f"part {part.index + 1} of {part.total} comes first (parts are missing or reordered)")
            if part.size > self.max_size:
                raise PartRejected(f"a snapshot of {part.size} bytes is above the {self.max_size >> 20} MiB limit")
            if part.size < part.total - 1:
                raise PartRejected("a part claims an impossible size")
            s = PendingSet(author, part.set_id, part.total, part.size, part.digest, part.meta)
            self._sets[key] = s
            self._current = key if self.strict else None
        elif (part.total, part.size, part.digest, part.meta) != (s.total, s.size, s.digest, s.meta):
            self.forget(*key)
            raise PartRejected("parts of one snapshot disagree about what they belong to")
        if part.index in s.parts:
            if s.parts[part.index] == part.data and not self.strict:
                return s, None  # an honest duplicate (two relays, a replay)
            self.forget(*key)
            raise PartRejected(f"part {part.index + 1} of {part.total} arrived twice")
        if self.strict and part.index != len(s.parts):
            self.forget(*key)
            raise PartRejected(f"part {part.index + 1} of {part.total} is out of order (parts are missing or reordered)")
        if s.held + len(part.data) > s.size:
            self.forget(*key)
            raise PartRejected("the parts of a snapshot are larger than it claims")
        if self.held() + len(part.data) > self.max_pending:
            raise PartRejected(f"more than {self.max_pending >> 20} MiB of incomplete snapshots are waiting")
        s.parts[part.index] = part.data
        s.tags[part.index] = tag
        if len(s.parts) < s.total:
            return s, None
        self.forget(*key)
        self._done.append(key)
        whole = b"".join(s.parts[i] for i in range(s.total))
        s.parts = {}  # the caller may keep the set (its tags) a while: not the bytes twice
        if len(whole) != s.size or digest(whole) != s.digest:
            raise PartRejected("a snapshot rebuilt from its parts does not match its digest")
        return s, whole


__all__ = ["MAX_SIZE", "Part", "PartRejected", "PendingSet", "Reassembler", "digest", "is_part", "parse", "split"]
