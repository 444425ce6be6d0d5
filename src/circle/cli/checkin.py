"""`circle checkin ...`: buddy check-ins (ok / due soon / missed are derived, see crdt/defence.py)."""

from __future__ import annotations

import datetime as dt

import click

from circle.cli.alerts import checkin_dict, defence, who_text
from circle.cli.common import Ctx, ago, emit, json_option, pass_ctx, table
from circle.crdt.defence import CheckinState, parse_duration
from circle.errors import UsageError


def parse_until(text: str, now_ms: int) -> int:
    """HH:MM today (tomorrow if already past) in local time -> epoch ms."""
    try:
        clock = dt.datetime.strptime(text.strip(), "%H:%M").time()
    except ValueError:
        raise UsageError(f"cannot read time '{text}' (use HH:MM)") from None
    now = dt.datetime.fromtimestamp(now_ms / 1000)
    when = dt.datetime.combine(now.date(), clock)
    if when <= now:
        when += dt.timedelta(days=1)
    return int(when.timestamp() * 1000)


@click.group()
def checkin() -> None:
    """Buddy check-ins: say you are ok in time, or your buddies are told."""


@checkin.command("start")
@click.argument("title")
@click.option("--buddy", "buddies", multiple=True, required=True, help="A buddy's handle or member id (repeat).")
@click.option("--every", default=None, help="Check in at least this often (30m, 1h).")
@click.option("--until", "until", default=None, help="Check in by this time (HH:MM).")
@json_option
@pass_ctx
def checkin_start(ctx: Ctx, title: str, buddies: tuple[str, ...], every: str | None, until: str | None) -> None:
    svc, d = defence(ctx)
    if (every is None) == (until is None):
        raise UsageError("give exactly one of --every and --until")
    ids = [svc.board.member(b).id for b in buddies]
    rid = d.start_checkin(title, ids, every_ms=parse_duration(every) if every else None,
                          until_at=parse_until(until, svc.board.clock()) if until else None)
    c = d.checkin(rid)
    emit(ctx, checkin_dict(d, c), lambda: click.echo(
        f"Started check-in {c.id}; due {ago(c.due_at or 0)}. Say `circle checkin ok {c.id}` to reset it."))


@checkin.command("ok")
@click.argument("checkin_id")
@json_option
@pass_ctx
def checkin_ok(ctx: Ctx, checkin_id: str) -> None:
    """I'm safe: resets the timer."""
    _svc, d = defence(ctx)
    d.checkin_ok(checkin_id)
    c = d.checkin(checkin_id)
    due = f"next due {ago(c.due_at)}" if c.due_at is not None else "no further deadline"
    emit(ctx, checkin_dict(d, c), lambda: click.echo(f"Check-in {c.id}: ok, {due}."))


@checkin.command("end")
@click.argument("checkin_id")
@json_option
@pass_ctx
def checkin_end(ctx: Ctx, checkin_id: str) -> None:
    """Done, everyone home."""
    _svc, d = defence(ctx)
    d.checkin_end(checkin_id)
    c = d.checkin(checkin_id)
    emit(ctx, checkin_dict(d, c), lambda: click.echo(f"Check-in {c.id} ended."))


@checkin.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Include ended check-ins.")
@json_option
@pass_ctx
def checkin_list(ctx: Ctx, include_ended: bool) -> None:
    _svc, d = defence(ctx)
    items = d.checkins(include_ended=include_ended)

    def human() -> None:
        table([[c.id, c.state.value.upper() if c.state == CheckinState.MISSED else c.state.value, c.title[:30],
                who_text(d, c.owner, c.verified), ", ".join(d.handle(b) for b in c.buddies),
                ago(c.due_at) if c.due_at else "-", ago(c.last_ok_at) if c.last_ok_at else "-"] for c in items],
              ["id", "state", "title", "who", "buddies", "due", "last ok"])
        for c in items:
            if c.state == CheckinState.MISSED:
                click.echo(d.missed_message(c))
    emit(ctx, [checkin_dict(d, c) for c in items], human)


commands = [checkin]
