"""The only module that touches `automerge.core`.

Everything above it sees plain Python values: records are `dict[str, Field]`
where a field is str, int, bool, bytes, None, or a nested `dict[str, Scalar]`
(used for claim maps and tag sets).

Traps in automerge 1.0.0rc1 this module exists to contain:
- `tx.put` with `ScalarType.Counter`/`Unknown` panics and later segfaults: we
  only ever write Str, Int, Boolean, Bytes, F64 and Null.
- A transaction not closed with `with` can use freed memory: every write goes
  through `with self._doc.transaction()`.
- Reading a Counter (or anything exotic) written by a peer may raise pyo3's
  `PanicException`, a `BaseException`: reads turn it into `MALFORMED`.
- Timestamps come back as naive local datetimes: times are integer
  milliseconds, and a Timestamp from a peer reads as `MALFORMED`.
- Bad bytes raise a plain `Exception`: wrapped into `MalformedDocument`.
- There is no apply-changes call: a sync message carrying only changes,
  received with a fresh SyncState, applies them (queueing any whose deps are
  missing), which is what `apply_changes` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, TypeAlias

import automerge.core as am

from circle.errors import MalformedDocument


class _Malformed:
    """Marker for a value of a type this code never writes."""

    _instance: _Malformed | None = None

    def __new__(cls) -> _Malformed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED: Final = _Malformed()

Scalar: TypeAlias = str | int | bool | bytes | float | None
Field: TypeAlias = Scalar | dict[str, Scalar] | _Malformed
Record = dict[str, Field]
SyncState = am.SyncState

_SYNC_MESSAGE_TYPE = 0x42
# The binding exposes patches only through their Debug text. We read one fact
# from it: which record of which collection a patch touches. Anything that
# does not match exactly (root changes, odd ids) means "unknown": the caller
# then re-reads everything, so a parsing miss costs time, never correctness.
_ID = r"Id\(\d+, ActorID\(\"[0-9a-f]+\"\), \d+\)"
_PATCH = re.compile(
    r'^Patch \{ obj: ' + _ID + r', path: \[\(Root, Map\("([a-z]+)"\)\)'
    r'(?:, \(' + _ID + r', Map\("([A-Za-z0-9_-]+)"\)\)|\], action: \w+ \{ key: "([A-Za-z0-9_-]+)")'
)
MAX_PATCHES = 5000


def _fatal(exc: BaseException) -> bool:
    """True for exceptions we must never swallow (Ctrl-C, exit, OOM)."""
    return isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError | GeneratorExit)


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _changes_message(changes: list[bytes]) -> bytes:
    """Encode an Automerge sync message with empty heads/need/have and `changes`."""
    out = bytearray([_SYNC_MESSAGE_TYPE])
    out += _uleb(0) + _uleb(0) + _uleb(0)  # heads, need, have
    out += _uleb(len(changes))
    for change in changes:
        out += _uleb(len(change))
        out += change
    return bytes(out)


_STR, _INT, _BOOL, _BYTES, _F64, _NULL = range(6)
# Dict dispatch on the scalar kind's int value (the pyo3 enum is unhashable):
# comparing enums one by one was the hot spot of reading a 10k-record board.
def _kind_id(kind: object) -> int:
    return int(kind)  # type: ignore[call-overload, no-any-return]


_KINDS = {
    _kind_id(am.ScalarType.Str): _STR, _kind_id(am.ScalarType.Int): _INT, _kind_id(am.ScalarType.Uint): _INT,
    _kind_id(am.ScalarType.Boolean): _BOOL, _kind_id(am.ScalarType.Bytes): _BYTES,
    _kind_id(am.ScalarType.F64): _F64, _kind_id(am.ScalarType.Null): _NULL,
}
_PY_TYPES: dict[int, type | tuple[type, ...]] = {
    _STR: str, _INT: int, _BOOL: bool, _BYTES: (bytes, list), _F64: float, _NULL: type(None),
}
_MAP = am.ObjType.Map


def warm_sync_message(heads: tuple[bytes, ...]) -> bytes:
    """An Automerge (v1) sync message saying "I have exactly `heads`, need nothing".

    Fed into a *fresh* SyncState it records the peer's heads as shared, so the
    next generate_sync_message sends only changes after them (instead of a
    Bloom filter over the whole history). Only for when we know the peer holds
    those heads (its Hello said so and they equal ours).
    """
    hs = sorted(heads)
    encoded = _uleb(len(hs)) + b"".join(hs)
    return bytes([_SYNC_MESSAGE_TYPE]) + encoded + _uleb(0) + _uleb(1) + encoded + _uleb(0) + _uleb(0)


def advertised_heads(data: bytes) -> frozenset[bytes] | None:
    """The heads at the front of an Automerge sync message (None if unreadable)."""
    if len(data) < 2 or data[0] not in (0x42, 0x43):  # v1 and v2 sync messages
        return None
    count, pos, shift = 0, 1, 0
    while pos < len(data) and shift < 35:
        byte = data[pos]
        pos += 1
        count |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        return None
    if count > 4096 or pos + 32 * count > len(data):
        return None
    return frozenset(data[pos + 32 * i : pos + 32 * (i + 1)] for i in range(count))


def _read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def sync_message_change_count(data: bytes) -> int | None:
    """How many changes an Automerge sync message carries (None if unreadable).

    Layout (v1 0x42, v2 0x43): heads, need (hash lists), have (list of
    last-sync hash list + Bloom bytes), then the changes; v2 appends more after.
    Messages without changes can be received directly; those with changes are
    staged and checked first (node/authorship.py)."""
    try:
        if not data or data[0] not in (0x42, 0x43):
            return None
        pos = 1
        for _ in range(2):  # heads, need
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
        haves, pos = _read_uleb(data, pos)
        for _ in range(haves):
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
            n, pos = _read_uleb(data, pos)
            pos += n
        count, pos = _read_uleb(data, pos)
        return count if pos <= len(data) else None
    except ValueError:
        return None


MAX_CHANGE_RAW = 64 << 20


def change_hash(chunk: bytes) -> bytes | None:
    """The Automerge hash of one change chunk as it travels (plain or
    deflated): SHA-256 over type 1, the uncompressed length and body."""
    import hashlib
    import zlib

    if len(chunk) < 10 or chunk[:4] != b"\x85\x6f\x4a\x83":
        return None
    try:
        n, pos = _read_uleb(chunk, 9)
    except ValueError:
        return None
    body = chunk[pos : pos + n]
    if chunk[8] == 1:
        return hashlib.sha256(chunk[8 : pos + n]).digest()
    if chunk[8] != 2:
        return None
    inflater = zlib.decompressobj(-15)
    try:
        raw = inflater.decompress(body, MAX_CHANGE_RAW)
    except zlib.error:
        return None
    if inflater.unconsumed_tail:
        return None  # above the cap: not a change we would accept anyway
    return hashlib.sha256(b"\x01" + _uleb(len(raw)) + raw).digest()


def change_header(chunk: bytes) -> tuple[bytes, bytes, int] | None:
    """(hash, actor, seq) of one change chunk as it travels, read from its
    header without applying it; None if it is not a readable change chunk."""
    import zlib

    h = change_hash(chunk)
    if h is None:
        return None
    try:
        n, pos = _read_uleb(chunk, 9)
        body = chunk[pos : pos + n]
        if chunk[8] == 2:
            inflater = zlib.decompressobj(-15)
            body = inflater.decompress(body, 1 << 16)  # the header is at the front
        p = 0
        deps, p = _read_uleb(body, p)
        p += 32 * deps
        alen, p = _read_uleb(body, p)
        actor = body[p : p + alen]
        p += alen
        seq, p = _read_uleb(body, p)
    except (ValueError, zlib.error):
        return None
    if len(actor) != alen or p > len(body):
        return None
    return h, bytes(actor), seq


def sync_message_change_headers(data: bytes) -> list[tuple[bytes, bytes, int]] | None:
    """(hash, actor, seq) of every change in a sync message (None if unreadable)."""
    try:
        if not data or data[0] not in (0x42, 0x43):
            return None
        pos = 1
        for _ in range(2):
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
        haves, pos = _read_uleb(data, pos)
        for _ in range(haves):
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
            n, pos = _read_uleb(data, pos)
            pos += n
        count, pos = _read_uleb(data, pos)
        out: list[tuple[bytes, bytes, int]] = []
        for _ in range(count):
            n, pos = _read_uleb(data, pos)
            blob, start = data[pos : pos + n], 0
            while start < len(blob):
                if blob[start : start + 4] != b"\x85\x6f\x4a\x83" or start + 9 > len(blob):
                    return None
                m, body = _read_uleb(blob, start + 9)
                info = change_header(blob[start : body + m])
                if info is None:
                    return None
                out.append(info)
                start = body + m
            pos += n
        # Strict: every byte accounted for, so nothing can hide where this
        # reader does not look (anything else goes the slow, staged way).
        return out if pos == len(data) else None
    except ValueError:
        return None


def chunk_hashes(blob: bytes) -> list[bytes] | None:
    """Hashes of the change chunks concatenated in `blob` (a v2 sync message
    packs several into one entry); None if any is not a change chunk."""
    out: list[bytes] = []
    pos = 0
    while pos < len(blob):
        if blob[pos : pos + 4] != b"\x85\x6f\x4a\x83" or pos + 9 > len(blob):
            return None
        try:
            n, body = _read_uleb(blob, pos + 9)
        except ValueError:
            return None
        end = body + n
        if end > len(blob):
            return None
        h = change_hash(blob[pos:end])
        if h is None:
            return None
        out.append(h)
        pos = end
    return out


def sync_message_change_hashes(data: bytes) -> list[bytes] | None:
    """Hashes of the changes an Automerge sync message carries (None if unreadable)."""
    try:
        if not data or data[0] not in (0x42, 0x43):
            return None
        pos = 1
        for _ in range(2):
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
        haves, pos = _read_uleb(data, pos)
        for _ in range(haves):
            n, pos = _read_uleb(data, pos)
            pos += 32 * n
            n, pos = _read_uleb(data, pos)
            pos += n
        count, pos = _read_uleb(data, pos)
        out: list[bytes] = []
        for _ in range(count):
            n, pos = _read_uleb(data, pos)
            hashes = chunk_hashes(data[pos : pos + n])
            if hashes is None:
                return None
            out += hashes
            pos += n
        return out
    except ValueError:
        return None


def _scalar_out(value: tuple[am.ScalarType, object]) -> Scalar | _Malformed:
    """A scalar we write (Counter, Timestamp, Unknown read as MALFORMED)."""
    kind = _KINDS.get(int(value[0]))  # type: ignore[call-overload]
    raw = value[1]
    if kind is None or not isinstance(raw, _PY_TYPES[kind]):
        return MALFORMED
    if kind == _BYTES and isinstance(raw, list):
        # The binding returns bytes as a list of ints.
        try:
            return bytes(raw)
        except (TypeError, ValueError):
            return MALFORMED
    if kind == _INT and isinstance(raw, bool):
        return MALFORMED
    return raw  # type: ignore[return-value]


def _scalar_in(value: Scalar) -> tuple[am.ScalarType, Scalar]:
    # bool before int: bool is a subclass of int.
    if value is None:
        return am.ScalarType.Null, None
    if isinstance(value, bool):
        return am.ScalarType.Boolean, value
    if isinstance(value, int):
        return am.ScalarType.Int, value
    if isinstance(value, str):
        return am.ScalarType.Str, value
    if isinstance(value, bytes):
        return am.ScalarType.Bytes, value
    if isinstance(value, float):
        return am.ScalarType.F64, value
    raise TypeError(f"unsupported value type {type(value).__name__}")


class Editor:
    """Write operations inside one open transaction. Only valid inside `AmDoc.edit()`."""

    def __init__(self, tx: am.Transaction) -> None:
        self._tx = tx

    def _collection(self, name: str) -> bytes:
        got = self._tx.get(am.ROOT, name)
        if got is None or got[0] != am.ObjType.Map:
            raise MalformedDocument(f"the document has no '{name}' collection")
        return got[1]

    def _record(self, collection: str, record_id: str) -> bytes:
        got = self._tx.get(self._collection(collection), record_id)
        if got is None or got[0] != am.ObjType.Map:
            raise MalformedDocument(f"record {record_id} in {collection} is missing")
        return got[1]

    def create_collections(self, names: list[str]) -> None:
        for name in names:
            if self._tx.get(am.ROOT, name) is None:
                self._tx.put_object(am.ROOT, name, am.ObjType.Map)

    def put_record(self, collection: str, record_id: str, fields: Mapping[str, Field]) -> None:
        """Create a record (a new map object) with scalar and nested-map fields."""
        obj = self._tx.put_object(self._collection(collection), record_id, am.ObjType.Map)
        self._write_fields(obj, fields)

    def update(self, collection: str, record_id: str, fields: Mapping[str, Field]) -> None:
        """Set scalar fields of an existing record (last writer wins per field)."""
        self._write_fields(self._record(collection, record_id), fields)

    def _write_fields(self, obj: bytes, fields: Mapping[str, Field]) -> None:
        for key, value in fields.items():
            if isinstance(value, dict):
                inner = self._tx.put_object(obj, key, am.ObjType.Map)
                for k, v in value.items():
                    kind, raw = _scalar_in(v)
                    self._tx.put(inner, k, kind, raw)
            elif isinstance(value, _Malformed):
                raise TypeError("cannot write a malformed value")
            else:
                kind, raw = _scalar_in(value)
                self._tx.put(obj, key, kind, raw)

    def map_put(self, collection: str, record_id: str, field: str, key: str, value: Scalar) -> None:
        """Put one key of a nested map (claims, tags): merges with concurrent puts."""
        record = self._record(collection, record_id)
        got = self._tx.get(record, field)
        if got is None or got[0] != am.ObjType.Map:
            inner = self._tx.put_object(record, field, am.ObjType.Map)
        else:
            inner = got[1]
        kind, raw = _scalar_in(value)
        self._tx.put(inner, key, kind, raw)

    def map_delete(self, collection: str, record_id: str, field: str, key: str) -> None:
        record = self._record(collection, record_id)
        got = self._tx.get(record, field)
        if got is not None and got[0] == am.ObjType.Map and self._tx.get(got[1], key) is not None:
            self._tx.delete(got[1], key)

    def put_root_scalar(self, collection: str, key: str, value: Scalar) -> None:
        kind, raw = _scalar_in(value)
        self._tx.put(self._collection(collection), key, kind, raw)


@dataclass(frozen=True)
class ChangeMeta:
    """One change as the trust layer checks it: its hash, writer and place."""

    hash: bytes
    actor: bytes
    seq: int
    max_op: int


def op_writer(exid: bytes) -> tuple[bytes, int] | None:
    """(actor, op counter) of an Automerge object or value id, as the binding
    returns them: 0x10, uleb actor length, actor, uleb actor index, uleb counter.
    None for the root or anything else. The actor is who *wrote* that value;
    the trust layer binds actors to devices by signed statements."""
    if len(exid) < 4 or exid[0] != 0x10:
        return None
    n = exid[1]
    if n & 0x80 or len(exid) < 2 + n + 2:
        return None
    actor = exid[2 : 2 + n]
    pos = 2 + n
    for _ in range(2):  # actor index, then counter
        value, shift = 0, 0
        while True:
            if pos >= len(exid) or shift > 63:
                return None
            byte = exid[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return bytes(actor), value


class AmDoc:
    """One Automerge document, with a safe, typed surface."""

    def __init__(self, doc: am.Document) -> None:
        self._doc = doc

    # --- lifecycle ------------------------------------------------------

    @classmethod
    def new(cls, actor: bytes | None = None) -> AmDoc:
        doc = am.Document()
        if actor is not None:
            doc.set_actor(actor)
        return cls(doc)

    @classmethod
    def load(cls, data: bytes) -> AmDoc:
        """Load a saved document, optionally followed by change chunks."""
        try:
            return cls(am.Document.load(data))
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if _fatal(exc):
                raise
            raise MalformedDocument(f"not a valid circle document ({exc})") from None

    def save(self) -> bytes:
        return bytes(self._doc.save())

    def fork(self) -> AmDoc:
        return AmDoc(self._doc.fork())

    def heads(self) -> list[bytes]:
        return [bytes(h) for h in self._doc.get_heads()]

    def is_empty(self) -> bool:
        return not self._doc.get_heads()

    # --- changes --------------------------------------------------------

    def changes_since(self, heads: list[bytes]) -> list[bytes]:
        """Raw bytes of every change not covered by `heads`, in causal order."""
        try:
            return [bytes(c.bytes) for c in self._doc.get_changes(heads)]
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"unknown heads ({exc})") from None

    def apply_changes(self, changes: list[bytes]) -> None:
        """Apply change chunks (idempotent; out-of-order ones wait for deps)."""
        if not changes:
            return
        self._receive(am.SyncState(), _changes_message(changes))

    def merge(self, other: AmDoc) -> None:
        try:
            self._doc.merge(other._doc)
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"cannot merge document ({exc})") from None

    def merge_saved(self, data: bytes) -> None:
        """Merge a whole saved document (a snapshot from a peer or file).

        An empty document adopts the loaded one instead of merging into it:
        load-then-merge costs twice the time of the load alone."""
        other = AmDoc.load(data)
        if self.is_empty():
            actor = self._doc.get_actor()
            self._doc = other._doc
            self._doc.set_actor(actor)
        else:
            self.merge(other)

    def changed_records(self, before: list[bytes], after: list[bytes]) -> dict[str, set[str]] | None:
        """Which records each collection changed between two sets of heads;
        None when that cannot be told cheaply (then re-read everything)."""
        try:
            patches = self._doc.diff(before, after)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return None
        if len(patches) > MAX_PATCHES:
            return None
        changed: dict[str, set[str]] = {}
        for patch in patches:
            m = _PATCH.match(repr(patch))
            if m is None:
                return None
            changed.setdefault(m.group(1), set()).add(m.group(2) or m.group(3))
        return changed

    # --- sync protocol --------------------------------------------------

    @staticmethod
    def new_sync_state() -> am.SyncState:
        return am.SyncState()

    def generate_sync_message(self, state: am.SyncState) -> bytes | None:
        msg = self._doc.generate_sync_message(state)
        if msg is None:
            return None
        return bytes(msg.encode())

    def receive_sync_message(self, state: am.SyncState, data: bytes) -> None:
        self._receive(state, data)

    def _receive(self, state: am.SyncState, data: bytes) -> None:
        try:
            message = am.Message.decode(data)
            self._doc.receive_sync_message(state, message)
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"invalid sync data ({exc})") from None

    # --- writes ---------------------------------------------------------

    @contextmanager
    def edit(self) -> Iterator[Editor]:
        """One transaction: all writes inside commit as one change."""
        with self._doc.transaction() as tx:
            yield Editor(tx)

    # --- reads ----------------------------------------------------------

    def _get(self, obj: bytes, key: str) -> tuple[object, bytes] | None:
        try:
            got = self._doc.get(obj, key)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return None
        return got

    def _map_of(self, obj: bytes, key: str) -> bytes | None:
        got = self._get(obj, key)
        if got is None or got[0] != am.ObjType.Map:
            return None
        return got[1]

    def has_collection(self, name: str) -> bool:
        return self._map_of(am.ROOT, name) is not None

    def root_scalars(self, collection: str) -> dict[str, Scalar | _Malformed]:
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return {}
        out: dict[str, Scalar | _Malformed] = {}
        for key, value in self._pairs(obj):
            out[key] = MALFORMED if isinstance(value[0], am.ObjType) else _scalar_out(value[0])  # type: ignore[arg-type]
        return out

    def _pairs(self, obj: bytes, maybe_empty: bool = False) -> list[tuple[str, tuple[object, bytes]]]:
        try:
            values = self._doc.values(obj)
            if maybe_empty and not values:
                return []  # skip the keys() call: each call into automerge costs ~5 us
            keys = self._doc.keys(obj)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return []
        if len(keys) != len(values):
            return []
        return [(k, (v[0], v[1])) for k, v in zip(keys, values, strict=True)]

    def _record_at(self, obj: bytes) -> Record:
        record: Record = {}
        for key, (value, obj_id) in self._pairs(obj):
            if type(value) is tuple:
                record[key] = _scalar_out(value)
            elif value == _MAP:
                inner: dict[str, Scalar] = {}
                for k, (v, _) in self._pairs(obj_id, maybe_empty=True):
                    out = _scalar_out(v) if type(v) is tuple else MALFORMED
                    if not isinstance(out, _Malformed):
                        inner[k] = out
                record[key] = inner
            else:
                record[key] = MALFORMED
        return record

    def record_ids(self, collection: str) -> list[str]:
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return []
        try:
            return list(self._doc.keys(obj))
        except BaseException as exc:
            if _fatal(exc):
                raise
            return []

    def record(self, collection: str, record_id: str) -> Record | None:
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return None
        rec = self._map_of(obj, record_id)
        if rec is None:
            return None
        return self._record_at(rec)

    def record_writer(self, collection: str, record_id: str) -> tuple[bytes, int] | None:
        """Who created a record: the (actor, op counter) of the op that put its map."""
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return None
        got = self._get(obj, record_id)
        if got is None or got[0] != am.ObjType.Map:
            return None
        return op_writer(bytes(got[1]))

    def object_ids(self, collection: str) -> tuple[tuple[bytes, int] | None, dict[str, tuple[bytes, int]]]:
        """(the collection map's id, {record: its map's id}) as (actor, counter):
        what a change's ops name as their target object."""
        got = self._get(am.ROOT, collection)
        if got is None or got[0] != am.ObjType.Map:
            return None, {}
        out: dict[str, tuple[bytes, int]] = {}
        for key, (_value, exid) in self._pairs(got[1]):
            who = op_writer(bytes(exid))
            if who is not None:
                out[key] = who
        return op_writer(bytes(got[1])), out

    def field_writers(self, collection: str, record_id: str) -> dict[str, tuple[bytes, int]]:
        """Who wrote the current value of each field of a record."""
        obj = self._map_of(am.ROOT, collection)
        rec = None if obj is None else self._map_of(obj, record_id)
        if rec is None:
            return {}
        out: dict[str, tuple[bytes, int]] = {}
        for key, (_value, exid) in self._pairs(rec):
            who = op_writer(bytes(exid))
            if who is not None:
                out[key] = who
        return out

    def entry_writers(self, collection: str, record_id: str, field: str) -> dict[str, tuple[bytes, int]]:
        """Who wrote each key of a map inside a record (RSVPs, shift takes)."""
        obj = self._map_of(am.ROOT, collection)
        rec = None if obj is None else self._map_of(obj, record_id)
        inner = None if rec is None else self._map_of(rec, field)
        if inner is None:
            return {}
        out: dict[str, tuple[bytes, int]] = {}
        for key, (_value, exid) in self._pairs(inner):
            who = op_writer(bytes(exid))
            if who is not None:
                out[key] = who
        return out

    def actor(self) -> bytes:
        return bytes(self._doc.get_actor())

    def set_actor(self, actor: bytes) -> None:
        self._doc.set_actor(actor)

    def change_metas(self, heads: list[bytes]) -> list[ChangeMeta]:
        """Every change not covered by `heads`, with who wrote it (causal order)."""
        try:
            return [ChangeMeta(bytes(c.hash), bytes(c.actor_id), int(c.seq), int(c.max_op))
                    for c in self._doc.get_changes(heads)]
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"unknown heads ({exc})") from None

    def adopt(self, other: AmDoc) -> None:
        """Become `other` (a fork this document was staged into), keeping our actor."""
        actor = self._doc.get_actor()
        self._doc = other._doc
        self._doc.set_actor(actor)

    def records(self, collection: str) -> dict[str, Record | _Malformed]:
        """Every record of a collection; a non-map entry reads as MALFORMED."""
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return {}
        out: dict[str, Record | _Malformed] = {}
        for key, (value, obj_id) in self._pairs(obj):
            out[key] = self._record_at(obj_id) if value == am.ObjType.Map else MALFORMED
        return out
