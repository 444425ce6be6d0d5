"""Shared helpers for the net tests (in-memory pairs, small documents)."""

from __future__ import annotations

import os
from collections.abc import Callable

from circle.crdt.am import AmDoc
from circle.net.framing import FrameDecoder
from circle.net.keys import DeviceIdentity, EpochKey, new_epoch_key
from circle.net.session import Closed, Connection, Event

ALICE = DeviceIdentity.generate()
BOB = DeviceIdentity.generate()
MALLORY = DeviceIdentity.generate()
KEY = new_epoch_key()
KEYRING: dict[int, EpochKey] = {0: KEY}


def is_member(vk: bytes) -> bool:
    return vk in (ALICE.verify_key, BOB.verify_key)


def make_doc(n: int = 0, tag: str = "r") -> AmDoc:
    doc = AmDoc.new()
    with doc.edit() as ed:
        ed.create_collections(["needs"])
    for i in range(n):
        add(doc, f"{tag}{i}")
    return doc


def add(doc: AmDoc, rid: str | None = None, title: str = "bike pump") -> str:
    rid = rid or os.urandom(6).hex()
    with doc.edit() as ed:
        ed.put_record("needs", rid, {"title": title, "zone": "north"})
    return rid


def connect(
    a_doc: AmDoc, b_doc: AmDoc, **kwargs: object
) -> tuple[Connection, Connection]:
    a = Connection.initiator(a_doc, ALICE, KEYRING, is_member, **kwargs)  # type: ignore[arg-type]
    b = Connection.responder(b_doc, BOB, KEYRING, is_member, **kwargs)  # type: ignore[arg-type]
    return a, b


Tamper = Callable[[str, bytes], bytes]


def shuttle(
    a: Connection, b: Connection, max_steps: int = 1000, tamper: Tamper | None = None
) -> tuple[list[Event], list[Event]]:
    """Move bytes both ways until neither side has anything to send."""
    ev_a: list[Event] = []
    ev_b: list[Event] = []
    for _ in range(max_steps):
        da, db = a.data_to_send(), b.data_to_send()
        if tamper is not None:
            da, db = tamper("a->b", da), tamper("b->a", db)
        if da:
            b.receive_data(da)
        if db:
            a.receive_data(db)
        ev_a += a.events()
        ev_b += b.events()
        if not da and not db:
            return ev_a, ev_b
    raise AssertionError("the pair never went quiet")


def frames_of(data: bytes) -> list[bytes]:
    return FrameDecoder(1 << 30).feed(data)


def closed(events: list[Event]) -> Closed:
    found = [e for e in events if isinstance(e, Closed)]
    assert len(found) == 1, events
    return found[0]
