"""The only module that touches `automerge.core`.

Everything above it sees plain Python values: records are `dict[str, Field]`
where a field is str, int, bool, bytes, None, or a nested `dict[str, Scalar]`
(used for claim maps and tag sets).

Traps in automerge 1.0.0rc1 this module exists to contain:
- `tx.put` with `ScalarType.Counter`/`Unknown` panics and later segfaults: we
  only ever write Str, Int, Boolean, Bytes, F64 and Null.
- A transaction not closed with `with` can use freed memory: every write goes
  through `with self._doc.transaction()`.
- Reading a Counter, an Unknown value, an out-of-range Timestamp or a Table
  written by a peer panics inside the binding (pyo3's `PanicException`, a
  `BaseException`, after the Rust panic hook printed a trace on fd 2), and one
  such value makes `values()` of its whole map panic. Reads never call into
  that path: `amscan` checks the document's bytes first, and only a document
  that holds such values pays for a patch diff that names each bad key, which
  then reads as `MALFORMED` while the rest of its map stays readable.
- Strings written by current JavaScript Automerge are Text objects, not
  scalar strings: reads turn them into `str` with `Document.text`.
- Timestamps come back as naive local datetimes: times are integer
  milliseconds, and a Timestamp from a peer reads as `MALFORMED`.
- Bad bytes raise a plain `Exception`: wrapped into `MalformedDocument`.
- There is no apply-changes call: a sync message carrying only changes,
  received with a fresh SyncState, applies them (queueing any whose deps are
  missing), which is what `apply_changes` does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, TypeAlias

import automerge.core as am

from circle.crdt import amscan, change_ops
from circle.crdt.amscan import has_exotic_values
from circle.errors import DocumentFull, MalformedDocument


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
Field: TypeAlias = Scalar | dict[str, Scalar] | _Malformed  # what circle writes
# What a read returns: a nested map keeps its unreadable entries as MALFORMED
# so views can report them (and keep the good ones).
ReadField: TypeAlias = Scalar | dict[str, Scalar | _Malformed] | _Malformed
Record = dict[str, ReadField]
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
_TEXT = am.ObjType.Text
# Longest text a field may hold: a hostile peer's 60 MB string must not be
# copied into every view (circle itself writes at most a few KB per field).
MAX_READ_TEXT = 64 * 1024

# Patches (Debug text) that put a value the binding cannot convert, or
# overwrite/delete a key we had marked as such. Strings in the Debug text
# escape `"` and `\`, so `_DSTR` cannot run past the end of a string.
_DSTR = r'"(?:[^"\\]|\\.)*"'
_DID = r'Id\((\d+), ActorID\("([0-9a-f]*)"\), \d+\)'
_DPATH = (r'\[(?:\((?:Root|Id\(\d+, ActorID\("[0-9a-f]*"\), \d+\)), (?:Map\(' + _DSTR
          + r'\)|Seq\(\d+\))\)(?:, )?)*\]')
_KEY_PATCH = re.compile(
    r'^Patch \{ obj: (?:Root|' + _DID + r'), path: ' + _DPATH
    + r', action: (PutMap|DeleteMap|Increment) \{ (?:key: |prop: Map\()(' + _DSTR + r')'
    + r'(?:\)?, value: \((Scalar\((?:Counter|Timestamp|Unknown)\b|Object\(Table\))?)?'
)
# The op id of the value a PutMap puts: the fixed tail of its Debug text.
_VALUE_ID = re.compile(_DID + r'\), conflict: (?:true|false) \} \}$')
_EXOTIC_MARKERS = ("Counter(", "Timestamp(", "Unknown {", "Object(Table)", "action: Increment")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
_ObjKey: TypeAlias = tuple[int, bytes] | None  # (op counter, actor) of a map; None = root


def _debug_str(quoted: str) -> str | None:
    """Undo Rust's Debug escaping of a string (None if it has an escape we do not know)."""
    out: list[str] = []
    i, body = 0, quoted[1:-1]
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and body[i + 2 : i + 3] == "{":
            end = body.find("}", i)
            try:
                out.append(chr(int(body[i + 3 : end], 16)))
            except ValueError:
                return None
            i = end + 1
        else:
            return None
    return "".join(out)


def _exid(actor_hex: str, counter: str) -> bytes:
    """An op id in the binding's byte form (as `op_writer` reads it; actor index 0)."""
    actor = bytes.fromhex(actor_hex)
    return bytes([0x10]) + _uleb(len(actor)) + actor + _uleb(0) + _uleb(int(counter))


def _obj_key(obj: bytes) -> _ObjKey:
    if obj == am.ROOT:
        return None
    who = op_writer(obj)
    return None if who is None else (who[1], who[0])


@contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence fd 2 (the Rust panic hook's output) for a retry we know may
    panic. Only used after the byte scan missed something: never on a clean
    document, so no other thread's stderr is lost in normal running."""
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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


def _sync_changes_at(data: bytes) -> tuple[int, int]:
    """(number of change entries, offset of the first) in an Automerge sync
    message: after heads, need (hash lists) and have (last-sync hashes +
    Bloom bytes). Raises ValueError if it is not one."""
    if not data or data[0] not in (0x42, 0x43):
        raise ValueError("not a sync message")
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
    return _read_uleb(data, pos)


def sync_message_change_count(data: bytes) -> int | None:
    """How many changes an Automerge sync message carries (None if unreadable).

    Layout (v1 0x42, v2 0x43): heads, need (hash lists), have (list of
    last-sync hash list + Bloom bytes), then the changes; v2 appends more after.
    Messages without changes can be received directly; those with changes are
    staged and checked first (node/authorship.py)."""
    try:
        count, pos = _sync_changes_at(data)
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
    from circle.crdt import amscan

    try:
        amscan.check_inflation(chunk)
    except amscan.Oversized:
        return None  # above the cap: not a change we would accept anyway
    inflater = zlib.decompressobj(-15)
    try:
        raw = inflater.decompress(body, MAX_CHANGE_RAW)
    except zlib.error:
        return None
    if inflater.unconsumed_tail:
        return None
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
        count, pos = _sync_changes_at(data)
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
        count, pos = _sync_changes_at(data)
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
    if kind == _STR and len(raw) > MAX_READ_TEXT:  # type: ignore[arg-type]
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

    def __init__(self, tx: am.Transaction, doc: AmDoc | None = None) -> None:
        self._tx = tx
        self._doc = doc

    def _get(self, obj: bytes, key: str) -> tuple[object, bytes] | None:
        """`tx.get`, except for a key holding a value the binding cannot
        convert: that reads as MALFORMED (so the write replaces it) instead
        of a PanicException out of the middle of a transaction."""
        doc = self._doc
        if doc is not None and doc._guard_state.exotic:
            bad = doc._bad_keys(obj)
            if bad is not None and (key in bad or _ANY_KEY in bad):
                return (MALFORMED, b"")
        try:
            got = self._tx.get(obj, key)
            mask = doc._mask if doc is not None else None
            if got is not None and mask is not None:
                keys = mask.keys_of(obj)
                if keys and (key in keys or None in keys) and mask.late(bytes(got[1])):
                    # A removed device's late value (say, a fresh map put over a
                    # collection): write where members read, as it was without it.
                    got = self._tx.get(obj, key, list(mask.clean))
            return got
        except BaseException as exc:
            if _fatal(exc):
                raise
            return (MALFORMED, b"")

    def _collection(self, name: str) -> bytes:
        got = self._get(am.ROOT, name)
        if got is None or got[0] != am.ObjType.Map:
            raise MalformedDocument(f"the document has no '{name}' collection")
        return got[1]

    def _record(self, collection: str, record_id: str) -> bytes:
        got = self._get(self._collection(collection), record_id)
        if got is None or got[0] != am.ObjType.Map:
            raise MalformedDocument(f"record {record_id} in {collection} is missing")
        return got[1]

    def create_collections(self, names: list[str]) -> None:
        for name in names:
            if self._get(am.ROOT, name) is None:
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
        got = self._get(record, field)
        if got is None or got[0] != am.ObjType.Map:
            inner = self._tx.put_object(record, field, am.ObjType.Map)
        else:
            inner = got[1]
        kind, raw = _scalar_in(value)
        self._tx.put(inner, key, kind, raw)

    def map_delete(self, collection: str, record_id: str, field: str, key: str) -> None:
        record = self._record(collection, record_id)
        got = self._get(record, field)
        if got is not None and got[0] == am.ObjType.Map and self._get(got[1], key) is not None:
            self._tx.delete(got[1], key)

    def put_root_scalar(self, collection: str, key: str, value: Scalar) -> None:
        kind, raw = _scalar_in(value)
        self._tx.put(self._collection(collection), key, kind, raw)


def _check_inflation(data: bytes, sync: bool, cap: int = amscan.MAX_INFLATE) -> int:
    """Refuse data that would make Automerge inflate past the cap (a zlib bomb
    in a change chunk or a document column), before Automerge allocates it;
    return what it inflates to."""
    try:
        if sync:
            return amscan.check_sync_message(data, cap)
        return amscan.check_inflation(data, cap)
    except amscan.Oversized as exc:
        raise MalformedDocument(f"refused: {exc}") from None


# Local edits stop here: a margin below what every path carries
# (amscan.MAX_DOCUMENT), so one more edit, or an import, never makes a
# document that a bundle, a relay or a new member's snapshot refuses.
EDIT_LIMIT = amscan.MAX_DOCUMENT - (32 << 20)
# Our own store's files are ours (tagged under this home's key): no cap that
# could lock a member out of a document it already holds.
OWN_DATA = 1 << 40


def size_words(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


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


class _CausalIndex:
    """Which change holds which op: per actor, (start op, max op, hash) in order."""

    __slots__ = ("heads", "after", "by_actor")

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.after: dict[bytes, set[bytes]] = {}  # change hash -> hashes not in its causal past
        self.by_actor: dict[bytes, list[tuple[int, int, bytes]]] = {}

    def add(self, changes: list[am.Change]) -> None:
        touched = set()
        for c in changes:
            actor = bytes(c.actor_id)
            self.by_actor.setdefault(actor, []).append((int(c.start_op), int(c.max_op), bytes(c.hash)))
            touched.add(actor)
        for actor in touched:
            self.by_actor[actor].sort()

    def change_of(self, op: tuple[bytes, int]) -> bytes | None:
        import bisect

        spans = self.by_actor.get(op[0])
        if not spans:
            return None
        i = bisect.bisect_right(spans, (op[1], 1 << 62, b"\xff" * 32)) - 1
        if i >= 0 and spans[i][0] <= op[1] <= spans[i][1]:
            return spans[i][2]
        return None


#: Per removed device (its 16-byte actor prefix): per actor of it, the last op
#: its remover had seen (membership rule 6). Ops past that are *late*.
LatePins: TypeAlias = Mapping[bytes, Mapping[bytes, int]]


def _is_late(pins: LatePins, actor: bytes, op: int) -> bool:
    device = pins.get(actor[:16])
    return device is not None and op > device.get(actor, 0)


class _LateMask:
    """What reads hide: values removed devices wrote past their removal's pin.

    `clean` are the heads of the history without the late changes and
    without everything that depends on one (the largest causally closed set
    of changes that holds no late op): a field whose winning value is late
    reads as it was there. `touched` names the (object, key) pairs late ops
    wrote, so only those keys are looked at. Kept per (heads, pins) and
    extended by the changes that arrive, never rebuilt while pins stay."""

    __slots__ = ("key", "pins", "heads", "clean", "tainted", "touched", "deleted", "every", "exempt", "_by_id", "notes")

    def __init__(self, key: tuple[object, ...], pins: LatePins) -> None:
        self.key = key
        self.pins = pins
        self.heads: list[bytes] = []
        self.clean: set[bytes] = set()
        self.tainted: set[bytes] = set()  # hashes of late changes and their descendants
        self.touched: dict[tuple[bytes, int] | None, set[str | None]] = {}
        self.deleted: set[tuple[tuple[bytes, int] | None, str]] = set()  # (object, key) a late op deleted
        self.every = False  # a late change could not be decoded: check every key
        self.exempt: set[tuple[bytes, int] | None] = set()
        self._by_id: dict[bytes, set[str | None] | None] = {}  # object id bytes -> keys_of
        self.notes: dict[str, list[tuple[str, str, bytes]]] = {}  # late_writes, per collection

    def add(self, changes: list[am.Change]) -> None:
        pins = self.pins
        for c in changes:
            h, deps = bytes(c.hash), [bytes(d) for d in c.deps]
            actor = bytes(c.actor_id)
            if _is_late(pins, actor, int(c.max_op)):
                self.tainted.add(h)
                self._by_id.clear()
                self.notes.clear()
                try:
                    for op in change_ops.ops(bytes(c.bytes)):
                        if _is_late(pins, actor, op.id[1]) and op.obj not in self.exempt:
                            self.touched.setdefault(op.obj, set()).add(op.key)
                            if op.deletes and op.key is not None:
                                self.deleted.add((op.obj, op.key))
                except ValueError:
                    self.every = True
            elif any(d in self.tainted for d in deps):
                self.tainted.add(h)
            else:
                self.clean.difference_update(deps)
                self.clean.add(h)

    def keys_of(self, obj: bytes) -> set[str | None] | None:
        """The keys of `obj` a late op wrote ({None} = any key may be late)."""
        if self.every:
            return {None}
        try:
            return self._by_id[obj]  # one dict look-up per record read, not an id parse
        except KeyError:
            got = self._by_id[obj] = self.touched.get(None if obj == am.ROOT else op_writer(obj))
            return got

    def late(self, exid: bytes) -> bool:
        who = op_writer(exid)
        return who is not None and _is_late(self.pins, who[0], who[1])


_ANY_KEY: Final = "\x00any"  # a poisoned map whose bad key could not be named: every key is bad


class _Guard:
    """What the reads know about values the binding cannot convert."""

    __slots__ = ("seen", "loaded", "loaded_heads", "exotic", "careful", "poison", "poison_heads")

    def __init__(self) -> None:
        self.seen: list[bytes] | None = None  # heads the byte scan has covered
        self.loaded: bytes | None = None  # what `load` was given, until the first scan
        self.loaded_heads: list[bytes] = []
        self.exotic = False  # some change holds such a value (then `poison` is kept)
        self.careful = False  # the diff could not place one: read every key alone, fd 2 quiet
        self.poison: dict[_ObjKey, dict[str, bytes]] = {}  # map -> bad key -> op id of its value
        self.poison_heads: list[bytes] = []

    def copy(self) -> _Guard:
        out = _Guard()
        out.seen, out.loaded, out.loaded_heads = self.seen, self.loaded, self.loaded_heads
        out.exotic, out.careful, out.poison_heads = self.exotic, self.careful, self.poison_heads
        out.poison = {obj: dict(keys) for obj, keys in self.poison.items()}
        return out


class AmDoc:
    """One Automerge document, with a safe, typed surface."""

    def __init__(self, doc: am.Document) -> None:
        # What the document inflates to, as an upper estimate: measured at
        # load, grown by every change that arrives or is made (exact again at
        # the next load). Local edits are refused past EDIT_LIMIT.
        self.inflated = 0
        self._doc = doc
        self._guard_state = _Guard()
        self._causal: _CausalIndex | None = None
        #: Removed devices' pins (membership rule 6), asked when the heads
        #: change; set by the trust layer. Values written past a pin are read
        #: as they were without the late changes (`_LateMask`).
        self.late_pins: Callable[[], LatePins] | None = None
        self._mask: _LateMask | None = None
        self._mask_seen: list[bytes] | None = None
        self._mask_busy = False

    # --- lifecycle ------------------------------------------------------

    @classmethod
    def new(cls, actor: bytes | None = None) -> AmDoc:
        doc = am.Document()
        if actor is not None:
            doc.set_actor(actor)
        return cls(doc)

    @classmethod
    def load(cls, data: bytes, cap: int = amscan.MAX_DOCUMENT) -> AmDoc:
        """Load a saved document, optionally followed by change chunks.
        `cap`: the most it may inflate to (bytes from elsewhere); our own
        store passes OWN_DATA."""
        inflated = _check_inflation(data, sync=False, cap=cap)  # before Automerge inflates it
        try:
            doc = cls(am.Document.load(data))
            doc.inflated = inflated
            doc._guard_state.loaded = data  # scanned on first read instead of a save()
            doc._guard_state.loaded_heads = doc._doc.get_heads()
            return doc
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if _fatal(exc):
                raise
            raise MalformedDocument(f"not a valid circle document ({exc})") from None

    def save(self) -> bytes:
        return bytes(self._doc.save())

    def fork(self) -> AmDoc:
        forked = AmDoc(self._doc.fork())
        forked.inflated = self.inflated
        forked._guard_state = self._guard_state.copy()  # same heads: what we know holds there too
        return forked

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

    def apply_changes(self, changes: list[bytes], cap: int = amscan.MAX_INFLATE) -> None:
        """Apply change chunks (idempotent; out-of-order ones wait for deps).
        `cap` as in `load`: our own store's log passes OWN_DATA."""
        if not changes:
            return
        self._receive(am.SyncState(), _changes_message(changes), cap)

    def merge(self, other: AmDoc) -> None:
        # Most of a merged document is usually shared history: the larger of
        # the two (the next load measures it exactly).
        self.inflated = max(self.inflated, other.inflated)
        try:
            self._doc.merge(other._doc)
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"cannot merge document ({exc})") from None

    def merge_saved(self, data: bytes, cap: int = amscan.MAX_DOCUMENT) -> None:
        """Merge a whole saved document (a snapshot from a peer or file;
        `cap` as in `load`).

        An empty document adopts the loaded one instead of merging into it:
        load-then-merge costs twice the time of the load alone."""
        other = AmDoc.load(data, cap)
        if self.is_empty():
            actor = self._doc.get_actor()
            self._doc = other._doc
            self._doc.set_actor(actor)
            self.inflated = other.inflated
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

    def _receive(self, state: am.SyncState, data: bytes, cap: int = amscan.MAX_INFLATE) -> None:
        self.inflated += _check_inflation(data, sync=True, cap=cap)
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
        self._guard()  # learn odd keys before the transaction: the binding cannot diff inside one
        self.make_room(0)
        g = self._guard_state
        before = g.seen
        heads = self._doc.get_heads()
        with self._doc.transaction() as tx:
            yield Editor(tx, self)
        for change in self._doc.get_changes(heads):
            self.inflated += _check_inflation(bytes(change.bytes), sync=False, cap=OWN_DATA)
        if not g.exotic and g.seen is before:
            # Our own change holds only types we write: no need to scan it.
            g.seen = self._doc.get_heads()

    @contextmanager
    def edit_at(self, heads: list[bytes], actor: bytes) -> Iterator[Editor]:
        """One transaction written on top of `heads` (not our current heads) by
        `actor`, then merged in: its change depends on `heads` only, so a peer
        holding those can apply it before anything newer arrives. `actor` must
        be one that never wrote here (Automerge refuses a second change with
        the same actor and seq)."""
        try:
            forked = AmDoc(self._doc.fork(heads))
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"unknown heads ({exc})") from None
        forked._doc.set_actor(actor)
        with forked._doc.transaction() as tx:
            yield Editor(tx, forked)
        self.apply_changes(forked.changes_since(heads))

    def changes_on(self, base: list[bytes], since: list[bytes]) -> list[bytes]:
        """Raw bytes of the changes after `since` whose dependencies are exactly `base`."""
        want = sorted(base)
        try:
            return [bytes(c.bytes) for c in self._doc.get_changes(since)
                    if sorted(bytes(d) for d in c.deps) == want]
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"unknown heads ({exc})") from None

    def make_room(self, extra: int) -> None:
        """Refuse (DocumentFull) an edit that would take the document past EDIT_LIMIT."""
        if self.inflated + extra > EDIT_LIMIT:
            grow = f" (and this would add about {size_words(extra)})" if extra >= 1 << 20 else ""
            raise DocumentFull(
                f"this circle's document is about {size_words(self.inflated)}{grow}, near the "
                f"{size_words(amscan.MAX_DOCUMENT)} that circle can carry to every member; "
                "nothing was changed (start a new circle for new records)")

    # --- reads ----------------------------------------------------------
    #
    # Every public read starts with `_guard()`. On a document whose bytes hold
    # no value the binding cannot convert (all of circle's own), that costs one
    # get_heads() call per read and a byte scan of new changes; reads then go
    # straight to `values()`. Otherwise the keys holding such values are known
    # (`_Guard.poison`) and are never handed to the binding.

    def _guard(self) -> None:
        g = self._guard_state
        heads = self._doc.get_heads()
        if self.late_pins is not None and heads != self._mask_seen:
            self._update_mask(heads)
        if heads == g.seen:
            return
        if not g.exotic:
            g.exotic = has_exotic_values(self._unscanned(g))
        if g.exotic:
            self._update_poison(g, heads)
        g.seen, g.loaded = heads, None

    def _update_mask(self, heads: list[bytes]) -> None:
        """Bring the late-value mask to `heads`: one pass over the changes
        that arrived since; none at all while nobody removed has written."""
        if self._mask_busy or self.late_pins is None:
            return  # the pins are being derived (statements are never masked)
        self._mask_busy = True
        try:
            pins = self.late_pins()
        finally:
            self._mask_busy = False
        self._mask_seen = heads
        if not pins:
            self._mask = None
            return
        key = tuple(sorted((d, tuple(sorted(a.items()))) for d, a in pins.items()))
        m = self._mask
        try:
            if m is None or m.key != key:
                m = _LateMask(key, {d: dict(a) for d, a in pins.items()})
                stm = self._doc.get(am.ROOT, "statements")
                if stm is not None:
                    m.exempt.add(op_writer(bytes(stm[1])))  # membership reads them raw
                m.add(self._doc.get_changes([]))
            else:
                m.add(self._doc.get_changes(m.heads))
        except BaseException as exc:
            if _fatal(exc):
                raise
            m = _LateMask(key, {d: dict(a) for d, a in pins.items()})
            m.add(self._doc.get_changes([]))
        m.heads = heads
        self._mask = m

    def late_key(self) -> tuple[object, ...] | None:
        """What the mask hides depends on (for caches of parsed values)."""
        self._guard()
        return None if self._mask is None else self._mask.key

    def late_objects(self) -> dict[tuple[bytes, int] | None, set[str | None]]:
        """(object, key) pairs that removed devices wrote past their pins."""
        self._guard()
        return {} if self._mask is None else self._mask.touched

    def late_writes(self, collection: str) -> list[tuple[str, str, bytes]]:
        """What removed devices wrote past their pins into a root map, and
        reads do not show: (key, "", actor) for a record (or a `meta`
        setting) they put, (record, field, actor) for a field of a record,
        (record, "field.key", actor) for an entry of a map field (a claim,
        an RSVP). For reports; kept until more late changes arrive."""
        self._guard()
        m = self._mask
        if m is None:
            return []
        if collection in m.notes:
            return m.notes[collection]
        out: list[tuple[str, str, bytes]] = []
        coll = self._map_of(am.ROOT, collection, raw=True)

        def late_keys(obj: bytes) -> list[tuple[str, bytes]]:
            keys = m.keys_of(obj) or set()
            found = []
            pairs = self._raw_pairs(obj) if None in keys else [(k, self._raw_get(obj, k)) for k in sorted(
                k for k in keys if k is not None)]
            for k, got in pairs:
                who = None if got is None else op_writer(bytes(got[1]))
                if who is not None and _is_late(m.pins, who[0], who[1]):
                    found.append((k, who[0]))
            return found

        if coll is not None:
            out += [(k, "", actor) for k, actor in late_keys(coll)]
            for rid, (value, rec) in self._raw_pairs(coll):
                if value != am.ObjType.Map:
                    continue
                out += [(rid, f, actor) for f, actor in late_keys(rec) if (rid, "", actor) not in out]
                for f, (v, inner) in self._raw_pairs(rec, maybe_empty=True):
                    if v == am.ObjType.Map and m.keys_of(inner):
                        out += [(rid, f"{f}.{k}", actor) for k, actor in late_keys(inner)]
        m.notes[collection] = out
        return out

    def _at_clean(self, obj: bytes, key: str) -> tuple[object, bytes] | None:
        m = self._mask
        assert m is not None
        try:
            with _quiet_fd2():
                got = self._doc.get(obj, key, list(m.clean))
        except BaseException as exc:
            if _fatal(exc):
                raise
            return None
        return None if got is None else (got[0], bytes(got[1]))

    def _unlate(self, obj: bytes, pairs: list[tuple[str, tuple[object, bytes]]]
                ) -> list[tuple[str, tuple[object, bytes]]]:
        """`pairs` of `obj` with each late winning value replaced by the
        value at the clean heads (or dropped if there was none); keys a late
        op deleted come back as they were."""
        m = self._mask
        keys = None if m is None else m.keys_of(obj)
        if m is None or not keys:
            return pairs
        every = None in keys
        out: list[tuple[str, tuple[object, bytes]]] = []
        for k, (v, exid) in pairs:
            if (every or k in keys) and m.late(bytes(exid)):
                got = self._at_clean(obj, k)
                if got is not None:
                    out.append((k, got))
            else:
                out.append((k, (v, exid)))
        # A key gone now comes back only if a late op deleted it: an honest
        # delete after a late overwrite stands.
        present = {k for k, _ in pairs}
        where = None if obj == am.ROOT else op_writer(obj)
        for k in sorted(k for k in keys if k is not None and k not in present and (where, k) in m.deleted):
            got = self._at_clean(obj, k)
            if got is not None:
                out.append((k, got))
        return out

    def _unscanned(self, g: _Guard) -> bytes:
        """The chunks not yet scanned: what `load` was given plus later
        changes, or the changes since the last scan, or a fresh save()."""
        since: list[bytes] | None = g.seen
        prefix = b""
        if since is None and g.loaded is not None:
            prefix, since = g.loaded, g.loaded_heads
        if since:  # an empty list would mean every change: one save() is cheaper
            try:
                return prefix + b"".join(bytes(c.bytes) for c in self._doc.get_changes(since))
            except BaseException as exc:
                if _fatal(exc):
                    raise
        return bytes(self._doc.save())

    def _update_poison(self, g: _Guard, heads: list[bytes]) -> None:
        """Learn which map keys hold a value the binding cannot convert, from
        the patches between the last heads looked at and now."""
        try:
            if not g.poison_heads:
                g.poison_heads = self._before_first_exotic()
            patches = self._doc.diff(g.poison_heads, heads)
        except BaseException as exc:
            if _fatal(exc):
                raise
            g.careful = True
            return
        g.poison_heads = heads
        for patch in patches:
            text = repr(patch)
            exotic = any(marker in text for marker in _EXOTIC_MARKERS)
            if not exotic and not g.poison:
                continue
            m = _KEY_PATCH.match(text)
            if m is None:
                if exotic and "action: PutMap" in text:
                    g.careful = True  # a map patch we cannot place: read every key with care
                continue
            ctr, actor_hex, action, quoted, bad = m.groups()
            obj: _ObjKey = None if ctr is None else (int(ctr), bytes.fromhex(actor_hex))
            key = _debug_str(quoted)
            if key is None:
                if exotic:
                    g.poison.setdefault(obj, {})[_ANY_KEY] = b""
                continue
            if action == "Increment" or bad:
                v = _VALUE_ID.search(text) if bad else None
                keys = g.poison.setdefault(obj, {})
                if v is not None or key not in keys:
                    keys[key] = _exid(v.group(2), v.group(1)) if v is not None else b""
            elif obj in g.poison:  # overwritten or deleted: readable again
                g.poison[obj].pop(key, None)

    def _before_first_exotic(self) -> list[bytes]:
        """The dependencies of the first change (in causal order) that holds
        an odd value: every such value was written after them, so a diff
        from there finds them all, at the cost of the changes since rather
        than of the whole document (a full diff is ~1.5 s at 10k records)."""
        for change in self._doc.get_changes([]):
            if has_exotic_values(bytes(change.bytes)):
                return [bytes(h) for h in change.deps]
        return []

    def _bad_keys(self, obj: bytes) -> dict[str, bytes] | None:
        g = self._guard_state
        if not g.poison:
            return None
        return g.poison.get(_obj_key(obj))

    def _get(self, obj: bytes, key: str) -> tuple[object, bytes] | None:
        """A key's value as members should see it (late values masked)."""
        if self._mask is None:
            return self._raw_get(obj, key)
        got = self._raw_get(obj, key)
        if self._mask.keys_of(obj):
            out = self._unlate(obj, [] if got is None else [(key, got)])
            got = next((v for k, v in out if k == key), None)
        return got

    def _raw_get(self, obj: bytes, key: str) -> tuple[object, bytes] | None:
        """A key's current winning value, whoever wrote it."""
        g = self._guard_state
        if g.exotic:
            bad = self._bad_keys(obj)
            if bad is not None and (key in bad or _ANY_KEY in bad):
                return (MALFORMED, bad.get(key, b""))
        try:
            if g.careful:
                with _quiet_fd2():
                    got = self._doc.get(obj, key)
            else:
                got = self._doc.get(obj, key)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return (MALFORMED, b"")
        return got

    def _map_of(self, obj: bytes, key: str, raw: bool = False) -> bytes | None:
        got = self._raw_get(obj, key) if raw else self._get(obj, key)
        if got is None or got[0] != am.ObjType.Map:
            return None
        return got[1]

    def has_collection(self, name: str) -> bool:
        self._guard()
        return self._map_of(am.ROOT, name) is not None

    def root_scalars(self, collection: str) -> dict[str, Scalar | _Malformed]:
        """The scalar keys of a root map (meta); Text reads as str, anything else
        that is not a scalar we write as MALFORMED."""
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return {}
        out: dict[str, Scalar | _Malformed] = {}
        for key, (value, obj_id) in self._pairs(obj):
            if type(value) is tuple:
                out[key] = _scalar_out(value)
            elif value == _TEXT:
                out[key] = self._text(obj_id)
            else:
                out[key] = MALFORMED
        return out

    def _text(self, obj: bytes) -> str | _Malformed:
        m = self._mask
        heads = list(m.clean) if m is not None and m.keys_of(obj) else None  # late edits inside it
        try:
            if self._doc.length(obj, heads) > MAX_READ_TEXT:
                return MALFORMED
            return self._doc.text(obj, heads)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return MALFORMED

    def _pairs(self, obj: bytes, maybe_empty: bool = False) -> list[tuple[str, tuple[object, bytes]]]:
        """A map's keys and values as members should see them (late values masked)."""
        pairs = self._raw_pairs(obj, maybe_empty)
        return pairs if self._mask is None else self._unlate(obj, pairs)

    def _raw_pairs(self, obj: bytes, maybe_empty: bool = False) -> list[tuple[str, tuple[object, bytes]]]:
        g = self._guard_state
        if g.exotic and (g.careful or self._bad_keys(obj) is not None):
            return self._pairs_by_key(obj)
        try:
            values = self._doc.values(obj)
            if maybe_empty and not values:
                return []  # skip the keys() call: each call into automerge costs ~5 us
            keys = self._doc.keys(obj)
        except BaseException as exc:
            if _fatal(exc):
                raise
            # The byte scan missed a value the binding cannot convert (it has
            # just printed a panic): read this document key by key from now on.
            g.careful = g.exotic = True
            return self._pairs_by_key(obj)
        if len(keys) != len(values):
            return []
        return [(k, (v[0], v[1])) for k, v in zip(keys, values, strict=True)]

    def _pairs_by_key(self, obj: bytes) -> list[tuple[str, tuple[object, bytes]]]:
        try:
            keys = self._doc.keys(obj)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return []
        out: list[tuple[str, tuple[object, bytes]]] = []
        for key in keys:
            got = self._raw_get(obj, key)
            if got is not None:
                out.append((key, got))
        return out

    def _record_at(self, obj: bytes) -> Record:
        record: Record = {}
        for key, (value, obj_id) in self._pairs(obj):
            if type(value) is tuple:
                record[key] = _scalar_out(value)
            elif value == _MAP:
                inner: dict[str, Scalar | _Malformed] = {}
                for k, (v, inner_id) in self._pairs(obj_id, maybe_empty=True):
                    if type(v) is tuple:
                        inner[k] = _scalar_out(v)
                    elif v == _TEXT:
                        inner[k] = self._text(inner_id)
                    else:
                        inner[k] = MALFORMED
                record[key] = inner
            elif value == _TEXT:
                record[key] = self._text(obj_id)
            else:
                record[key] = MALFORMED
        return record

    def record_ids(self, collection: str) -> list[str]:
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return []
        if self._mask is not None and self._mask.keys_of(obj):
            return [k for k, _ in self._pairs(obj)]
        try:
            return list(self._doc.keys(obj))
        except BaseException as exc:
            if _fatal(exc):
                raise
            return []

    def record(self, collection: str, record_id: str) -> Record | None:
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return None
        rec = self._map_of(obj, record_id)
        if rec is None:
            return None
        return self._record_at(rec)

    def record_writer(self, collection: str, record_id: str) -> tuple[bytes, int] | None:
        """Who created a record: the (actor, op counter) of the op that put its map.
        Writers here are those of the values reads show (a removed device's
        late value masked, crdt `_LateMask`); `late_writes` names the others."""
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return None
        got = self._get(obj, record_id)
        if got is None or got[0] != am.ObjType.Map:
            return None
        return op_writer(bytes(got[1]))

    def op_precedes(self, a: tuple[bytes, int], b: tuple[bytes, int]) -> bool:
        """Whether the change holding op `a` is in the causal past of the
        change holding op `b` (`b`'s writer had seen `a`). Ops are
        (actor, counter) as `record_writer` gives them; an op this document
        does not hold precedes nothing. Used for hold queues (crdt/clock.py):
        the index of changes is kept per heads and extended incrementally."""
        heads = self._doc.get_heads()
        idx = self._causal
        try:
            if idx is None or idx.heads != heads:
                new = self._doc.get_changes(idx.heads if idx is not None and idx.heads else [])
                if idx is None:
                    idx = self._causal = _CausalIndex()
                idx.add(new)
                idx.heads, idx.after = heads, {}
            ca, cb = idx.change_of(a), idx.change_of(b)
            if ca is None or cb is None or ca == cb:
                return False
            later = idx.after.get(cb)
            if later is None:
                later = idx.after[cb] = {bytes(c.hash) for c in self._doc.get_changes([cb])}
        except BaseException as exc:
            if _fatal(exc):
                raise
            self._causal = None
            return False
        return ca not in later

    def record_field(self, collection: str, record_id: str, key: str) -> Scalar | _Malformed:
        """One scalar field of a record (None if absent or not a scalar), without reading the rest."""
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        rec = None if obj is None else self._map_of(obj, record_id)
        got = None if rec is None else self._get(rec, key)
        if got is None or got[0] is MALFORMED:
            return None if got is None else MALFORMED
        return _scalar_out(got[0]) if type(got[0]) is tuple else None

    def object_ids(self, collection: str) -> tuple[tuple[bytes, int] | None, dict[str, tuple[bytes, int]]]:
        """(the collection map's id, {record: its map's id}) as (actor, counter):
        what a change's ops name as their target object."""
        self._guard()
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
        self._guard()
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

    def founding_changes(self) -> frozenset[bytes]:
        """Hashes of the changes with no dependencies (a circle's founding
        change, plus any root a peer added). Unlike `meta.circle_id`, which
        any member can overwrite, a hash cannot be forged: a document of the
        same circle holds our founding change. ~70 ms at 10k changes."""
        try:
            return frozenset(bytes(c.hash) for c in self._doc.get_changes([]) if not c.deps)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return frozenset()

    def same_circle(self, other: AmDoc) -> bool:
        """Whether `other` (a snapshot from a peer) descends from our founding
        change. For an empty document (nothing to compare) True."""
        ours = self.founding_changes()
        return not ours or bool(ours & other.founding_changes())

    def entry_writer(self, collection: str, record_id: str, field: str, key: str) -> tuple[bytes, int] | None:
        """Who wrote one entry of a nested map field (a claim, a grant)."""
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        rec = None if obj is None else self._map_of(obj, record_id)
        inner = None if rec is None else self._map_of(rec, field)
        got = None if inner is None else self._get(inner, key)
        return None if got is None else op_writer(bytes(got[1]))

    def entry_writers(self, collection: str, record_id: str, field: str) -> dict[str, tuple[bytes, int]]:
        """Who wrote each key of a map inside a record (RSVPs, shift takes)."""
        self._guard()
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

    def op_spans(self, heads: list[bytes]) -> dict[bytes, list[tuple[int, int]]]:
        """Per actor, the (first, last) op counters of every change not covered
        by `heads`: which ops (records created) arrived after those heads."""
        out: dict[bytes, list[tuple[int, int]]] = {}
        try:
            for c in self._doc.get_changes(heads):
                out.setdefault(bytes(c.actor_id), []).append((int(c.start_op), int(c.max_op)))
        except BaseException as exc:
            if _fatal(exc):
                raise
            raise MalformedDocument(f"unknown heads ({exc})") from None
        return out

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
        self.inflated = other.inflated
        actor = self._doc.get_actor()
        self._doc = other._doc
        self._doc.set_actor(actor)
        self._guard_state = other._guard_state
        self._causal = None

    def records(self, collection: str) -> dict[str, Record | _Malformed]:
        """Every record of a collection; a non-map entry reads as MALFORMED."""
        self._guard()
        obj = self._map_of(am.ROOT, collection)
        if obj is None:
            return {}
        out: dict[str, Record | _Malformed] = {}
        for key, (value, obj_id) in self._pairs(obj):
            out[key] = self._record_at(obj_id) if value == am.ObjType.Map else MALFORMED
        return out
