"""Whole-document snapshots as envelopes, split into parts when too big (issue 16 case 3).

Sending: `seal_document` seals a packed snapshot as one snapshot envelope
when it fits, else as a set of part envelopes (net/parts.py) whose meta is
the document heads the snapshot covers.

Receiving through relays: `RelayParts` keeps the parts of sets that are not
complete yet, in memory and on disk (`<circle>/parts/<envelope id>`, the
envelope bytes exactly as the relay served them: ciphertext under the circle
key, nothing more readable than the relay's copy). Rules:

- A relay cursor moves past a part once it is read, and its id joins the
  seen set: a part only in memory would be lost to the next process, so
  every part is written (fsynced) before it counts as received.
- A set is used only once complete and its digest matches; then its files
  are deleted. Nothing of an incomplete set ever reaches the document.
- A set whose heads the document already holds is *superseded* (an old
  snapshot replayed, or one whose other parts expired at the relay): it is
  forgotten, not waited for. Any other incomplete set is reported
  (`waiting()`), so `circle sync` never says "in sync" while one is open.
- Stored parts older than the relays' retention are dropped: the rest of
  their set is gone from every relay too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Iterator

from circle.crdt.am import AmDoc
from circle.errors import CircleError, PartRejected, RemoteProtocolError
from circle.net import parts
from circle.net.envelope import Kind, OpenedEnvelope, open_envelope, seal_snapshot_parts
from circle.net.keys import EpochKey, member_id_for
from circle.node.service import CircleService

log = logging.getLogger("circle.node.snapshots")

_MAX_HEADS = 64
#: Parts kept on disk at most this long (the relays' retention).
PARTS_KEEP_S = 30 * 86400.0


def heads_meta(heads: list[bytes]) -> bytes:
    """The heads a snapshot covers, as part meta (empty if there are too many to list)."""
    if len(heads) > _MAX_HEADS or any(len(h) != 32 for h in heads):
        return b""
    return struct.pack(">H", len(heads)) + b"".join(sorted(heads))


def meta_heads(meta: bytes) -> list[bytes] | None:
    if len(meta) < 2:
        return None
    (n,) = struct.unpack_from(">H", meta)
    if n == 0 or len(meta) != 2 + 32 * n:
        return None
    return [meta[2 + 32 * i : 34 + 32 * i] for i in range(n)]


def covered(doc: AmDoc, meta: bytes, known: set[bytes] | None = None) -> bool:
    """Does `doc` already hold every change the snapshot with this meta holds?
    (`known`: the hashes of every change in `doc`, if the caller has them.)"""
    heads = meta_heads(meta)
    if heads is None:
        return False
    if known is None:
        known = {m.hash for m in doc.change_metas([])}
    return all(h in known for h in heads)


def seal_document(svc: CircleService, epoch: int, key: EpochKey, packed: bytes,
                  heads: list[bytes]) -> Iterator[bytes]:
    """`packed` (a `pack_snapshot`) as one envelope or a set of parts, one at a time."""
    return seal_snapshot_parts(svc.home.identity, epoch, key, packed, heads_meta(heads))


class RelayParts:
    """Parts of split snapshots received from relays, kept until their set is whole."""

    def __init__(self, svc: CircleService) -> None:
        self.svc = svc
        self.dir = svc.home.circle_dir(svc.config.circle_id) / "parts"
        self.reassembler = parts.Reassembler()
        self._sizes: dict[str, int] = {}
        self.complete: list[OpenedEnvelope] = []  # sets completed while loading (a crash before use)
        self._load()

    def _open(self, data: bytes) -> OpenedEnvelope:
        return open_envelope(data, lambda: self.svc.config.epoch_keys, self.svc.is_active_member)

    def _load(self) -> None:
        try:
            names = sorted(os.listdir(self.dir))
        except OSError:
            return
        now = time.time()
        for name in names:
            path = self.dir / name
            try:
                if name.endswith(".tmp") or now - path.stat().st_mtime > PARTS_KEEP_S:
                    path.unlink()
                    continue
                data = path.read_bytes()
                done = self._take(self._open(data), name, len(data))
                if done is not None:
                    self.complete.append(done)
            except (OSError, CircleError) as exc:
                log.warning("dropping a stored snapshot part %s: %s", name, exc)
                with contextlib.suppress(OSError):
                    path.unlink()

    def _take(self, opened: OpenedEnvelope, name: str, size: int) -> OpenedEnvelope | None:
        part = parts.parse(opened.payloads[0])
        self._sizes[name] = size
        pset, whole = self.reassembler.add(opened.author, part, tag=name)
        if pset is None:  # a late copy of a part of a snapshot already rebuilt
            self._delete([name])
            return None
        if whole is None:
            return None
        done = OpenedEnvelope(opened.envelope_id, Kind.SNAPSHOT, opened.epoch, opened.author, (whole,))
        self._delete([str(t) for t in pset.tags.values()])
        return done

    def _delete(self, names: list[str]) -> None:
        for name in names:
            self._sizes.pop(name, None)
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    def _store(self, data: bytes, name: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / name)
        with contextlib.suppress(OSError):
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def add(self, opened: OpenedEnvelope, data: bytes) -> OpenedEnvelope | None:
        """A part envelope (opened and verified): stored, then the whole
        snapshot if its set is now complete. Raises PartRejected (the set's
        parts are dropped) or StoreError-like OSError if it cannot be kept."""
        name = opened.envelope_id.hex()
        try:
            self._store(data, name)
        except OSError as exc:
            raise RemoteProtocolError(f"cannot keep a part of a snapshot: {exc.strerror}") from None
        earlier = self._names_of(opened.author, opened.payloads[0])  # the set is forgotten if refused
        try:
            return self._take(opened, name, len(data))
        except PartRejected:
            self._delete([name, *earlier])
            raise

    def _names_of(self, author: bytes, payload: bytes) -> list[str]:
        try:
            set_id = parts.parse(payload).set_id
        except PartRejected:
            return []
        for s in self.reassembler.pending():
            if s.author == author and s.set_id == set_id:
                return [str(t) for t in s.tags.values()]
        return []

    def waiting(self, doc: AmDoc) -> str | None:
        """Forget sets the document no longer needs; say what the others still wait for."""
        open_sets: list[parts.PendingSet] = []
        pending = self.reassembler.pending()
        known = {m.hash for m in doc.change_metas([])} if pending else set()
        for s in pending:
            if covered(doc, s.meta, known):
                self.reassembler.forget(s.author, s.set_id)
                self._delete([str(t) for t in s.tags.values()])
            else:
                open_sets.append(s)
        if not open_sets:
            return None
        s = open_sets[0]
        more = f" (and {len(open_sets) - 1} more snapshot(s))" if len(open_sets) > 1 else ""
        return (f"waiting for the rest of a snapshot from {member_id_for(s.author)}: {s.describe()} "
                f"received{more}; nothing of it is applied until every part is here")


__all__ = ["RelayParts", "covered", "heads_meta", "meta_heads", "seal_document"]
