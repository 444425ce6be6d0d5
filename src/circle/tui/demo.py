"""`circle demo`: a throwaway circle with sample data and two simulated members.

The simulated members are real members: each has its own `Home` (identity,
temp directory) and its own `CircleService` over a fork of the founder's
document, and the founder's document lists them (`Board.add_member`). They
sync with the founder through `sync_pair`, the one function to swap for real
loopback sync once the service has a sync API: it exchanges the changes each
side lacks since their last common heads, via `changes_since` and
`apply_remote`. Everything runs on the event loop (automerge is not
thread-safe), driven by the app's timers.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from circle.crdt.board import now_ms
from circle.crdt.model import Condition, MemberId, Millis, NeedStatus, Urgency
from circle.errors import CircleError
from circle.node import membership
from circle.node.home import Home
from circle.node.service import CircleService
from circle.tui.sync_view import PeerInfo

Clock = Callable[[], Millis]


@dataclass
class Link:
    """What two replicas last agreed on (their common heads)."""

    a: CircleService
    b: CircleService
    common: list[bytes] = field(default_factory=list)
    last_synced: Millis | None = None


def sync_pair(link: Link) -> int:
    """Exchange changes both ways; returns how many changes moved.

    Swap this for the real loopback session when the lead's sync API lands:
    the rest of the demo only calls `sync_pair` and reads `Link`.
    """
    a, b = link.a, link.b
    to_b = a.doc.changes_since(link.common)
    to_a = b.doc.changes_since(link.common)
    if to_b:
        b.apply_remote(to_b, a.gate.proofs_since(a.doc, link.common))
    if to_a:
        a.apply_remote(to_a, b.gate.proofs_since(b.doc, link.common))
    heads_a, heads_b = sorted(a.doc.heads()), sorted(b.doc.heads())
    if heads_a == heads_b:
        link.common = a.doc.heads()
        link.last_synced = a.clock()
    return len(to_a) + len(to_b)


def in_sync(link: Link) -> bool:
    return sorted(link.a.doc.heads()) == sorted(link.b.doc.heads())


NEEDS = [
    ("Ride to the clinic on Thursday", "Appointment at 10, back by noon.", "transport", ["ride"], Urgency.H48, "north"),
    ("Groceries for a week", "Family of four, no pork.", "food", ["groceries"], Urgency.THIS_WEEK, "south"),
    ("Someone to walk the dog", "Recovering from surgery, two walks a day.", "care", ["dog", "pets"], Urgency.NOW, "north"),
    ("Help moving a sofa", "Third floor, no lift.", "moving", ["lifting"], Urgency.ANYTIME, "east"),
    ("Winter coat, size M", "", "clothes", ["winter"], Urgency.THIS_WEEK, "south"),
]
OFFERS = [
    ("Car rides on weekdays", "Mornings only.", "transport", ["ride"], "north", None, True),
    ("Soup, every Sunday", "Vegetarian, 6 portions.", "food", ["groceries", "soup"], "south", 6, True),
    ("Two winter coats", "Sizes M and L.", "clothes", ["winter"], "east", 2, False),
]
TOOLS = [
    ("Cordless drill", "18V with two batteries", "power", Condition.GOOD, 7),
    ("Ladder (3 m)", "", "garden", Condition.WORN, 3),
    ("Sewing machine", "Needs a new belt soon", "textile", Condition.NEEDS_REPAIR, 14),
]
LATER_NEEDS = [
    ("Childcare Saturday afternoon", "care", ["kids"], Urgency.THIS_WEEK),
    ("Bike pump", "repair", ["bike"], Urgency.ANYTIME),
    ("Translation help with a letter", "admin", ["spanish"], Urgency.H48),
    ("Lift to the food bank", "transport", ["ride", "food"], Urgency.NOW),
    ("Seedlings for the community garden", "garden", ["plants"], Urgency.ANYTIME),
    ("Someone to fix a leaking tap", "repair", ["plumbing"], Urgency.THIS_WEEK),
]
LATER_OFFERS = [
    ("Spare bread from the bakery", "food", ["bread"]),
    ("Can help with forms and letters", "admin", ["spanish", "forms"]),
    ("Bike repairs on Saturdays", "repair", ["bike"]),
]


@dataclass
class Demo:
    root: Path
    founder: CircleService
    members: list[CircleService]
    links: list[Link]
    rng: random.Random
    names: dict[MemberId, str] = field(default_factory=dict)

    def step_sync(self) -> int:
        return sum(sync_pair(link) for link in self.links)

    def peers(self) -> list[PeerInfo]:
        now = self.founder.clock()
        return [
            PeerInfo(name=self.names.get(link.b.me, link.b.me), path="loopback",
                     address=f"127.0.0.1 (simulated #{i + 1})", last_seen=now, in_sync=in_sync(link),
                     online=True, last_synced=link.last_synced)
            for i, link in enumerate(self.links)
        ]

    def post_something(self) -> str:
        """One simulated member does one thing (posts, claims or returns)."""
        svc = self.rng.choice(self.members)
        board = svc.board
        roll = self.rng.random()
        try:
            if roll < 0.55:
                title, cat, tags, urg = self.rng.choice(LATER_NEEDS)
                board.add_need(title, "", cat, tags, urg, self.rng.choice(["north", "south", "east"]))
                return f"need {title}"
            if roll < 0.75:
                title, cat, tags = self.rng.choice(LATER_OFFERS)
                board.add_offer(title, "", cat, tags)
                return f"offer {title}"
            open_needs = [n for n in board.needs("active") if svc.me not in n.claims and n.author != svc.me]
            if open_needs:
                n = self.rng.choice(open_needs)
                board.claim_need(n.id)
                return f"claim {n.title}"
        except CircleError:
            pass
        return "nothing"

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _fork(founder: CircleService, home: Home, clock: Clock) -> CircleService:
    cfg = founder.config
    return CircleService.join_from_snapshot(home, cfg.circle_id, cfg.name, founder.packed_snapshot(),
                                            dict(cfg.epoch_keys), cfg.epoch, clock)


def build_demo(root: Path | None = None, clock: Clock = now_ms, seed: int = 7,
               name: str = "Riverside Mutual Aid") -> Demo:
    """Create the founder ("you"), two members ("ana", "ben") and sample data."""
    root = root or Path(tempfile.mkdtemp(prefix="circle-demo-"))
    rng = random.Random(seed)
    home = Home.create(root / "you", None)
    founder = CircleService.create(home, name, "you", "north", clock=clock)
    names = {founder.me: "you"}
    homes = []
    for handle, zone in (("ana", "south"), ("ben", "east")):
        h = Home.create(root / handle, None)
        membership.add_member(founder, h.identity.verify_key, h.identity.box_public, handle, zone)
        homes.append(h)
        names[h.identity.member_id] = handle
    members = [_fork(founder, h, clock) for h in homes]
    demo = Demo(root, founder, members, [Link(founder, m) for m in members], rng, names)
    _sample_data(demo)
    demo.step_sync()
    return demo


def _sample_data(demo: Demo) -> None:
    you, (ana, ben) = demo.founder, demo.members
    authors = [ana, ben, you, ana, ben]
    ids = []
    for svc, (title, details, cat, tags, urg, zone) in zip(authors, NEEDS, strict=True):
        ids.append(svc.board.add_need(title, details, cat, tags, urg, zone))
    for svc, (title, details, cat, tags, zone, qty, rec) in zip([you, ana, ben], OFFERS, strict=True):
        svc.board.add_offer(title, details, cat, tags, zone, qty, rec)
    tool_ids = []
    for svc, (tname, desc, cat, cond, days) in zip([you, ben, ana], TOOLS, strict=True):
        tool_ids.append(svc.board.add_tool(tname, desc, cat, cond, days))
    demo.step_sync()
    ben.board.claim_need(ids[0])
    ana.board.borrow(tool_ids[0], days=7)
    demo.step_sync()
    you.board.hold(tool_ids[0])
    demo.step_sync()
    board = ben.board
    if board.need(ids[3]).status == NeedStatus.OPEN:
        board.claim_need(ids[3])
