"""circle's document against software nobody here wrote: JavaScript Automerge.

The reference implementation must be able to load what we save and read the
board, and what it writes (current JS writes every plain string as a Text
object, not a scalar string) must read as text in our views, with no
unreadable fields reported."""

from __future__ import annotations

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from factories import Clock, add_member, make_board
from jsam import js_edit, js_read


def _board(clock: Clock) -> tuple[Board, str, str, str]:
    board = make_board(clock)
    add_member(board, "rex")
    need = board.add_need("Soup for four", details="hot, vegetarian", tags=["food"])
    offer = board.add_offer("Bike repair", details="saturdays")
    tool = board.add_tool("Ladder", description="3 m")
    return board, need, offer, tool


def test_javascript_automerge_reads_our_board(clock: Clock) -> None:
    board, need, offer, tool = _board(clock)
    got = js_read(board.doc.save())
    assert got["meta"]["name"] == "Eastside" and got["meta"]["circle_id"] == board.meta()["circle_id"]
    assert got["needs"] == {need: "Soup for four"}
    assert got["offers"] == {offer: "Bike repair"}
    assert got["tools"] == {tool: "Ladder"}
    assert got["statements"] == len(board.statement_ids()) >= 2  # founding + rex's admission (signed blobs)


def _sync_back(board: Board, saved: bytes) -> None:
    theirs = AmDoc.load(saved)
    board.doc.apply_changes(theirs.changes_since(board.doc.heads()))


def test_javascript_edits_read_as_text(clock: Clock) -> None:
    board, need, offer, tool = _board(clock)
    assert board.view().needs[need].title == "Soup for four"  # the next view is built incrementally
    _sync_back(board, js_edit(board.doc.save(), [
        {"path": ["needs", need, "title"], "value": {"text": "Soup for six"}},
        {"path": ["needs", need, "details"], "value": {"text": "hot ✓ vegan — ünïcode"}},
        {"path": ["offers", offer, "title"], "value": {"text": "Bike and trailer repair"}},
        {"path": ["tools", tool, "name"], "value": {"text": "Long ladder"}},
        {"path": ["tools", tool, "condition"], "value": {"text": "worn"}},
    ]))
    view = board.view()
    assert view.needs[need].title == "Soup for six"
    assert view.needs[need].details == "hot ✓ vegan — ünïcode"
    assert view.offers[offer].title == "Bike and trailer repair"
    assert view.tools[tool].name == "Long ladder" and view.tools[tool].condition == "worn"
    assert view.malformed == []
    # and our next edit of the same field wins over the Text object as usual
    # a later JS edit inside the Text object (a splice, not a put) re-reads the record too
    _sync_back(board, js_edit(board.doc.save(), [{"path": ["needs", need, "title"], "update_text": "Soup for seven"}]))
    assert board.view().needs[need].title == "Soup for seven"
    board.edit_need(need, title="Soup for eight")
    assert board.view().needs[need].title == "Soup for eight"
    assert js_read(board.doc.save())["needs"][need] == "Soup for eight"


def test_a_need_created_in_javascript_is_listed(clock: Clock) -> None:
    """A whole record written by the reference implementation, strings as Text."""
    board, _need, _offer, _tool = _board(clock)
    me = board.me
    assert me is not None
    now = clock()
    _sync_back(board, js_edit(board.doc.save(), [{"path": ["needs", "jsneed01"], "value": {"map": {
        "title": {"text": "Firewood"}, "details": {"text": "two bags"}, "category": {"text": "heat"},
        "tags": {"text": "winter wood"}, "urgency": {"text": "this-week"}, "zone": {"text": "north"},
        "author": {"text": me}, "created_at": {"int": now}, "updated_at": {"int": now},
        "expires_at": {"int": now + 86_400_000}, "claims": {"map": {}},
    }}}]))
    need = board.view().needs["jsneed01"]
    assert (need.title, need.details, need.category, need.urgency) == ("Firewood", "two bags", "heat", "this-week")
    assert need.tags == frozenset({"winter", "wood"}) and need.author == me
    assert "jsneed01" in {n.id for n in board.needs()}
    assert board.view().malformed == []
