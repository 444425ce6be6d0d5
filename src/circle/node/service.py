"""The service that owns one circle on this device.

The CLI, the TUI and the sync drivers all go through `CircleService`: it holds
the document (one owner: automerge is not thread-safe), persists every change
that enters it — local edits, sync, relays, bundles — to the durable log, and
follows the log so edits made by another process on the same home show up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from circle.crdt.am import AmDoc
from circle.crdt.board import Board, Profile, now_ms
from circle.crdt.model import MemberId, Millis
from circle.crdt.store import DocStore
from circle.crdt.views import meta_warnings
from circle.errors import (
    AmbiguousId,
    CircleError,
    MalformedDocument,
    NotFound,
    StoreCorrupt,
    StoreError,
)
from circle.net.keys import EpochKey, _b32, member_id_for, new_epoch_key
from circle.node import membership
from circle.node.home import CircleConfig, Home

COMPACT_MIN_LOG = 256 * 1024


def new_circle_id() -> str:
    return _b32(os.urandom(8), 12)


@dataclass
class CircleService:
    home: Home
    config: CircleConfig
    store: DocStore
    doc: AmDoc
    clock: Callable[[], Millis] = now_ms
    board: Board = field(init=False)
    _persisted: list[bytes] = field(init=False, default_factory=list)
    _listeners: list[Callable[[str], None]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.board = Board(self.doc, self.home.identity.member_id, self.clock, on_commit=self._local_commit)
        self._persisted = self.doc.heads()

    # --- construction ----------------------------------------------------

    @classmethod
    def create(cls, home: Home, name: str, handle: str, zone: str = "",
               clock: Callable[[], Millis] = now_ms) -> CircleService:
        circle_id = new_circle_id()
        me = home.identity
        doc = Board.create_document(
            name, circle_id, me.member_id, Profile(handle, me.verify_key, me.box_public, zone), clock()
        )
        svc = cls.create_from_doc(home, circle_id, name, doc, {0: new_epoch_key()}, 0, clock)
        membership.found(svc)
        return svc

    @classmethod
    def create_from_doc(cls, home: Home, circle_id: str, name: str, doc: AmDoc,
                        epoch_keys: dict[int, Any], epoch: int,
                        clock: Callable[[], Millis] = now_ms) -> CircleService:
        """Write a new circle to this home (founding, or joining with a received doc)."""
        cdir = home.circle_dir(circle_id)
        if (cdir / "circle.json").exists():
            raise StoreError(f"this device already has circle {circle_id}")
        cdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        store = DocStore(cdir / "doc", home.doc_cipher(circle_id))
        store.create(doc.save())
        config = CircleConfig(circle_id, name, epoch, dict(epoch_keys), {})
        config.save(home)
        return cls(home, config, store, doc, clock)

    @classmethod
    def open(cls, home: Home, selector: str | None = None,
             clock: Callable[[], Millis] = now_ms) -> CircleService:
        circle_id = resolve_circle(home, selector)
        config = CircleConfig.load(home, circle_id)
        store = DocStore(home.circle_dir(circle_id) / "doc", home.doc_cipher(circle_id))
        loaded = store.load()
        doc = AmDoc.load(loaded.snapshot)
        try:
            doc.apply_changes(loaded.changes)
        except MalformedDocument:
            raise StoreCorrupt(f"the change log of circle {circle_id} holds data automerge rejects") from None
        # No identity check on `meta.circle_id` here: any member can overwrite
        # that field, and the file is this circle's own (its directory, its
        # at-rest key). A mismatch is reported by `status` (meta_warnings).
        return cls(home, config, store, doc, clock)

    # --- persistence -------------------------------------------------------

    @property
    def me(self) -> MemberId:
        return self.home.identity.member_id

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(origin)` after any change ("local", "remote", "disk")."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, origin: str) -> None:
        for listener in list(self._listeners):
            listener(origin)

    def _local_commit(self) -> None:
        self.persist()
        self._notify("local")

    def persist(self) -> int:
        """Append every change not yet on disk. Returns how many were written."""
        heads = self.doc.heads()
        if heads == self._persisted:
            return 0
        changes = self.doc.changes_since(self._persisted)
        self.store.append(changes)
        self._persisted = heads
        if self.store.log_size() > max(COMPACT_MIN_LOG, self.store.snapshot_size()):
            self.compact()
        return len(changes)

    def apply_remote(self, changes: list[bytes]) -> bool:
        """Changes from a peer, relay or bundle: apply, persist, notify."""
        before = self.doc.heads()
        self.doc.apply_changes(changes)
        return self._after_remote(before)

    def merge_snapshot(self, saved: bytes) -> bool:
        before = self.doc.heads()
        other = AmDoc.load(saved)
        got = other.root_scalars("meta").get("circle_id")
        if got != self.config.circle_id:
            raise MalformedDocument("that snapshot belongs to another circle")
        self.doc.merge(other)
        return self._after_remote(before)

    def _after_remote(self, before: list[bytes]) -> bool:
        if self.doc.heads() == before:
            return False
        self.remote_changed()
        return True

    def remote_changed(self) -> None:
        """The document changed from outside (sync session, relay, bundle)."""
        self.board.check_schema()
        self.board.invalidate()
        self.persist()
        if self.board.active_member(self.me) is not None:
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
            self.doc.merge_saved(items[0])
            items = items[1:]
        self.doc.apply_changes(items)
        self._persisted = self.doc.heads()
        if self.doc.heads() == before:
            return False
        self.board.invalidate()
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
                self.doc.merge_saved(pending[0])
                pending = pending[1:]
            self.doc.apply_changes(pending)
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
        member = self.board.active_member(member_id_for(verify_key))
        return member is not None and member.sign_key == verify_key

    # --- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        board = self.board
        view = board.view()
        me = view.members.get(self.me)
        return {
            "circle": {"id": self.config.circle_id, "name": board.name, "epoch": self.config.epoch,
                       "key_generation": membership.generation(self)},
            "me": {"id": self.me, "handle": me.handle if me else None, "active": bool(me and me.active)},
            "counts": {
                "members": sum(1 for m in view.members.values() if m.active),
                "open_needs": len(board.needs("active")),
                "open_offers": len(board.offers("open")),
                "tools": len(view.tools),
                "on_loan": sum(1 for t in view.tools.values() if t.current_loan is not None),
                "overdue": len(board.overdue()),
            },
            "conflicts": [
                {"tool": t.id, "name": t.name, "current_loan": t.current_loan.id if t.current_loan else None,
                 "conflicting_loans": [x.id for x in t.conflicting_loans],
                 "borrowers": [x.borrower for x in t.conflicting_loans]}
                for t in board.loan_conflicts()
            ],
            "malformed": [{"collection": m.collection, "id": m.id, "reason": m.reason} for m in view.malformed],
            "warnings": meta_warnings(self.doc, self.config.circle_id),
            "peers": [
                {**info, "address": f"{info.get('address')}:{info.get('port')}"}
                for info in self.config.settings.get("peers", {}).values() if isinstance(info, dict)
            ],
            "storage": {
                "path": str(self.store.path),
                "encrypted_at_rest": self.home.encrypted,
                "protection": "encrypted with your passphrase (argon2id + XSalsa20-Poly1305)"
                if self.home.encrypted else "NOT encrypted: protected only by file permissions",
                "snapshot_bytes": self.store.snapshot_size(),
                "log_bytes": self.store.log_size(),
                "damaged_tail_ignored": self.store.damaged_tail,
            },
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

