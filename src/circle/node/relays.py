"""Relay sync for one circle on this device (store-and-forward, DESIGN §1/§4).

`RelaySync` connects a `CircleService` to the relays its document lists:

- **Writing.** Every change that enters the document and did not come from a
  relay (local edits, edits another process made on this home, changes from
  LAN peers and bundles) is sealed into an envelope under the *current* epoch
  key and pushed to every relay. What has been pushed is tracked as document
  heads (`pushed_heads`, persisted), so edits made while nothing ran (`circle
  need add` without `circle serve`) go out at the next `circle sync`.
- **Reading.** Every relay is read from its own cursor; envelopes are opened
  by an `EnvelopeInbox` (dedupe by id, signature, active-member check) and
  applied to the document. A backlog (first start, `circle sync`, a relay
  that was wiped) is applied *snapshot first*: the newest snapshot envelope
  is merged, then the change envelopes, most of which are then already known
  and cost nothing — a member away for months, or a new one, catches up from
  the snapshot rather than by replaying the log.
- **Snapshots** are published when a relay reports it lost the mailbox
  (wiped, rolled back, or never had it) and when the change envelopes seen in
  the mailbox since the last snapshot outweigh a snapshot.
- **Epochs.** A change is always sealed under the epoch this device holds as
  current at the moment it is sealed, into the mailbox of that epoch. When
  the epoch changes (a removal) the pool switches to the new mailbox and the
  previous epoch's mailbox is kept *read-only* for stragglers: members who
  have not yet learned of the rotation still write there. Nothing is ever
  sealed under an old epoch once this device adopted a newer one, so a
  removed member (who holds only old keys and old mailbox credentials)
  receives nothing written after the removal — except what stragglers write
  before they learn of it (see docs/relay.md).
- **Order of a one-shot sync** (`sync_round`): read first, then seal and
  push. A straggler whose pending edits were made offline thus learns of a
  rotation before sealing them, and seals them under the new epoch.

Everything runs on the asyncio loop that owns the document.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from circle.crdt.am import AmDoc, change_hash
from circle.crdt.defence import COLLECTIONS_CHANGE, COLLECTIONS_CHANGE_HASH
from circle.errors import CircleError, LocalProtocolError, MalformedDocument, RemoteProtocolError
from circle.net.envelope import (
    EnvelopeInbox,
    Kind,
    OpenedEnvelope,
    envelope_id,
    peek_header,
    seal_changes,
)
from circle.net.keys import EpochKey
from circle.net.parts import is_part
from circle.net.relay_client import Backoff, RelayCredentials, RelayCursor, RelayCursors, RelayPool
from circle.net.statements import Kind as StatementKind
from circle.net.statements import decode as decode_statement
from circle.node.authorship import (
    PROOF_BLOCK_MAGIC,
    GatedDoc,
    decode_proofs,
    encode_proofs,
    pack_snapshot,
    unpack_snapshot,
)
from circle.node.service import CircleService
from circle.node.snapshots import RelayParts, seal_document

log = logging.getLogger("circle.node.relays")

STATE_KEY = "relay_state"
SAVE_EVERY_S = 2.0
#: A snapshot is published once the change envelopes seen since the last one
#: outweigh it (and at least this much).
MIN_SNAPSHOT_LOG = 16 * 1024
#: A push bigger than this goes out as one snapshot instead of changes.
MAX_CHANGE_PUSH = 512 * 1024
#: Envelope ids remembered across restarts (beyond, Automerge's idempotence).
SEEN_KEEP = 4096
#: How long the previous epoch's mailbox is still read (relay retention).
PREVIOUS_EPOCH_READ_S = 30 * 86400.0
CATCH_UP_WAIT_S = 10.0
_SKIP_MAX = 200_000


def _proofs_of(block: bytes) -> list[bytes]:
    try:
        return decode_proofs(block)
    except MalformedDocument:
        return []


def _h(change: bytes) -> bytes:
    return hashlib.blake2b(change, digest_size=16).digest()


@dataclass
class RelayRow:
    """One line of the Sync tab / `circle relays`."""

    url: str
    epoch: str  # "current" or "previous" (read-only, for stragglers)
    connected: bool
    caught_up: bool
    last_seen: float | None
    pending: int  # envelopes not yet acknowledged by this relay
    received: int
    error: str | None


@dataclass
class RelayStats:
    envelopes_opened: int = 0
    change_envelopes: int = 0
    change_envelopes_new: int = 0  # change envelopes that brought something new
    snapshots_received: int = 0
    snapshots_new: int = 0  # snapshots that brought something new
    snapshots_sent: int = 0
    envelopes_sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    last_error: str | None = None


@dataclass
class RelayRoundResult:
    url: str
    epoch: str
    error: str | None
    bytes_sent: int = 0  # protocol bytes exchanged with this relay in this round
    bytes_received: int = 0
    changes_applied: int = 0  # new document changes this relay brought (snapshots included)


@dataclass
class _Pending:
    env: bytes
    url: str
    previous: bool


@dataclass
class _State:
    pushed_heads: list[bytes] | None = None
    cursors: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    seen: list[bytes] = field(default_factory=list)
    log_bytes: int = 0
    snapshot_bytes: int = 0
    previous_epoch: int | None = None
    previous_since: float = 0.0
    sealed_epoch: int | None = None  # the epoch this device last sealed under


class RelaySync:
    """Relays for one `CircleService`. `start()`/`close()` for live use,
    `sync_round()` for a one-shot sync."""

    def __init__(
        self,
        svc: CircleService,
        *,
        on_change: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
    ) -> None:
        self.svc = svc
        self.on_change = on_change
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.stats = RelayStats()
        #: new document changes each relay brought (by URL), for `circle sync`
        self.changes_by_url: Counter[str] = Counter()
        self._state = self._load_state()
        self._seen_order: deque[bytes] = deque(self._state.seen, maxlen=SEEN_KEEP)
        self.inbox = EnvelopeInbox(self._held_keys, svc.is_active_member, set(self._state.seen))
        self._epoch = svc.config.epoch
        self.pool = self._make_pool(self._epoch, previous=False)
        self.previous: RelayPool | None = None
        self._previous_epoch: int | None = None
        prev = self._state.previous_epoch
        if self._state.sealed_epoch is not None and self._state.sealed_epoch != self._epoch:
            prev = self._state.sealed_epoch  # rotated while relays were not running
            self._state.previous_since = time.time()
        if (prev is not None and prev != self._epoch and prev in svc.config.epoch_keys
                and time.time() - self._state.previous_since < PREVIOUS_EPOCH_READ_S):
            self._previous_epoch = prev
            self.previous = self._make_pool(prev, previous=True)
        self._heads: list[bytes] | None = self._state.pushed_heads
        # What is persisted as pushed: only heads whose envelopes every relay
        # acknowledged, so a crash re-pushes rather than loses.
        self._acked_heads: list[bytes] | None = self._state.pushed_heads
        self._skip: set[bytes] = set()
        self._ready = False  # initial read done: pushing allowed
        self._catching_up = True  # envelopes are buffered, then applied snapshot first
        self._buffer: list[_Pending] = []
        self._reset_urls: set[str] = set()
        self._live = False
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.unsendable: str | None = None  # why the last snapshot could not be sealed, if it could not
        self.parts = RelayParts(svc)  # parts of split snapshots, kept until their set is whole
        self.waiting: str | None = None  # what an incomplete split snapshot still waits for
        self._last_save = 0.0
        self._dirty = False
        self._unsubscribe = svc.subscribe(self._on_service_change)

    # --- state ---------------------------------------------------------------

    def _load_state(self) -> _State:
        raw = self.svc.config.settings.get(STATE_KEY)
        if not isinstance(raw, str):
            return _State()
        try:
            data = json.loads(self.svc.home.unseal(base64.b64decode(raw)))
            heads = data.get("pushed_heads")
            return _State(
                pushed_heads=[bytes.fromhex(h) for h in heads] if isinstance(heads, list) else None,
                cursors={int(k): dict(v) for k, v in dict(data.get("cursors", {})).items()},
                seen=[bytes.fromhex(x) for x in data.get("seen", [])],
                log_bytes=int(data.get("log_bytes", 0)),
                snapshot_bytes=int(data.get("snapshot_bytes", 0)),
                previous_epoch=None if data.get("previous_epoch") is None else int(data["previous_epoch"]),
                previous_since=float(data.get("previous_since", 0.0)),
                sealed_epoch=None if data.get("sealed_epoch") is None else int(data["sealed_epoch"]),
            )
        except (CircleError, ValueError, TypeError, AttributeError, KeyError):
            log.warning("relay state in circle.json is unreadable; starting afresh")
            return _State()

    def _cursors_for(self, epoch: int, key: EpochKey) -> RelayCursors:
        out = RelayCursors()
        for url, c in self._state.cursors.get(epoch, {}).items():
            with contextlib.suppress(CircleError, ValueError, TypeError, AttributeError):
                mailbox = RelayCredentials.for_relay(key, url).mailbox.hex()
                out.by_url[url] = RelayCursor(str(c.get("instance", "")), mailbox, max(0, int(c.get("cursor", 0))))
        return out

    def save_state(self, force: bool = False) -> None:
        """Persist cursors, seen ids and pushed heads (sealed) in circle.json; throttled."""
        now = time.monotonic()
        if not force and (not self._dirty or now - self._last_save < SAVE_EVERY_S):
            return
        if self._catching_up and not force:
            return  # cursors ran ahead of what is applied: wait for the buffer
        self._last_save = now
        self._dirty = False
        st = self._state
        cursors: dict[str, Any] = {}
        for epoch, pool in ((self._epoch, self.pool), (self._previous_epoch, self.previous)):
            if epoch is None or pool is None:
                continue
            if self._catching_up:
                cursors[str(epoch)] = st.cursors.get(epoch, {})
                continue
            cursors[str(epoch)] = {u: {"instance": c.instance, "cursor": c.cursor}
                                   for u, c in pool.cursors.by_url.items()}
        if self.pending() == 0:
            self._acked_heads = self._heads
        data = {
            "pushed_heads": None if self._acked_heads is None else [h.hex() for h in self._acked_heads],
            "cursors": cursors,
            "seen": [x.hex() for x in self._seen_order],
            "log_bytes": st.log_bytes,
            "snapshot_bytes": st.snapshot_bytes,
            "previous_epoch": self._previous_epoch,
            "previous_since": st.previous_since,
            "sealed_epoch": st.sealed_epoch,
        }
        sealed = self.svc.home.seal(json.dumps(data, sort_keys=True).encode())
        self.svc.config.settings[STATE_KEY] = base64.b64encode(sealed).decode()
        try:
            self.svc.config.save(self.svc.home)
        except CircleError as exc:
            self.stats.last_error = f"cannot save relay state: {exc}"

    # --- pools ---------------------------------------------------------------

    def _held_keys(self) -> dict[int, EpochKey]:
        """Every key this device holds: envelopes name theirs only by a keyed hint."""
        return self.svc.config.epoch_keys

    def urls(self) -> list[str]:
        return [r.url for r in self.svc.board.relays()]

    def _make_pool(self, epoch: int, previous: bool) -> RelayPool:
        key = self.svc.config.epoch_keys[epoch]

        def on_envelope(env: bytes, url: str) -> None:
            self._on_envelope(env, url, previous)

        def on_reset(url: str) -> None:
            if not previous:  # never write into an old epoch's mailbox
                self._on_reset(url)

        def creds(url: str) -> RelayCredentials:  # a different token and mailbox on every relay
            return RelayCredentials.for_relay(key, url)

        return RelayPool(self.urls(), creds, cursors=self._cursors_for(epoch, key),
                         on_envelope=on_envelope, on_reset=on_reset, backoff=self.backoff,
                         open_timeout=self.open_timeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _switch_epoch(self) -> None:
        """The current epoch changed: new mailbox for writing and reading; the
        one we leave stays readable (never written) for stragglers."""
        new = self.svc.config.epoch
        if new == self._epoch or new not in self.svc.config.epoch_keys:
            return
        self._state.cursors[self._epoch] = {u: {"instance": c.instance, "cursor": c.cursor}
                                            for u, c in self.pool.cursors.by_url.items()}
        old_previous = self.previous
        if new > self._epoch or self._previous_epoch is None:
            self.previous, self._previous_epoch = self.pool, self._epoch
            self._state.previous_since = time.time()
        else:
            old_previous = self.pool  # went "back" (concurrent rotations settled lower): drop it
        self._epoch = new
        self.pool = self._make_pool(new, previous=False)
        if old_previous is not None and old_previous is not self.previous and self._live:
            self._spawn(old_previous.close())
        if self._live:
            self._spawn(self.pool.start())
        self._dirty = True
        log.info("relay mailbox switched to epoch %d", new)

    def _sync_relay_list(self) -> None:
        """Follow the document's relay list (any member may add or remove one)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        wanted = set(self.urls())
        for pool in (self.pool, self.previous):
            if pool is None:
                continue
            have = set(pool.urls)
            for url in sorted(wanted - have):
                self._spawn(pool.add_relay(url))
            for url in sorted(have - wanted):
                self._spawn(pool.remove_relay(url))

    # --- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Connect to every relay and keep syncing until `close()`."""
        self._live = True
        await self.pool.start()
        if self.previous is not None:
            await self.previous.start()
        self._spawn(self._initial_catch_up())

    async def _initial_catch_up(self) -> None:
        await self.pool.wait_caught_up(CATCH_UP_WAIT_S, any_relay=True)
        self._finish_catch_up()

    def _finish_catch_up(self) -> None:
        self._catching_up = False
        buffered, self._buffer = self._buffer, []
        self._apply(buffered)
        self._ready = True
        self._push_new()
        for url in sorted(self._reset_urls):
            self._on_reset(url)
        self._reset_urls.clear()
        self._dirty = True
        self.save_state()
        self._changed()

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._live:
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await self.pool.flush(timeout=2.0)
        await self.pool.close()
        if self.previous is not None:
            await self.previous.close()
        if self._catching_up:  # closed before catching up: keep what arrived
            self._finish_catch_up_quietly()
        self._live = False
        self.save_state(force=True)

    def _finish_catch_up_quietly(self) -> None:
        self._catching_up = False
        buffered, self._buffer = self._buffer, []
        self._apply(buffered)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every relay acknowledged everything queued."""
        done = await self.pool.flush(timeout)
        return all(done.values())

    async def sync_round(self, timeout: float = 15.0) -> list[RelayRoundResult]:
        """Once: read every relay (both mailboxes), apply, then seal and push
        what is pending under the epoch now current, and read again."""
        results: dict[tuple[str, str], str | None] = {}
        pools = {"current": self.pool, "previous": self.previous}

        def traffic() -> dict[tuple[str, str], tuple[int, int, int]]:
            return {(s.url, which): (s.bytes_sent, s.bytes_received, self.changes_by_url[s.url])
                    for which, pool in pools.items() if pool is not None for s in pool.status()}

        start = traffic()
        self._catching_up = True
        for _ in range(4):  # a rotation learned while reading: read the new mailbox too
            epoch = self._epoch
            rounds = [self.pool.sync_once(timeout)]
            if self.previous is not None:
                rounds.append(self.previous.sync_once(timeout))
            outs = await asyncio.gather(*rounds)
            for i, out in enumerate(outs):
                for url, err in out.items():
                    results[(url, "current" if i == 0 else "previous")] = err
            buffered, self._buffer = self._buffer, []
            self._apply(buffered)
            if self._epoch == epoch:
                break
        self._catching_up = False
        self._ready = True
        self._push_new()
        for url in sorted(self._reset_urls):
            self._on_reset(url)
        self._reset_urls.clear()
        final: list[tuple[str, RelayPool]] = []
        if self.pending():
            final.append(("current", self.pool))
        if self.previous is not None and any(r.pending for r in self.previous.status()):
            final.append(("previous", self.previous))  # the rotation itself, for stragglers
        outs = await asyncio.gather(*(pool.sync_once(timeout) for _, pool in final))
        for (which, _pool), out in zip(final, outs, strict=True):
            for url, err in out.items():
                results[(url, which)] = err
        self._dirty = True
        self.save_state(force=True)
        self.waiting = self.parts.waiting(self.svc.doc)  # parts kept from an earlier process count too
        pools = {"current": self.pool, "previous": self.previous}  # may have switched epoch
        end = traffic()
        rows: list[RelayRoundResult] = []
        for (url, which), err in sorted(results.items()):
            s0, s1 = start.get((url, which), (0, 0, 0)), end.get((url, which), (0, 0, 0))
            # changes are counted per relay, not per mailbox: give them to the current one
            changes = s1[2] - s0[2] if which == "current" else 0
            if err is None and which == "current":
                # the snapshot could not be sealed (nothing went out), or one received is incomplete
                err = self.unsendable or self.waiting
            rows.append(RelayRoundResult(url, which, err, max(0, s1[0] - s0[0]), max(0, s1[1] - s0[1]),
                                         max(0, changes)))
        return rows

    # --- reading ---------------------------------------------------------------

    def _on_envelope(self, env: bytes, url: str, previous: bool) -> None:
        item = _Pending(bytes(env), url, previous)
        if self._catching_up:
            self._buffer.append(item)
            return
        self._apply([item])

    def _apply(self, items: list[_Pending]) -> None:
        """Open, then apply snapshot(s) first and changes after, as one remote change."""
        if not items and not self.parts.complete:
            return
        opened: list[tuple[OpenedEnvelope, bool, int, str]] = []
        for item in items:
            try:
                got = self.inbox.accept(item.env)
            except RemoteProtocolError as exc:
                self.stats.rejected += 1
                self.stats.last_error = exc.message
                log.warning("rejected an envelope from %s: %s", item.url, exc.message)
                continue
            if got is None:
                self.stats.duplicates += 1
                continue
            self._seen_order.append(got.envelope_id)
            self.stats.envelopes_opened += 1
            if got.kind is Kind.SNAPSHOT and is_part(got.payloads[0]):
                try:
                    got = self.parts.add(got, item.env)
                except RemoteProtocolError as exc:
                    self.stats.rejected += 1
                    self.stats.last_error = f"snapshot part from {item.url}: {exc.message}"
                    log.warning("rejected a snapshot part from %s: %s", item.url, exc.message)
                    continue
                if got is None:
                    continue  # its set is not complete yet
            opened.append((got, item.previous, len(item.env), item.url))
        while self.parts.complete:  # a set completed by parts stored before a restart
            opened.insert(0, (self.parts.complete.pop(), False, 0, ""))
        if not opened:
            self.waiting = self.parts.waiting(self.svc.doc)
            return
        doc = self.svc.doc
        before = doc.heads()
        snapshots = [o for o in opened if o[0].kind is Kind.SNAPSHOT]
        changes = [o for o in opened if o[0].kind is Kind.CHANGES]
        from_previous: list[bytes] = []
        for env, previous, _size, url in reversed(snapshots):  # newest first
            self.stats.snapshots_received += 1
            self._state.log_bytes = 0
            self._state.snapshot_bytes = max(self._state.snapshot_bytes, len(env.payloads[0]))
            h0 = doc.heads()
            try:
                saved, proofs = unpack_snapshot(env.payloads[0])
                other = AmDoc.load(saved)
                self.svc.gate.stage(doc, lambda fork, other=other: fork.merge(other), proofs)  # type: ignore[misc]
            except CircleError as exc:
                self.stats.rejected += 1
                self.stats.last_error = f"snapshot from {env.author_id}: {exc}"
                continue
            if doc.heads() != h0:
                self.stats.snapshots_new += 1
                new = doc.changes_since(h0)
                self.changes_by_url[url] += len(new)
                if previous:
                    from_previous.extend(new)
        for env, previous, size, url in changes:
            self.stats.change_envelopes += 1
            self._state.log_bytes += size
            h0 = doc.heads()
            chunks = [p for p in env.payloads if not p.startswith(PROOF_BLOCK_MAGIC)]
            proofs = [x for p in env.payloads if p.startswith(PROOF_BLOCK_MAGIC) for x in _proofs_of(p)]
            try:
                self.svc.gate.stage(doc, lambda fork, chunks=chunks: fork.apply_changes(chunks), proofs)  # type: ignore[misc]
            except CircleError as exc:
                self.stats.rejected += 1
                self.stats.last_error = f"changes from {env.author_id}: {exc}"
                continue
            if doc.heads() != h0:
                self.stats.change_envelopes_new += 1
                self.changes_by_url[url] += len(doc.changes_since(h0))
                if previous:
                    from_previous.extend(chunks)
        self._dirty = True
        self.waiting = self.parts.waiting(doc)
        if doc.heads() == before:
            self.save_state()
            return
        # Changes that came from a relay are not pushed back — except those
        # read from the previous epoch's mailbox: members who only read the
        # current one need them, sealed under the current key.
        keep = {_h(c) for c in from_previous}
        for change in doc.changes_since(before):
            hc = _h(change)
            if hc not in keep:
                self._skip.add(hc)
        if len(self._skip) > _SKIP_MAX:
            self._skip.clear()
        try:
            self.svc.remote_changed()  # persist, reconcile, notify (our listener pushes what is ours)
        except CircleError as exc:
            self.stats.last_error = str(exc)
        self.save_state()
        self._changed()

    # --- writing ---------------------------------------------------------------

    def _identity_epoch(self) -> tuple[int, EpochKey]:
        epoch = self.svc.config.epoch
        if epoch != self._epoch:
            self._switch_epoch()
        return epoch, self.svc.config.epoch_keys[epoch]

    def _push_new(self) -> None:
        """Seal and push every change not pushed yet and not from a relay."""
        if not self._ready or not self.pool.urls:
            return  # nowhere to push: keep it pending (a relay added later gets it)
        doc = self.svc.doc
        heads = doc.heads()
        if self._heads == heads:
            return
        if self._heads is None:  # first time with relays: one snapshot says it all
            self._heads = heads
            self.publish_snapshot()
            return
        try:
            diff = doc.changes_since(self._heads)
            standalone = {_h(c) for c in doc.changes_on([COLLECTIONS_CHANGE_HASH], self._heads)}
        except MalformedDocument:
            self._heads = heads
            self.publish_snapshot()
            return
        todo = [c for c in diff if _h(c) not in self._skip]
        self._heads = heads
        alerts = [c for c in todo if _h(c) in standalone]
        if alerts:  # a raised alert goes first, in its own envelope (issue 13; crdt/defence.py)
            epoch, key = self._identity_epoch()
            self._push(seal_changes_with_proofs(self.svc, epoch, key, [COLLECTIONS_CHANGE, *alerts]), urgent=True)
            todo = [c for c in todo if _h(c) not in standalone]
        self._dirty = True
        todo = self._straggler_part(todo)
        if not todo:
            return
        if sum(len(c) for c in todo) > MAX_CHANGE_PUSH:
            self.publish_snapshot()
            return
        epoch, key = self._identity_epoch()
        envs = seal_changes_with_proofs(self.svc, epoch, key, todo)
        self._push(envs)
        self._state.log_bytes += sum(len(e) for e in envs)
        if self._snapshot_due():
            self.publish_snapshot()

    def _straggler_part(self, todo: list[bytes]) -> list[bytes]:
        """Pending changes from before a rotation this device has not sealed
        under yet (it rotated, or learned of a rotation, while relays were not
        running) go to the previous epoch's mailbox: members who have not
        rotated yet read only that one and learn the new epoch from these.
        Only changes up to the rotation go there — none causally after it.
        Returns what is left to seal under the current epoch."""
        old, cur = self._state.sealed_epoch, self.svc.config.epoch
        self._state.sealed_epoch = cur
        if (old is None or old == cur or old != self._previous_epoch or self.previous is None
                or old not in self.svc.config.epoch_keys or not todo):
            return todo
        prefix = {_h(c) for c in history_until_epoch(self.svc.doc, cur)}
        early = [c for c in todo if _h(c) in prefix]
        if early:
            envs = seal_changes_with_proofs(self.svc, old, self.svc.config.epoch_keys[old], early)
            for env in envs:
                self.inbox.seen.add(envelope_id(env))
            self.previous.push(envs)
            self.stats.envelopes_sent += len(envs)
        return [c for c in todo if _h(c) not in prefix]

    def _push(self, envs: list[bytes], url: str | None = None, urgent: bool = False) -> None:
        for env in envs:
            eid = envelope_id(env)
            self.inbox.seen.add(eid)  # our own envelopes come back after a restart: skip them
            self._seen_order.append(eid)
        if url is None:
            self.pool.push(envs, urgent=urgent)
        elif url in self.pool.urls:
            self.pool.push_to(url, envs)
        self.stats.envelopes_sent += len(envs)
        self._dirty = True
        self._changed()

    def _snapshot_due(self) -> bool:
        limit = max(MIN_SNAPSHOT_LOG, self._state.snapshot_bytes or self.svc.store.snapshot_size())
        return self._state.log_bytes > limit

    def publish_snapshot(self, url: str | None = None) -> bool:
        """Seal the whole document as a snapshot and push it (to one relay or all):
        one envelope, or a set of parts when it is bigger than one envelope holds."""
        epoch, key = self._identity_epoch()
        saved = self.svc.packed_snapshot()
        try:
            envs = list(seal_document(self.svc, epoch, key, saved, self.svc.doc.heads()))
        except LocalProtocolError as exc:
            # Nothing went out: say so in every round's result, never "in sync" (issue 16 case 3).
            self.unsendable = (f"the circle ({len(saved) / 1e6:.1f} MB saved) is too large to send through a "
                               f"relay ({exc}); nothing was sent")
            self.stats.last_error = self.unsendable
            return False
        self.unsendable = None
        self._push(envs, url)
        if self._state.sealed_epoch is None:
            self._state.sealed_epoch = epoch
        self.stats.snapshots_sent += 1
        self._state.snapshot_bytes = len(saved)
        if url is None:
            self._state.log_bytes = 0
        return True

    def _on_reset(self, url: str) -> None:
        if not self._ready:
            self._reset_urls.add(url)
            return
        self.publish_snapshot(url)

    # --- service events --------------------------------------------------------

    def _on_service_change(self, origin: str) -> None:
        if self.svc.config.epoch != self._epoch:
            self._switch_epoch()
        if origin != "epoch":
            self._sync_relay_list()
            self._push_new()
        self.save_state()
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- status ------------------------------------------------------------------

    def status(self) -> list[RelayRow]:
        rows: list[RelayRow] = []
        for which, pool in (("current", self.pool), ("previous", self.previous)):
            if pool is None:
                continue
            for s in pool.status():
                error = s.last_error or (self.waiting if which == "current" else None)
                rows.append(RelayRow(s.url, which, s.connected, s.caught_up, s.last_seen, s.pending,
                                     s.received, error))
        return rows

    def pending(self) -> int:
        """Envelopes not yet acknowledged by every relay of the current epoch."""
        return max((s.pending for s in self.pool.status()), default=0)


def history_until_epoch(doc: AmDoc, epoch: int) -> list[bytes]:
    """The change that recorded epoch `epoch` and all its ancestors, in
    causal order (every change if none did). Nothing in it is after or
    concurrent with that rotation, so it may be sealed under the epoch before
    it: a member who has not rotated learns the new epoch from it, and the
    member it removed learns only that it was removed."""
    changes = doc.changes_since([])
    probe = AmDoc.new()
    known: set[str] = set()
    for change in changes:
        before = set(probe.heads())
        probe.apply_changes([change])
        ids = set(probe.record_ids("statements")) - known
        known |= ids
        blobs = probe.root_scalars("statements")
        for sid in ids:
            blob = blobs.get(sid)
            try:
                st = decode_statement(blob) if isinstance(blob, bytes) else None
            except CircleError:
                st = None
            if st is not None and st.kind is StatementKind.EPOCH and st.number == epoch:
                rotation = [h for h in probe.heads() if h not in before]
                later = {_h(c) for c in doc.changes_since(rotation)}
                return [c for c in changes if _h(c) not in later]
    return changes


def seal_changes_with_proofs(svc: CircleService, epoch: int, key: EpochKey, changes: list[bytes]) -> list[bytes]:
    """Change envelopes, each carrying the proofs of its own changes."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for change in [*changes, b""]:
        if group and (not change or size + len(change) > 48 * 1024):
            hashes = [h for h in (change_hash(c) for c in group) if h is not None]
            proofs = GatedDoc(svc.doc, svc.gate).proofs_for_hashes(hashes)
            out += seal_changes(svc.home.identity, epoch, key, [*group, encode_proofs(proofs)],
                                max_block=4 * 1024 * 1024)
            group, size = [], 0
        if change:
            group.append(change)
            size += len(change)
    return out


def seal_bundle_envelopes(svc: CircleService) -> Iterator[bytes]:
    """What `circle bundle write` carries, one envelope at a time: a snapshot
    of the whole document under the current epoch (it supersedes any change
    log; a set of parts if it is bigger than one envelope), and, if this
    device holds the epoch before it, the document *as of the rotation* under
    that older key, so a member who has not rotated yet learns the new epoch
    from the stick (nothing written after the rotation is in it)."""
    epoch = svc.config.epoch
    yield from seal_document(svc, epoch, svc.config.epoch_keys[epoch], svc.packed_snapshot(), svc.doc.heads())
    older = [n for n in svc.config.epoch_keys if n < epoch]
    if older:
        previous = max(older)
        base = AmDoc.new()
        base.apply_changes(history_until_epoch(svc.doc, epoch))
        packed = pack_snapshot(base.save(), svc.gate.head_proofs(base))
        yield from seal_document(svc, previous, svc.config.epoch_keys[previous], packed, base.heads())


def undelivered(svc: CircleService) -> int | None:
    """Changes on this device that no relay has acknowledged storing (None: no relay listed, or unknown).

    Read from the sealed relay state (`pushed_heads` only moves once every
    relay of the current mailbox acknowledged), so `circle status` can say
    what is still owed to the relays without connecting to them."""
    if not svc.board.relays():
        return None
    raw = svc.config.settings.get(STATE_KEY)
    if not isinstance(raw, str):
        return len(svc.doc.changes_since([]))
    try:
        heads = json.loads(svc.home.unseal(base64.b64decode(raw))).get("pushed_heads")
        if not isinstance(heads, list):
            return len(svc.doc.changes_since([]))
        return len(svc.doc.changes_since([bytes.fromhex(h) for h in heads]))
    except (CircleError, ValueError, TypeError, AttributeError):
        return None


def is_envelope(data: bytes) -> bool:
    try:
        peek_header(data)
    except RemoteProtocolError:
        return False
    return True


__all__ = ["RelayRoundResult", "RelayRow", "RelayStats", "RelaySync", "seal_bundle_envelopes", "undelivered"]
