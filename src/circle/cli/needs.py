"""`circle need ...`: what members ask for."""

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
from circle.crdt.matching import offers_for
from circle.crdt.model import Urgency
from circle.crdt.transfer import record_dict

# --- needs ------------------------------------------------------------------------------

URGENCY = click.Choice([u.value for u in Urgency])


@click.group()
def need() -> None:
    """Needs: what members ask for."""


@need.command("add")
@click.argument("title")
@click.option("--details", default="")
@click.option("--category", default="")
@click.option("--urgency", type=URGENCY, default="anytime")
@click.option("--zone", default="")
@click.option("--tag", "tags", multiple=True)
@click.option("--expires-days", type=int, default=14, show_default=True)
@json_option
@pass_ctx
def need_add(ctx: Ctx, title: str, details: str, category: str, urgency: str, zone: str,
             tags: tuple[str, ...], expires_days: int) -> None:
    """Post a need."""
    svc = ctx.service()
    rid = svc.board.add_need(title, details, category, tags, Urgency(urgency), zone, expires_days)
    n = svc.board.need(rid)
    emit(ctx, record_dict(n), lambda: click.echo(f"Added need {n.id}: {n.title}"))


@need.command("list")
@click.option("--status", type=click.Choice(["open", "claimed", "met", "withdrawn", "expired", "active", "all"]),
              default="active", show_default=True)
@click.option("--category", default=None)
@click.option("--search", default=None)
@json_option
@pass_ctx
def need_list(ctx: Ctx, status: str, category: str | None, search: str | None) -> None:
    """List needs (active = open or claimed)."""
    header = ["id", "status", "urgency", "title", "category", "zone", "claimed by", "posted"]
    items, handle = listed(ctx, "needs", status, category, search)
    if ctx.json:
        emit(ctx, [record_dict(n) for n in items], lambda: None)
        return
    now = clock_from_env()()
    table([[n.id, n.status.value, n.urgency.value, n.title[:40], n.category, n.zone,
            ",".join(handle(c) for c in n.claims) or "-", ago(n.created_at, now)] for n in items], header)


@need.command("show")
@click.argument("need_id")
@json_option
@pass_ctx
def need_show(ctx: Ctx, need_id: str) -> None:
    """Show one need in full (its id, or the start of it)."""
    svc = ctx.service()
    n = svc.board.need(need_id)
    def human() -> None:
        show_record(svc, n)
        matches = offers_for(n, svc.board.offers("open"), limit=3)
        if matches:
            click.echo("       may fit: " + "; ".join(f"{m.offer.id} {m.offer.title}" for m in matches))
    emit(ctx, record_dict(n), human)


@need.command("edit")
@click.argument("need_id")
@click.option("--title")
@click.option("--details")
@click.option("--category")
@click.option("--urgency", type=URGENCY)
@click.option("--zone")
@click.option("--tag", "tags", multiple=True, help="Replaces the tags (repeat for several).")
@click.option("--expires-days", type=int)
@json_option
@pass_ctx
def need_edit(ctx: Ctx, need_id: str, title: str | None, details: str | None, category: str | None,
              urgency: str | None, zone: str | None, tags: tuple[str, ...], expires_days: int | None) -> None:
    """Change a need you posted (only the options you give)."""
    svc = ctx.service()
    rid = svc.board.edit_need(need_id, title=title, details=details, category=category,
                              tags=tags or None, urgency=Urgency(urgency) if urgency else None,
                              zone=zone, expires_days=expires_days)
    n = svc.board.need(rid)
    emit(ctx, record_dict(n), lambda: click.echo(f"Updated need {n.id}"))


for _name, _verb in (("claim", "claimed by you"), ("unclaim", "no longer claimed by you"), ("met", "met"),
                     ("withdraw", "withdrawn"), ("reopen", "reopened")):
    status_action(need, "need", _name, f"{_name}_need", _verb)


commands = [need]
