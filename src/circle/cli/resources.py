"""`circle resource ...`: the short pinned list every member can reach offline."""

from __future__ import annotations

from typing import Any

import click

from circle.cli.alerts import defence, who
from circle.cli.common import Ctx, emit, json_option, pass_ctx
from circle.crdt.defence import Defence, Resource, ResourceKind

KINDS = click.Choice([k.value for k in ResourceKind])


def resource_dict(d: Defence, r: Resource) -> dict[str, Any]:
    return {"id": r.id, "title": r.title, "details": r.details, "kind": r.kind.value,
            "added_by": who(d, r.created_by, r.verified),
            "created_at": r.created_at, "updated_at": r.updated_at}


def resources_text(d: Defence) -> str:
    """The pinned list as plain text (the app's help, the meeting report)."""
    items = d.resources()
    if not items:
        return "No pinned resources yet (circle resource add)."
    return "\n".join(f"[{r.kind.value}] {r.title}" + (f" - {r.details}" if r.details else "") for r in items)


@click.group()
def resource() -> None:
    """Pinned resources: legal hotline, medics, know-your-rights."""


@resource.command("add")
@click.argument("title")
@click.option("--details", default="")
@click.option("--kind", type=KINDS, default="other", show_default=True)
@json_option
@pass_ctx
def resource_add(ctx: Ctx, title: str, details: str, kind: str) -> None:
    _svc, d = defence(ctx)
    r = d.resource(d.add_resource(title, details, ResourceKind(kind)))
    emit(ctx, resource_dict(d, r), lambda: click.echo(f"Pinned resource {r.id}: {r.title}"))


@resource.command("list")
@json_option
@pass_ctx
def resource_list(ctx: Ctx) -> None:
    _svc, d = defence(ctx)
    emit(ctx, [resource_dict(d, r) for r in d.resources()], lambda: click.echo(resources_text(d)))


@resource.command("edit")
@click.argument("resource_id")
@click.option("--title")
@click.option("--details")
@click.option("--kind", type=KINDS)
@json_option
@pass_ctx
def resource_edit(ctx: Ctx, resource_id: str, title: str | None, details: str | None, kind: str | None) -> None:
    _svc, d = defence(ctx)
    rid = d.edit_resource(resource_id, title=title, details=details, kind=ResourceKind(kind) if kind else None)
    r = d.resource(rid)
    emit(ctx, resource_dict(d, r), lambda: click.echo(f"Updated resource {r.id}"))


@resource.command("remove")
@click.argument("resource_id")
@json_option
@pass_ctx
def resource_remove(ctx: Ctx, resource_id: str) -> None:
    _svc, d = defence(ctx)
    rid = d.remove_resource(resource_id)
    emit(ctx, {"id": rid, "removed": True}, lambda: click.echo(f"Removed resource {rid}"))


commands = [resource]
