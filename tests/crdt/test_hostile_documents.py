"""Data from other devices in shapes this code never writes: never a crash.

These tests build hostile documents with raw automerge on purpose (only the
product code is limited to one automerge module)."""

from __future__ import annotations

import automerge.core as am
import pytest

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.crdt.model import Urgency
from circle.errors import MalformedDocument, SchemaTooNew
from factories import Clock, add_member, make_board


def _raw(board: Board) -> am.Document:
    return am.Document.load(board.doc.save())


def _merge_raw(board: Board, raw: am.Document) -> None:
    board.doc.merge(AmDoc.load(bytes(raw.save())))
    board.invalidate()


def test_newer_schema_opens_read_only_and_refuses_edits(clock: Clock) -> None:
    """A member (or a newer client) writing schema 99 must not lock everyone
    out: the board opens, reads what it can, and refuses to edit."""
    board = make_board(clock)
    board.add_need("still readable")
    raw = _raw(board)
    meta = raw.get(am.ROOT, "meta")[1]
    with raw.transaction() as tx:
        tx.put(meta, "schema", am.ScalarType.Int, 99)
    newer = Board(AmDoc.load(bytes(raw.save())), board.me, clock)
    newer.members_source = board.members_source
    assert "still readable" in {n.title for n in newer.needs()}
    assert "newer version" in (newer.schema_too_new() or "")
    with pytest.raises(SchemaTooNew, match="newer version"):
        newer.add_need("anything")


def test_wrongly_typed_fields_are_isolated_per_field(clock: Clock) -> None:
    board = make_board(clock)
    good = board.add_need("fine")
    bad = board.add_need("will be damaged")
    raw = _raw(board)
    needs = raw.get(am.ROOT, "needs")[1]
    rec = raw.get(needs, bad)[1]
    with raw.transaction() as tx:
        tx.put(rec, "expires_at", am.ScalarType.Str, "tomorrow")  # wrong type
        tx.put(needs, "scalar-instead-of-record", am.ScalarType.Int, 5)
        weird = tx.put_object(needs, "weird", am.ObjType.Map)
        tx.put(weird, "title", am.ScalarType.Str, "x")
        tx.put(weird, "urgency", am.ScalarType.Str, "yesterday")  # unknown enum
    _merge_raw(board, raw)
    view = board.view()
    # A record with odd fields stays listed (a peer must not be able to hide
    # it); each odd or missing field is reported once, by name.
    assert set(view.needs) == {good, bad, "weird"}
    assert view.needs[bad].title == "will be damaged"
    assert view.needs["weird"].title == "x"
    reasons = {(m.id, m.reason.split(" of ")[0]) for m in view.malformed}
    assert (bad, "unreadable field expires_at") in reasons
    assert ("weird", "unreadable field urgency") in reasons
    assert ("weird", "unreadable field author") in reasons
    assert ("scalar-instead-of-record", "not a record") in reasons
    assert good not in {m.id for m in view.malformed}


def test_timestamp_from_a_peer_reads_as_malformed_not_naive_datetime(clock: Clock) -> None:
    import datetime

    board = make_board(clock)
    rid = board.add_need("x")
    raw = _raw(board)
    rec = raw.get(raw.get(am.ROOT, "needs")[1], rid)[1]
    with raw.transaction() as tx:
        tx.put(rec, "created_at", am.ScalarType.Timestamp, datetime.datetime(2020, 1, 1))
    _merge_raw(board, raw)
    assert rid in {m.id for m in board.view().malformed}


def test_garbage_bytes_are_typed_errors() -> None:
    for data in (b"", b"garbage", b"\x85\x6f\x4a\x83" + b"\xff" * 40):
        try:
            AmDoc.load(data)
        except MalformedDocument:
            pass
    with pytest.raises(MalformedDocument):
        AmDoc.load(b"definitely not automerge")
    doc = AmDoc.new()
    with pytest.raises(MalformedDocument):
        doc.receive_sync_message(doc.new_sync_state(), b"\x42\xff\xff\xff")


# --- values written by JavaScript Automerge (attack 6 of issue 9) ---------------------------
#
# Every test below takes the board through the reference implementation, as a
# hostile member (or a modified client) would, and checks three things: the
# circle still reads, the bad value is isolated to its field and reported
# once, and the binding's Rust panic never reaches stderr (fd 2).


def _via_js(board: Board, ops: list[dict[str, object]]) -> None:
    """Apply `ops` in JavaScript Automerge to a copy of the board and sync the
    resulting change back, as LAN sync would."""
    from jsam import js_edit

    theirs = AmDoc.load(js_edit(board.doc.save(), ops))
    board.doc.apply_changes(theirs.changes_since(board.doc.heads()))
    board.invalidate()


def _no_panic(capfd: pytest.CaptureFixture[str]) -> None:
    err = capfd.readouterr().err
    assert "panicked" not in err and "PanicException" not in err, err


def _bad(board: Board, rid: str) -> list[str]:
    return [m.reason for m in board.view().malformed if m.id == rid]


def test_counter_in_meta_keeps_the_circle_readable(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four")
    _via_js(board, [{"path": ["meta", "schema"], "value": {"counter": 1}},
                    {"path": ["meta", "circle_id"], "value": {"counter": 7}}])
    capfd.readouterr()
    Board(board.doc, board.me, clock)  # opening checks the schema: must not refuse
    meta = board.meta()
    assert board.name == "Eastside"
    assert meta["created_at"] == board.doc.root_scalars("meta")["created_at"]
    assert [n.id for n in board.needs()] == [need]
    _no_panic(capfd)


def test_counter_in_one_field_hides_only_that_field(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four", details="hot", urgency=Urgency.NOW)
    other = board.add_need("Ride to clinic")
    _via_js(board, [{"path": ["needs", need, "urgency"], "value": {"counter": 3}}])
    capfd.readouterr()
    view = board.view()
    assert set(view.needs) == {need, other}
    assert view.needs[need].title == "Soup for four" and view.needs[need].details == "hot"
    reasons = _bad(board, need)
    assert len(reasons) == 1 and reasons[0].startswith(f"unreadable field urgency of need {need[:4]}")
    assert reasons[0].endswith(")") and "(written by device " in reasons[0]  # no trust binding here
    _no_panic(capfd)


def test_unreadable_field_names_its_writer(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four")
    rex = add_member(board, "rex")
    ours = board.doc.actor()
    board.member_of_actor = lambda actor: board.me if actor == ours else rex  # as the trust layer binds them
    _via_js(board, [{"path": ["needs", need, "urgency"], "value": {"counter": 3}}])
    assert _bad(board, need) == [f"unreadable field urgency of need {need[:4]}\u2026 (written by rex)"]
    _no_panic(capfd)


def test_counter_in_claims_keeps_the_other_claims(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four")
    board.claim_need(need)
    _via_js(board, [{"path": ["needs", need, "claims", "rexrexrexr"], "value": {"counter": 1}}])
    capfd.readouterr()
    claims = board.view().needs[need].claims
    assert set(claims) == {board.me}
    assert any("claims" in r and "rexrexrexr" in r for r in _bad(board, need))
    _no_panic(capfd)


def test_whole_claims_map_replaced_by_a_counter(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four")
    _via_js(board, [{"path": ["needs", need, "claims"], "value": {"counter": 1}}])
    capfd.readouterr()
    assert board.view().needs[need].claims == {}
    assert any("claims" in r for r in _bad(board, need))
    _no_panic(capfd)


@pytest.mark.parametrize("value", [
    {"timestamp": 8_000_000_000_000_000},  # past Python's datetime range: the binding panics
    {"timestamp": 1_700_000_000_000},
    {"list": [{"int": 1}]},
    {"map": {"a": {"int": 1}}},
    {"float": 1.5},
    {"big": 200_000},
    {"counter": 2},
])
def test_any_odd_value_in_a_field_is_isolated(clock: Clock, capfd: pytest.CaptureFixture[str],
                                              value: dict[str, object]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four", details="hot")
    _via_js(board, [{"path": ["needs", need, "expires_at"], "value": value},
                    {"path": ["needs", need, "title"], "value": value}])
    capfd.readouterr()
    view = board.view()
    assert view.needs[need].details == "hot"
    reasons = _bad(board, need)
    assert len(reasons) == 2, reasons
    assert {r.split(" of ")[0] for r in reasons} == {"unreadable field expires_at", "unreadable field title"}
    _no_panic(capfd)


def test_a_record_or_collection_replaced_by_a_counter(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    keep = board.add_need("Soup for four")
    gone = board.add_need("Ride to clinic")
    board.add_offer("Bike repair")
    _via_js(board, [{"path": ["needs", gone], "value": {"counter": 1}},
                    {"path": ["offers"], "value": {"counter": 1}}])
    capfd.readouterr()
    view = board.view()
    assert set(view.needs) == {keep}
    assert _bad(board, gone) == ["not a record"]
    assert view.offers == {}
    assert board.members()[0].handle == "sam"
    _no_panic(capfd)


def test_counter_overwritten_later_reads_again(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    board = make_board(clock)
    need = board.add_need("Soup for four")
    _via_js(board, [{"path": ["needs", need, "urgency"], "value": {"counter": 1}}])
    assert _bad(board, need)
    board.edit_need(need, urgency=Urgency.NOW)
    assert board.view().needs[need].urgency == Urgency.NOW
    assert _bad(board, need) == []
    _no_panic(capfd)


def test_counter_among_the_signed_statements_keeps_membership(clock: Clock,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    """Membership comes from the signed statements map: an odd value in it is
    skipped, the real statements still decide who is in."""
    board = make_board(clock)
    rex = add_member(board, "rex")
    _via_js(board, [{"path": ["statements", "ff" * 32], "value": {"counter": 1}}])
    capfd.readouterr()
    assert len(board.statement_blobs()) == 2
    assert {m.handle for m in board.members()} == {"sam", "rex"}
    assert board.view().members[rex].handle == "rex"
    _no_panic(capfd)


def test_strings_written_by_javascript_read_as_text(clock: Clock) -> None:
    """Current JS Automerge writes a plain string as a Text object."""
    board = make_board(clock)
    need = board.add_need("Soup for four")
    _via_js(board, [
        {"path": ["needs", need, "title"], "value": {"text": "Soup for six"}},
        {"path": ["meta", "name"], "value": {"text": "Eastside tenants"}},
    ])
    assert board.view().needs[need].title == "Soup for six"
    assert board.name == "Eastside tenants"
    assert _bad(board, need) == []


def test_writes_over_odd_values_heal_or_fail_in_words(clock: Clock, capfd: pytest.CaptureFixture[str]) -> None:
    """Writing next to a value the binding cannot read never raises the
    binding's PanicException (a BaseException that would end the process)."""
    board = make_board(clock)
    need = board.add_need("Soup for four")
    _via_js(board, [{"path": ["needs", need, "claims"], "value": {"counter": 1}}])
    board.claim_need(need)  # the claims map is written afresh over the counter
    assert set(board.view().needs[need].claims) == {board.me}
    assert _bad(board, need) == []
    _via_js(board, [{"path": ["needs"], "value": {"counter": 1}}])
    with pytest.raises(MalformedDocument, match="no 'needs' collection"):
        board.add_need("Ride to clinic")
    board.add_offer("Bike repair")  # the rest of the circle still takes writes
    _no_panic(capfd)


def test_circle_identity_survives_an_overwritten_circle_id(clock: Clock) -> None:
    """`meta.circle_id` is last-writer-wins: one member can change it for
    everyone. The founding change's hash cannot be changed."""
    board = make_board(clock)
    board.add_need("Soup")
    copy = AmDoc.load(board.doc.save())
    _via_js(board, [{"path": ["meta", "circle_id"], "value": {"str": "someothercircle"}}])
    assert board.doc.root_scalars("meta")["circle_id"] == "someothercircle"
    assert board.doc.same_circle(copy) and copy.same_circle(board.doc)
    other_circle = make_board(clock)  # same name, different founding change
    assert not board.doc.same_circle(other_circle.doc)
    assert not other_circle.doc.same_circle(board.doc)
