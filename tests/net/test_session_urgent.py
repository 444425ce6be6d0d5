"""The urgent lane (net/session.py rule 10): in-memory pairs, no sockets."""

from __future__ import annotations

import os
from typing import Any

import pytest
from net_helpers import ALICE, BOB, KEYRING, add, closed, connect, is_member, make_doc, shuttle

from circle.crdt.am import AmDoc
from circle.errors import MalformedDocument, RemoteProtocolError
from circle.net import messages as m
from circle.net.framing import encode_frame
from circle.net.session import MAX_FRAME, SYNC_PIECE, Connection, DocChanged


def standalone_change(doc: AmDoc, base: list[bytes], rid: str) -> bytes:
    """A change written on top of `base` only (what crdt/defence.py does for an alert)."""
    before = doc.heads()
    with doc.edit_at(base, os.urandom(16)) as ed:
        ed.put_record("needs", rid, {"title": "ALERT", "zone": "north"})
    new = doc.changes_since(before)
    assert len(new) == 1
    return new[0]


def big_pair(records: int = 1500) -> tuple[Connection, Connection, AmDoc, AmDoc, list[bytes]]:
    left = make_doc(1)
    right = AmDoc.load(left.save())
    base = right.heads()
    with left.edit() as ed:  # one large change, as an initial sync of many records carries
        for i in range(records):
            ed.put_record("needs", f"bulk{i}", {"title": "x" * 200, "zone": "north"})
    a, b = connect(left, right)
    return a, b, left, right, base


def step(a: Connection, b: Connection, limit: int) -> tuple[bytes, bytes]:
    da, db = a.data_to_send(limit), b.data_to_send(limit)
    if da:
        b.receive_data(da)
    if db:
        a.receive_data(db)
    return da, db


def test_urgent_change_overtakes_a_queued_bulk_sync() -> None:
    a, b, left, right, base = big_pair()
    states: list[tuple[bool, bool]] = []  # (alert there, bulk there) at each DocChanged on bo's side
    pushed = False
    for _ in range(500):
        da, db = step(a, b, SYNC_PIECE)
        if any(isinstance(e, DocChanged) for e in b.events()):
            states.append((right.record("needs", "alert1") is not None, right.record("needs", "bulk0") is not None))
        if not pushed and b._sync_buf:  # the first piece of the bulk has arrived; the rest is queued
            assert len(a._bulk) > 3
            a.push_urgent([standalone_change(left, base, "alert1")])
            pushed = True
        if not da and not db:
            break
    assert pushed
    assert states[0] == (True, False)  # the alert alone first...
    assert states[-1] == (True, True) and right.heads() == left.heads()  # ...then the bulk
    assert b.stats.extra.get("urgent_received") == 1


def test_urgent_bytes_lead_the_next_slice() -> None:
    a, b, left, right, base = big_pair()
    for _ in range(50):
        step(a, b, SYNC_PIECE)
        if len(a._bulk) > 3:
            break
    a.push_urgent([standalone_change(left, base, "alert2")])
    assert a.peer is not None
    out = a.data_to_send(1)  # one slice: everything urgent, then at most one bulk message
    b.receive_data(out)
    changed = [e for e in b.events() if isinstance(e, DocChanged)]
    assert changed and right.record("needs", "alert2") is not None
    assert right.record("needs", "bulk0") is None  # the bulk has not arrived yet


def test_urgent_pushed_during_the_handshake_follows_the_hello() -> None:
    shared = make_doc(0)
    left, right = AmDoc.load(shared.save()), AmDoc.load(shared.save())
    add(left, "later")
    a, b = connect(left, right)
    assert a.phase.value == "handshake"
    a.push_urgent([standalone_change(left, shared.heads(), "early")])
    shuttle(a, b)
    assert not a.closed and not b.closed  # (an urgent message before our Hello would be an error)
    assert b.stats.extra.get("urgent_received") == 1 and right.heads() == left.heads()


def test_urgent_changes_the_receiver_cannot_take_are_ignored_not_fatal() -> None:
    class Refusing:
        def __init__(self, doc: AmDoc) -> None:
            self.doc = doc

        def __getattr__(self, name: str) -> Any:
            return getattr(self.doc, name)

        def apply_changes(self, changes: list[bytes]) -> None:
            raise MalformedDocument("refused: 1 change(s) whose signature is missing or wrong")

    left = make_doc(2)
    right = AmDoc.load(left.save())
    base = right.heads()
    add(left, "later")
    a = Connection.initiator(left, ALICE, KEYRING, is_member)
    b = Connection.responder(Refusing(right), BOB, KEYRING, is_member)  # type: ignore[arg-type]
    a.push_urgent([standalone_change(left, base, "alert3")])
    ev_a, ev_b = shuttle(a, b)
    assert not b.closed and b.stats.extra.get("urgent_ignored") == 1
    assert right.heads() == left.heads()  # the ordinary sync brought it all


def _established() -> tuple[Connection, Connection]:
    left = make_doc(3)
    a, b = connect(left, AmDoc.load(left.save()))
    shuttle(a, b)
    return a, b


def _sealed(a: Connection, msg: m.Message) -> bytes:
    assert a.peer is not None
    return encode_frame(a.peer.channel.seal(m.encode(msg)), MAX_FRAME)


def test_sync_pieces_beyond_the_cap_end_the_session() -> None:
    a, b = _established()
    piece = m.SyncMore(b"\x42" * (1 << 20))
    for _ in range(5):  # a hostile member streams pieces without end: refused past the cap
        b.receive_data(_sealed(a, piece))
    assert isinstance(closed(b.events()).error, RemoteProtocolError)


def test_idle_in_the_middle_of_a_sync_message_is_a_protocol_error() -> None:
    a, b = _established()
    b.receive_data(_sealed(a, m.SyncMore(b"\x42" * 100)) + _sealed(a, m.Idle(())))
    err = closed(b.events()).error
    assert isinstance(err, RemoteProtocolError) and "middle" in str(err)


@pytest.mark.parametrize("body", [
    bytes([m.MsgType.URGENT, 0]),  # no changes
    bytes([m.MsgType.URGENT, 1]) + (10).to_bytes(4, "big") + b"short",  # truncated
    bytes([m.MsgType.URGENT, 1]) + (0).to_bytes(4, "big"),  # an empty change
    bytes([m.MsgType.URGENT, 65]) + b"",  # too many
])
def test_malformed_urgent_messages_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        m.decode(body)


def test_urgent_roundtrip() -> None:
    msg = m.Urgent((b"one", b"two" * 1000))
    assert m.decode(m.encode(msg)) == msg
