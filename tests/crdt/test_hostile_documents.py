"""Data from other devices in shapes this code never writes: never a crash.

These tests build hostile documents with raw automerge on purpose (only the
product code is limited to one automerge module)."""

from __future__ import annotations

import automerge.core as am
import pytest

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.errors import MalformedDocument, SchemaTooNew
from factories import Clock, make_board


def _raw(board: Board) -> am.Document:
    return am.Document.load(board.doc.save())


def _merge_raw(board: Board, raw: am.Document) -> None:
    board.doc.merge(AmDoc.load(bytes(raw.save())))
    board.invalidate()


def test_newer_schema_is_refused(clock: Clock) -> None:
    board = make_board(clock)
    raw = _raw(board)
    meta = raw.get(am.ROOT, "meta")[1]
    with raw.transaction() as tx:
        tx.put(meta, "schema", am.ScalarType.Int, 99)
    with pytest.raises(SchemaTooNew, match="newer version"):
        Board(AmDoc.load(bytes(raw.save())), board.me, clock)


def test_wrongly_typed_fields_become_malformed_records(clock: Clock) -> None:
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
    assert set(view.needs) == {good}
    assert {m.id for m in view.malformed} == {bad, "scalar-instead-of-record", "weird"}


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
