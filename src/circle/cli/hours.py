"""`circle hours ...`: the time bank (only when the circle turned it on).

An hour given is an hour. Balances are derived from exchanges both sides
confirmed; they are listed by name, never ranked, and never gate anything."""

from __future__ import annotations

import click

from circle.cli.common import Ctx, ago, emit, handle_of, json_option, pass_ctx, table
from circle.crdt.gatherings import gatherings
from circle.crdt.timebank import Exchange, format_hours
from circle.crdt.transfer import record_dict
from circle.errors import UsageError
from circle.node.service import CircleService


def exchange_dict(svc: CircleService, x: Exchange) -> dict[str, object]:
    return {**record_dict(x), "hours": x.minutes / 60, "counted": x.counted,
            "giver_handle": handle_of(svc, x.giver), "receiver_handle": handle_of(svc, x.receiver)}


def _state(x: Exchange) -> str:
    if x.duplicate_of:
        return f"same as {x.duplicate_of}"
    text = x.status.value
    if x.possible_duplicate_of:
        text += f" (maybe same as {x.possible_duplicate_of})"
    return text


@click.group(invoke_without_command=True)
@click.option("--member", default=None, help="Only exchanges with this member (handle or id).")
@json_option
@pass_ctx
@click.pass_context
def hours(click_ctx: click.Context, ctx: Ctx, member: str | None) -> None:
    """Exchanges and the balances derived from confirmed ones."""
    if click_ctx.invoked_subcommand is not None:
        return
    svc = ctx.service()
    g = gatherings(svc.board)
    who = svc.board.member(member).id if member else None
    items = g.exchanges(who)
    bal = g.balances()
    members = sorted(svc.board.members(), key=lambda m: m.handle.lower())
    data = {
        "exchanges": [exchange_dict(svc, x) for x in items],
        "balances": [{"member": m.id, "handle": m.handle, "given_hours": b.given_minutes / 60,
                      "received_hours": b.received_minutes / 60}
                     for m in members if (b := bal.get(m.id)) is not None and (who is None or m.id == who)],
    }

    def human() -> None:
        table([[x.id, handle_of(svc, x.giver), handle_of(svc, x.receiver), format_hours(x.minutes),
                x.note[:30], _state(x), ago(x.created_at)] for x in items],
              ["id", "gave", "received", "hours", "for", "state", "logged"])
        click.echo("")
        click.echo("Confirmed hours (given / received), by name:")
        table([[b["handle"], format_hours(int(b["given_hours"] * 60)), format_hours(int(b["received_hours"] * 60))]
               for b in data["balances"]], ["member", "given", "received"])
    emit(ctx, data, human)


@hours.command("log")
@click.option("--with", "other", required=True, help="The other member (handle or id).")
@click.option("--hours", "amount", type=float, required=True, help="e.g. 1.5")
@click.option("--for", "note", required=True, help="What it was for.")
@click.option("--need", default=None, help="The need it met, if any.")
@click.option("--gave/--received", default=True, help="You gave the time (default) or received it.")
@click.option("--new", "force", is_flag=True, help="Log it even if they logged one just like it.")
@json_option
@pass_ctx
def hours_log(ctx: Ctx, other: str, amount: float, note: str, need: str | None, gave: bool, force: bool) -> None:
    """Log an exchange; it counts once the other side confirms."""
    if amount != amount or amount <= 0:
        raise UsageError("--hours must be more than 0")
    svc = ctx.service()
    g = gatherings(svc.board)
    x = g.exchange(g.log_hours(svc.board.member(other).id, round(amount * 60), note, gave=gave, need=need,
                               force=force))
    emit(ctx, exchange_dict(svc, x), lambda: click.echo(
        f"Logged {x.id}: {handle_of(svc, x.giver)} gave {handle_of(svc, x.receiver)} {format_hours(x.minutes)}; "
        f"it counts once {handle_of(svc, x.other_side(svc.me))} confirms it."))


@hours.command("confirm")
@click.argument("exchange_id")
@json_option
@pass_ctx
def hours_confirm(ctx: Ctx, exchange_id: str) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    x = g.exchange(g.confirm(exchange_id))
    emit(ctx, exchange_dict(svc, x), lambda: click.echo(f"Confirmed {x.id}; now {_state(x)}."))


@hours.command("dispute")
@click.argument("exchange_id")
@click.option("--note", required=True, help="What is not right about it.")
@json_option
@pass_ctx
def hours_dispute(ctx: Ctx, exchange_id: str, note: str) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    x = g.exchange(g.dispute(exchange_id, note))
    emit(ctx, exchange_dict(svc, x), lambda: click.echo(f"Disputed {x.id}; it does not count until you confirm."))


@hours.command("withdraw")
@click.argument("exchange_id")
@json_option
@pass_ctx
def hours_withdraw(ctx: Ctx, exchange_id: str) -> None:
    """Take back an exchange you logged (e.g. a duplicate)."""
    svc = ctx.service()
    g = gatherings(svc.board)
    x = g.exchange(g.withdraw_exchange(exchange_id))
    emit(ctx, exchange_dict(svc, x), lambda: click.echo(f"Withdrew {x.id}."))


commands = [hours]
