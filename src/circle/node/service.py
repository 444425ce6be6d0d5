"""The service that owns one circle on this device.

The CLI, the TUI and the sync drivers all go through `CircleService`: it holds
the document (one owner: automerge is not thread-safe), persists every change
that enters it — local edits, sync, relays, bundles — to the durable log, and
follows the log so edits made by another process on the same home show up.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from circle.crdt.am import OWN_DATA, AmDoc
from circle.crdt.board import Board, now_ms
from circle.crdt.gatherings import gatherings
from circle.crdt.model import MemberId, Millis
from circle.crdt.store import DocStore
from circle.crdt.views import meta_warnings
from circle.errors import (
    AmbiguousId,
    CircleError,
    CompactionFailed,
    MalformedDocument,
    NotFound,
    StoreCorrupt,
    StoreError,
)
from circle.net.keys import EpochKey, fingerprint, member_id_for, new_epoch_key
from circle.net.membership_rules import Membership, circle_id_for, derive
from circle.node import firstseen, membership, viewstore
from circle.node.authorship import Gate, pack_snapshot, process_actor, unpack_snapshot
from circle.node.home import CircleConfig, Home
from circle.node.panic import lock_stamp

COMPACT_MIN_LOG = 256 * 1024


@dataclass
class CircleService:
    home: Home
    config: CircleConfig
    store: DocStore
    doc: AmDoc
    clock: Callable[[], Millis] = now_ms
    board: Board = field(init=False)
    gate: Gate = field(init=False)
    _persisted: list[bytes] = field(init=False, default_factory=list)
    _listeners: list[Callable[[str], None]] = field(init=False, default_factory=list)
    _membership: tuple[tuple[str, ...], Membership] | None = field(init=False, default=None)
    warnings: list[str] = field(init=False, default_factory=list)  # e.g. saved, but compaction failed
    #: The home's panic-lock stamp when this service opened it (node/panic.py):
    #: once it changes, nothing more is written from this process's memory.
    lock_stamp_at_open: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        cid = self.config.circle_id
        # One actor per process, bound to this device (authorship.py rules).
        self.doc.set_actor(process_actor(cid, self.home.identity.verify_key))
        self.board = Board(self.doc, self.me, self.clock, on_commit=self._local_commit)
        self._derived: dict[tuple[str, ...], Membership] = {}
        self.gate = Gate.open(cid, self.home.identity, self.home.circle_dir(cid) / "sigs",
                              self.home.doc_cipher(cid), self._derive)
        self.board.members_source = lambda: membership.members_of(self.membership())
        self.board.member_of_actor = self._member_of_actor
        self.board.late_actors = self._late_actors
        self.board.op_counts = lambda actor, op: self.membership().counts(actor, op)
        self._late: tuple[tuple[bytes, ...], tuple[object, ...], set[bytes]] | None = None
        self.doc.late_pins = self._late_pins
        self._actor_memo: tuple[Membership, dict[bytes, MemberId | None]] | None = None
        self._persisted = self.doc.heads()
        self.board.first_seen = firstseen.load(self.home, self.home.circle_dir(cid))

    # --- construction ----------------------------------------------------

    @classmethod
    def create(cls, home: Home, name: str, handle: str, zone: str = "",
               clock: Callable[[], Millis] = now_ms) -> CircleService:
        me = home.identity
        found = membership.founding_statements(me, handle, zone, int(clock()))
        circle_id = circle_id_for(found.id)
        number = 1 + secrets.randbelow(1 << 16)
        key = new_epoch_key()
        epoch = membership.founding_epoch(me, circle_id, found, key, number)
        doc = Board.create_document(name, circle_id, clock(), [(found.id.hex(), found.raw), (epoch.id.hex(), epoch.raw)],
                                    process_actor(circle_id, me.verify_key))
        svc = cls.create_from_doc(home, circle_id, name, doc, {number: key}, number, clock)
        svc.gate.sign_new(svc.doc, [])
        return svc

    @classmethod
    def create_from_doc(cls, home: Home, circle_id: str, name: str, doc: AmDoc,
                        epoch_keys: dict[int, Any], epoch: int,
                        clock: Callable[[], Millis] = now_ms, proofs: list[bytes] | None = None) -> CircleService:
        """Write a new circle to this home (founding, or joining with a received doc)."""
        cdir = home.circle_dir(circle_id)
        if (cdir / "circle.json").exists():
            raise StoreError(f"this device already has circle {circle_id}")
        cdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = DocStore(cdir / "doc", home.doc_cipher(circle_id))
        store.create(doc.save())
        config = CircleConfig(circle_id, name, epoch, dict(epoch_keys), {})
        config.save(home)
        svc = cls(home, config, store, doc, clock)
        if proofs:
            svc.gate.keep(proofs)
        svc._note_arrivals([], history=True)  # a joiner's first copy: history, only future claims clamped
        return svc

    @classmethod
    def join_from_snapshot(cls, home: Home, circle_id: str, name: str, packed: bytes,
                           epoch_keys: dict[int, Any], epoch: int,
                           clock: Callable[[], Millis] = now_ms) -> CircleService:
        """A joiner's first copy: verified (signed by members' devices, anchored
        at this circle's founding statement) before anything is written."""
        saved, proofs = unpack_snapshot(packed)
        incoming = AmDoc.load(saved)
        probe = Gate(circle_id, home.identity, None,
                     lambda doc: derive(Board(doc, None).statement_blobs(), circle_id))
        doc = AmDoc.new()
        probe.stage(doc, lambda fork: fork.merge(incoming), proofs)
        if not derive(Board(doc, None).statement_blobs(), circle_id).members:
            raise MalformedDocument("the inviter's document does not hold this circle's founding statement")
        return cls.create_from_doc(home, circle_id, name, doc, epoch_keys, epoch, clock, proofs=proofs)

    @classmethod
    def open(cls, home: Home, selector: str | None = None,
             clock: Callable[[], Millis] = now_ms) -> CircleService:
        circle_id = resolve_circle(home, selector)
        config = CircleConfig.load(home, circle_id)
        store = DocStore(home.circle_dir(circle_id) / "doc", home.doc_cipher(circle_id))
        loaded = store.load()
        doc = AmDoc.load(loaded.snapshot, OWN_DATA)
        try:
            doc.apply_changes(loaded.changes, OWN_DATA)
        except MalformedDocument:
            raise StoreCorrupt(f"the change log of circle {circle_id} holds data automerge rejects") from None
        # The signed founding statement decides; `meta.schema` is a field any
        # member can overwrite (schema 1 written by one member must not lock
        # everyone out), so it only picks the sentence when that is missing.
        if not derive(Board(doc, None).statement_blobs(), circle_id).members:
            schema = doc.root_scalars("meta").get("schema")
            if isinstance(schema, int) and schema < 2:
                raise StoreCorrupt(
                    f"circle {config.name!r} was made by an earlier circle (schema {schema}) without signed "
                    "membership; it cannot be opened safely: start a new circle and invite the members again")
            raise StoreCorrupt(f"the stored document is not circle {circle_id} (its founding statement is missing)")
        svc = cls(home, config, store, doc, clock)
        svc.lock_stamp_at_open = lock_stamp(home.path)
        svc.gate.resign_missing(svc.doc)
        # The first view starts from the one an earlier process kept, if it fits.
        svc.board.seed = viewstore.seed_loader(home, circle_id)
        return svc

    # --- trust ---------------------------------------------------------------

    @property
    def member_key(self) -> bytes:
        """The member key this device belongs to: its own for a member's first
        device; for a linked device, the key that certified it (circle.json)."""
        linked = self.config.settings.get("member_key")
        if isinstance(linked, str):
            return bytes.fromhex(linked)
        return self.home.identity.verify_key

    def membership(self) -> Membership:
        """Who is in, derived from the signed statements (cached per statement set)."""
        return self._derive(self.doc)

    def _derive(self, doc: AmDoc) -> Membership:
        ids = tuple(sorted(doc.record_ids("statements")))
        got = self._derived.get(ids)
        if got is None:
            got = derive(Board(doc, None).statement_blobs(), self.config.circle_id)
            if len(self._derived) >= 4:
                self._derived.pop(next(iter(self._derived)))
            self._derived[ids] = got
        return got

    def _member_of_actor(self, actor: bytes) -> MemberId | None:
        m = self.membership()
        memo = self._actor_memo
        if memo is None or memo[0] is not m:
            memo = self._actor_memo = (m, {})  # one answer per actor per membership (called per record)
        if actor not in memo[1]:
            d = m.device_by_actor(actor[:16])
            info = m.members.get(d.member) if d is not None else None
            memo[1][actor] = info.id if info is not None else None
        return memo[1][actor]

    def _late_actors(self) -> set[bytes]:
        """Actors of removed devices that wrote past their removal's pin."""
        m = self.membership()
        removed = {d.actor: d for d in m.devices.values() if m.active_device(d.key) is None}
        removed.update(m.void_devices)  # rule 8: nothing they write counts
        if not removed:
            return set()
        heads = tuple(self.doc.heads())
        pins = tuple(sorted((a, tuple(sorted(d.seen.items()))) for a, d in removed.items()))
        if self._late is not None and self._late[0] == heads and self._late[1] == pins:
            return self._late[2]
        # Same removals as last time: only the changes that arrived since need a look
        # (the document only grows), so a sync after a removal costs its own size,
        # not a walk over the whole history.
        since = list(self._late[0]) if self._late is not None and self._late[1] == pins else []
        late = set(self._late[2]) if since else set()
        try:
            metas = self.doc.change_metas(since)
        except MalformedDocument:  # not a descendant of what we saw (a reloaded document)
            late, metas = set(), self.doc.change_metas([])
        for meta in metas:
            d = removed.get(meta.actor[:16])
            if d is not None and meta.max_op > d.seen.get(meta.actor, 0):
                late.add(meta.actor)
        self._late = (heads, pins, late)
        return late

    def _late_pins(self) -> dict[bytes, dict[bytes, int]]:
        """Pins of the removed devices that wrote past them (rule 6): every
        read of the document shows their late values as they were without
        them (crdt/am.py `_LateMask`). Empty, and free, without such writes."""
        late = self._late_actors()
        if not late:
            return {}
        m = self.membership()
        out: dict[bytes, dict[bytes, int]] = {}
        for actor in late:
            d = m.device_by_actor(actor[:16])
            if d is not None:
                out[d.actor] = dict(d.seen)
        return out

    def removal_notice(self) -> str:
        """"You were removed from Block 9 by ana on 2 Dec." for this device."""
        return membership.removal_notice(self, self.home.identity.verify_key)

    def membership_report(self) -> dict[str, Any]:
        """What the signed statements say, and what was ignored and why (for `status`)."""
        m = self.membership()
        by_author: dict[tuple[str, str], int] = {}
        for item in m.ignored:
            info = m.members.get(item.author)
            who = info.handle if info is not None else "an unknown device"
            by_author[(who, item.reason)] = by_author.get((who, item.reason), 0) + 1
        return {
            "statements": len(m.accepted),
            "waiting_for_earlier_statements": m.waiting,
            "ignored": [{"author": who, "reason": reason, "count": n,
                         "text": f"{n} membership change{'s' if n > 1 else ''} by {who} ignored: {reason}"}
                        for (who, reason), n in sorted(by_author.items())],
            "current_epoch_generation": membership.generation(self),
            "devices": [{"member": m.members[d.member].handle if d.member in m.members else "?",
                         "fingerprint": fingerprint(d.key), "active": m.active_device(d.key) is not None}
                        for d in m.devices.values()],
            "changes_refused": self.gate.stats.refused,
            "last_refusal": self.gate.stats.last_refusal or None,
        }

    def actor_clock(self, actors: Iterable[bytes]) -> dict[bytes, int]:
        """For each actor of these devices (16-byte prefixes): the last op we hold."""
        prefixes = set(actors)
        out: dict[bytes, int] = {}
        for meta in self.doc.change_metas([]):
            if meta.actor[:16] in prefixes:
                out[meta.actor] = max(out.get(meta.actor, 0), meta.max_op)
        return out

    # --- persistence -------------------------------------------------------

    @property
    def me(self) -> MemberId:
        """This device's member (a linked device acts for the member that certified it)."""
        return member_id_for(self.member_key)

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(origin)` after any change ("local", "remote", "disk")."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, origin: str) -> None:
        for listener in list(self._listeners):
            listener(origin)

    def _local_commit(self) -> None:
        self.gate.sign_new(self.doc, self._persisted)
        self.persist()
        self._notify("local")

    @property
    def persisted_heads(self) -> list[bytes]:
        """The heads that are durable in this device's store (what a peer may count as delivered)."""
        return list(self._persisted)

    def persist(self) -> int:
        """Append every change not yet on disk. Returns how many were written."""
        heads = self.doc.heads()
        if heads == self._persisted:
            return 0
        changes = self.doc.changes_since(self._persisted)
        self.store.append(changes)
        self._persisted = heads
        if self.store.log_size() > max(COMPACT_MIN_LOG, self.store.snapshot_size()):
            try:
                self.compact()
            except CompactionFailed as exc:
                # The changes are saved; only tidying failed. Not an error for the edit
                # (a script that retried would duplicate it): a warning the edges show.
                self.warnings.append(str(exc))
        return len(changes)

    def apply_remote(self, changes: list[bytes], proofs: list[bytes] = ()) -> bool:  # type: ignore[assignment]
        """Changes from a peer, relay or bundle: verify, apply, persist, notify.
        Raises UnverifiedChanges (nothing applied) if any is not signed."""
        before = self.doc.heads()
        self.gate.stage(self.doc, lambda fork: fork.apply_changes(changes), proofs)
        return self._after_remote(before)

    def merge_snapshot(self, packed: bytes) -> bool:
        """A whole document with its proofs (relay snapshot, bundle): verify, merge."""
        saved, proofs = unpack_snapshot(packed)
        before = self.doc.heads()
        other = AmDoc.load(saved)
        self.gate.stage(self.doc, lambda fork: fork.merge(other), proofs)
        return self._after_remote(before)

    def packed_snapshot(self) -> bytes:
        """`save()` plus one proof per actor: what a snapshot envelope or bundle carries."""
        return pack_snapshot(self.doc.save(), self.gate.head_proofs(self.doc))

    def _after_remote(self, before: list[bytes]) -> bool:
        if self.doc.heads() == before:
            return False
        self.remote_changed()
        return True

    def _note_arrivals(self, before: list[bytes], history: bool = False) -> None:
        """Record when this device first saw records whose writer's clock is
        implausible (crdt/clock.py rule 2). Failing to save that is a warning,
        never a lost sync: the board then reads those times as written."""
        try:
            new = firstseen.arrivals(self.doc, before, self.clock(), history=history)
        except CircleError:
            return
        new = {k: v for k, v in new.items() if k not in self.board.first_seen}
        if not new:
            return
        seen = {**self.board.first_seen, **new}
        self.board.first_seen = seen  # a new mapping: the next view re-reads everything
        try:
            firstseen.save(self.home, self.home.circle_dir(self.config.circle_id), seen)
        except (CircleError, OSError) as exc:
            self.warnings.append(f"could not save when records first arrived ({exc})")

    def remote_changed(self) -> None:
        """The document changed from outside (sync session, relay, bundle)."""
        self._note_arrivals(self._persisted)
        self.board.check_schema()
        self.board.invalidate()
        self.persist()
        if self.membership().active_device(self.home.identity.verify_key) is not None:
            membership.reconcile(self)
        self._notify("remote")

    def refresh(self) -> bool:
        """Pick up edits another process appended to the log. True if any."""
        self.persist()
        items, reloaded = self.store.poll()
        if not items:
            return False
        before = self.doc.heads()
        if reloaded:
            self.doc.merge_saved(items[0], OWN_DATA)
            items = items[1:]
        self.doc.apply_changes(items, OWN_DATA)
        self.gate.refresh()
        self._persisted = self.doc.heads()
        if self.doc.heads() == before:
            return False
        self.board.invalidate()
        seen = firstseen.load(self.home, self.home.circle_dir(self.config.circle_id))
        if seen != self.board.first_seen:
            self.board.first_seen = seen  # another process of this home saw new arrivals
        self._reload_config()
        self._notify("disk")
        return True

    def _reload_config(self) -> None:
        """Another process may have adopted keys or rotated: re-read circle.json."""
        try:
            fresh = CircleConfig.load(self.home, self.config.circle_id)
        except CircleError:
            return
        fresh.epoch_keys.update(self.config.epoch_keys)
        self.config = fresh

    def compact(self) -> None:
        with self.store.compacting() as ticket:
            pending = ticket.pending
            if ticket.reloaded and pending:
                self.doc.merge_saved(pending[0], OWN_DATA)
                pending = pending[1:]
            self.doc.apply_changes(pending, OWN_DATA)
            ticket.commit(self.doc.save())
        self._persisted = self.doc.heads()
        self.board.invalidate()

    # --- circle keys -------------------------------------------------------

    def keyring(self) -> dict[int, EpochKey]:
        """Every epoch key this device holds, by epoch number (for handshakes)."""
        return dict(self.config.epoch_keys)

    def adopt_epoch_key(self, number: int, key: EpochKey) -> None:
        """Keep a key (ours or granted to us); durable before anything uses it."""
        if self.config.epoch_keys.get(number) == key:
            return
        self.config.epoch_keys[number] = key
        self.config.save(self.home)

    def set_current_epoch(self, number: int) -> None:
        if self.config.epoch != number:
            self.config.epoch = number
            self.config.save(self.home)
            self._notify("epoch")

    def is_active_member(self, verify_key: bytes) -> bool:
        """Is this device key an active device of an active member (handshakes, envelopes)?"""
        return self.membership().active_device(verify_key) is not None

    # --- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        board = self.board
        view = board.view()
        me = view.members.get(self.me)
        g = gatherings(board)
        gather = g.view()
        timebank = g.settings().timebank
        return {
            "circle": {"id": self.config.circle_id, "name": board.name, "epoch": self.config.epoch,
                       "key_generation": membership.generation(self)},
            "me": {"id": self.me, "handle": me.handle if me else None, "active": bool(me and me.active),
                   "removed_notice": None if me is None or me.active else self.removal_notice()},
            "membership": self.membership_report(),
            "counts": {
                "members": sum(1 for m in view.members.values() if m.active),
                "open_needs": len(board.needs("active")),
                "open_offers": len(board.offers("open")),
                "tools": len(view.tools),
                "on_loan": sum(1 for t in view.tools.values() if t.current_loan is not None),
                "overdue": len(board.overdue()),
                "skills": sum(1 for s in gather.skills.values() if s.listed),
                "upcoming_events": len(g.events("upcoming")),
                "open_shifts": len(g.open_shifts()),
                # Hours only when the circle turned the time bank on.
                **({"confirmed_exchanges": sum(1 for x in gather.exchanges.values() if x.counted),
                    "pending_exchanges": sum(1 for x in gather.exchanges.values()
                                             if x.status.value == "pending" and x.duplicate_of is None)}
                   if timebank else {}),
            },
            "conflicts": [
                {"tool": t.id, "name": t.name, "current_loan": t.current_loan.id if t.current_loan else None,
                 "conflicting_loans": [x.id for x in t.conflicting_loans],
                 "borrowers": [x.borrower for x in t.conflicting_loans]}
                for t in board.loan_conflicts()
            ],
            "malformed": [{"collection": m.collection, "id": m.id, "reason": m.reason}
                          for m in [*view.malformed, *gather.malformed]],
            "warnings": meta_warnings(self.doc, self.config.circle_id)
            + ([board.schema_too_new()] if board.schema_too_new() else []),
            "peers": viewstore.peer_rows(self.config.settings),
            "storage": viewstore.storage_facts(self.home, self.store),
        }



def resolve_circle(home: Home, selector: str | None) -> str:
    ids = home.circle_ids()
    if not ids:
        raise NotFound(f"no circle on this device yet (home {home.path}); run `circle init` or `circle join`")
    if selector is None:
        if len(ids) == 1:
            return ids[0]
        raise AmbiguousId(f"this device has {len(ids)} circles; pick one with --circle NAME|ID")
    want = selector.strip().lower()
    names = {}
    for cid in ids:
        try:
            names[cid] = CircleConfig.load(home, cid).name
        except StoreCorrupt:
            names[cid] = ""
    hits = [cid for cid in ids if names[cid].lower() == want] or [cid for cid in ids if cid.startswith(want)]
    if not hits:
        raise NotFound(f"no circle named or with id '{selector}' on this device")
    if len(hits) > 1:
        raise AmbiguousId(f"'{selector}' matches several circles: {', '.join(hits)}")
    return hits[0]

