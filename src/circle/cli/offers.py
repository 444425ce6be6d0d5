"""`circle offer ...`: what members can give."""

from __future__ import annotations

import click

from circle.cli.common import (
    Ctx,
    ago,
    clock_from_env,
    emit,
    json_option,
    listed,
    pass_ctx,
    show_record,
    status_action,
    table,
)
from circle.crdt.transfer import record_dict

# --- offers -------------------------------------------------------------------------


@click.group()
def offer() -> None:
    """Offers: what members can give or lend."""


@offer.command("add")
@click.argument("title")
@click.option("--details", default="")
@click.option("--category", default="")
@click.option("--zone", default="")
@click.option("--tag", "tags", multiple=True)
@click.option("--quantity", type=int, default=None)
@click.option("--recurring", is_flag=True)
@click.option("--expires-days", type=int, default=30, show_default=True)
@json_option
@pass_ctx
def offer_add(ctx: Ctx, title: str, details: str, category: str, zone: str, tags: tuple[str, ...],
              quantity: int | None, recurring: bool, expires_days: int) -> None:
    """Post an offer."""
    svc = ctx.service()
    rid = svc.board.add_offer(title, details, category, tags, zone, quantity, recurring, expires_days)
    o = svc.board.offer(rid)
    emit(ctx, record_dict(o), lambda: click.echo(f"Added offer {o.id}: {o.title}"))


@offer.command("list")
@click.option("--status", type=click.Choice(["open", "paused", "closed", "expired", "all"]), default="open",
              show_default=True)
@click.option("--category", default=None)
@click.option("--search", default=None)
@json_option
@pass_ctx
def offer_list(ctx: Ctx, status: str, category: str | None, search: str | None) -> None:
    """List offers (open ones unless --status says otherwise)."""
    items, handle = listed(ctx, "offers", status, category, search)
    if ctx.json:
        emit(ctx, [record_dict(o) for o in items], lambda: None)
        return
    now = clock_from_env()()
    table([[o.id, o.status.value, o.title[:40], o.category, o.zone, handle(o.author),
            "" if o.quantity is None else str(o.quantity), ago(o.created_at, now)] for o in items],
          ["id", "status", "title", "category", "zone", "by", "qty", "posted"])


@offer.command("show")
@click.argument("offer_id")
@json_option
@pass_ctx
def offer_show(ctx: Ctx, offer_id: str) -> None:
    """Show one offer in full."""
    svc = ctx.service()
    o = svc.board.offer(offer_id)
    emit(ctx, record_dict(o), lambda: show_record(svc, o))


@offer.command("edit")
@click.argument("offer_id")
@click.option("--title")
@click.option("--details")
@click.option("--category")
@click.option("--zone")
@click.option("--tag", "tags", multiple=True)
@click.option("--quantity", type=int)
@click.option("--recurring/--once", default=None)
@click.option("--expires-days", type=int)
@json_option
@pass_ctx
def offer_edit(ctx: Ctx, offer_id: str, title: str | None, details: str | None, category: str | None,
               zone: str | None, tags: tuple[str, ...], quantity: int | None, recurring: bool | None,
               expires_days: int | None) -> None:
    """Change an offer you posted (only the options you give)."""
    svc = ctx.service()
    rid = svc.board.edit_offer(offer_id, title=title, details=details, category=category, zone=zone,
                               tags=tags or None, quantity=quantity, recurring=recurring,
                               expires_days=expires_days)
    o = svc.board.offer(rid)
    emit(ctx, record_dict(o), lambda: click.echo(f"Updated offer {o.id}"))


for _name, _verb in (("pause", "paused"), ("resume", "resumed"), ("close", "closed")):
    status_action(offer, "offer", _name, f"{_name}_offer", _verb)


commands = [offer]
