"""A founded circle document for benchmarks that build boards directly (no
service, no per-edit fsync): the signed founding statements, a board whose
members come from them, and the founding epoch key."""

from __future__ import annotations

from circle.crdt.am import AmDoc
from circle.crdt.board import Board
from circle.net.keys import DeviceIdentity, EpochKey, new_epoch_key
from circle.net.membership_rules import actor_for, circle_id_for, derive
from circle.node import membership


def founded_board(me: DeviceIdentity, name: str, handle: str, at: int) -> tuple[AmDoc, Board, str, int, EpochKey]:
    found = membership.founding_statements(me, handle, "north", at)
    cid = circle_id_for(found.id)
    number, key = 1, new_epoch_key()
    epoch = membership.founding_epoch(me, cid, found, key, number)
    doc = Board.create_document(name, cid, at, [(found.id.hex(), found.raw), (epoch.id.hex(), epoch.raw)],
                                actor_for(cid, me.verify_key) + bytes(8))
    board = Board(doc, me.member_id)
    members = membership.members_of(derive(board.statement_blobs(), cid))
    board.members_source = lambda: members
    return doc, board, cid, number, key
