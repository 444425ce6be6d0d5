"""Durable local storage of one document: a snapshot plus an append-only log.

Files in the store directory:
- `snapshot`: MAGIC | flags(1) | BLAKE2b-256(payload) | payload, where the
  payload is Automerge `save()` output (sealed when a cipher is set).
- `log`: MAGIC | generation(16) then records `len(u32) | BLAKE2b-128(payload) |
  payload`, one Automerge change per record (sealed when a cipher is set).
- `lock`: the flock target. Appends and compaction hold it exclusively;
  loads hold it shared, so nobody reads a half-rewritten file.

Rules:
- A local edit costs one record append + fsync, never a whole-file rewrite.
- Compaction writes `snapshot.tmp`, fsyncs, renames, fsyncs the directory,
  then does the same for a fresh `log` with a new generation. A crash between
  the two leaves a new snapshot and the old log, which load fine together
  (Automerge ignores changes it already has).
- A torn final record (crash mid-append) is ignored on load and cut off by
  the next append. A bad record *followed by more data* is damage, not a
  crash: loading refuses with `StoreCorrupt` and changes nothing.
- Followers (other processes on the same home) poll: same inode and a larger
  size means new records from their last offset; a new inode or generation
  means a compaction happened and they reload both files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

from circle.errors import StoreCorrupt, StoreError, StoreLocked

SNAP_MAGIC = b"CIRCSNP1"
LOG_MAGIC = b"CIRCLOG1"
_GEN_LEN = 16
_LOG_HEADER = len(LOG_MAGIC) + _GEN_LEN
_REC_HEAD = struct.Struct(">I4s16s")  # length, check of the length, digest of payload
MAX_RECORD = 64 * 1024 * 1024
LOCK_TIMEOUT_S = 15.0


class Cipher(Protocol):
    def seal(self, plaintext: bytes) -> bytes: ...
    def open(self, ciphertext: bytes) -> bytes: ...


class SecretBoxCipher:
    """XSalsa20-Poly1305 with a random nonce per message."""

    def __init__(self, key: bytes) -> None:
        self._box = nacl.secret.SecretBox(key)

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._box.encrypt(plaintext))

    def open(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(ciphertext))
        except nacl.exceptions.CryptoError:
            raise StoreCorrupt("a stored file failed decryption: it is damaged or from another device") from None


def _digest(data: bytes, size: int) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, encoder=nacl.encoding.RawEncoder)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write temp, fsync, rename, fsync dir. Disk-full leaves the old file intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _storage_error(exc, path) from None


def _storage_error(exc: OSError, path: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"the disk is full; nothing was changed ({path.parent})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StoreError(f"no permission to write {path}")
    return StoreError(f"could not write {path}: {exc.strerror}")


def _length_check(length: int) -> bytes:
    return _digest(length.to_bytes(4, "big"), 4)


def scan_records(data: bytes) -> tuple[list[bytes], int, str]:
    """Split log bytes into record payloads.

    Returns (payloads, bytes consumed, state) with state "ok", "torn" (an
    incomplete last record: a crash mid-append) or "corrupt" (a bad record
    with more data after it, or a damaged length field)."""
    payloads: list[bytes] = []
    pos = 0
    while pos < len(data):
        rest = data[pos:]
        if len(rest) < _REC_HEAD.size:
            return payloads, pos, "torn"
        length, check, digest = _REC_HEAD.unpack_from(data, pos)
        if check != _length_check(length) or length > MAX_RECORD:
            # A crash can leave zero-filled blocks at the tail; anything else
            # is damage to a record we once wrote completely.
            return payloads, pos, "torn" if not rest.strip(b"\0") else "corrupt"
        end = pos + _REC_HEAD.size + length
        if end > len(data):
            return payloads, pos, "torn"
        payload = data[pos + _REC_HEAD.size : end]
        if _digest(payload, 16) != digest:
            return payloads, pos, "torn" if end == len(data) else "corrupt"
        payloads.append(payload)
        pos = end
    return payloads, pos, "ok"


@dataclass
class LoadResult:
    snapshot: bytes
    changes: list[bytes]
    damaged_tail: bool


class DocStore:
    def __init__(self, path: Path, cipher: Cipher | None = None) -> None:
        self.path = path
        self.cipher = cipher
        self._snapshot = path / "snapshot"
        self._log = path / "log"
        self._lockfile = path / "lock"
        self._follow_inode: int | None = None
        self._follow_gen: bytes | None = None
        self._follow_offset = 0
        self.damaged_tail = False

    # --- locking ---------------------------------------------------------

    @contextmanager
    def locked(self, exclusive: bool = True) -> Iterator[None]:
        fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            op = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
            while True:
                try:
                    fcntl.flock(fd, op)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreLocked(f"another circle process has held {self.path} locked for too long") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # --- create / load ---------------------------------------------------

    def exists(self) -> bool:
        return self._snapshot.exists()

    def create(self, snapshot: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.locked():
            if self._snapshot.exists():
                raise StoreError(f"a store already exists at {self.path}")
            self._write_log(os.urandom(_GEN_LEN))
            self._write_snapshot(snapshot)
        self._follow_offset = _LOG_HEADER
        self._remember_log()

    def load(self) -> LoadResult:
        if not self._snapshot.exists():
            raise StoreError(f"no circle data at {self.path}")
        with self.locked(exclusive=False):
            snapshot = self._read_snapshot()
            changes, end, damaged = self._read_log_from(None)
        self._follow_offset = end
        self.damaged_tail = damaged
        return LoadResult(snapshot, changes, damaged)

    def _read_snapshot(self) -> bytes:
        try:
            raw = self._snapshot.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {self._snapshot}: {exc.strerror}") from None
        head = len(SNAP_MAGIC) + 1 + 32
        if len(raw) < head or not raw.startswith(SNAP_MAGIC):
            raise StoreCorrupt(f"{self._snapshot} is not a circle snapshot (wrong header or truncated)")
        flags, digest, payload = raw[len(SNAP_MAGIC)], raw[len(SNAP_MAGIC) + 1 : head], raw[head:]
        if _digest(payload, 32) != digest:
            raise StoreCorrupt(f"{self._snapshot} is damaged (checksum mismatch)")
        encrypted = bool(flags & 1)
        if encrypted != (self.cipher is not None):
            raise StoreCorrupt(f"{self._snapshot} encryption does not match this device's settings")
        return self.cipher.open(payload) if self.cipher is not None else payload

    def _write_snapshot(self, snapshot: bytes) -> None:
        payload = self.cipher.seal(snapshot) if self.cipher is not None else snapshot
        flags = bytes([1 if self.cipher is not None else 0])
        atomic_write(self._snapshot, SNAP_MAGIC + flags + _digest(payload, 32) + payload)

    def _write_log(self, generation: bytes) -> None:
        atomic_write(self._log, LOG_MAGIC + generation)

    def _remember_log(self) -> None:
        st = os.stat(self._log)
        self._follow_inode = st.st_ino
        with open(self._log, "rb") as fh:
            self._follow_gen = fh.read(_LOG_HEADER)[len(LOG_MAGIC) :]

    def _read_log_from(self, offset: int | None) -> tuple[list[bytes], int, bool]:
        """Read records from `offset` (None = from the start, checking the header)."""
        try:
            with open(self._log, "rb") as fh:
                st = os.fstat(fh.fileno())
                header = fh.read(_LOG_HEADER)
                if len(header) < _LOG_HEADER or not header.startswith(LOG_MAGIC):
                    raise StoreCorrupt(f"{self._log} is not a circle log (wrong header)")
                if offset is None:
                    self._follow_inode, self._follow_gen = st.st_ino, header[len(LOG_MAGIC) :]
                    offset = _LOG_HEADER
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            raise StoreCorrupt(f"{self._log} is missing") from None
        payloads, consumed, state = scan_records(data)
        if state == "corrupt":
            raise StoreCorrupt(
                f"{self._log} is damaged at byte {offset + consumed}; the data after it cannot be trusted "
                "(restore from a peer with `circle sync`, or from a backup)"
            )
        changes = [self.cipher.open(p) if self.cipher is not None else p for p in payloads]
        return changes, offset + consumed, state == "torn"

    # --- append / follow -------------------------------------------------

    def append(self, changes: list[bytes], durable: bool = True) -> None:
        """Durably append changes (one fsync for the batch). `durable=False`
        skips the fsync, for data that can be rebuilt (this device's change
        proofs) or fetched again: a crash may lose a tail, never corrupt."""
        if not changes:
            return
        blob = bytearray()
        for change in changes:
            payload = self.cipher.seal(change) if self.cipher is not None else change
            blob += _REC_HEAD.pack(len(payload), _length_check(len(payload)), _digest(payload, 16)) + payload
        with self.locked():
            try:
                fd = os.open(self._log, os.O_RDWR)
            except OSError as exc:
                raise _storage_error(exc, self._log) from None
            try:
                end = os.lseek(fd, 0, os.SEEK_END)
                good_end = self._good_end(fd, end)
                if good_end != end:
                    os.ftruncate(fd, good_end)  # cut a torn tail from an earlier crash
                os.lseek(fd, good_end, os.SEEK_SET)
                caught_up = self._same_log() and self._follow_offset == good_end
                view = memoryview(bytes(blob))
                try:
                    while view:
                        view = view[os.write(fd, view) :]
                    if durable:
                        os.fsync(fd)
                except OSError as exc:
                    os.ftruncate(fd, good_end)  # never leave half a record (e.g. disk full)
                    raise _storage_error(exc, self._log) from None
                if caught_up:  # our own records need not be read back by poll()
                    self._follow_offset = good_end + len(blob)
            finally:
                os.close(fd)

    def _good_end(self, fd: int, end: int) -> int:
        """Offset after the last whole record; cheap when nothing is torn."""
        if not self.damaged_tail and self._same_log() and self._follow_offset == end:
            return end
        with open(os.dup(fd), "rb") as fh:
            fh.seek(_LOG_HEADER)
            data = fh.read()
        _, consumed, state = scan_records(data)
        if state == "corrupt":
            raise StoreCorrupt(f"{self._log} is damaged at byte {_LOG_HEADER + consumed}; not appending to it")
        self.damaged_tail = False
        return _LOG_HEADER + consumed

    def _same_log(self) -> bool:
        try:
            return os.stat(self._log).st_ino == self._follow_inode
        except FileNotFoundError:
            return False

    def poll(self) -> tuple[list[bytes], bool]:
        """New changes written by any process since our last read.

        Returns (changes, reloaded): when a compaction replaced the files,
        `reloaded` is True and `changes` starts with the new snapshot's
        document followed by the new log's changes (the caller merges the
        snapshot, then applies the rest)."""
        with self.locked(exclusive=False):
            try:
                st = os.stat(self._log)
            except FileNotFoundError:
                return [], False
            if st.st_ino == self._follow_inode:
                if st.st_size == self._follow_offset:
                    return [], False
                changes, end, damaged = self._read_log_from(self._follow_offset)
                self._follow_offset, self.damaged_tail = end, damaged
                return changes, False
            snapshot = self._read_snapshot()
            changes, end, damaged = self._read_log_from(None)
            self._follow_offset, self.damaged_tail = end, damaged
            return [snapshot, *changes], True

    # --- compaction ------------------------------------------------------

    def log_size(self) -> int:
        try:
            return os.stat(self._log).st_size - _LOG_HEADER
        except FileNotFoundError:
            return 0

    def snapshot_size(self) -> int:
        try:
            return os.stat(self._snapshot).st_size
        except FileNotFoundError:
            return 0

    @contextmanager
    def compacting(self) -> Iterator[CompactionTicket]:
        """Hold the lock while the caller catches up and saves.

        Usage: `with store.compacting() as ticket: apply(ticket.pending);
        ticket.commit(doc.save())`."""
        with self.locked():
            pending, reloaded = self._poll_locked()
            ticket = CompactionTicket(self, pending, reloaded)
            yield ticket

    def _poll_locked(self) -> tuple[list[bytes], bool]:
        st = os.stat(self._log)
        if st.st_ino == self._follow_inode:
            changes, end, _ = self._read_log_from(self._follow_offset)
            self._follow_offset = end
            return changes, False
        snapshot = self._read_snapshot()
        changes, end, _ = self._read_log_from(None)
        self._follow_offset = end
        return [snapshot, *changes], True

    def _replace(self, snapshot: bytes) -> None:
        self._write_snapshot(snapshot)
        self._write_log(os.urandom(_GEN_LEN))
        self._remember_log()
        self._follow_offset = _LOG_HEADER
        self.damaged_tail = False


class CompactionTicket:
    def __init__(self, store: DocStore, pending: list[bytes], reloaded: bool) -> None:
        self._store = store
        self.pending = pending
        self.reloaded = reloaded

    def commit(self, snapshot: bytes) -> None:
        self._store._replace(snapshot)
