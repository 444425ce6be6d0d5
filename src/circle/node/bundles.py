"""`circle bundle write|read`: the whole circle on a USB stick, any size the product allows.

Writing streams the envelopes of `seal_bundle_envelopes` (one snapshot, or a
set of parts when the document is bigger than one envelope) into the file.

Reading is all or nothing. The file is checked whole first (`iter_bundle`:
size claimed by the header, lengths, checksum), then every envelope is
opened and every set of parts rebuilt before the document adopts anything:

- parts must come whole and in order, one set at a time (`Reassembler`
  strict mode): a dropped, duplicated, reordered or spliced part refuses
  the file, and a set still incomplete at the end of the file does too;
- envelopes under an epoch this device does not hold yet are retried once
  the others were merged (they may carry the grant of that epoch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from circle.crdt.am import AmDoc
from circle.errors import BundleCorrupt, PartRejected, UnknownEpoch
from circle.net import parts
from circle.net.bundle import iter_bundle, write_bundle
from circle.net.envelope import Kind, OpenedEnvelope, open_envelope
from circle.node.authorship import PROOF_BLOCK_MAGIC, decode_proofs, unpack_snapshot
from circle.node.relays import seal_bundle_envelopes
from circle.node.service import CircleService


def write(svc: CircleService, path: Path) -> int:
    """Write the circle to `path`; returns how many envelopes it holds."""
    return write_bundle(path, seal_bundle_envelopes(svc))


@dataclass
class ReadResult:
    envelopes: int = 0
    snapshots: int = 0
    changes: int = 0
    parts: int = 0
    changed: bool = False
    new_changes: int = 0
    authors: set[bytes] = field(default_factory=set)  # member ids
    skipped_unknown_epoch: int = 0


def _open_pass(svc: CircleService, envs: list[bytes] | None, path: Path,
               out: ReadResult) -> tuple[list[OpenedEnvelope], list[bytes]]:
    """Open every envelope (from the file if `envs` is None); rebuild parts strictly."""
    accepted: list[OpenedEnvelope] = []
    unknown: list[bytes] = []
    asm = parts.Reassembler(strict=True)
    source = iter_bundle(path) if envs is None else iter(envs)
    for env in source:
        if envs is None:
            out.envelopes += 1
        try:
            opened = open_envelope(env, lambda: svc.config.epoch_keys, svc.is_active_member)
        except UnknownEpoch:
            unknown.append(env)
            continue
        if opened.kind is Kind.SNAPSHOT and parts.is_part(opened.payloads[0]):
            out.parts += 1
            try:
                pset, whole = asm.add(opened.author, parts.parse(opened.payloads[0]))
            except PartRejected as exc:
                raise BundleCorrupt(f"the bundle was tampered with: {exc.message}; nothing was read") from None
            if whole is None:
                continue
            opened = OpenedEnvelope(opened.envelope_id, Kind.SNAPSHOT, opened.epoch, opened.author, (whole,))
        accepted.append(opened)
    for pset in asm.pending():
        raise BundleCorrupt(f"the bundle is incomplete: it holds {pset.describe()}; nothing was read")
    return accepted, unknown


def read(svc: CircleService, path: Path) -> ReadResult:
    """Merge the bundle at `path` into the circle. Raises (nothing adopted) if
    any envelope fails to open or any set of parts is not whole and in order."""
    out = ReadResult()
    before = svc.doc.heads()
    todo: list[bytes] | None = None  # None: the file itself
    while True:
        accepted, unknown = _open_pass(svc, todo, path, out)
        if not accepted:
            if unknown and svc.doc.heads() == before:
                open_envelope(unknown[0], lambda: svc.config.epoch_keys, svc.is_active_member)  # raises
            out.skipped_unknown_epoch = len(unknown)
            break
        # Everything in the file is checked (signed by members' devices) before
        # the document adopts it: snapshots first, then changes with their proofs.
        h0 = svc.doc.heads()
        for opened in accepted:
            if opened.kind is Kind.SNAPSHOT:
                saved, proofs = unpack_snapshot(opened.payloads[0])
                other = AmDoc.load(saved)
                svc.gate.stage(svc.doc, lambda fork, other=other: fork.merge(other), proofs)  # type: ignore[misc]
                out.snapshots += 1
        for opened in accepted:
            out.authors.add(opened.author)
            if opened.kind is Kind.CHANGES:
                chunks = [p for p in opened.payloads if not p.startswith(PROOF_BLOCK_MAGIC)]
                proofs = [x for p in opened.payloads if p.startswith(PROOF_BLOCK_MAGIC) for x in decode_proofs(p)]
                svc.gate.stage(svc.doc, lambda fork, chunks=chunks: fork.apply_changes(chunks), proofs)  # type: ignore[misc]
                out.changes += len(chunks)
        if svc.doc.heads() != h0:
            svc.remote_changed()  # reconcile: may adopt the key the `unknown` ones need
        if not unknown:
            break
        todo = unknown
    out.changed = svc.doc.heads() != before
    out.new_changes = len(svc.doc.changes_since(before)) if out.changed else 0
    return out


__all__ = ["ReadResult", "read", "write"]
