"""One search across needs, offers, tools and members (pure logic).

`SearchIndex.build(view)` flattens every record into one lowercase string
(title, details, tags, category, zone, people's handles), once per board
view; `index.search(text)` is then a substring pass over those strings, a
few milliseconds at 10k records, so the app can run it on every keystroke.
Ranking: records whose title holds the words first, live records (open
needs and offers, active tools and members) before closed ones, newest
first within a rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from circle.crdt.model import MemberId, Millis, NeedStatus, OfferStatus, ToolState
from circle.crdt.views import BoardView

COLLECTIONS = ("needs", "offers", "tools", "members")


@dataclass(frozen=True)
class Hit:
    collection: str  # needs, offers, tools, members
    id: str
    title: str
    summary: str  # status and people, in words
    live: bool  # open / active
    at: Millis  # created or joined


@dataclass(frozen=True)
class _Entry:
    hit: Hit
    title: str  # lowercase
    text: str  # lowercase: everything searchable


def _h(handles: Mapping[MemberId, str], m: MemberId | None) -> str:
    return "" if m is None else handles.get(m, m[:6])


class SearchIndex:
    def __init__(self, entries: list[_Entry]) -> None:
        self.entries = entries

    @classmethod
    def build(cls, view: BoardView, collections: tuple[str, ...] = COLLECTIONS) -> SearchIndex:
        handles = {m.id: m.handle for m in view.members.values()}
        out: list[_Entry] = []

        def add(hit: Hit, *parts: str) -> None:
            out.append(_Entry(hit, hit.title.lower(), " ".join((hit.id, hit.title, *parts)).lower()))

        if "needs" in collections:
            for n in view.needs.values():
                who = _h(handles, n.author)
                live = n.status in (NeedStatus.OPEN, NeedStatus.CLAIMED)
                add(Hit("needs", n.id, n.title, f"{n.status.value} need by {who}", live, n.created_at),
                    n.details, n.category, " ".join(n.tags), n.zone, who,
                    " ".join(_h(handles, c) for c in n.claims))
        if "offers" in collections:
            for o in view.offers.values():
                who = _h(handles, o.author)
                live = o.status in (OfferStatus.OPEN, OfferStatus.PAUSED)
                add(Hit("offers", o.id, o.title, f"{o.status.value} offer by {who}", live, o.created_at),
                    o.details, o.category, " ".join(o.tags), o.zone, who)
        if "tools" in collections:
            for t in view.tools.values():
                holder = _h(handles, t.current_loan.borrower) if t.current_loan else ""
                summary = f"tool, {t.availability.value}" + (f" ({holder})" if holder else "")
                add(Hit("tools", t.id, t.name, summary, t.state == ToolState.ACTIVE, t.created_at),
                    t.description, t.category, t.condition.value, t.condition_note, _h(handles, t.steward), holder)
        if "members" in collections:
            for m in view.members.values():
                state = "member" if m.active else "removed member"
                add(Hit("members", m.id, m.handle, f"{state}, zone {m.zone or '-'}", m.active, m.joined_at), m.zone)
        return cls(out)

    def search(self, query: str, limit: int = 200) -> tuple[list[Hit], dict[str, int]]:
        """The best `limit` hits, and how many matched per collection."""
        words = query.lower().split()
        counts = dict.fromkeys(COLLECTIONS, 0)
        if not words:
            return [], counts
        found: list[tuple[int, int, _Entry]] = []
        for e in self.entries:
            text = e.text
            if all(w in text for w in words):
                counts[e.hit.collection] = counts.get(e.hit.collection, 0) + 1
                rank = (0 if all(w in e.title for w in words) else 2) + (0 if e.hit.live else 1)
                found.append((rank, -e.hit.at, e))
        found.sort(key=lambda x: (x[0], x[1]))
        return [e.hit for _, _, e in found[:limit]], counts
