"""Bundle files: envelopes on a USB stick (sneakernet).

A bundle holds the very same envelopes a relay would carry, so reading one is
just opening envelopes: it is encrypted, signed and deduplicated exactly as
relay traffic is, and reading a bundle twice (or an old one) changes nothing.

File layout (integers big-endian)::

    magic     8 bytes  b"CIRCLEB\\n"
    version   u16      = 1
    flags     u16      = 0
    count     u32      number of envelopes
    count x   (u32 length, envelope bytes)
    checksum  32 bytes BLAKE2b-256 of everything before it

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
    EnvelopeInbox,
    EpochKeys,
    OpenedEnvelope,
    peek_header,
)

MAGIC = b"CIRCLEB\n"
VERSION = 1
_HEAD = struct.Struct(">8sHHI")
_LEN = struct.Struct(">I")
CHECKSUM_LEN = 32
MAX_ENVELOPES = 1_000_000
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


def write_bundle(path: Path | str, envelopes: Iterable[bytes]) -> int:
    """Write envelopes to `path` atomically (temp file, fsync, rename, fsync dir).

    Duplicate envelopes are written once. Returns how many were written.
    Raises StoreError if the file cannot be written; an existing file at
    `path` is replaced only once the new one is complete.
    """
    path = Path(path)
    envs: list[bytes] = []
    seen: set[bytes] = set()
    for env in envelopes:
        env = bytes(env)
        peek_header(env)  # refuse to write something that is not an envelope
        if env not in seen:
            seen.add(env)
            envs.append(env)
    if len(envs) > MAX_ENVELOPES:
        raise StoreError(f"a bundle holds at most {MAX_ENVELOPES} envelopes")
    h = _hasher()
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as e:
        raise StoreError(f"cannot write bundle in {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            head = _HEAD.pack(MAGIC, VERSION, 0, len(envs))
            f.write(head)
            h.update(head)
            for env in envs:
                chunk = _LEN.pack(len(env))
                f.write(chunk)
                f.write(env)
                h.update(chunk)
                h.update(env)
            f.write(h.digest())
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
    return len(envs)


def _read_exact(f: object, n: int, what: str) -> bytes:
    assert hasattr(f, "read")
    data: bytes = f.read(n)
    if len(data) != n:
        raise BundleCorrupt(f"bundle is truncated (in {what})")
    return data


def _scan(f: BinaryIO, path: Path, keep: bool) -> Iterator[bytes]:
    """Walk a bundle's records, checking the checksum at the end; yields envelopes if `keep`.

    Holds one envelope at a time (at most MAX_ENVELOPE_SIZE), never the file."""
    h = _hasher()
    head = f.read(_HEAD.size)
    if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
        raise BundleCorrupt(f"{path.name} is not a circle bundle")
    if len(head) != _HEAD.size:
        raise BundleCorrupt("bundle is truncated (in the header)")
    _magic, version, flags, count = _HEAD.unpack(head)
    if version != VERSION:
        raise BundleCorrupt(f"bundle version {version} is not supported by this circle (knows {VERSION})")
    if flags != 0 or count > MAX_ENVELOPES:
        raise BundleCorrupt("bundle header is damaged")
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
    if checksum != h.digest():
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
        with os.fdopen(fd, "rb") as f:
            yield from _scan(f, path, keep)


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


__all__ = ["BundleContents", "iter_bundle", "open_bundle", "read_bundle", "write_bundle"]
