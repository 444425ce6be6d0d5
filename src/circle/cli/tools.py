"""`circle tool ...`: the shared tool library, loans and holds."""

from __future__ import annotations

import time

import click

from circle.cli.common import (
    Ctx,
    ago,
    emit,
    handle_of,
    json_option,
    pass_ctx,
    show_record,
    table,
)
from circle.crdt.model import Condition, Tool, ToolState
from circle.crdt.transfer import record_dict
from circle.node.service import CircleService

# --- tools ------------------------------------------------------------------------------

CONDITION = click.Choice([c.value for c in Condition])


@click.group()
def tool() -> None:
    """The shared tool library: inventory, loans and holds."""


def _tool_row(svc: CircleService, t: Tool) -> list[str]:
    state = t.availability.value
    if t.current_loan is not None:
        state += f" ({handle_of(svc, t.current_loan.borrower)}, due {_day(t.current_loan.due_at)})"
        if t.overdue:
            state = "OVERDUE " + state
    if t.ready_for:
        state += f" (ready for {handle_of(svc, t.ready_for)})"
    if t.conflicting_loans:
        state += f" CONFLICT x{len(t.conflicting_loans) + 1}"
    return [t.id, t.name[:30], t.category, t.condition.value, state, str(len(t.queue) or "")]


@tool.command("add")
@click.argument("name")
@click.option("--description", default="")
@click.option("--category", default="")
@click.option("--condition", type=CONDITION, default="good")
@click.option("--note", default="", help="Condition notes.")
@click.option("--loan-days", type=int, default=7, show_default=True)
@json_option
@pass_ctx
def tool_add(ctx: Ctx, name: str, description: str, category: str, condition: str, note: str, loan_days: int) -> None:
    """Add a tool to the library (you become its steward)."""
    svc = ctx.service()
    rid = svc.board.add_tool(name, description, category, Condition(condition), loan_days, note)
    t = svc.board.tool(rid)
    emit(ctx, record_dict(t), lambda: click.echo(f"Added tool {t.id}: {t.name}"))


@tool.command("list")
@click.option("--available", is_flag=True, help="Only tools free to borrow now.")
@click.option("--search", default=None)
@json_option
@pass_ctx
def tool_list(ctx: Ctx, available: bool, search: str | None) -> None:
    """List the tool library with who has what and until when."""
    svc = ctx.service()
    items = svc.board.tools(available, search)
    emit(ctx, [record_dict(t) for t in items] if ctx.json else None,
         lambda: table([_tool_row(svc, t) for t in items], ["id", "name", "category", "condition", "availability", "holds"]))


@tool.command("show")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_show(ctx: Ctx, tool_id: str) -> None:
    """Show one tool: condition, current loan, queue, recent loans."""
    svc = ctx.service()
    t = svc.board.tool(tool_id)
    loans = svc.board.loans_of(t.id)
    holds = svc.board.holds_of(t.id)
    data = {**record_dict(t), "loans": [record_dict(x) for x in loans], "holds": [record_dict(h) for h in holds]}
    def human() -> None:
        show_record(svc, t)
        for x in loans[-5:]:
            if x.returned_at is not None:
                end = f"returned {_day(x.returned_at)}"
            elif x.lost_at is not None:
                end = f"lost {_day(x.lost_at)}"
            else:
                end = f"due back {_day(x.due_at)}{' OVERDUE' if x.overdue else ''}"
            click.echo(f"  loan {x.id}: {handle_of(svc, x.borrower)}, out {_day(x.out_at)}, {end}")
        for h in holds:
            if h.status.value in ("waiting", "ready"):
                click.echo(f"  hold {h.id}: {handle_of(svc, h.member)} {h.status.value} since {ago(h.created_at)}")
        if t.conflicting_loans:
            click.echo(f"  CONFLICT: {len(t.conflicting_loans) + 1} loans were made at once while offline; "
                       f"current is {t.current_loan.id if t.current_loan else '-'}; return the others "
                       "with `circle tool return TOOL --loan LOAN`.")
    emit(ctx, data, human)


@tool.command("edit")
@click.argument("tool_id")
@click.option("--name")
@click.option("--description")
@click.option("--category")
@click.option("--loan-days", type=int)
@click.option("--state", type=click.Choice([s.value for s in ToolState]))
@json_option
@pass_ctx
def tool_edit(ctx: Ctx, tool_id: str, name: str | None, description: str | None, category: str | None,
              loan_days: int | None, state: str | None) -> None:
    """Change a tool's name, description, category, loan days or state."""
    svc = ctx.service()
    rid = svc.board.edit_tool(tool_id, name=name, description=description, category=category,
                              loan_days=loan_days, state=ToolState(state) if state else None)
    t = svc.board.tool(rid)
    emit(ctx, record_dict(t), lambda: click.echo(f"Updated tool {t.id}"))


@tool.command("condition")
@click.argument("tool_id")
@click.option("--condition", type=CONDITION, required=True)
@click.option("--note", default=None)
@json_option
@pass_ctx
def tool_condition(ctx: Ctx, tool_id: str, condition: str, note: str | None) -> None:
    """Record a tool's condition (good, worn, needs-repair, unsafe) and a note."""
    svc = ctx.service()
    rid = svc.board.set_condition(tool_id, Condition(condition), note)
    t = svc.board.tool(rid)
    emit(ctx, record_dict(t), lambda: click.echo(f"{t.name} is now {t.condition.value}"))


@tool.command("borrow")
@click.argument("tool_id")
@click.option("--days", type=int, default=None, help="Loan length (default: the tool's loan days).")
@click.option("--for", "member", default=None, metavar="MEMBER",
              help="Steward only: record the loan for this member (handle or id prefix).")
@json_option
@pass_ctx
def tool_borrow(ctx: Ctx, tool_id: str, days: int | None, member: str | None) -> None:
    """Borrow a tool, or (as its steward) record that another member took it."""
    from circle.crdt.stewardship import lend

    svc = ctx.service()
    loan_id = lend(svc.board, tool_id, member, days) if member else svc.board.borrow(tool_id, days)
    loan = svc.board.view().loans[loan_id]
    t = svc.board.tool(loan.tool)
    who = "You" if loan.borrower == svc.me else handle_of(svc, loan.borrower)
    emit(ctx, record_dict(loan),
         lambda: click.echo(f"{who} borrowed {t.name} (loan {loan.id}); due back {_day(loan.due_at)}."))


@tool.command("history")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_history_cmd(ctx: Ctx, tool_id: str) -> None:
    """Every loan of a tool, with its condition going out and coming back."""
    from circle.crdt.csvio import iso
    from circle.crdt.stewardship import tool_history

    svc = ctx.service()
    t = svc.board.tool(tool_id)
    entries = tool_history(svc.board, t.id)
    data = {"tool": t.id, "name": t.name, "condition": t.condition.value, "condition_note": t.condition_note,
            "loans": [{"id": e.loan.id, "borrower": e.loan.borrower, "borrower_handle": handle_of(svc, e.loan.borrower),
                       "recorded_by": e.recorded_by, "out": iso(e.loan.out_at), "due": iso(e.loan.due_at),
                       "returned": iso(e.loan.returned_at) or None, "lost": iso(e.loan.lost_at) or None,
                       "condition_out": e.loan.condition_out.value,
                       "condition_in": e.loan.condition_in.value if e.loan.condition_in else None,
                       "status": e.loan.status.value} for e in entries]}
    rows = [[_day(e.loan.out_at), handle_of(svc, e.loan.borrower),
             handle_of(svc, e.recorded_by) if e.recorded_by else "-", e.loan.condition_out.value,
             _day(e.loan.returned_at) if e.loan.returned_at else ("lost" if e.loan.lost_at else "out"),
             e.loan.condition_in.value if e.loan.condition_in else "-"] for e in entries]
    def human() -> None:
        click.echo(f"{t.name}: now {t.condition.value}" + (f" ({t.condition_note})" if t.condition_note else ""))
        table(rows, ["out", "borrower", "lent by", "condition out", "back", "condition in"])
    emit(ctx, data, human)


def _day(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%a %d %b %Y", time.localtime(ms / 1000))


@tool.command("return")
@click.argument("tool_id")
@click.option("--condition", type=CONDITION, default=None)
@click.option("--note", default=None)
@click.option("--loan", "loan_id", default=None, help="Close a specific loan (e.g. a conflict).")
@json_option
@pass_ctx
def tool_return(ctx: Ctx, tool_id: str, condition: str | None, note: str | None, loan_id: str | None) -> None:
    """Return a loan (yours, or as steward any open loan with --loan)."""
    svc = ctx.service()
    lid = svc.board.return_tool(tool_id, Condition(condition) if condition else None, note, loan_id)
    t = svc.board.tool(tool_id)
    def human() -> None:
        click.echo(f"Returned {t.name} (loan {lid}); it is now {t.availability.value}.")
        if t.ready_for:
            click.echo(f"It is ready for {handle_of(svc, t.ready_for)}, who was waiting.")
    emit(ctx, record_dict(t), human)


@tool.command("renew")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_renew(ctx: Ctx, tool_id: str) -> None:
    """Renew your loan of a tool for another loan period."""
    svc = ctx.service()
    lid = svc.board.renew(tool_id)
    loan = svc.board.view().loans[lid]
    emit(ctx, record_dict(loan), lambda: click.echo(f"Renewed; now due back {_day(loan.due_at)}."))


@tool.command("lost")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_lost(ctx: Ctx, tool_id: str) -> None:
    """Mark a tool missing and its open loans lost."""
    svc = ctx.service()
    rid = svc.board.mark_lost(tool_id)
    t = svc.board.tool(rid)
    emit(ctx, record_dict(t), lambda: click.echo(f"{t.name} marked missing."))


@tool.command("hold")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_hold(ctx: Ctx, tool_id: str) -> None:
    """Join the queue for a tool that is on loan or held."""
    svc = ctx.service()
    hid = svc.board.hold(tool_id)
    t = svc.board.tool(tool_id)
    pos = [h.id for h in t.queue].index(hid) + 1
    emit(ctx, {**record_dict(svc.board.view().holds[hid]), "position": pos},
         lambda: click.echo(f"You are number {pos} in the queue for {t.name}."))


@tool.command("unhold")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_unhold(ctx: Ctx, tool_id: str) -> None:
    """Leave the queue for a tool."""
    svc = ctx.service()
    hid = svc.board.unhold(tool_id)
    emit(ctx, record_dict(svc.board.view().holds[hid]), lambda: click.echo("Hold cancelled."))


commands = [tool]
