"""Actions a real group asked for first that the board core lacks yet: a
steward recording a loan for another member, the checks on a profile edit,
and a tool's loan and condition history.

They are written on top of `Board`'s public document API and its own
checks, so that the lead can fold them into `Board` unchanged. Rules:

- Only the tool's steward may record a loan *for someone else*; the loan's
  `borrower` is that member and `recorded_by` is the steward, so the history
  says who handed the tool over. A member records their own loans with
  `Board.borrow` as before.
- The same availability rules as `Board.borrow` apply to the borrower: a
  tool held for one member cannot be lent to another.
- A profile edit is checked here (`check_profile`) and written as a signed
  membership statement by `node.membership.set_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass

from circle.crdt import board as board_module
from circle.crdt.board import Board
from circle.crdt.model import (
    DAY_MS,
    Availability,
    Condition,
    Loan,
    Member,
    MemberId,
    Millis,
    RecordId,
)
from circle.errors import ActionRefused, UsageError

MAX_HANDLE = 40
MAX_ZONE = 60


def _me(board: Board) -> MemberId:
    me = board.me
    if me is None or board.active_member(me) is None:
        raise ActionRefused("you are not an active member of this circle")
    return me


def lend(board: Board, tool_prefix: str, member_prefix: str, days: int | None = None) -> RecordId:
    """The steward records that `member` took the tool out now."""
    me = _me(board)
    tool = board.tool(tool_prefix)
    member = board.member(member_prefix)
    if member.id == me:
        return board.borrow(tool.id, days)
    if tool.steward != me:
        raise ActionRefused(f"only {tool.name}'s steward can record a loan for another member")
    if not member.active:
        raise ActionRefused(f"{member.handle} is no longer a member")
    if tool.availability == Availability.ON_LOAN:
        raise ActionRefused(f"{tool.name} is already on loan; return it first")
    if tool.availability not in (Availability.AVAILABLE, Availability.HELD):
        raise ActionRefused(f"{tool.name} is {tool.availability} and cannot be lent")
    if tool.condition == Condition.UNSAFE:
        raise ActionRefused(f"{tool.name} is marked unsafe; fix it and set its condition first")
    if tool.availability == Availability.HELD and tool.ready_for != member.id:
        raise ActionRefused(f"{tool.name} is held for another member who asked first")
    loan_days = days if days is not None else tool.loan_days
    if not 1 <= loan_days <= 365:
        raise UsageError("loan days must be between 1 and 365")
    now = board.clock()
    rid = board_module.new_record_id()  # looked up at call time: tests fix ids
    with board.doc.edit() as ed:
        ed.put_record("loans", rid, {
            "tool": tool.id, "borrower": member.id, "out_at": now, "due_at": now + loan_days * DAY_MS,
            "returned_at": None, "lost_at": None, "condition_out": tool.condition.value,
            "condition_in": None, "renewals": 0, "recorded_by": me,
        })
        for hold in tool.queue:
            if hold.member == member.id:
                ed.update("holds", hold.id, {"fulfilled_at": now})
    board._commit()
    return rid


def check_profile(current: Member, handle: str | None = None, zone: str | None = None) -> tuple[str, str]:
    """The (handle, zone) a profile edit writes: the current values where none
    is given, trimmed and within the limits every join accepts. The change
    itself is a signed membership statement (`node.membership.set_profile`)."""
    h = current.handle if handle is None else handle.strip()
    z = current.zone if zone is None else zone.strip()
    if handle is None and zone is None:
        raise UsageError("give a new handle or zone")
    if not h:
        raise UsageError("handle must not be empty")
    if len(h) > MAX_HANDLE:
        raise UsageError(f"handle is longer than {MAX_HANDLE} characters")
    if len(z) > MAX_ZONE:
        raise UsageError(f"zone is longer than {MAX_ZONE} characters")
    return h, z


@dataclass(frozen=True)
class HistoryEntry:
    """One loan of a tool, oldest first: who, when, in what condition."""

    loan: Loan
    recorded_by: MemberId | None  # the steward, when they recorded it for the borrower

    @property
    def at(self) -> Millis:
        return self.loan.out_at


def tool_history(board: Board, tool_prefix: str) -> list[HistoryEntry]:
    tool = board.tool(tool_prefix)
    out: list[HistoryEntry] = []
    for loan in sorted(board.loans_of(tool.id), key=lambda x: x.out_at):
        rec = board.doc.record("loans", loan.id)
        by = rec.get("recorded_by") if rec is not None else None
        out.append(HistoryEntry(loan, MemberId(by) if isinstance(by, str) else None))
    return out
