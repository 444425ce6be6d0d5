"""The board: every action a member can take, over one `AmDoc`.

Mutations validate against the current view first, then write one Automerge
transaction, then call `on_commit` (the service appends the new change to the
durable log there). Reads go through a `BoardView` cached per document heads.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from circle.crdt.am import AmDoc, Field
from circle.crdt.model import (
    COLLECTIONS,
    DAY_MS,
    DEFAULT_NEED_DAYS,
    DEFAULT_OFFER_DAYS,
    SCHEMA_VERSION,
    Availability,
    Condition,
    Hold,
    HoldStatus,
    Loan,
    Malformed,
    Member,
    MemberId,
    Millis,
    Need,
    NeedStatus,
    Offer,
    OfferStatus,
    RecordId,
    RelayRecord,
    Tool,
    ToolState,
    Urgency,
)
from circle.crdt.rows import (
    SEEDED,
    ViewSeed,
    malformed_from_row,
    malformed_row,
    need_row,
    offer_row,
)
from circle.crdt.views import BoardView, SeedView, build_view, parse_relay
from circle.errors import (
    ActionRefused,
    AmbiguousId,
    NotAMember,
    NotFound,
    SchemaTooNew,
    UsageError,
)

T = TypeVar("T", Need, Offer)

_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
MAX_TEXT = 4000
MAX_TITLE = 200
#: Bump when what a seed's rows mean changes (crdt/rows.py).
SEED_FORMAT = 1
#: Most records a process reads only to keep its view for the next one (about 1 s).
MAX_REREAD = 20_000


def now_ms() -> Millis:
    return int(time.time() * 1000)


def new_record_id() -> RecordId:
    raw = int.from_bytes(os.urandom(5), "big")  # 40 bits -> 8 characters
    return RecordId("".join(_ID_ALPHABET[(raw >> (5 * i)) & 31] for i in range(8)))


def _clean_text(value: str, what: str, limit: int, required: bool = False) -> str:
    text = value.strip()
    if required and not text:
        raise UsageError(f"{what} must not be empty")
    if len(text) > limit:
        raise UsageError(f"{what} is longer than {limit} characters")
    return text


def clean_tags(tags: Iterable[str]) -> str:
    """Tags are stored as one space-separated string, not a nested map: a
    record then reads in fewer Automerge calls (the cost that dominates a
    10k-record list). Concurrent tag edits resolve last-writer-wins, which
    is acceptable for a field only the author edits."""
    out: list[str] = []
    for tag in tags:
        t = "-".join(tag.strip().lower().lstrip("#").split())[:40]
        if t and t not in out:
            out.append(t)
    return " ".join(sorted(out[:20]))


def _category(value: str) -> str:
    return value.strip().lower()[:60]


@dataclass(frozen=True)
class Profile:
    """What a member record is made from (at init, and when someone joins)."""

    handle: str
    sign_key: bytes
    box_key: bytes
    zone: str = ""


class Board:
    def __init__(
        self,
        doc: AmDoc,
        me: MemberId | None,
        clock: Callable[[], Millis] = now_ms,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.doc = doc
        self.me = me
        self.clock = clock
        self.on_commit = on_commit
        self._view: BoardView | None = None
        self._view_key: tuple[tuple[bytes, ...], Millis, int, object] | None = None
        #: This device's first-seen times of records whose writer's clock was
        #: implausible (crdt/clock.py; kept by the node). Replace the mapping
        #: (never mutate it) so the next view re-reads everything.
        self.first_seen: dict[str, Millis] = {}
        #: Maps an Automerge actor to the member whose device it is, as the
        #: signed statements say (set by the node's trust layer); None = unknown.
        self.member_of_actor: Callable[[bytes], MemberId | None] = lambda _actor: None
        #: The members as the signed statements say (set by the trust layer).
        self.members_source: Callable[[], dict[MemberId, Member]] | None = None
        #: Actors of removed devices that wrote after their removal's pin, and
        #: whether one op of theirs still counts (set by the trust layer).
        self.late_actors: Callable[[], set[bytes]] = lambda: set()
        self.op_counts: Callable[[bytes, int], bool] = lambda _actor, _op: True
        self._writers: dict[str, dict[str, MemberId | None]] = {}
        self._relays: tuple[tuple[bytes, ...], dict[str, RelayRecord]] | None = None
        #: Needs and offers as a board derived them in an earlier process
        #: (node/viewstore.py): the first view starts from them and re-reads
        #: only what changed since. Used once, and only under the same context.
        self.seed: ViewSeed | Callable[[], ViewSeed | None] | None = None
        #: Whether the first view was started from the seed (for the store's report).
        self.seeded = False
        #: The seed as a view (made when first needed), its heads and writers;
        #: False once found unusable.
        self._standin: tuple[SeedView, list[bytes], dict[str, dict[str, str | None]], str] | Literal[False] | None = None
        #: Whether this process derived needs or offers (then it keeps them on exit).
        self._derived = False
        self.check_schema()

    # --- creation and meta ------------------------------------------------

    @staticmethod
    def create_document(name: str, circle_id: str, at: Millis, statements: list[tuple[str, bytes]],
                        actor: bytes | None = None) -> AmDoc:
        """The founding change: every collection exists from the first change,
        so no two replicas ever create the same collection concurrently (which
        would hide one of them after merge). It carries the founding statements."""
        doc = AmDoc.new(actor)
        with doc.edit() as ed:
            ed.create_collections(COLLECTIONS)
            ed.put_root_scalar("meta", "schema", SCHEMA_VERSION)
            ed.put_root_scalar("meta", "circle_id", circle_id)
            ed.put_root_scalar("meta", "name", _clean_text(name, "circle name", 80, True))
            ed.put_root_scalar("meta", "created_at", at)
            for sid, blob in statements:
                ed.put_root_scalar("statements", sid, blob)
        return doc

    def meta(self) -> dict[str, object]:
        return dict(self.doc.root_scalars("meta"))

    def check_schema(self) -> None:
        """Never refuses to open: `meta.schema` is a field any member can write,
        so one member writing 99 must not lock everyone out (DESIGN §8). A
        newer schema makes the board read-only instead (`schema_too_new`):
        views show what this version can read, edits are refused, nothing is
        rewritten; `status` says so."""

    def schema_too_new(self) -> str | None:
        if self.doc.is_empty():
            return None
        schema = self.doc.root_scalars("meta").get("schema")
        if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
            return (f"this circle says it was written by a newer version of circle (schema {schema}, "
                    f"this one knows {SCHEMA_VERSION}): it is shown read-only; upgrade circle to edit it")
        return None

    @property
    def name(self) -> str:
        value = self.doc.root_scalars("meta").get("name")
        return value if isinstance(value, str) else "?"

    # --- views -----------------------------------------------------------

    def view(self) -> BoardView:
        """Parsed, derived state; rebuilt when the document or the minute changes."""
        now = self.clock()
        # What removed devices wrote late is masked by the document's reads
        # (crdt/am.py): a new set of pins re-reads every record.
        key = (tuple(self.doc.heads()), now // 60_000, id(self.first_seen), self.doc.late_key())
        if self._view is None or self._view_key != key:
            previous, changed = None, None
            if self._view is not None and self._view_key is not None and self._view_key[2:] == key[2:]:
                # New heads or a new minute: re-read only the records that changed
                # (time-derived states are judged again, crdt/views.py at_time).
                changed = self.doc.changed_records(list(self._view_key[0]), list(key[0]))
                previous = self._view if changed is not None else None
            self._view = build_view(self.doc, now, previous, changed, lambda a: self.member_of_actor(a),
                                    self.first_seen, self._seed_fallback(list(key[0]), now))
            self._view_key = key
            if previous is not None:
                # Views carry over only from the one before: without this, each
                # view kept every earlier one alive (a long app session grew
                # by a copy of the board per edit).
                previous._previous = None
                previous._fallback = None
                previous.carried_from.clear()
            if changed is None:
                self._writers.clear()
            else:
                for collection, rids in changed.items():
                    for rid in rids:
                        self._writers.get(collection, {}).pop(rid, None)
        if self.members_source is not None and "members" not in self._view.__dict__:
            # Members come from the signed statements, never from records.
            self._view.__dict__["members"] = self.members_source()
            # Authors are checked when needs or offers are first read (lazily,
            # as the view parses each collection only when asked).
            self._view.__class__ = _VerifiedView
            self._view._verify = self._verify_authors  # type: ignore[attr-defined]
            late = self.late_actors()
            if late:
                self._drop_late_writes(self._view, late)
        return self._view

    # --- a view carried across processes (node/viewstore.py) -------------

    def seed_context(self) -> str:
        """What derived needs and offers depend on besides the document's
        heads: who is who (the signed statements), what removed devices' late
        writes hide, and this device's first-seen times. A seed made under
        another context is never used (a new device binding changes the
        verified writer of records that did not change themselves)."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(repr((SEED_FORMAT, sorted(self.doc.record_ids("statements")), self.doc.late_key(),
                            sorted(self.first_seen.items()))).encode())
        return digest.hexdigest()

    def _seed_fallback(self, heads: list[bytes], now: Millis
                       ) -> Callable[[], tuple[BoardView, dict[str, set[str]]] | None] | None:
        """For a view at `heads`: the seed an earlier process kept, as a view to
        carry needs and offers over from, asked only when one of them is first
        read (a `tool list` never reads or converts the seed)."""
        if self.seed is None and self._standin is None:
            return None
        answer: list[tuple[BoardView, dict[str, set[str]]] | None] = []

        def get() -> tuple[BoardView, dict[str, set[str]]] | None:
            if not answer:
                answer.append(self._from_seed(heads, now))
            return answer[0]
        return get

    def _make_standin(self, now: Millis) -> bool:
        """Read the seed into a stand-in view once (no diff yet); whether it can be used."""
        if self._standin is None:
            seed = self.seed() if callable(self.seed) else self.seed
            self.seed = None
            if seed is None or seed.context != self.seed_context():
                self._standin = False
                return False
            try:
                malformed = {name: [malformed_from_row(m) for m in seed.malformed[name]] for name in SEEDED}
                malformed["authorship"] = [malformed_from_row(m) for m in seed.authorship]
            except (ValueError, TypeError, KeyError, IndexError):
                self._standin = False
                return False
            self._standin = (SeedView(now, dict(seed.rows), malformed), seed.heads, seed.writers, seed.context)
        return self._standin is not False

    def _seed_rows(self, name: str) -> int:
        if not self._standin:
            return 0
        view = self._standin[0]
        return len(view._rows.get(name, ())) or len(view.__dict__.get(name, {}))

    def _from_seed(self, heads: list[bytes], now: Millis) -> tuple[BoardView, dict[str, set[str]]] | None:
        """The stand-in view made of the seed's rows (made once per process,
        under the context it was kept with), and which records changed since
        the seed's heads; None when the seed cannot be used."""
        if not self._make_standin(now) or not self._standin:
            return None
        standin, seed_heads, writers, context = self._standin
        if context != self.seed_context():
            # Membership, late writes or first-seen times moved since the seed
            # was read (a long-running process): its rows no longer fit.
            self._standin = False
            return None
        changed = {} if seed_heads == heads else self.doc.changed_records(seed_heads, heads)
        if changed is None:
            return None
        for name in SEEDED:
            gone = changed.get(name, set())
            known = self._writers.setdefault(name, {})
            for rid, w in writers[name].items():
                if rid not in gone and rid not in known:
                    known[rid] = MemberId(w) if w else None
            for rid in gone:
                known.pop(rid, None)
        self.seeded = True
        return standin, changed

    def export_seed(self) -> ViewSeed | None:
        """This process's needs and offers as a seed for later processes, or
        None when bringing them to the current heads would mean reading more
        than MAX_REREAD records (nothing derived here, or a bulk import since):
        keeping a view must not make a command cost a whole parse; the next
        reader that needs them derives them and keeps them then."""
        if self.seed is None and not self._standin and not self._derived:
            return None
        view, key = self.view(), self._view_key
        if key is None or self._reread_cost(view) > MAX_REREAD:
            return None
        view.needs, view.offers  # noqa: B018
        needs: dict[RecordId, Need] = view.__dict__["needs"]
        offers: dict[RecordId, Offer] = view.__dict__["offers"]
        writers = {name: {rid: self._writers.get(name, {}).get(rid) for rid in table}
                   for name, table in (("needs", needs), ("offers", offers))}
        return ViewSeed(
            heads=list(key[0]), context=self.seed_context(),
            rows={"needs": [need_row(n) for n in needs.values()], "offers": [offer_row(o) for o in offers.values()]},
            writers={name: {rid: w for rid, w in table.items()} for name, table in writers.items()},
            malformed={name: [malformed_row(m) for m in view._malformed.get(name, [])] for name in SEEDED},
            authorship=[malformed_row(m) for m in view._malformed.get("authorship", []) if m.collection in SEEDED],
        )

    def _reread_cost(self, view: BoardView) -> int:
        """How many records deriving needs and offers in `view` would read:
        none for one already derived, the changed ones for one an earlier view
        (or the seed) holds, every record otherwise. A count that differs by
        more than MAX_REREAD (a bulk import) is told before any diff is made."""
        cost = 0
        for name in SEEDED:
            if name in view.__dict__:
                continue
            total = len(self.doc.record_ids(name))
            previous, changed = view._previous, view._changed
            if previous is not None and changed is not None and name in previous._malformed:
                held = previous.carried(name)
                if held is not None and abs(total - len(held)) <= MAX_REREAD:
                    cost += len(changed.get(name, ()))
                    continue
            elif self._make_standin(view.now) and abs(total - self._seed_rows(name)) <= MAX_REREAD:
                source = view.source_of(name)
                if source is not None:
                    cost += len(source[1].get(name, ()))
                    continue
            cost += total
        return cost

    def _verify_authors(self, view: BoardView, collection: str, table: dict[Any, Any]) -> None:
        """A need's or offer's author is who *wrote* it (the signed device's
        member), whatever its `author` field claims; a mismatch is reported."""
        self._derived = True
        notes = view._malformed.setdefault("authorship", [])
        source = view.carried_from.get(collection)
        if source is not None:
            # Records carried over from an earlier view (or a seed) already
            # show their verified writer: their reports carry over with them
            # (they were lost after the first edit when only re-made here).
            gone = source[1].get(collection, set())
            notes.extend(m for m in source[0]._malformed.get("authorship", [])
                         if m.collection == collection and m.id not in gone)
        cache = self._writers.setdefault(collection, {})
        if len(table) - len(cache) > 64:  # many unknown: every record's creator in one read
            _coll, creators = self.doc.object_ids(collection)
            by_actor: dict[bytes, MemberId | None] = {}
            for rid, creator in creators.items():
                if rid not in cache:
                    if creator[0] not in by_actor:
                        by_actor[creator[0]] = self.member_of_actor(creator[0])
                    cache[rid] = by_actor[creator[0]]
        for rid, rec in list(table.items()):
            if rid not in cache:
                who = self.doc.record_writer(collection, rid)
                cache[rid] = self.member_of_actor(who[0]) if who is not None else None
            writer = cache[rid]
            if writer is not None and writer != rec.author:
                table[rid] = replace(rec, author=writer)
                claimed = view.members.get(rec.author)
                real = view.members.get(writer)
                notes.append(Malformed(collection, rid, f"says it is by {claimed.handle if claimed else rec.author} "
                                       f"but was written by {real.handle if real else writer}"))

    def _drop_late_writes(self, view: BoardView, late: set[bytes]) -> None:
        """Report what removed devices wrote after their removal (membership
        rule 6), with the view's unreadable records. The document's reads
        already show those values as they were without the late changes
        (crdt/am.py `_LateMask`): records they created are absent, fields
        they changed read as before, whatever path the changes came by."""
        notes = view._malformed.setdefault("after-removal", [])
        for collection in ("loans", "holds", "needs", "offers", "tools", "relays", "meta"):
            notes += self.late_notes(collection)

    def late_notes(self, collection: str) -> list[Malformed]:
        """"field title was changed by cy after they were removed (ignored)"."""
        out = []
        for rid, what, actor in self.doc.late_writes(collection):
            who = self._writer_name(actor)
            if collection == "meta":
                out.append(Malformed(collection, rid, f"setting {rid} was changed by {who} after they were "
                                     "removed (ignored)"))
            elif not what:
                out.append(Malformed(collection, rid, f"written by {who} after they were removed (ignored)"))
            else:
                field, _, entry = what.partition(".")
                thing = f"{field} entry" if entry else f"field {field}"
                out.append(Malformed(collection, rid, f"{thing} was changed by {who} after they were removed "
                                     "(ignored)"))
        return out

    def _writer_name(self, actor: bytes) -> str:
        mid = self.member_of_actor(actor)
        member = self.view().members.get(mid) if mid else None
        return member.handle if member is not None else "a removed device"

    def invalidate(self) -> None:
        """Nothing to drop: views are keyed by the document's heads, and a new
        view re-reads only what changed since the last one."""

    def writer_of(self, collection: str, record_id: str) -> MemberId | None:
        """The verified member who created a record (None if unknown): the
        device that wrote the record's creating change, as signed statements
        bind it, never the record's own `author` field."""
        who = self.doc.record_writer(collection, record_id)
        return None if who is None else self.member_of_actor(who[0])

    def members(self) -> list[Member]:
        return sorted(self.view().members.values(), key=lambda m: (m.removed_at is not None, m.handle))

    def active_member(self, member_id: MemberId) -> Member | None:
        """Fast path (no view rebuild): used on every mutation and handshake."""
        members = self.members_source() if self.members_source is not None else self.view().members
        member = members.get(member_id)
        return member if member is not None and member.active else None

    def needs(self, status: str = "open", category: str | None = None, search: str | None = None) -> list[Need]:
        return select_needs(self.view().needs.values(), status, category, search)

    def offers(self, status: str = "open", category: str | None = None, search: str | None = None) -> list[Offer]:
        return select_offers(self.view().offers.values(), status, category, search)

    def tools(self, available_only: bool = False, search: str | None = None) -> list[Tool]:
        items = list(self.view().tools.values())
        if available_only:
            items = [t for t in items if t.availability == Availability.AVAILABLE]
        if search:
            words = search.lower().split()
            items = [t for t in items if all(w in f"{t.name} {t.description} {t.category}".lower() for w in words)]
        return sorted(items, key=lambda t: (t.name.lower(), t.id))

    def loan_conflicts(self) -> list[Tool]:
        return [t for t in self.view().tools.values() if t.conflicting_loans]

    def overdue(self) -> list[Tool]:
        return [t for t in self.view().tools.values() if t.overdue]

    def find(self, collection: str, prefix: str) -> RecordId:
        """Resolve a unique id prefix, like git."""
        p = prefix.strip().lower()
        if not p:
            raise UsageError("an id is required")
        table: dict[str, object] = getattr(self.view(), collection)
        if p in table:
            return RecordId(p)
        hits = [rid for rid in table if rid.startswith(p)]
        singular = collection.rstrip("s")
        if not hits:
            raise NotFound(f"no {singular} with id '{prefix}'")
        if len(hits) > 1:
            raise AmbiguousId(f"'{prefix}' matches several {collection}: {', '.join(sorted(hits)[:5])}; type more of the id")
        return RecordId(hits[0])

    def need(self, prefix: str) -> Need:
        return self.view().needs[self.find("needs", prefix)]

    def offer(self, prefix: str) -> Offer:
        return self.view().offers[self.find("offers", prefix)]

    def tool(self, prefix: str) -> Tool:
        return self.view().tools[self.find("tools", prefix)]

    def member(self, prefix: str) -> Member:
        view = self.view()
        p = prefix.strip().lower()
        by_handle = [m for m in view.members.values() if m.handle.lower() == p]
        if len(by_handle) == 1:
            return by_handle[0]
        return view.members[MemberId(self.find("members", prefix))]

    def loans_of(self, tool_id: RecordId) -> list[Loan]:
        return sorted((x for x in self.view().loans.values() if x.tool == tool_id), key=lambda x: x.out_at)

    def holds_of(self, tool_id: RecordId) -> list[Hold]:
        return sorted((h for h in self.view().holds.values() if h.tool == tool_id), key=lambda h: h.order_key)

    # --- mutations: plumbing ---------------------------------------------

    def _require_member(self) -> MemberId:
        newer = self.schema_too_new()
        if newer is not None:
            raise SchemaTooNew(newer)
        if self.me is None or self.active_member(self.me) is None:
            raise NotAMember("this device is not an active member of this circle")
        return self.me

    def _commit(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def _put(self, collection: str, rid: str, fields: dict[str, Field]) -> None:
        with self.doc.edit() as ed:
            ed.put_record(collection, rid, fields)
        self._commit()

    def _update(self, collection: str, rid: str, fields: dict[str, Field]) -> None:
        with self.doc.edit() as ed:
            ed.update(collection, rid, fields)
        self._commit()

    # --- needs -------------------------------------------------------------

    def add_need(
        self, title: str, details: str = "", category: str = "", tags: Iterable[str] = (),
        urgency: Urgency = Urgency.ANYTIME, zone: str = "", expires_days: int = DEFAULT_NEED_DAYS,
    ) -> RecordId:
        me = self._require_member()
        if expires_days < 1 or expires_days > 365:
            raise UsageError("expiry must be between 1 and 365 days")
        now = self.clock()
        rid = new_record_id()
        self._put("needs", rid, {
            "title": _clean_text(title, "title", MAX_TITLE, True),
            "details": _clean_text(details, "details", MAX_TEXT), "category": _category(category),
            "tags": clean_tags(tags), "urgency": Urgency(urgency).value, "zone": zone.strip()[:60],
            "author": me, "created_at": now, "updated_at": now,
            "expires_at": now + expires_days * DAY_MS, "claims": {},
            "met_at": None, "withdrawn_at": None,
        })
        return rid

    def edit_need(
        self, prefix: str, *, title: str | None = None, details: str | None = None,
        category: str | None = None, tags: Iterable[str] | None = None,
        urgency: Urgency | None = None, zone: str | None = None, expires_days: int | None = None,
    ) -> RecordId:
        self._require_member()
        need = self.need(prefix)
        fields = _common_edits(title, details, category, zone)
        if urgency is not None:
            fields["urgency"] = Urgency(urgency).value
        if expires_days is not None:
            fields["expires_at"] = self.clock() + expires_days * DAY_MS
        self._edit_with_tags("needs", need.id, fields, tags)
        return need.id

    def _edit_with_tags(
        self, collection: str, rid: RecordId, fields: dict[str, Field], tags: Iterable[str] | None,
    ) -> None:
        fields["updated_at"] = self.clock()
        if tags is not None:
            fields["tags"] = clean_tags(tags)
        self._update(collection, rid, fields)

    def claim_need(self, prefix: str) -> RecordId:
        me = self._require_member()
        need = self.need(prefix)
        if need.status not in (NeedStatus.OPEN, NeedStatus.CLAIMED):
            raise ActionRefused(f"need {need.id} is {need.status}; only open needs can be claimed")
        if me in need.claims:
            raise ActionRefused(f"you have already claimed need {need.id}")
        with self.doc.edit() as ed:
            ed.map_put("needs", need.id, "claims", me, self.clock())
        self._commit()
        return need.id

    def unclaim_need(self, prefix: str) -> RecordId:
        me = self._require_member()
        need = self.need(prefix)
        if me not in need.claims:
            raise ActionRefused(f"you have not claimed need {need.id}")
        with self.doc.edit() as ed:
            ed.map_delete("needs", need.id, "claims", me)
        self._commit()
        return need.id

    def met_need(self, prefix: str) -> RecordId:
        self._require_member()
        need = self.need(prefix)
        if need.status in (NeedStatus.MET, NeedStatus.WITHDRAWN):
            raise ActionRefused(f"need {need.id} is already {need.status}")
        now = self.clock()
        self._update("needs", need.id, {"met_at": now, "updated_at": now})
        return need.id

    def withdraw_need(self, prefix: str) -> RecordId:
        me = self._require_member()
        need = self.need(prefix)
        if need.author != me:
            raise ActionRefused("only the member who posted a need can withdraw it")
        if need.status in (NeedStatus.MET, NeedStatus.WITHDRAWN):
            raise ActionRefused(f"need {need.id} is already {need.status}")
        now = self.clock()
        self._update("needs", need.id, {"withdrawn_at": now, "updated_at": now})
        return need.id

    def reopen_need(self, prefix: str) -> RecordId:
        self._require_member()
        need = self.need(prefix)
        now = self.clock()
        fields: dict[str, Field] = {"met_at": None, "withdrawn_at": None, "updated_at": now}
        if need.status == NeedStatus.EXPIRED or now >= need.expires_at:
            fields["expires_at"] = now + DEFAULT_NEED_DAYS * DAY_MS
        self._update("needs", need.id, fields)
        return need.id

    # --- offers ------------------------------------------------------------

    def add_offer(
        self, title: str, details: str = "", category: str = "", tags: Iterable[str] = (),
        zone: str = "", quantity: int | None = None, recurring: bool = False,
        expires_days: int = DEFAULT_OFFER_DAYS,
    ) -> RecordId:
        me = self._require_member()
        if quantity is not None and quantity < 0:
            raise UsageError("quantity cannot be negative")
        if expires_days < 1 or expires_days > 365:
            raise UsageError("expiry must be between 1 and 365 days")
        now = self.clock()
        rid = new_record_id()
        self._put("offers", rid, {
            "title": _clean_text(title, "title", MAX_TITLE, True),
            "details": _clean_text(details, "details", MAX_TEXT), "category": _category(category),
            "tags": clean_tags(tags), "zone": zone.strip()[:60], "author": me,
            "quantity": quantity, "recurring": recurring, "created_at": now, "updated_at": now,
            "expires_at": now + expires_days * DAY_MS, "paused": False, "closed_at": None,
        })
        return rid

    def edit_offer(
        self, prefix: str, *, title: str | None = None, details: str | None = None,
        category: str | None = None, tags: Iterable[str] | None = None, zone: str | None = None,
        quantity: int | None = None, recurring: bool | None = None, expires_days: int | None = None,
    ) -> RecordId:
        self._require_member()
        offer = self.offer(prefix)
        fields = _common_edits(title, details, category, zone)
        if quantity is not None:
            fields["quantity"] = quantity
        if recurring is not None:
            fields["recurring"] = recurring
        if expires_days is not None:
            fields["expires_at"] = self.clock() + expires_days * DAY_MS
        self._edit_with_tags("offers", offer.id, fields, tags)
        return offer.id

    def _own_offer(self, prefix: str) -> Offer:
        me = self._require_member()
        offer = self.offer(prefix)
        if offer.author != me:
            raise ActionRefused("only the member who posted an offer can change its status")
        return offer

    def pause_offer(self, prefix: str) -> RecordId:
        offer = self._own_offer(prefix)
        if offer.status != OfferStatus.OPEN:
            raise ActionRefused(f"offer {offer.id} is {offer.status}; only open offers can be paused")
        self._update("offers", offer.id, {"paused": True, "updated_at": self.clock()})
        return offer.id

    def resume_offer(self, prefix: str) -> RecordId:
        offer = self._own_offer(prefix)
        if offer.status != OfferStatus.PAUSED:
            raise ActionRefused(f"offer {offer.id} is {offer.status}; only paused offers can be resumed")
        self._update("offers", offer.id, {"paused": False, "updated_at": self.clock()})
        return offer.id

    def close_offer(self, prefix: str) -> RecordId:
        offer = self._own_offer(prefix)
        if offer.status == OfferStatus.CLOSED:
            raise ActionRefused(f"offer {offer.id} is already closed")
        now = self.clock()
        self._update("offers", offer.id, {"closed_at": now, "updated_at": now})
        return offer.id

    # --- tools -------------------------------------------------------------

    def add_tool(
        self, name: str, description: str = "", category: str = "",
        condition: Condition = Condition.GOOD, loan_days: int = 7, note: str = "",
    ) -> RecordId:
        me = self._require_member()
        if not 1 <= loan_days <= 365:
            raise UsageError("loan days must be between 1 and 365")
        rid = new_record_id()
        self._put("tools", rid, {
            "name": _clean_text(name, "name", MAX_TITLE, True),
            "description": _clean_text(description, "description", MAX_TEXT),
            "category": _category(category), "steward": me, "condition": Condition(condition).value,
            "condition_note": _clean_text(note, "note", MAX_TEXT), "loan_days": loan_days,
            "state": ToolState.ACTIVE.value, "created_at": self.clock(),
        })
        return rid

    def edit_tool(
        self, prefix: str, *, name: str | None = None, description: str | None = None,
        category: str | None = None, loan_days: int | None = None, state: ToolState | None = None,
    ) -> RecordId:
        self._require_member()
        tool = self.tool(prefix)
        fields: dict[str, Field] = {}
        if name is not None:
            fields["name"] = _clean_text(name, "name", MAX_TITLE, True)
        if description is not None:
            fields["description"] = _clean_text(description, "description", MAX_TEXT)
        if category is not None:
            fields["category"] = _category(category)
        if loan_days is not None:
            if not 1 <= loan_days <= 365:
                raise UsageError("loan days must be between 1 and 365")
            fields["loan_days"] = loan_days
        if state is not None:
            fields["state"] = ToolState(state).value
        if fields:
            self._update("tools", tool.id, fields)
        return tool.id

    def set_condition(self, prefix: str, condition: Condition, note: str | None = None) -> RecordId:
        self._require_member()
        tool = self.tool(prefix)
        fields: dict[str, Field] = {"condition": Condition(condition).value}
        if note is not None:
            fields["condition_note"] = _clean_text(note, "note", MAX_TEXT)
        self._update("tools", tool.id, fields)
        return tool.id

    def borrow(self, prefix: str, days: int | None = None) -> RecordId:
        me = self._require_member()
        tool = self.tool(prefix)
        if tool.availability == Availability.ON_LOAN:
            assert tool.current_loan is not None
            who = "you" if tool.current_loan.borrower == me else "someone else"
            raise ActionRefused(f"{tool.name} is on loan to {who}; place a hold to join the queue")
        if tool.availability not in (Availability.AVAILABLE, Availability.HELD):
            raise ActionRefused(f"{tool.name} is {tool.availability} and cannot be borrowed")
        if tool.condition == Condition.UNSAFE:
            raise ActionRefused(f"{tool.name} is marked unsafe; fix it and set its condition first")
        if tool.availability == Availability.HELD and tool.ready_for != me:
            raise ActionRefused(f"{tool.name} is held for another member who asked first")
        loan_days = days if days is not None else tool.loan_days
        if not 1 <= loan_days <= 365:
            raise UsageError("loan days must be between 1 and 365")
        now = self.clock()
        rid = new_record_id()
        with self.doc.edit() as ed:
            ed.put_record("loans", rid, {
                "tool": tool.id, "borrower": me, "out_at": now, "due_at": now + loan_days * DAY_MS,
                "returned_at": None, "lost_at": None, "condition_out": tool.condition.value,
                "condition_in": None, "renewals": 0,
            })
            for hold in tool.queue:
                if hold.member == me:
                    ed.update("holds", hold.id, {"fulfilled_at": now})
        self._commit()
        return rid

    def _my_open_loan(self, tool: Tool, me: MemberId) -> Loan:
        mine = [x for x in (tool.current_loan, *tool.conflicting_loans) if x is not None and x.borrower == me]
        if not mine:
            raise ActionRefused(f"you do not have {tool.name} on loan")
        return mine[0]

    def return_tool(self, prefix: str, condition: Condition | None = None, note: str | None = None,
                    loan_id: str | None = None) -> RecordId:
        """Return this member's loan (or, with `loan_id`, any open loan: the
        steward closing a loan someone forgot, or resolving a conflict)."""
        me = self._require_member()
        tool = self.tool(prefix)
        if loan_id is not None:
            loan = self.view().loans[self.find("loans", loan_id)]
            if loan.tool != tool.id or loan.returned_at is not None:
                raise ActionRefused(f"loan {loan.id} is not an open loan of {tool.name}")
        else:
            loan = self._my_open_loan(tool, me)
        now = self.clock()
        cond = Condition(condition) if condition is not None else loan.condition_out
        with self.doc.edit() as ed:
            ed.update("loans", loan.id, {"returned_at": now, "condition_in": cond.value})
            tool_fields: dict[str, Field] = {"condition": cond.value}
            if note is not None:
                tool_fields["condition_note"] = _clean_text(note, "note", MAX_TEXT)
            ed.update("tools", tool.id, tool_fields)
        self._commit()
        return loan.id

    def renew(self, prefix: str) -> RecordId:
        me = self._require_member()
        tool = self.tool(prefix)
        loan = self._my_open_loan(tool, me)
        if any(h.member != me for h in tool.queue):
            raise ActionRefused(f"someone is waiting for {tool.name}; return it instead of renewing")
        self._update("loans", loan.id, {
            "due_at": max(loan.due_at, self.clock()) + tool.loan_days * DAY_MS, "renewals": loan.renewals + 1,
        })
        return loan.id

    def mark_lost(self, prefix: str) -> RecordId:
        self._require_member()
        tool = self.tool(prefix)
        now = self.clock()
        with self.doc.edit() as ed:
            for loan in (tool.current_loan, *tool.conflicting_loans):
                if loan is not None:
                    ed.update("loans", loan.id, {"lost_at": now})
            ed.update("tools", tool.id, {"state": ToolState.MISSING.value})
        self._commit()
        return tool.id

    def hold(self, prefix: str) -> RecordId:
        me = self._require_member()
        tool = self.tool(prefix)
        if tool.availability in (Availability.RETIRED, Availability.MISSING):
            raise ActionRefused(f"{tool.name} is {tool.availability}; it cannot be held")
        if any(h.member == me for h in tool.queue):
            raise ActionRefused(f"you already hold a place in the queue for {tool.name}")
        if tool.current_loan is not None and tool.current_loan.borrower == me:
            raise ActionRefused(f"you have {tool.name} on loan already")
        if tool.availability == Availability.AVAILABLE:
            raise ActionRefused(f"{tool.name} is available now; borrow it instead")
        rid = new_record_id()
        self._put("holds", rid, {
            "tool": tool.id, "member": me, "created_at": self.clock(),
            "cancelled_at": None, "fulfilled_at": None,
        })
        return rid

    def unhold(self, prefix: str) -> RecordId:
        me = self._require_member()
        tool = self.tool(prefix)
        mine = [h for h in tool.queue if h.member == me]
        if not mine:
            raise ActionRefused(f"you have no hold on {tool.name}")
        self._update("holds", mine[0].id, {"cancelled_at": self.clock()})
        return mine[0].id

    def my_holds(self) -> list[Hold]:
        return [h for h in self.view().holds.values()
                if h.member == self.me and h.status in (HoldStatus.WAITING, HoldStatus.READY)]

    # --- membership statements ---------------------------------------------

    def statement_blobs(self) -> list[bytes]:
        """Every signed membership statement in the document (unchecked)."""
        return [v for v in self.doc.root_scalars("statements").values() if isinstance(v, bytes)]

    def statement_ids(self) -> list[str]:
        return self.doc.record_ids("statements")

    def add_statements(self, statements: list[tuple[str, bytes]]) -> None:
        """Write signed statements (id hex -> blob) as ONE change: a removal and
        its new epoch never arrive apart."""
        if not statements:
            return
        with self.doc.edit() as ed:
            for sid, blob in statements:
                ed.put_root_scalar("statements", sid, blob)
        self._commit()

    def relays(self, include_removed: bool = False) -> list[RelayRecord]:
        items = [r for r in self._relay_table().values() if include_removed or r.active]
        return sorted(items, key=lambda r: (r.url, r.id))

    def _relay_table(self) -> dict[str, RelayRecord]:
        """The relay records, without rebuilding the whole view: the live node
        asks for them after every edit, and a view rebuild (a diff over the
        whole document) cost ~50 ms of each edit's ~100 ms at 10k records.
        The relays collection is small: read it straight from the document,
        once per set of heads; an up-to-date view's parse is used as is."""
        heads = tuple(self.doc.heads())
        view = self._view
        if view is not None and self._view_key is not None and self._view_key[0] == heads \
                and "relays" in view.__dict__:
            return view.relays
        cached = self._relays
        if cached is not None and cached[0] == heads:
            return cached[1]
        table: dict[str, RelayRecord] = {}
        for rid, rec in self.doc.records("relays").items():
            if isinstance(rec, dict):
                try:
                    table[rid] = parse_relay(rid, rec, [])
                except Exception:  # any unreadable relay record: the view reports it (`status`)
                    continue
        self._relays = (heads, table)
        return table

    def add_relay(self, url: str) -> RelayRecord:
        """List a relay (ws:// or wss://). Any active member may; re-adding a
        removed relay brings it back."""
        me = self._require_member()
        norm = normalise_relay_url(url)
        rid = relay_record_id(norm)
        existing = self.view().relays.get(rid)
        if existing is not None and existing.active:
            raise ActionRefused(f"relay {norm} is already listed")
        now = self.clock()
        fields: dict[str, Field] = {"url": norm, "added_by": me, "added_at": now,
                                    "removed_at": None, "removed_by": None}
        if existing is None and self.doc.record("relays", rid) is None:
            self._put("relays", rid, fields)
        else:
            self._update("relays", rid, fields)
        return self.view().relays[rid]

    def remove_relay(self, url: str) -> RelayRecord:
        """Stop using a relay (the record stays, marked removed)."""
        me = self._require_member()
        norm = normalise_relay_url(url)
        rid = relay_record_id(norm)
        existing = self.view().relays.get(rid)
        if existing is None or not existing.active:
            raise NotFound(f"relay {norm} is not listed")
        self._update("relays", rid, {"removed_at": self.clock(), "removed_by": me})
        return self.view().relays[rid]


class _VerifiedView(BoardView):
    """A BoardView whose needs and offers show their verified writers."""

    @cached_property
    def needs(self) -> dict[RecordId, Need]:
        table = BoardView.needs.func(self)  # type: ignore[attr-defined]
        self._verify(self, "needs", table)  # type: ignore[attr-defined]
        return table  # type: ignore[no-any-return]

    @cached_property
    def offers(self) -> dict[RecordId, Offer]:
        table = BoardView.offers.func(self)  # type: ignore[attr-defined]
        self._verify(self, "offers", table)  # type: ignore[attr-defined]
        return table  # type: ignore[no-any-return]


def normalise_relay_url(url: str) -> str:
    """ws:// or wss:// URL with lower-case scheme and host and a path ("/" if none).

    Raises UsageError for anything else (other schemes, credentials in the
    URL, a query or fragment, no host, spaces)."""
    text = url.strip()
    if not text or len(text) > 300 or any(c.isspace() for c in text):
        raise UsageError(f"not a relay URL: {url!r}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise UsageError(f"relay URL must start with ws:// or wss://: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise UsageError("a relay URL must not hold a user name or password")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise UsageError("a relay URL must not have a query or fragment")
    try:
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise UsageError(f"relay URL has a bad port: {url!r}") from None
    if not host:
        raise UsageError(f"relay URL has no host: {url!r}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def relay_record_id(normalised_url: str) -> str:
    """Record key of a relay: two members adding one URL share one record."""
    return hashlib.blake2b(normalised_url.encode(), digest_size=8, person=b"circle/relay-id").hexdigest()


def _common_edits(title: str | None, details: str | None, category: str | None, zone: str | None) -> dict[str, Field]:
    fields: dict[str, Field] = {}
    if title is not None:
        fields["title"] = _clean_text(title, "title", MAX_TITLE, True)
    if details is not None:
        fields["details"] = _clean_text(details, "details", MAX_TEXT)
    if category is not None:
        fields["category"] = _category(category)
    if zone is not None:
        fields["zone"] = zone.strip()[:60]
    return fields


def select_needs(needs: Iterable[Need], status: str = "open", category: str | None = None,
                 search: str | None = None) -> list[Need]:
    """Needs in one status ("active" = open or claimed, "all"), most urgent and newest first."""
    items = list(needs)
    if status == "active":
        items = [n for n in items if n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED)]
    elif status != "all":
        wanted = NeedStatus(status)
        items = [n for n in items if n.status == wanted]
    items = _filter(items, category, search)
    return sorted(items, key=lambda n: (-n.urgency.rank, -n.created_at, n.id))


def select_offers(offers: Iterable[Offer], status: str = "open", category: str | None = None,
                  search: str | None = None) -> list[Offer]:
    """Offers in one status ("all" for every one), newest first."""
    items = list(offers)
    if status != "all":
        wanted = OfferStatus(status)
        items = [o for o in items if o.status == wanted]
    items = _filter(items, category, search)
    return sorted(items, key=lambda o: (-o.created_at, o.id))


def _filter(items: list[T], category: str | None, search: str | None) -> list[T]:
    if category:
        cat = category.strip().lower()
        items = [i for i in items if i.category == cat]
    if search:
        words = search.lower().split()
        items = [
            i for i in items
            if all(w in f"{i.title} {i.details} {i.category} {' '.join(i.tags)} {i.zone}".lower() for w in words)
        ]
    return items
