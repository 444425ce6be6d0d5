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
from circle.crdt.store import Cipher, DocStore
from circle.errors import MalformedDocument
from circle.net.keys import DeviceIdentity, verify_signature
from circle.net.membership_rules import Membership, actor_for

PROOF_LEN = 96
PROOF_BLOCK_MAGIC = b"CPRF"
_DOMAIN = b"circle-change-v1"


class UnverifiedChanges(MalformedDocument):
    """A peer, relay or file offered changes that no member's device signed."""


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
    proofs: dict[bytes, bytes] = field(default_factory=dict)  # change hash -> signature
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

    def keep(self, proofs: Iterable[bytes]) -> None:
        """Remember proofs that arrived with data already verified (a join)."""
        self._persist(self._take(proofs))

    def _persist(self, proofs: list[bytes]) -> None:
        if proofs and self.store is not None:
            self.store.append([encode_proofs(proofs)])

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
        """Apply incoming data to a fork of `doc`, check every change it adds,
        and only then let `doc` adopt the fork. Raises UnverifiedChanges (the
        document is untouched) when anything is not signed by a known device.
        Returns whether the document changed."""
        offered: dict[bytes, bytes] = {}
        for p in proofs:
            if len(p) == PROOF_LEN:
                offered[p[:32]] = p[32:]
        before = doc.heads()
        fork = doc.fork()
        apply(fork)
        if fork.heads() == before:
            return False
        new = fork.change_metas(before) if before else fork.change_metas([])
        self.check(fork, new, offered)
        doc.adopt(fork)
        kept = self._take(h + s for h, s in offered.items() if any(m.hash == h for m in new))
        self._persist(kept)
        return True

    def check(self, fork: AmDoc, new: list[ChangeMeta], offered: dict[bytes, bytes]) -> None:
        members = self.membership(fork)  # the statements as they stand *with* the new changes
        by_actor: dict[bytes, list[ChangeMeta]] = {}
        for meta in new:
            by_actor.setdefault(meta.actor, []).append(meta)
        for actor, metas in by_actor.items():
            device = members.device_by_actor(actor[:16]) if len(actor) == 24 else None
            if device is None:
                self._refuse(f"{len(metas)} change(s) written by a device this circle does not know")
            cover = -1
            for meta in sorted(metas, key=lambda m: -m.seq):
                sig = offered.get(meta.hash) or self.proofs.get(meta.hash)
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
