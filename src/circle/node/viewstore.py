"""The board view kept across processes (issue 16 case 8): `status` and
`need list` / `offer list` on a 100k-record circle without loading the
Automerge document, and a process that does load it without parsing every
record again.

Files, in `circles/<id>/view/`, each sealed with the home's data key when
the home has a passphrase (like the document), replaced atomically:
- `seed`: needs and offers as the board derived them (crdt/rows.py
  ViewSeed: verified writers, masked late writes, clock shifts; status is
  derived again when read).
- `board`: what `status` says that comes from the document, the handles of
  every member, the expiry times of active needs and open offers (so counts
  are made at the time of reading), and the *position* it was made at.

Rules:
- A process writes the view only when its document is exactly what the
  store holds up to a position it read or wrote itself (DocStore.position:
  log inode, generation and offset) and nothing it holds is unsaved. Another
  process that appended meanwhile makes the store's position differ, so the
  view is never taken for a state it was not made from.
- A reader loads the store's files (checksums, damage; not the Automerge
  document) and uses the view only at the same position, under the same
  first-seen times, code version and format. Damage in the store is always
  a miss, so it is reported by the full path in words, every time.
- Derived states change with the clock: need and offer counts are made from
  stored expiry times at reading; the rest of `status` (overdue loans,
  upcoming events) carries the earliest time it can change and is a miss
  after it, or if the clock went back.
- `seed` is written before `board`, and `board` names the digest of the
  `seed` it goes with: a crash between the two is a miss, never a mix.
- Nothing is written once the home was locked or wiped after the process
  opened it (a `serve` that exits on a panic lock leaves no plain copy of
  the board behind the wipe).
- Anything odd (missing, damaged, foreign, unreadable) is a miss, never an
  error. Writing is best effort: a full disk or read-only home only means
  the next process does the work again.
- Any process that loads the document starts its first view from `seed`
  (crdt/board.py Board.view) when the context matches, and re-reads only
  the records that changed since the seed's heads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from circle import __version__
from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.crdt.model import DAY_MS, LoanStatus, Millis, Need, NeedStatus, Offer, OfferStatus
from circle.crdt.rows import ViewSeed, need_from_row, offer_from_row
from circle.crdt.store import DocStore, atomic_write, read_regular
from circle.errors import CircleError
from circle.node import firstseen, panic
from circle.node.home import CircleConfig, Home


class Service(Protocol):
    """What keeping a view needs of a circle service (node/service.py)."""

    home: Home
    config: CircleConfig
    store: DocStore
    doc: AmDoc
    board: Board
    clock: Callable[[], Millis]
    lock_stamp_at_open: str | None

    @property
    def persisted_heads(self) -> list[bytes]: ...

FORMAT = 1
DIRECTORY = "view"
#: Longest the non-count part of a status is trusted without a deadline (a safety net).
MAX_AGE_MS: Millis = 7 * DAY_MS


def _dir(home: Home, circle_id: str) -> Path:
    return home.circle_dir(circle_id) / DIRECTORY


def seen_digest(seen: dict[str, Millis]) -> str:
    return hashlib.blake2b(json.dumps(sorted(seen.items())).encode(), digest_size=16).hexdigest()


def _read(home: Home, path: Path) -> bytes | None:
    try:
        return home.unseal(read_regular(path, "the kept board view"))
    except (OSError, CircleError):
        return None


def _write(path: Path, data: bytes) -> bool:
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(path, data)
        return True
    except (OSError, CircleError):
        return False


# --- writing ----------------------------------------------------------------


def unchanged(svc: Service) -> bool:
    """Whether the kept view is already at this process's position."""
    position = svc.store.position()
    return position is not None and position == _board_position(svc.home, svc.config.circle_id)


def can_keep(svc: Service) -> bool:
    """Whether this process may keep its view: nothing unsaved, the store
    undamaged, the home neither locked nor wiped since it was opened."""
    store = svc.store
    if store.damage is not None or store.damaged_tail or svc.doc.heads() != svc.persisted_heads:
        return False
    if store.position() is None:
        return False
    return panic.lock_stamp(svc.home.path) == svc.lock_stamp_at_open and not panic.wiped_at(svc.home.path)


def save(svc: Service, status: dict[str, Any], relay_state: str | None, seed: ViewSeed | None = None) -> bool:
    """Keep this process's view for later ones (node/status.py `keep` decides
    when and computes `status`). False when it cannot be kept truthfully
    (can_keep) or needs and offers were not derived here."""
    if not can_keep(svc):
        return False
    position = svc.store.position()
    seed = seed if seed is not None else svc.board.export_seed()
    if seed is None or position is None:
        return False
    now = svc.clock()
    view = svc.board.view()
    needs = sorted(n.expires_at for n in view.needs.values() if n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED))
    offers = sorted(o.expires_at for o in view.offers.values() if o.status == OfferStatus.OPEN)
    seed_bytes = json.dumps(seed.to_json(), separators=(",", ":")).encode()
    sealed_seed = svc.home.seal(seed_bytes)
    board = {
        "format": FORMAT, "version": __version__, "position": position, "computed_at": now,
        "valid_until": min(_rest_deadline(svc, now), now + MAX_AGE_MS),
        "seen": seen_digest(svc.board.first_seen),
        "seed": hashlib.blake2b(sealed_seed, digest_size=32).hexdigest(),
        "status": status, "relay_state": relay_state,
        "parts": parts_listing(svc.home, svc.config.circle_id),
        # Counts at reading: an active need / open offer is one whose expiry is still ahead.
        "active_need_expiries": needs, "open_offer_expiries": offers,
        "handles": {m.id: m.handle for m in view.members.values()},
    }
    base = _dir(svc.home, svc.config.circle_id)
    return (_write(base / "seed", sealed_seed)
            and _write(base / "board", svc.home.seal(json.dumps(board, separators=(",", ":")).encode())))


def _board_position(home: Home, circle_id: str) -> str | None:
    raw = _read(home, _dir(home, circle_id) / "board")
    try:
        got = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return got.get("position") if isinstance(got, dict) and got.get("version") == __version__ else None


def _rest_deadline(svc: Service, now: Millis) -> Millis:
    """The earliest time the non-count part of `status` can change by the
    clock alone: a loan becomes overdue, an upcoming event ends."""
    from circle.crdt.gatherings import gatherings

    view = svc.board.view()
    times = [x.due_at + 1 for x in view.loans.values() if x.status == LoanStatus.OUT and not x.overdue]
    times += [e.ends_at for e in gatherings(svc.board).events("upcoming")]
    return min((t for t in times if t > now), default=now + MAX_AGE_MS)


def seed_loader(home: Home, circle_id: str) -> Callable[[], ViewSeed | None]:
    """Reads the kept seed when the board first needs it (not at all for
    commands that never read needs or offers)."""
    def load() -> ViewSeed | None:
        raw = _read(home, _dir(home, circle_id) / "seed")
        if raw is None:
            return None
        try:
            return ViewSeed.from_json(json.loads(raw))
        except (ValueError, TypeError, UnicodeError):
            return None
    return load


# --- what status says from files other than the document --------------------------


def parts_listing(home: Home, circle_id: str) -> list[str]:
    """Names of the stored parts of split snapshots (node/snapshots.py):
    they change without the document changing."""
    try:
        return sorted(os.listdir(home.circle_dir(circle_id) / "parts"))
    except OSError:
        return []


def peer_rows(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The peers `status` lists (from circle.json, not the document)."""
    return [{**info, "address": f"{info.get('address')}:{info.get('port')}"}
            for info in settings.get("peers", {}).values() if isinstance(info, dict)]


def storage_facts(home: Home, store: DocStore) -> dict[str, Any]:
    """What `status` says of the local store, read from the files now."""
    return {
        "path": str(store.path),
        "encrypted_at_rest": home.encrypted,
        "protection": "encrypted with your passphrase (argon2id + XSalsa20-Poly1305)"
        if home.encrypted else "NOT encrypted: protected only by file permissions",
        "snapshot_bytes": store.snapshot_size(),
        "log_bytes": store.log_size(),
        "damaged_tail_ignored": store.damaged_tail,
        "in_clear": home.in_clear(),
    }


@dataclass
class Kept:
    """A kept view that fits the store as it is now."""

    board: dict[str, Any]
    seed_file: Path
    seed_digest: str


def current(home: Home, circle_id: str, now: Millis) -> tuple[Kept, DocStore, CircleConfig] | None:
    """The kept board, the store and the circle's settings, when the kept view
    fits the store as it is now (else None)."""
    raw = _read(home, _dir(home, circle_id) / "board")
    if raw is None:
        return None
    try:
        board = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(board, dict) or board.get("format") != FORMAT or board.get("version") != __version__:
        return None
    computed = board.get("computed_at")
    if not isinstance(computed, int) or computed > now:
        return None  # the clock went back: nothing derived from time can be trusted
    try:
        config = CircleConfig.load(home, circle_id)
        store = DocStore(home.circle_dir(circle_id) / "doc", home.doc_cipher(circle_id))
        loaded = store.load()  # the files' checksums and tags; the Automerge document is not read
    except (OSError, CircleError):
        return None
    if loaded.damage is not None or loaded.damaged_tail or store.position() != board.get("position"):
        return None
    if board.get("seen") != seen_digest(firstseen.load(home, home.circle_dir(circle_id))):
        return None
    return Kept(board, _dir(home, circle_id) / "seed", str(board.get("seed"))), store, config


# --- needs and offers -----------------------------------------------------------


@dataclass
class KeptRecords:
    needs: list[Need]
    offers: list[Offer]
    handles: dict[str, str]


def kept_records(home: Home, circle_id: str, now: Millis, which: str) -> KeptRecords | None:
    """Needs (`which` = "needs") or offers from the kept view, with their
    status at `now`, or None (then the caller loads the document)."""
    got = current(home, circle_id, now)
    if got is None:
        return None
    kept = got[0]
    try:
        sealed = read_regular(kept.seed_file, "the kept board view")
    except (OSError, CircleError):
        _forget_board(home, circle_id)
        return None
    if hashlib.blake2b(sealed, digest_size=32).hexdigest() != kept.seed_digest:
        _forget_board(home, circle_id)  # a seed from another write (a crash between the two): write both again
        return None
    try:
        seed = ViewSeed.from_json(json.loads(home.unseal(sealed)))
        handles = kept.board.get("handles")
        if not isinstance(handles, dict):
            return None
        if which == "needs":
            return KeptRecords([need_from_row(r, now) for r in seed.rows["needs"]], [], handles)
        return KeptRecords([], [offer_from_row(r, now) for r in seed.rows["offers"]], handles)
    except (ValueError, TypeError, UnicodeError, CircleError, KeyError):
        return None


def _forget_board(home: Home, circle_id: str) -> None:
    """The board file goes when its seed is missing or another write's: the
    next process that derives needs and offers then keeps both again."""
    try:
        (_dir(home, circle_id) / "board").unlink()
    except OSError:
        pass
