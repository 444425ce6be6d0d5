"""Delivery means durable at the other end (issue 16 case 4; net/session.py rule 9).

In-memory pairs: both sides run with `owner_persists`, as node/live.py does,
and the test plays the owner (it says when a persist succeeded or failed)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from net_helpers import ALICE, BOB, KEYRING, add, is_member, make_doc, shuttle

from circle.crdt.am import AmDoc
from circle.net import messages as m
from circle.net.session import Connection, InSync, PeerSaved

FULL = "the disk holding /home/bo/.circle is full"


def owned_pair(a_doc: AmDoc, b_doc: AmDoc) -> tuple[Connection, Connection]:
    """A pair whose owners persist; both start with what they loaded from disk."""
    a = Connection.initiator(a_doc, ALICE, KEYRING, is_member, owner_persists=True)
    b = Connection.responder(b_doc, BOB, KEYRING, is_member, owner_persists=True)
    a.persisted(a_doc.heads())
    b.persisted(b_doc.heads())
    return a, b


def in_sync(events: list[Any]) -> bool:
    return any(isinstance(e, InSync) for e in events)


def diverged() -> tuple[AmDoc, AmDoc]:
    left = make_doc(3)
    right = AmDoc.load(left.save())
    for i in range(5):
        add(left, f"new{i}")
    return left, right


def test_receiver_that_fails_to_persist_does_not_make_the_sender_in_sync() -> None:
    left, right = diverged()
    a, b = owned_pair(left, right)
    ev_a, ev_b = shuttle(a, b)
    assert right.heads() == left.heads()  # applied in memory...
    assert not in_sync(ev_a) and not a.in_sync and not a.peer_has_all_ours  # ...but nobody said "saved"
    b.persist_failed(FULL)  # the owner's append hit ENOSPC
    ev_a, ev_b = shuttle(a, b)
    assert not in_sync(ev_a) and not in_sync(ev_b) and not a.peer_has_all_ours
    said = [e for e in ev_a if isinstance(e, PeerSaved)]
    assert said and said[-1].reason == FULL and a.peer_save_error == FULL
    assert set(said[-1].heads) != set(left.heads())  # bo still holds only what it had before


def test_receiver_that_persists_later_acks_and_then_both_are_in_sync() -> None:
    left, right = diverged()
    a, b = owned_pair(left, right)
    shuttle(a, b)
    b.persist_failed(FULL)
    shuttle(a, b)
    b.persisted(right.heads())  # the refresh timer retried once there was room
    ev_a, ev_b = shuttle(a, b)
    assert in_sync(ev_a) and in_sync(ev_b)
    assert a.in_sync and a.peer_has_all_ours and a.peer_save_error == ""
    assert [e.reason for e in ev_a if isinstance(e, PeerSaved)] == [""]


def test_sender_in_sync_only_after_the_ack_not_after_idle() -> None:
    """The old rule (Idle with our heads = delivered) is gone: Idle alone never counts."""
    left, right = diverged()
    a, b = owned_pair(left, right)
    ev_a, _ = shuttle(a, b)
    assert a.peer_heads == frozenset(left.heads())  # bo said Idle with our heads...
    assert not in_sync(ev_a)  # ...which is not delivery
    b.persisted(right.heads())
    ev_a, _ = shuttle(a, b)
    assert in_sync(ev_a)


def test_premature_ack_from_a_modified_client_drops_nothing() -> None:
    """A modified bo acks our heads before it has them: we never count it (its
    Idle says otherwise) and keep sending; everything reaches bo's document."""
    left, right = diverged()
    a, b = owned_pair(left, right)
    while b.peer is None or a.peer is None:  # the handshake, nothing more
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
    forged = m.encode(m.Saved(tuple(sorted(left.heads())), ""))
    from circle.net.framing import encode_frame

    a.receive_data(encode_frame(b.peer.channel.seal(forged)))  # sealed by bo: a valid message from a member
    ev_a, ev_b = shuttle(a, b)
    assert right.heads() == left.heads()  # nothing was held back on the forged word
    assert not in_sync(ev_a)  # bo's own Idle/Saved say it has not saved them: not counted


def test_premature_failure_ack_cannot_smuggle_heads_in() -> None:
    """The same early ack dressed as a failure report: its words are shown, its heads do not count."""
    left, right = diverged()
    a, b = owned_pair(left, right)
    while b.peer is None or a.peer is None:
        b.receive_data(a.data_to_send())
        a.receive_data(b.data_to_send())
    from circle.net.framing import encode_frame

    assert b.peer is not None
    forged = m.encode(m.Saved(tuple(sorted(left.heads())), "nothing to see"))
    a.receive_data(encode_frame(b.peer.channel.seal(forged)))
    ev_a, _ = shuttle(a, b)
    assert right.heads() == left.heads() and not in_sync(ev_a) and not a.peer_has_all_ours
    b.persisted(right.heads())
    assert in_sync(shuttle(a, b)[0])


def test_consistent_liar_cannot_stop_a_later_session_from_resending() -> None:
    """A client that drops what it gets yet acks our heads (Idle and Saved): this
    session is fooled (a member can lie about itself), but the next session
    starts from what the peer really holds and sends everything again."""

    left, right = diverged()
    lying_right = AmDoc.load(right.save())
    a, b = owned_pair(left, lying_right)
    # The modified client: applies nothing, then claims our heads.
    b.doc = _DropAll(lying_right, fake_heads=left.heads())  # type: ignore[assignment]
    b.persisted(left.heads())
    shuttle(a, b)
    assert lying_right.heads() != left.heads()  # bo really holds none of the new changes
    # Whatever the fooled session concluded, the next one (bo honest again) delivers all.
    a2, b2 = owned_pair(left, lying_right)
    ev_a, _ = shuttle(a2, b2)
    assert lying_right.heads() == left.heads()
    assert not in_sync(ev_a)  # and counts it delivered only once bo's owner saves it
    b2.persisted(lying_right.heads())
    assert in_sync(shuttle(a2, b2)[0])


class _DropAll:
    """A document that ignores every change it receives and reports fixed heads."""

    def __init__(self, doc: AmDoc, fake_heads: list[bytes]) -> None:
        self._doc = doc
        self._heads = fake_heads

    def new_sync_state(self) -> Any:
        return self._doc.new_sync_state()

    def generate_sync_message(self, state: Any) -> bytes | None:
        return None

    def receive_sync_message(self, state: Any, data: bytes) -> None:
        return None

    def save(self) -> bytes:
        return self._doc.save()

    def heads(self) -> list[bytes]:
        return list(self._heads)

    def merge_saved(self, data: bytes) -> None:
        return None

    def is_empty(self) -> bool:
        return False


def test_in_memory_sessions_without_an_owner_still_sync_as_before() -> None:
    left, right = diverged()
    a = Connection.initiator(left, ALICE, KEYRING, is_member)
    b = Connection.responder(right, BOB, KEYRING, is_member)
    ev_a, ev_b = shuttle(a, b)
    assert in_sync(ev_a) and in_sync(ev_b) and a.peer_has_all_ours


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=5, unique=True).map(tuple), st.text(max_size=50))
def test_saved_roundtrip(heads: tuple[bytes, ...], reason: str) -> None:
    msg = m.Saved(heads, reason)
    assert m.decode(m.encode(msg)) == msg


def test_peer_reason_is_cleaned_before_it_is_shown() -> None:
    left, right = diverged()
    a, b = owned_pair(left, right)
    shuttle(a, b)
    b.persist_failed("disk \x1b[31mfull\x07" + "x" * 500)
    shuttle(a, b)
    assert "\x1b" not in a.peer_save_error and "\x07" not in a.peer_save_error
    assert len(a.peer_save_error) <= 200


def test_what_a_peer_is_told_about_our_failed_save_names_no_path() -> None:
    from circle.node.live import save_failure_words

    home = "/home/bo/.local/share/circle/c1/doc/log"
    assert save_failure_words(f"the disk holding {home} is full; nothing was saved") == "its disk is full"
    assert save_failure_words(f"the disk quota for {home} is used up") == "its disk quota is used up"
    odd = save_failure_words(f"could not use {home}: Stale file handle")
    assert "/home" not in odd and "bo" not in odd and odd.startswith("it could not save")
