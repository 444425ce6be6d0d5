"""Durable local storage of one document: a snapshot plus an append-only log.

Files in the store directory:
- `snapshot`: MAGIC | flags(1) | generation(16) | previous generation(16) |
  tag(16) | BLAKE2b-256(payload) | payload, where the payload is Automerge
  `save()` output (sealed when the cipher encrypts).
- `log`: MAGIC | generation(16) | tag(16), then records `len(u32) |
  check of len(4) | BLAKE2b-128(payload) | payload`, one Automerge change per
  record (sealed when the cipher encrypts).
- `head`: MAGIC | generation(16) | end(8) | tag(16): where the log ended after
  the last acknowledged append (rewritten in place, not fsynced: the log is
  fsynced first, so `head` can lag behind the log but never run ahead of it).
- `lock`: the flock target. Appends and compaction hold it exclusively;
  loads hold it shared, so nobody reads a half-rewritten file.

Tags are keyed BLAKE2b under the cipher's binding key (derived from this
home's data key and the circle id, with or without a passphrase): a
snapshot, log or head from another circle or another device is refused.

Rules:
- A local edit costs one record append + fsync (plus a 48-byte unsynced
  rewrite of `head`), never a whole-file rewrite.
- Compaction writes `snapshot.tmp` (new generation G2, previous G1), fsyncs,
  renames, fsyncs the directory, then does the same for a fresh `log` with
  G2, then `head`. A crash between the steps leaves states that load:
  snapshot G2 with log G1 (Automerge ignores changes it already has), or
  log G2 with head G1.
- An incomplete last record *after* the end `head` acknowledged is a crash
  mid-append: ignored on load, cut by the next append (it was never reported
  saved). Anything else that is wrong is *damage*: a bad record before the
  end, a log shorter than `head` says (truncation, a zero-filled or flipped
  tail), a snapshot or log whose generation does not fit the other (one of
  them rolled back), a missing or unreadable `head`. Damage is loaded as the
  good prefix, reported in words on every command (`damage`), and no append
  is accepted until `circle doctor` repairs it (the damaged bytes are saved
  aside, never dropped).
- Rolling back *all* of snapshot, log and head together to an older copy
  cannot be detected on this device alone (docs/storage.md).
- Followers (other processes on the same home) poll: same inode and a larger
  size means new records from their last offset; a new inode or generation
  means a compaction happened and they reload both files.
- Nothing here blocks on a FIFO or a device in place of a file: files are
  opened non-blocking and must be regular files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
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

from circle.errors import CompactionFailed, StoreCorrupt, StoreError, StoreLocked

SNAP_MAGIC = b"CIRCSNP2"
LOG_MAGIC = b"CIRCLOG2"
HEAD_MAGIC = b"CIRCHED1"
_GEN_LEN = 16
_LOG_HEADER = len(LOG_MAGIC) + _GEN_LEN + 16
_SNAP_HEAD = len(SNAP_MAGIC) + 1 + 2 * _GEN_LEN + 16 + 32
_HEAD_LEN = len(HEAD_MAGIC) + _GEN_LEN + 8 + 16
_REC_HEAD = struct.Struct(">I4s16s")  # length, check of the length, digest of payload
MAX_RECORD = 64 * 1024 * 1024
LOCK_TIMEOUT_S = 15.0


class Cipher(Protocol):
    encrypts: bool
    binding_key: bytes

    def seal(self, plaintext: bytes) -> bytes: ...
    def open(self, ciphertext: bytes) -> bytes: ...


class PlainCipher:
    """No encryption (no passphrase), but files are still bound to this home and circle."""

    encrypts = False

    def __init__(self, binding_key: bytes) -> None:
        self.binding_key = binding_key

    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, ciphertext: bytes) -> bytes:
        return ciphertext


class SecretBoxCipher:
    """XSalsa20-Poly1305 with a random nonce per message."""

    encrypts = True

    def __init__(self, key: bytes, binding_key: bytes | None = None) -> None:
        self._box = nacl.secret.SecretBox(key)
        self.binding_key = binding_key if binding_key is not None else _keyed(key, b"binding")

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._box.encrypt(plaintext))

    def open(self, ciphertext: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(ciphertext))
        except nacl.exceptions.CryptoError:
            raise StoreCorrupt("a stored file failed decryption: it is damaged or from another device") from None


_UNBOUND = PlainCipher(b"\0" * 32)  # stores opened without a home (tests, tools): no binding


def _digest(data: bytes, size: int) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, encoder=nacl.encoding.RawEncoder)


def _keyed(key: bytes, data: bytes, size: int = 16) -> bytes:
    return nacl.hash.blake2b(data, digest_size=size, key=key[:64], encoder=nacl.encoding.RawEncoder)


def os_error_sentence(exc: OSError, path: Path | str | None = None) -> str:
    """One sentence for a filesystem failure (used here and at the CLI edge)."""
    where = path if path is not None else (exc.filename or "a file")
    return {
        errno.ENOSPC: f"the disk holding {where} is full",
        errno.EDQUOT: f"the disk quota for {where} is used up",
        errno.EROFS: f"{where} is on a read-only file system",
        errno.EACCES: f"no permission to use {where}",
        errno.EPERM: f"no permission to use {where}",
        errno.EIO: f"the disk reported an input/output error on {where} (failing disk or removed drive?)",
        errno.ENOLCK: f"the file system holding {where} does not support file locks (NFS?); "
                      "use a local directory for --home",
        errno.EISDIR: f"{where} is a directory where circle expects a file",
        errno.ENOTDIR: f"a part of {where} is not a directory",
        errno.ENOENT: f"{where} does not exist",
        errno.ELOOP: f"{where} is a symbolic link loop",
        errno.ENXIO: f"{where} is not a regular file",
        errno.ENAMETOOLONG: f"the path {where} is too long",
    }.get(exc.errno or 0, f"could not use {where}: {exc.strerror or exc}")


def read_regular(path: Path, what: str | None = None) -> bytes:
    """A whole regular file, never blocking on a FIFO or device in its place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StoreError(os_error_sentence(exc, path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreCorrupt(f"{path} is not a regular file ({what or 'a circle file'} expected there)")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise StoreError(os_error_sentence(exc, path)) from None
    finally:
        os.close(fd)


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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK, mode)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.ENXIO, "not a regular file", str(tmp))
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
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise _storage_error(exc, path) from None


def _storage_error(exc: OSError, path: Path) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"the disk is full; nothing was changed ({path.parent})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return StoreError(f"no permission to write {path}; nothing was changed")
    return StoreError(f"{os_error_sentence(exc, path)}; nothing was changed")


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
class Damage:
    """Something wrong with the stored files that is not a crash mid-append."""

    kind: str  # "middle" | "tail" | "rollback" | "head"
    message: str
    good_end: int  # log offset after the last good record
    log_size: int


@dataclass
class LoadResult:
    snapshot: bytes
    changes: list[bytes]
    damaged_tail: bool  # an unacknowledged, incomplete last record was ignored
    damage: Damage | None = None


@dataclass
class RepairReport:
    actions: list[str]
    saved_aside: list[Path]


@dataclass
class _Snap:
    payload: bytes
    generation: bytes
    previous: bytes


@dataclass
class _Head:
    generation: bytes
    end: int


class DocStore:
    def __init__(self, path: Path, cipher: Cipher | None = None) -> None:
        self.path = path
        self.cipher: Cipher = cipher if cipher is not None else _UNBOUND
        self._snapshot = path / "snapshot"
        self._log = path / "log"
        self._head = path / "head"
        self._lockfile = path / "lock"
        self._follow_inode: int | None = None
        self._follow_gen: bytes | None = None
        self._follow_offset = 0
        self.damaged_tail = False
        self.damage: Damage | None = None

    # --- locking ---------------------------------------------------------

    @contextmanager
    def locked(self, exclusive: bool = True) -> Iterator[None]:
        flags = os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self._lockfile, os.O_RDWR | os.O_CREAT | flags, 0o600)
        except OSError as exc:
            # A read-only home (a mounted backup, a full-permission problem)
            # can still be read: a shared lock works on a read-only descriptor.
            if exclusive or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreError(os_error_sentence(exc, self._lockfile)) from None
            try:
                fd = os.open(self._lockfile, os.O_RDONLY | flags)
            except FileNotFoundError:
                fd = os.open(self.path, os.O_RDONLY | flags)  # lock the directory itself
            except OSError as exc2:
                raise StoreError(os_error_sentence(exc2, self._lockfile)) from None
        try:
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise StoreCorrupt(f"{self._lockfile} is not a regular file")
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
                except OSError as exc:
                    raise StoreError(os_error_sentence(exc, self._lockfile)) from None
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
            generation = os.urandom(_GEN_LEN)
            self._write_log(generation)
            self._write_snapshot(snapshot, generation, bytes(_GEN_LEN))
            self._write_head(generation, _LOG_HEADER, sync=True)
        self._follow_offset = _LOG_HEADER
        self._remember_log()

    def load(self) -> LoadResult:
        if not self._snapshot.exists():
            raise StoreError(f"no circle data at {self.path}")
        with self.locked(exclusive=False):
            snap = self._read_snapshot()
            data, generation, inode = self._read_log_bytes()
            head = self._read_head()
        payloads, consumed, state = scan_records(data)
        end = _LOG_HEADER + consumed
        self.damage = self._judge(snap, generation, head, end, state, _LOG_HEADER + len(data))
        self._follow_inode, self._follow_gen, self._follow_offset = inode, generation, end
        self.damaged_tail = state == "torn" and self.damage is None
        changes = [self.cipher.open(p) for p in payloads]
        return LoadResult(snap.payload, changes, self.damaged_tail, self.damage)

    def _judge(self, snap: _Snap, generation: bytes, head: _Head | str, end: int, state: str,
               size: int) -> Damage | None:
        """Damage (never a crash mid-append) found by comparing the three files."""
        def damage(kind: str, message: str) -> Damage:
            return Damage(kind, message, end, size)

        if state == "corrupt":
            return damage("middle", f"the change log is damaged at byte {end}: the {size - end} bytes after it "
                          "cannot be read")
        if snap.generation != generation and snap.previous != generation:
            return damage("rollback", "the snapshot and the change log do not belong together: one of them was "
                          "rolled back or replaced by an older copy")
        if isinstance(head, str):
            return damage("head", head)
        if head.generation == generation:
            if end < head.end:
                lost = head.end - end
                how = "is shorter than what was saved (truncated)" if size < head.end else \
                    "ends in damaged records"
                return damage("tail", f"the change log {how}: {lost} bytes of saved changes are missing or "
                              "unreadable")
            return None
        if head.generation == snap.previous and snap.generation == generation:
            return None  # a compaction finished its log but not its head
        return damage("rollback", "the change log is not the one this store last saved: it was rolled back "
                      "or replaced by an older copy")

    def _read_snapshot(self) -> _Snap:
        try:
            raw = read_regular(self._snapshot, "the snapshot")
        except FileNotFoundError:
            raise StoreError(f"no circle data at {self.path}") from None
        if len(raw) < _SNAP_HEAD or not raw.startswith(SNAP_MAGIC):
            raise StoreCorrupt(f"{self._snapshot} is not a circle snapshot (wrong header or truncated)")
        pos = len(SNAP_MAGIC)
        flags = raw[pos : pos + 1]
        generation = raw[pos + 1 : pos + 1 + _GEN_LEN]
        previous = raw[pos + 1 + _GEN_LEN : pos + 1 + 2 * _GEN_LEN]
        tag = raw[pos + 1 + 2 * _GEN_LEN : pos + 1 + 2 * _GEN_LEN + 16]
        digest, payload = raw[_SNAP_HEAD - 32 : _SNAP_HEAD], raw[_SNAP_HEAD:]
        if _digest(payload, 32) != digest:
            raise StoreCorrupt(f"{self._snapshot} is damaged (checksum mismatch)")
        if tag != self._tag(b"snapshot", flags, generation, previous, digest):
            raise StoreCorrupt(f"{self._snapshot} belongs to another circle or another device; refusing it")
        if bool(flags[0] & 1) != self.cipher.encrypts:
            raise StoreCorrupt(f"{self._snapshot} encryption does not match this device's settings")
        return _Snap(self.cipher.open(payload), generation, previous)

    def _tag(self, *parts: bytes) -> bytes:
        return _keyed(self.cipher.binding_key, b"".join(parts))

    def _write_snapshot(self, snapshot: bytes, generation: bytes, previous: bytes) -> None:
        payload = self.cipher.seal(snapshot)
        flags = bytes([1 if self.cipher.encrypts else 0])
        digest = _digest(payload, 32)
        tag = self._tag(b"snapshot", flags, generation, previous, digest)
        atomic_write(self._snapshot, SNAP_MAGIC + flags + generation + previous + tag + digest + payload)

    def _write_log(self, generation: bytes) -> None:
        atomic_write(self._log, LOG_MAGIC + generation + self._tag(b"log", generation))

    def _head_bytes(self, generation: bytes, end: int) -> bytes:
        body = generation + end.to_bytes(8, "big")
        return HEAD_MAGIC + body + self._tag(b"head", body)

    def _write_head(self, generation: bytes, end: int, sync: bool) -> None:
        """Record where the acknowledged log ends. In place and unsynced on appends: the
        log was fsynced first, so a lost head write only makes the check weaker, never wrong."""
        data = self._head_bytes(generation, end)
        if sync:
            atomic_write(self._head, data)
            return
        try:
            fd = os.open(self._head, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.pwrite(fd, data, 0)
            finally:
                os.close(fd)
        except OSError:
            pass  # the edit is saved; a stale head only weakens truncation checks

    def _read_head(self) -> _Head | str:
        try:
            raw = read_regular(self._head, "the store head")
        except FileNotFoundError:
            return "the store's head record is missing, so a truncated or rolled-back log cannot be detected"
        body = raw[len(HEAD_MAGIC) : len(HEAD_MAGIC) + _GEN_LEN + 8]
        if len(raw) != _HEAD_LEN or not raw.startswith(HEAD_MAGIC) or raw[-16:] != self._tag(b"head", body):
            return "the store's head record is damaged or from another circle"
        return _Head(body[:_GEN_LEN], int.from_bytes(body[_GEN_LEN:], "big"))

    def _remember_log(self) -> None:
        _, self._follow_gen, self._follow_inode = self._read_log_bytes(_LOG_HEADER)

    def _read_log_bytes(self, offset: int | None = None) -> tuple[bytes, bytes, int]:
        """(records from `offset` or the start, generation, inode); checks the header."""
        try:
            fd = os.open(self._log, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreCorrupt(f"{self._log} is missing") from None
        except OSError as exc:
            raise StoreError(os_error_sentence(exc, self._log)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreCorrupt(f"{self._log} is not a regular file")
            with os.fdopen(os.dup(fd), "rb") as fh:
                header = fh.read(_LOG_HEADER)
                generation = header[len(LOG_MAGIC) : len(LOG_MAGIC) + _GEN_LEN]
                if len(header) < _LOG_HEADER or not header.startswith(LOG_MAGIC):
                    raise StoreCorrupt(f"{self._log} is not a circle log (wrong header)")
                if header[-16:] != self._tag(b"log", generation):
                    raise StoreCorrupt(f"{self._log} belongs to another circle or another device; refusing it")
                fh.seek(offset if offset is not None else _LOG_HEADER)
                data = fh.read()
        except OSError as exc:
            raise StoreError(os_error_sentence(exc, self._log)) from None
        finally:
            os.close(fd)
        return data, generation, st.st_ino

    def _read_log_from(self, offset: int | None) -> tuple[list[bytes], int, bool]:
        """Read records from `offset` (None = from the start)."""
        data, generation, inode = self._read_log_bytes(offset)
        if offset is None:
            self._follow_inode, self._follow_gen = inode, generation
            offset = _LOG_HEADER
        payloads, consumed, state = scan_records(data)
        if state == "corrupt":
            raise StoreCorrupt(
                f"{self._log} is damaged at byte {offset + consumed}; the data after it cannot be trusted "
                "(run `circle doctor`)"
            )
        changes = [self.cipher.open(p) for p in payloads]
        return changes, offset + consumed, state == "torn"

    # --- append / follow -------------------------------------------------

    def refuse_if_damaged(self) -> None:
        if self.damage is not None:
            raise StoreCorrupt(f"{self.damage.message}; nothing was saved. Run `circle doctor` to set the damaged "
                               "part aside and continue")

    def append(self, changes: list[bytes], durable: bool = True) -> None:
        """Durably append changes (one fsync for the batch). `durable=False`
        skips the fsync, for data that can be rebuilt (this device's change
        proofs) or fetched again: a crash may lose a tail, never corrupt.
        Only durable appends move `head` (a lost unsynced tail is a crash, not damage)."""
        if not changes:
            return
        self.refuse_if_damaged()
        blob = bytearray()
        for change in changes:
            payload = self.cipher.seal(change)
            blob += _REC_HEAD.pack(len(payload), _length_check(len(payload)), _digest(payload, 16)) + payload
        with self.locked():
            try:
                fd = os.open(self._log, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise _storage_error(exc, self._log) from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise StoreCorrupt(f"{self._log} is not a regular file; nothing was saved")
                end = os.lseek(fd, 0, os.SEEK_END)
                good_end = self._good_end(fd, end)
                caught_up = self._same_log() and self._follow_offset == good_end
                try:
                    if good_end != end:
                        os.ftruncate(fd, good_end)  # cut an unacknowledged torn record (crash mid-append)
                    os.lseek(fd, good_end, os.SEEK_SET)
                    view = memoryview(bytes(blob))
                    while view:
                        view = view[os.write(fd, view) :]
                    if durable:
                        os.fsync(fd)
                except OSError as exc:
                    try:
                        os.ftruncate(fd, good_end)  # never leave half a record (e.g. disk full)
                    except OSError:
                        pass
                    raise _storage_error(exc, self._log) from None
                if durable and self._follow_gen is not None:
                    self._write_head(self._current_gen(fd), good_end + len(blob), sync=False)
                if caught_up:  # our own records need not be read back by poll()
                    self._follow_offset = good_end + len(blob)
            finally:
                os.close(fd)

    def position(self) -> str | None:
        """Where this process stands in the store: the log file, its
        generation and the offset up to which this process read or wrote every
        record itself (None before a load). Another process's append moves the
        log's end past it; a compaction replaces the log."""
        if self._follow_inode is None or self._follow_gen is None:
            return None
        return f"{self._follow_inode}:{self._follow_gen.hex()}:{self._follow_offset}"

    def _current_gen(self, fd: int) -> bytes:
        return os.pread(fd, _GEN_LEN, len(LOG_MAGIC))

    def _good_end(self, fd: int, end: int) -> int:
        """Offset after the last whole record; cheap when nothing is torn.

        Refuses (and remembers the damage) when the log holds less than the
        head says was saved: appending would bury the evidence."""
        if not self.damaged_tail and self._same_log() and self._follow_offset == end:
            return end
        with open(os.dup(fd), "rb") as fh:
            fh.seek(_LOG_HEADER)
            data = fh.read()
        _, consumed, state = scan_records(data)
        good_end = _LOG_HEADER + consumed
        head = self._read_head()
        if state == "corrupt":
            self.damage = Damage("middle", f"the change log is damaged at byte {good_end}", good_end, end)
        elif isinstance(head, _Head) and head.generation == self._current_gen(fd) and head.end > good_end:
            self.damage = Damage("tail", f"the change log lost {head.end - good_end} bytes of saved changes",
                                 good_end, end)
        self.refuse_if_damaged()
        self.damaged_tail = False
        return good_end

    def _same_log(self) -> bool:
        try:
            return os.stat(self._log).st_ino == self._follow_inode
        except OSError:
            return False

    def poll(self) -> tuple[list[bytes], bool]:
        """New changes written by any process since our last read.

        Returns (changes, reloaded): when a compaction replaced the files,
        `reloaded` is True and `changes` starts with the new snapshot's
        document followed by the new log's changes (the caller merges the
        snapshot, then applies the rest). While the store is damaged nothing
        is followed (the damaged bytes would be read as new records): the
        good prefix stays what was loaded until `circle doctor` repairs it."""
        if self.damage is not None:
            return [], False
        with self.locked(exclusive=False):
            try:
                st = os.stat(self._log)
            except FileNotFoundError:
                return [], False
            except OSError as exc:
                raise StoreError(os_error_sentence(exc, self._log)) from None
            if st.st_ino == self._follow_inode:
                if st.st_size == self._follow_offset:
                    return [], False
                changes, end, damaged = self._read_log_from(self._follow_offset)
                self._follow_offset, self.damaged_tail = end, damaged
                return changes, False
            snapshot = self._read_snapshot().payload
            changes, end, damaged = self._read_log_from(None)
            self._follow_offset, self.damaged_tail = end, damaged
            return [snapshot, *changes], True

    # --- compaction ------------------------------------------------------

    def log_size(self) -> int:
        try:
            return os.stat(self._log).st_size - _LOG_HEADER
        except OSError:
            return 0

    def snapshot_size(self) -> int:
        try:
            return os.stat(self._snapshot).st_size
        except OSError:
            return 0

    @contextmanager
    def compacting(self) -> Iterator[CompactionTicket]:
        """Hold the lock while the caller catches up and saves.

        Usage: `with store.compacting() as ticket: apply(ticket.pending);
        ticket.commit(doc.save())`."""
        self.refuse_if_damaged()
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
        snapshot = self._read_snapshot().payload
        changes, end, _ = self._read_log_from(None)
        self._follow_offset = end
        return [snapshot, *changes], True

    def _replace(self, snapshot: bytes) -> None:
        """Every change is already in the log: a failure here loses nothing (CompactionFailed)."""
        previous = self._follow_gen or bytes(_GEN_LEN)
        generation = os.urandom(_GEN_LEN)
        try:
            self._write_snapshot(snapshot, generation, previous)
            self._write_log(generation)
            self._write_head(generation, _LOG_HEADER, sync=True)
        except StoreError as exc:
            reason = str(exc).replace("; nothing was changed", "")
            raise CompactionFailed(f"your changes are saved, but tidying the store failed ({reason}); "
                                   "the store is intact and will be tidied later") from None
        self._remember_log()
        self._follow_offset = _LOG_HEADER
        self.damaged_tail = False

    # --- repair (circle doctor) ---------------------------------------------

    def repair(self, clock: float | None = None) -> RepairReport:
        """Keep the good prefix, save every damaged byte aside, make the files agree again.

        Never deletes what it cannot read: the bytes after the good prefix go to
        `damaged-<time>-log.bin` (fsynced) before the log is cut."""
        report = RepairReport([], [])
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock if clock is not None else time.time()))
        with self.locked():
            snap = self._read_snapshot()
            try:
                data, generation, _ = self._read_log_bytes()
            except StoreCorrupt as exc:
                # Not this store's log at all (another circle's, or its header is destroyed):
                # move it aside whole and start a fresh log after the snapshot.
                aside = self.path / f"damaged-{stamp}-log.bin"
                os.replace(self._log, aside)
                report.saved_aside.append(aside)
                self._write_log(snap.generation)
                data, generation, _ = self._read_log_bytes()
                report.actions.append(f"moved the unusable change log aside to {aside.name} ({exc}) and "
                                      "started a fresh one")
            _, consumed, state = scan_records(data)
            good_end = _LOG_HEADER + consumed
            rest = data[consumed:]
            if rest:
                aside = self.path / f"damaged-{stamp}-log.bin"
                atomic_write(aside, rest)
                report.saved_aside.append(aside)
                fd = os.open(self._log, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, good_end)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                report.actions.append(f"kept the change log's first {good_end - _LOG_HEADER} bytes of good "
                                      f"records; set {len(rest)} bytes aside in {aside.name}")
            if snap.generation != generation:
                # Re-label the snapshot as belonging to this log: its content is unchanged.
                self._write_snapshot(snap.payload, generation, generation)
                report.actions.append("re-linked the snapshot and the change log (one of them had been "
                                      "rolled back; nothing in either was dropped)")
            head = self._read_head()
            if not isinstance(head, _Head) or head.generation != generation or head.end != good_end:
                self._write_head(generation, good_end, sync=True)
                report.actions.append("rewrote the store's head record")
        self.damage = None
        self.damaged_tail = False
        return report


class CompactionTicket:
    def __init__(self, store: DocStore, pending: list[bytes], reloaded: bool) -> None:
        self._store = store
        self.pending = pending
        self.reloaded = reloaded

    def commit(self, snapshot: bytes) -> None:
        self._store._replace(snapshot)
