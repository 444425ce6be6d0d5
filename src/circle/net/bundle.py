"""Bundle files: envelopes on a USB stick (sneakernet).

A bundle holds the very same envelopes a relay would carry, so reading one is
just opening envelopes: it is encrypted, signed and deduplicated exactly as
relay traffic is, and reading a bundle twice (or an old one) changes nothing.
A document bigger than one envelope travels as a set of part envelopes
(net/parts.py), each signed and bound to its set, its index and the total;
the reader (node/bundles.py) requires them whole and in order.

File layout, version 2 (integers big-endian)::

    magic     8 bytes  b"CIRCLEB\n"
    version   u16      = 2
    flags     u16      = 0
    count     u32      number of envelopes
    body      u64      bytes of the records below
    count x   (u32 length, envelope bytes)
    checksum  32 bytes BLAKE2b-256 of (the header | BLAKE2b-256 of the records)

Version 1 (still read) had no `body` field and a checksum of everything
before it. Version 2 names its size up front so that the writer can stream
(the header is rewritten once the records are out) and the reader refuses a
file whose header claims more than `MAX_BUNDLE_BYTES`, or more or less than
the file holds, before reading a single record.

The checksum is not a security measure (anyone can recompute it; the
envelopes carry their own authentication). It turns a truncated or
damaged file into a clear error before anything is opened.

The magic tells whoever finds the stick that the file is a circle bundle;
it does not reveal which circle, who wrote it, or anything inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from circle.errors import BundleCorrupt, RemoteProtocolError, StoreError
from circle.net.envelope import (
    MAX_ENVELOPE_SIZE,
    MIN_ENVELOPE_SIZE,
    EnvelopeInbox,
    EpochKeys,
    OpenedEnvelope,
    envelope_id,
    peek_header,
)

MAGIC = b"CIRCLEB\n"
VERSION = 2
_HEAD_V1 = struct.Struct(">8sHHI")
_HEAD = struct.Struct(">8sHHIQ")
_LEN = struct.Struct(">I")
CHECKSUM_LEN = 32
MAX_ENVELOPES = 1_000_000
#: Largest bundle written or read: a circle never needs more (256 MiB).
MAX_BUNDLE_BYTES = 256 << 20
_PERSON = b"circle/bundle"


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=CHECKSUM_LEN, person=_PERSON)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _checksum_v2(head: bytes, body_digest: bytes) -> bytes:
    h = _hasher()
    h.update(head)
    h.update(body_digest)
    return h.digest()


def write_bundle(path: Path | str, envelopes: Iterable[bytes]) -> int:
    """Write envelopes to `path` atomically (temp file, fsync, rename, fsync dir).

    Streams: one envelope is held at a time (`envelopes` may be a generator).
    Duplicate envelopes are written once. Returns how many were written.
    Raises StoreError if the file cannot be written or would exceed
    `MAX_BUNDLE_BYTES`; an existing file at `path` is replaced only once the
    new one is complete, and nothing is left behind on failure.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise StoreError(f"cannot write bundle in {directory}: {e.strerror}") from None
    seen: set[bytes] = set()
    count = body = 0
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_HEAD.pack(MAGIC, VERSION, 0, 0, 0))  # rewritten once the size is known
            h = _hasher()
            for env in envelopes:
                env = bytes(env)
                peek_header(env)  # refuse to write something that is not an envelope
                eid = envelope_id(env)
                if eid in seen:
                    continue
                seen.add(eid)
                count += 1
                body += _LEN.size + len(env)
                if count > MAX_ENVELOPES:
                    raise StoreError(f"a bundle holds at most {MAX_ENVELOPES} envelopes")
                if body > MAX_BUNDLE_BYTES:
                    raise StoreError(f"the circle is too large for a bundle (above {MAX_BUNDLE_BYTES >> 20} MiB); "
                                     "nothing was written")
                rec = _LEN.pack(len(env))
                f.write(rec)
                f.write(env)
                h.update(rec)
                h.update(env)
            head = _HEAD.pack(MAGIC, VERSION, 0, count, body)
            f.write(_checksum_v2(head, h.digest()))
            f.seek(0)
            f.write(head)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"cannot write bundle {path}: {e.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return count


def _read_exact(f: object, n: int, what: str) -> bytes:
    assert hasattr(f, "read")
    data: bytes = f.read(n)
    if len(data) != n:
        raise BundleCorrupt(f"bundle is truncated (in {what})")
    return data


def _header(f: BinaryIO, path: Path, file_size: int) -> tuple[int, int, bytes]:
    """(version, count, header bytes), refusing sizes before any record is read."""
    head = f.read(_HEAD_V1.size)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise BundleCorrupt(f"{path.name} is not a circle bundle")
    if len(head) != _HEAD_V1.size:
        raise BundleCorrupt("bundle is truncated (in the header)")
    _magic, version, flags, count = _HEAD_V1.unpack(head)
    if version not in (1, VERSION):
        raise BundleCorrupt(f"bundle version {version} is not supported by this circle (knows 1 and {VERSION})")
    if flags != 0 or count > MAX_ENVELOPES:
        raise BundleCorrupt("bundle header is damaged")
    if version == 1:
        if file_size > MAX_BUNDLE_BYTES + _HEAD_V1.size + CHECKSUM_LEN:
            raise BundleCorrupt(f"the bundle is {file_size / 1e6:.0f} MB, above the "
                                f"{MAX_BUNDLE_BYTES >> 20} MiB a bundle may hold; nothing was read")
        return version, count, head
    head += _read_exact(f, _HEAD.size - _HEAD_V1.size, "the header")
    body = _HEAD.unpack(head)[4]
    if body > MAX_BUNDLE_BYTES:
        raise BundleCorrupt(f"the bundle claims {body / 1e6:.0f} MB, above the "
                            f"{MAX_BUNDLE_BYTES >> 20} MiB a bundle may hold; nothing was read")
    if body < count * (_LEN.size + MIN_ENVELOPE_SIZE):
        raise BundleCorrupt("bundle header is damaged (its size cannot hold its envelopes)")
    expected = _HEAD.size + body + CHECKSUM_LEN
    if file_size < expected:
        raise BundleCorrupt(f"bundle is truncated ({file_size} of {expected} bytes)")
    if file_size > expected:
        raise BundleCorrupt("bundle has trailing bytes after its checksum")
    return version, count, head


def _scan(f: BinaryIO, path: Path, keep: bool, file_size: int) -> Iterator[bytes]:
    """Walk a bundle's records, checking the checksum at the end; yields envelopes if `keep`.

    Holds one envelope at a time (at most MAX_ENVELOPE_SIZE), never the file."""
    version, count, head = _header(f, path, file_size)
    h = _hasher()
    if version == 1:
        h.update(head)
    for i in range(count):
        chunk = _read_exact(f, _LEN.size, f"envelope {i + 1} of {count}")
        (n,) = _LEN.unpack(chunk)
        if n > MAX_ENVELOPE_SIZE:
            raise BundleCorrupt(f"bundle envelope {i + 1} has an impossible length")
        env = _read_exact(f, n, f"envelope {i + 1} of {count}")
        h.update(chunk)
        h.update(env)
        if keep:
            try:
                peek_header(env)
            except RemoteProtocolError as e:
                raise BundleCorrupt(f"bundle envelope {i + 1} is malformed: {e.message}") from None
            yield env
    checksum = _read_exact(f, CHECKSUM_LEN, "the checksum")
    if f.read(1):
        raise BundleCorrupt("bundle has trailing bytes after its checksum")
    if checksum != (h.digest() if version == 1 else _checksum_v2(head, h.digest())):
        raise BundleCorrupt("bundle is damaged (checksum mismatch)")


def iter_bundle(path: Path | str) -> Iterator[bytes]:
    """The envelopes in a bundle file, in order (not yet opened), one at a time.

    Two passes over the file: the first checks the whole file (checksum,
    lengths) holding one envelope at a time, so a huge crafted or damaged
    file is refused in bounded memory; the second yields the envelopes and
    checks the checksum again at its end (the file may have changed in
    between: a consumer must not act before the iterator is exhausted).
    Raises BundleCorrupt for a file that is not a bundle, is of a newer
    version, is truncated, or fails its checksum; StoreError if unreadable.
    """
    path = Path(path)
    for keep in (False, True):
        try:  # non-blocking open: a FIFO in the bundle's place must not hang the command
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise StoreError(f"cannot read bundle {path}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BundleCorrupt(f"{path.name} is not a regular file (a bundle is read twice: copy it first)")
        size = os.fstat(fd).st_size
        with os.fdopen(fd, "rb") as f:
            yield from _scan(f, path, keep, size)


def read_bundle(path: Path | str) -> list[bytes]:
    """Every envelope of a bundle (see `iter_bundle`); the file is checked before any is kept."""
    return list(iter_bundle(path))


@dataclass
class BundleContents:
    accepted: list[OpenedEnvelope] = field(default_factory=list)
    duplicates: int = 0
    rejected: list[tuple[int, RemoteProtocolError]] = field(default_factory=list)


def open_bundle(
    path: Path | str,
    epoch_keys: EpochKeys,
    is_active_member: Callable[[bytes], bool],
    *,
    seen: set[bytes] | None = None,
    strict: bool = True,
) -> BundleContents:
    """Read and open every envelope in a bundle.

    `seen` (ids already applied; updated in place) makes re-reading a bundle
    a no-op. With `strict` (the default) the first envelope that fails to
    open raises (DecryptionFailed, UnknownEpoch, EnvelopeRejected) and
    nothing is returned, so a tampered bundle changes nothing. Without it,
    failures are collected in `rejected` and the rest is returned.
    """
    inbox = EnvelopeInbox(epoch_keys, is_active_member, set(seen) if seen is not None else set())
    out = BundleContents()
    for i, env in enumerate(iter_bundle(path)):
        try:
            opened = inbox.accept(env)
        except RemoteProtocolError as e:
            if strict:
                raise
            out.rejected.append((i, e))
            continue
        if opened is None:
            out.duplicates += 1
        else:
            out.accepted.append(opened)
    if seen is not None:
        seen |= inbox.seen
    return out


__all__ = ["MAX_BUNDLE_BYTES", "BundleContents", "iter_bundle", "open_bundle", "read_bundle", "write_bundle"]
