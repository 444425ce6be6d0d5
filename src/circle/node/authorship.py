"""Authorship you can check: every change is signed by the device that wrote it,
and nothing enters the document before its signatures are checked.

Rules:
- A device writes with an Automerge actor whose first 16 bytes are
  `actor_for(circle, device key)` (signed statements bind device keys to
  members); the last 8 bytes are random per process, so two processes of one
  device never reuse an (actor, seq) pair.
- After every local commit the device signs each new change of its own:
  `proof = change hash (32) || Ed25519(device, "circle-change-v1" || circle || hash) (64)`.
  Proofs live beside the document (`sigs/`, the same snapshot-plus-log store,
  encrypted at rest like the document) and travel with changes on every path:
  live sessions (a Proofs message before sync data), relay envelopes and
  bundles (a proof block next to the changes or the snapshot).
- Verification (`Gate.stage`): incoming data is applied to a *fork*; the
  changes it adds are grouped by actor. An actor must belong to a device the
  statements know (so the statements themselves arrive first: a change that
  adds statements is checked against the statements it adds — the founding
  one anchors the chain). For each actor, the highest-seq new change with a
  valid proof covers it and every lower-seq change of that actor (a change's
  hash commits to its deps, so the signed change commits to the whole chain
  before it; Automerge refuses a second change with the same actor and seq).
  Anything not covered fails the whole batch: the fork is dropped and the
  document is unchanged. Only then does the document adopt the fork.
- Whether the writer was still a member is not decided here (a straggler may
  hold edits from before it heard of a removal): the views ignore values a
  removed device wrote after the removal's pin (net/membership_rules rule 6),
  and the transports refuse removed devices outright.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from circle.crdt.am import AmDoc, ChangeMeta
from circle.crdt.gatherings import extension_hash
from circle.crdt.store import Cipher, DocStore
from circle.errors import MalformedDocument
from circle.net.keys import DeviceIdentity, verify_signature
from circle.net.membership_rules import Membership, actor_for

PROOF_LEN = 96
MAX_PENDING_PROOFS = 500_000
PROOF_BLOCK_MAGIC = b"CPRF"
_DOMAIN = b"circle-change-v1"


class UnverifiedChanges(MalformedDocument):
    """A peer, relay or file offered changes that no member's device signed."""


def is_fixed_change(change_hash: bytes) -> bool:
    """Changes with fixed bytes that every device writes alike (creating the
    collections a later version added, e.g. community defence): identical on
    every device, so they need no signature; anything else does. Matched by
    hash, so only those exact bytes pass."""
    from circle.crdt.defence import is_collections_change

    return is_collections_change(change_hash) or change_hash == extension_hash()


def process_actor(circle: str, device: bytes) -> bytes:
    return actor_for(circle, device) + os.urandom(8)


def _message(circle: str, change_hash: bytes) -> bytes:
    return _DOMAIN + circle.encode() + change_hash


def encode_proofs(proofs: Iterable[bytes]) -> bytes:
    return PROOF_BLOCK_MAGIC + b"".join(p for p in proofs if len(p) == PROOF_LEN)


def decode_proofs(block: bytes) -> list[bytes]:
    if not block.startswith(PROOF_BLOCK_MAGIC) or (len(block) - 4) % PROOF_LEN:
        raise MalformedDocument("a proof block has the wrong shape")
    body = block[4:]
    return [body[i : i + PROOF_LEN] for i in range(0, len(body), PROOF_LEN)]


SNAPSHOT_MAGIC = b"CSNP"


def pack_snapshot(saved: bytes, proofs: Iterable[bytes]) -> bytes:
    """A saved document and the proofs that cover it, as one payload."""
    return SNAPSHOT_MAGIC + len(saved).to_bytes(4, "big") + saved + encode_proofs(proofs)


def unpack_snapshot(data: bytes) -> tuple[bytes, list[bytes]]:
    if not data.startswith(SNAPSHOT_MAGIC) or len(data) < 8:
        raise MalformedDocument("a snapshot without signatures (an older circle, or not a circle snapshot)")
    n = int.from_bytes(data[4:8], "big")
    if 8 + n > len(data):
        raise MalformedDocument("a snapshot is truncated")
    return data[8 : 8 + n], decode_proofs(data[8 + n :])


@dataclass
class Stats:
    signed: int = 0
    verified: int = 0
    signatures_checked: int = 0
    refused: int = 0
    last_refusal: str = ""


@dataclass
class Gate:
    """Signs this device's changes and checks everyone else's."""

    circle: str
    identity: DeviceIdentity
    store: DocStore | None
    membership: Callable[[AmDoc], Membership]
    proofs: dict[bytes, bytes] = field(default_factory=dict)  # change hash -> signature (verified)
    pending: dict[bytes, bytes] = field(default_factory=dict)  # offered, not yet checked
    stats: Stats = field(default_factory=Stats)

    @classmethod
    def open(cls, circle: str, identity: DeviceIdentity, path: Path, cipher: Cipher | None,
             membership: Callable[[AmDoc], Membership]) -> Gate:
        store = DocStore(path, cipher)
        gate = cls(circle, identity, store, membership)
        if store.exists():
            loaded = store.load()
            gate._take(decode_proofs(loaded.snapshot) if loaded.snapshot else [])
            for record in loaded.changes:
                gate._take(decode_proofs(record))
        else:
            store.create(encode_proofs([]))
        return gate

    def _take(self, proofs: Iterable[bytes]) -> list[bytes]:
        new = []
        for p in proofs:
            if len(p) == PROOF_LEN and p[:32] not in self.proofs:
                self.proofs[p[:32]] = p[32:]
                new.append(p)
        return new

    def offer(self, proofs: Iterable[bytes]) -> None:
        """Proofs that arrived ahead of their changes (checked when those come)."""
        for p in proofs:
            if len(p) == PROOF_LEN and p[:32] not in self.proofs:
                if len(self.pending) >= MAX_PENDING_PROOFS:
                    self.pending.pop(next(iter(self.pending)))
                self.pending[p[:32]] = p[32:]

    def keep(self, proofs: Iterable[bytes]) -> None:
        """Remember proofs that arrived with data already verified (a join)."""
        self._persist(self._take(proofs))

    def _persist(self, proofs: list[bytes]) -> None:
        if proofs and self.store is not None:
            # No fsync: our own proofs are re-signed at open if a crash lost
            # them (`resign_missing`); others' can be fetched again.
            self.store.append([encode_proofs(proofs)], durable=False)

    def refresh(self) -> None:
        """Pick up proofs another process of this device wrote."""
        if self.store is None:
            return
        items, reloaded = self.store.poll()
        for record in items:
            try:
                self._take(decode_proofs(record))
            except MalformedDocument:
                continue

    def compact(self) -> None:
        if self.store is None:
            return
        with self.store.compacting() as ticket:
            for record in ticket.pending:
                self._take(decode_proofs(record))
            ticket.commit(encode_proofs(h + s for h, s in self.proofs.items()))

    # --- signing -----------------------------------------------------------

    def sign_new(self, doc: AmDoc, since: list[bytes]) -> int:
        """Sign our own changes after `since` (call after every local commit)."""
        prefix = actor_for(self.circle, self.identity.verify_key)
        out = []
        for meta in doc.change_metas(since):
            if meta.actor[:16] == prefix and meta.hash not in self.proofs:
                sig = self.identity.sign(_message(self.circle, meta.hash))
                self.proofs[meta.hash] = sig
                out.append(meta.hash + sig)
        self._persist(out)
        self.stats.signed += len(out)
        return len(out)

    def resign_missing(self, doc: AmDoc) -> int:
        """Sign again any change of ours whose proof a crash lost."""
        return self.sign_new(doc, [])

    def proofs_for(self, metas: Iterable[ChangeMeta]) -> list[bytes]:
        """The proofs we hold for these changes (what a receiver needs)."""
        return [m.hash + self.proofs[m.hash] for m in metas if m.hash in self.proofs]

    def proofs_since(self, doc: AmDoc, heads: list[bytes]) -> list[bytes]:
        try:
            metas = doc.change_metas(heads)
        except MalformedDocument:
            metas = doc.change_metas([])
        return self.proofs_for(metas)

    def head_proofs(self, doc: AmDoc) -> list[bytes]:
        """One proof per actor: its highest change (enough for a whole snapshot)."""
        top: dict[bytes, ChangeMeta] = {}
        for m in doc.change_metas([]):
            if m.hash in self.proofs and (m.actor not in top or m.seq > top[m.actor].seq):
                top[m.actor] = m
        return self.proofs_for(top.values())

    # --- verification --------------------------------------------------------

    def stage(self, doc: AmDoc, apply: Callable[[AmDoc], None], proofs: Iterable[bytes] = ()) -> bool:
        """Apply incoming data to a fork of `doc`, check every change it adds
        to the history, and only then let `doc` adopt the fork. Raises
        UnverifiedChanges (the document is untouched) when anything is not
        signed by a known device. Returns whether the history changed.

        Changes whose deps have not arrived wait in Automerge's queue (inside
        the adopted fork) and are checked when they join the history; their
        proofs wait in `pending` until then."""
        self.offer(proofs)
        before = doc.heads()
        fork = doc.fork()
        apply(fork)
        after = fork.heads()
        if set(after) == set(before):
            doc.adopt(fork)  # keeps queued changes, adds nothing to the history
            return False
        new = fork.change_metas(before)
        self.check(fork, new)
        doc.adopt(fork)
        members = self.membership(fork)
        self._keep_valid([(m.hash, m.actor) for m in new], members)
        return True

    def _keep_valid(self, changes: list[tuple[bytes, bytes]], members: Membership) -> None:
        """Keep (and later forward) only proofs that verify on their own: a
        change covered by a later one may have come with a junk proof, which
        must not be passed on as if it were good."""
        kept = []
        for h, actor in changes:
            sig = self.pending.pop(h, None)
            if sig is None or h in self.proofs:
                continue
            device = members.device_by_actor(actor[:16])
            if device is not None and verify_signature(device.key, _message(self.circle, h), sig):
                self.proofs[h] = sig
                kept.append(h + sig)
        self._persist(kept)

    def quick_check(self, doc: AmDoc, headers: list[tuple[bytes, bytes, int]]) -> bool:
        """Before applying anything: are all these changes (hash, actor, seq)
        covered by valid proofs from devices the document already knows? True
        lets the caller apply them directly (no fork); False means "stage and
        check properly" (a join's first changes, a missing proof), never "refuse"."""
        members = self.membership(doc)
        by_actor: dict[bytes, list[tuple[bytes, int]]] = {}
        for h, actor, seq in headers:
            if not is_fixed_change(h):
                by_actor.setdefault(actor, []).append((h, seq))
        for actor, items in by_actor.items():
            device = members.device_by_actor(actor[:16]) if len(actor) == 24 else None
            if device is None:
                return False
            cover = -1
            for h, seq in sorted(items, key=lambda x: -x[1]):
                sig = self.pending.get(h) or self.proofs.get(h)
                if sig is not None:
                    self.stats.signatures_checked += 1
                    if verify_signature(device.key, _message(self.circle, h), sig):
                        cover = seq
                    break
            if any(seq > cover for _h, seq in items):
                return False
        self._keep_valid([(h, actor) for h, actor, _seq in headers], members)
        self.stats.verified += len(headers)
        return True

    def check(self, fork: AmDoc, new: list[ChangeMeta]) -> None:
        members = self.membership(fork)  # the statements as they stand *with* the new changes
        # The one change written by no device: byte-identical everywhere, it only
        # adds the later collections (crdt/gatherings.py, extension_change; same hash).
        new = [m for m in new if m.hash != extension_hash()]
        by_actor: dict[bytes, list[ChangeMeta]] = {}
        for meta in new:
            if is_fixed_change(meta.hash):
                continue
            by_actor.setdefault(meta.actor, []).append(meta)
        for actor, metas in by_actor.items():
            device = members.device_by_actor(actor[:16]) if len(actor) == 24 else None
            if device is None:
                self._refuse(f"{len(metas)} change(s) written by a device this circle does not know")
            cover = -1
            for meta in sorted(metas, key=lambda m: -m.seq):
                sig = self.pending.get(meta.hash) or self.proofs.get(meta.hash)
                if sig is None:
                    continue
                self.stats.signatures_checked += 1
                if verify_signature(device.key, _message(self.circle, meta.hash), sig):  # type: ignore[union-attr]
                    cover = meta.seq
                    break
            uncovered = [m for m in metas if m.seq > cover]
            if uncovered:
                self._refuse(f"{len(uncovered)} change(s) whose signature is missing or wrong")
            self.stats.verified += len(metas)

    def _refuse(self, why: str) -> None:
        self.stats.refused += 1
        self.stats.last_refusal = why
        raise UnverifiedChanges(f"refused: {why}")


__all__ = ["Gate", "UnverifiedChanges", "decode_proofs", "encode_proofs", "pack_snapshot", "process_actor",
           "unpack_snapshot"]


def merge_into(fork: AmDoc, other: AmDoc) -> None:
    """Merge a loaded document into a fork; an empty fork just becomes it
    (load-then-merge would cost the load twice)."""
    if fork.is_empty():
        fork.adopt(other)
    else:
        fork.merge(other)


class GatedDoc:
    """The document as a live session sees it (`net.session.SyncDoc`): sync
    messages that carry changes, and snapshots, go through the gate first.
    `save()` is a packed snapshot (the saved document plus its proofs)."""

    def __init__(self, doc: AmDoc, gate: Gate) -> None:
        self.doc = doc
        self.gate = gate

    def new_sync_state(self) -> object:
        return self.doc.new_sync_state()

    def generate_sync_message(self, state: object) -> bytes | None:
        return self.doc.generate_sync_message(state)  # type: ignore[arg-type]

    def receive_sync_message(self, state: object, data: bytes) -> None:
        from circle.crdt.am import sync_message_change_count, sync_message_change_headers

        count = sync_message_change_count(data)
        if count == 0:
            self.doc.receive_sync_message(state, data)  # type: ignore[arg-type]
            return
        headers = sync_message_change_headers(data)
        if headers is not None and self.gate.quick_check(self.doc, headers):
            # every change in it is signed by a known device: no fork needed
            before = self.doc.heads()
            self.doc.receive_sync_message(state, data)  # type: ignore[arg-type]
            seen = {h for h, _a, _s in headers}
            stray = [m for m in self.doc.change_metas(before) if m.hash not in seen]
            if stray:  # defence in depth: a reader mismatch would show here
                self.gate._refuse(f"{len(stray)} change(s) outside what was checked")
            return
        self.gate.stage(self.doc, lambda fork: fork.receive_sync_message(state, data))  # type: ignore[arg-type]

    def apply_changes(self, changes: list[bytes]) -> None:
        """Urgent changes (net/session.py rule 10), checked like any sync data."""
        self.gate.stage(self.doc, lambda fork: fork.apply_changes(changes))

    def save(self) -> bytes:
        return pack_snapshot(self.doc.save(), self.gate.head_proofs(self.doc))

    def heads(self) -> list[bytes]:
        return self.doc.heads()

    def merge_saved(self, data: bytes) -> None:
        saved, proofs = unpack_snapshot(data)
        other = AmDoc.load(saved)
        self.gate.stage(self.doc, lambda fork: merge_into(fork, other), proofs)

    def is_empty(self) -> bool:
        return self.doc.is_empty()

    # --- proofs (optional part of SyncDoc) -------------------------------------

    def proofs_since(self, heads: list[bytes]) -> list[bytes]:
        known = [h for h in heads if h in self._hashes()]
        return self.gate.proofs_since(self.doc, known)

    def _hashes(self) -> set[bytes]:
        return {m.hash for m in self.doc.change_metas([])}

    def proofs_for_hashes(self, hashes: list[bytes]) -> list[bytes]:
        """Proofs for these changes; for one we hold no proof of its own (it
        came inside a snapshot), the proof of its actor's highest change."""
        out = [h + self.gate.proofs[h] for h in hashes if h in self.gate.proofs]
        if len(out) < len(hashes):
            out += self.gate.head_proofs(self.doc)
        return out

    def take_proofs(self, block: bytes) -> None:
        self.gate.offer(decode_proofs(block))
