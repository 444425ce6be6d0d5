"""`circle skill ...`: what members can do or teach; anyone can ask."""

from __future__ import annotations

import click

from circle.cli.common import Ctx, emit, handle_of, json_option, pass_ctx, table
from circle.crdt.gather_records import Skill
from circle.crdt.gatherings import gatherings
from circle.crdt.matching import skills_for
from circle.crdt.transfer import record_dict
from circle.errors import NotFound
from circle.node.service import CircleService


@click.group()
def skill() -> None:
    """Skills: repairs, cooking, sewing, computer help, languages..."""


def skill_dict(svc: CircleService, s: Skill) -> dict[str, object]:
    return {**record_dict(s), "member": handle_of(svc, s.author), "listed": s.listed}


def _rows(svc: CircleService, items: list[Skill]) -> list[list[str]]:
    return [[s.id, s.title[:40], s.category or "-", handle_of(svc, s.author), "can teach" if s.teach else ""]
            for s in items]


@skill.command("add")
@click.argument("title")
@click.option("--category", default="")
@click.option("--teach", is_flag=True, help="You can teach it, not only do it.")
@click.option("--details", default="")
@json_option
@pass_ctx
def skill_add(ctx: Ctx, title: str, category: str, teach: bool, details: str) -> None:
    """List a skill of yours."""
    svc = ctx.service()
    g = gatherings(svc.board)
    s = g.skill(g.add_skill(title, category, teach, details))
    emit(ctx, skill_dict(svc, s), lambda: click.echo(f"Listed skill {s.id}: {s.title}"))


@skill.command("list")
@click.option("--member", default=None, help="Only this member's skills (handle or id).")
@click.option("--search", default=None)
@json_option
@pass_ctx
def skill_list(ctx: Ctx, member: str | None, search: str | None) -> None:
    """Skills in the circle, by title (never ranked by person)."""
    svc = ctx.service()
    who = svc.board.member(member).id if member else None
    items = gatherings(svc.board).skills(who, search)
    emit(ctx, [skill_dict(svc, s) for s in items],
         lambda: table(_rows(svc, items), ["id", "skill", "category", "member", "teach"]))


@skill.command("edit")
@click.argument("skill_id")
@click.option("--title")
@click.option("--category")
@click.option("--teach/--no-teach", default=None)
@click.option("--details")
@json_option
@pass_ctx
def skill_edit(ctx: Ctx, skill_id: str, title: str | None, category: str | None, teach: bool | None,
               details: str | None) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    s = g.skill(g.edit_skill(skill_id, title=title, category=category, teach=teach, details=details))
    emit(ctx, skill_dict(svc, s), lambda: click.echo(f"Updated skill {s.id}"))


@skill.command("remove")
@click.argument("skill_id")
@json_option
@pass_ctx
def skill_remove(ctx: Ctx, skill_id: str) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    s = g.view().skills[g.remove_skill(skill_id)]
    emit(ctx, skill_dict(svc, s), lambda: click.echo(f"Removed skill {s.id}: {s.title}"))


def skill_matches(svc: CircleService, need_id: str | None) -> tuple[list[dict[str, object]], list[list[str]]]:
    """Skill suggestions for `circle match`: for one need, or every active need."""
    board = svc.board
    if need_id is None:
        needs = board.needs("active")
    else:
        try:
            needs = [board.need(need_id)]
        except NotFound:
            return [], []  # an offer id: skills answer needs only
    skills = gatherings(board).skills()
    found = [m for n in needs for m in skills_for(n, skills, limit=3 if need_id is None else 5)]
    data: list[dict[str, object]] = [
        {"need": m.need.id, "need_title": m.need.title, "offer": None, "skill": m.skill.id,
         "skill_title": m.skill.title, "member": m.skill.author, "member_handle": handle_of(svc, m.skill.author),
         "teach": m.skill.teach, "score": m.score, "reasons": list(m.reasons)} for m in found]
    rows = [[m.need.id, m.need.title[:30], "skill",
             f"{handle_of(svc, m.skill.author)}: {m.skill.title}"[:40] + (" (can teach)" if m.skill.teach else ""),
             str(m.score), "; ".join(m.reasons)] for m in found]
    return data, rows


@skill.command("match")
@click.argument("need_id")
@json_option
@pass_ctx
def skill_match(ctx: Ctx, need_id: str) -> None:
    """Members whose skills may fit a need, and why."""
    svc = ctx.service()
    need = svc.board.need(need_id)
    found = skills_for(need, gatherings(svc.board).skills())
    data = [{"skill": m.skill.id, "title": m.skill.title, "member": handle_of(svc, m.skill.author),
             "teach": m.skill.teach, "score": m.score, "reasons": list(m.reasons)} for m in found]
    rows = [[m.skill.id, f"{handle_of(svc, m.skill.author)}: {m.skill.title}"
             + (" (can teach)" if m.skill.teach else ""), "; ".join(m.reasons)] for m in found]
    emit(ctx, data, lambda: table(rows, ["skill", "who", "why"]))


commands = [skill]
