"""`circle event ...`: gatherings, RSVPs, bring lists, shifts, iCalendar.

Times are typed in your zone (or with --tz / an explicit offset) and shown
in the reader's; a place is free text: never an address unless you choose."""

from __future__ import annotations

from pathlib import Path

import click

from circle.cli.common import Ctx, emit, handle_of, json_option, pass_ctx, table
from circle.crdt.gather_records import Event, EventKind, Rsvp, Shift
from circle.crdt.gatherings import Gatherings, gatherings
from circle.crdt.ics import calendar
from circle.crdt.store import atomic_write
from circle.crdt.times import (
    author_time,
    local_zone_name,
    parse_day,
    parse_duration,
    parse_when,
    show_time,
)
from circle.crdt.transfer import record_dict
from circle.errors import UsageError
from circle.node.service import CircleService

KIND = click.Choice([k.value for k in EventKind])


def shift_dict(svc: CircleService, s: Shift) -> dict[str, object]:
    return {**record_dict(s), "takers": list(s.takers), "over": list(s.over), "over_full": s.over_full,
            "open_slots": s.open_slots, "starts_local": show_time(s.starts_at),
            "taker_handles": [handle_of(svc, m) for m in s.takers]}


def event_dict(svc: CircleService, g: Gatherings, e: Event, full: bool = True) -> dict[str, object]:
    out: dict[str, object] = {**record_dict(e), "status": e.status(g.now()).value, "ends_at": e.ends_at,
                              "starts_local": show_time(e.starts_at)}
    if full:
        out["bring"] = [{**record_dict(b), "handle": handle_of(svc, b.member)} for b in g.bring_list(e.id)]
        out["shifts"] = [shift_dict(svc, s) for s in g.shifts_of(e.id)]
    return out


def _length(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}" if h and m else (f"{h}h" if h else f"{m}m")


@click.group()
def event() -> None:
    """Gatherings: potlucks, workshops, meetings, clean-ups, rotas."""


@event.command("add")
@click.argument("title")
@click.option("--at", "at", required=True, help="Start, e.g. 2026-12-12T18:00 (your zone unless an offset is given).")
@click.option("--duration", default="2h", show_default=True, help="e.g. 3h, 90m, 1h30m")
@click.option("--where", "place", default="", help="Free text, e.g. 'community room'. Never needs an address.")
@click.option("--zone", default="", help="Coarse area.")
@click.option("--kind", type=KIND, default="other", show_default=True)
@click.option("--details", default="")
@click.option("--tz", default=None, help="Your time zone (default: this device's), e.g. Europe/Berlin.")
@click.option("--repeat", type=click.Choice(["weekly"]), default=None)
@click.option("--until", default=None, help="Last date of a repeat, e.g. 2027-03-31.")
@json_option
@pass_ctx
def event_add(ctx: Ctx, title: str, at: str, duration: str, place: str, zone: str, kind: str, details: str,
              tz: str | None, repeat: str | None, until: str | None) -> None:
    """Plan a gathering (or a weekly series of them)."""
    if (repeat is None) != (until is None):
        raise UsageError("--repeat weekly and --until DATE go together")
    zone_name = tz or local_zone_name()
    svc = ctx.service()
    g = gatherings(svc.board)
    ids = g.add_event(title, parse_when(at, zone_name), parse_duration(duration), place, kind=EventKind(kind),
                      zone=zone, details=details, tz=zone_name,
                      repeat_until=parse_day(until) if until else None)
    items = sorted((g.event(i) for i in ids), key=lambda e: e.starts_at)
    data = [event_dict(svc, g, e, full=False) for e in items]
    emit(ctx, data[0] if len(data) == 1 else data, lambda: click.echo(
        f"Planned {items[0].title}: " + ", ".join(f"{e.id} {show_time(e.starts_at)}" for e in items)))


@event.command("list")
@click.option("--upcoming", "when", flag_value="upcoming", default=True, help="Coming and happening now (default).")
@click.option("--past", "when", flag_value="past")
@click.option("--all", "when", flag_value="all")
@click.option("--search", default=None)
@json_option
@pass_ctx
def event_list(ctx: Ctx, when: str, search: str | None) -> None:
    """Events in time order, in your time zone."""
    svc = ctx.service()
    g = gatherings(svc.board)
    items = g.events(when, search)
    now = g.now()
    emit(ctx, [event_dict(svc, g, e, full=False) for e in items], lambda: table(
        [[e.id, show_time(e.starts_at), _length(e.minutes), e.title[:36], e.kind.value, e.place[:20] or "-",
          str(len(e.answers(Rsvp.YES))), e.status(now).value] for e in items],
        ["id", "when", "length", "title", "kind", "where", "yes", "status"]))


@event.command("show")
@click.argument("event_id")
@json_option
@pass_ctx
def event_show(ctx: Ctx, event_id: str) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    e = g.event(event_id)

    def human() -> None:
        click.echo(f"{e.title}  ({e.id}, {e.kind.value}, {e.status(g.now()).value})")
        theirs = author_time(e.starts_at, e.tz)
        click.echo(f"  when: {show_time(e.starts_at)} for {_length(e.minutes)}"
                   + (f"  ({theirs} for {handle_of(svc, e.author)})" if theirs else ""))
        click.echo(f"  where: {e.place or '-'}" + (f" (zone {e.zone})" if e.zone else ""))
        click.echo(f"  planned by: {handle_of(svc, e.author)}")
        if e.details:
            click.echo(f"  {e.details}")
        for answer in Rsvp:
            who = [handle_of(svc, m) for m in e.answers(answer)]
            click.echo(f"  {answer.value:>5}: {', '.join(who) or '-'}")
        bring = g.bring_list(e.id)
        click.echo("  bring list: " + ("; ".join(f"{handle_of(svc, b.member)}: {b.item} ({b.id})" for b in bring)
                                       or "nothing yet"))
        for s in g.shifts_of(e.id):
            takers = ", ".join(handle_of(svc, m) + (" (over)" if m in s.over else "") for m in s.takers)
            flag = "  OVER-FULL: someone please drop" if s.over_full else ""
            click.echo(f"  shift {s.id} {s.title}: {show_time(s.starts_at)} {_length(s.minutes)}, "
                       f"{len(s.takes)}/{s.slots} [{takers or 'nobody yet'}]{flag}")
    emit(ctx, event_dict(svc, g, e), human)


@event.command("edit")
@click.argument("event_id")
@click.option("--title")
@click.option("--at", "at")
@click.option("--duration")
@click.option("--where", "place")
@click.option("--zone")
@click.option("--kind", type=KIND)
@click.option("--details")
@click.option("--tz", default=None)
@json_option
@pass_ctx
def event_edit(ctx: Ctx, event_id: str, title: str | None, at: str | None, duration: str | None,
               place: str | None, zone: str | None, kind: str | None, details: str | None, tz: str | None) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    zone_name = tz or local_zone_name()
    rid = g.edit_event(event_id, title=title, starts_at=parse_when(at, zone_name) if at else None,
                       minutes=parse_duration(duration) if duration else None, place=place, zone=zone,
                       kind=EventKind(kind) if kind else None, details=details,
                       tz=zone_name if (at or tz) else None)
    e = g.event(rid)
    emit(ctx, event_dict(svc, g, e), lambda: click.echo(f"Updated event {e.id}"))


@event.command("cancel")
@click.argument("event_id")
@click.option("--undo", is_flag=True, help="It is on again.")
@json_option
@pass_ctx
def event_cancel(ctx: Ctx, event_id: str, undo: bool) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    e = g.event(g.cancel_event(event_id, cancelled=not undo))
    emit(ctx, event_dict(svc, g, e), lambda: click.echo(f"Event {e.id} is {e.status(g.now()).value}."))


@event.command("rsvp")
@click.argument("event_id")
@click.argument("answer", type=click.Choice([r.value for r in Rsvp]))
@json_option
@pass_ctx
def event_rsvp(ctx: Ctx, event_id: str, answer: str) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    e = g.event(g.rsvp(event_id, answer))
    emit(ctx, event_dict(svc, g, e), lambda: click.echo(f"You answered {answer} for {e.title}."))


@event.command("bring")
@click.argument("event_id")
@click.argument("item", required=False)
@click.option("--remove", "remove_id", default=None, help="Take your entry with this id off the list.")
@json_option
@pass_ctx
def event_bring(ctx: Ctx, event_id: str, item: str | None, remove_id: str | None) -> None:
    """Say what you will bring (or --remove ENTRY)."""
    svc = ctx.service()
    g = gatherings(svc.board)
    e = g.event(event_id)
    if remove_id:
        g.remove_bring(remove_id)
    elif item:
        g.add_bring(e.id, item)
    else:
        raise UsageError("say what you will bring, e.g. circle event bring ID \"lentil soup\"")
    emit(ctx, event_dict(svc, g, e), lambda: click.echo(
        "Bring list: " + ("; ".join(f"{handle_of(svc, b.member)}: {b.item}" for b in g.bring_list(e.id))
                          or "nothing yet")))


@event.group("shift")
def shift() -> None:
    """Shifts of an event: slots members take (a rota)."""


@shift.command("add")
@click.argument("event_id")
@click.argument("title")
@click.option("--at", "at", required=True)
@click.option("--duration", default="1h", show_default=True)
@click.option("--slots", type=int, default=1, show_default=True)
@click.option("--tz", default=None)
@json_option
@pass_ctx
def shift_add(ctx: Ctx, event_id: str, title: str, at: str, duration: str, slots: int, tz: str | None) -> None:
    svc = ctx.service()
    g = gatherings(svc.board)
    s = g.shift(g.add_shift(event_id, title, parse_when(at, tz or local_zone_name()), parse_duration(duration), slots))
    emit(ctx, shift_dict(svc, s), lambda: click.echo(f"Added shift {s.id}: {s.title}, {s.slots} slots"))


def _shift_action(name: str, method: str, verb: str) -> None:
    @shift.command(name)
    @click.argument("shift_id")
    @json_option
    @pass_ctx
    def command(ctx: Ctx, shift_id: str) -> None:
        svc = ctx.service()
        g = gatherings(svc.board)
        s = g.shift(getattr(g, method)(shift_id))
        emit(ctx, shift_dict(svc, s), lambda: click.echo(
            f"You {verb} {s.title}: {len(s.takes)}/{s.slots}" + (" (OVER-FULL)" if s.over_full else "")))


_shift_action("take", "take_shift", "took")
_shift_action("drop", "drop_shift", "dropped")


@event.command("ics")
@click.argument("event_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Every event (cancelled ones marked so).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="File to write ('-' for stdout).")
@json_option
@pass_ctx
def event_ics(ctx: Ctx, event_id: str | None, everything: bool, out: Path) -> None:
    """Write an iCalendar file (RFC 5545) for one event or all of them."""
    if bool(event_id) == everything:
        raise UsageError("give one event id or --all")
    svc = ctx.service()
    g = gatherings(svc.board)
    items = g.events("all") if everything else [g.event(event_id or "")]
    handles = {m.id: m.handle for m in svc.board.members()}
    text = calendar(svc.config.circle_id, [(e, g.shifts_of(e.id), g.bring_list(e.id)) for e in items],
                    handles, g.now())
    if str(out) == "-":
        click.echo(text, nl=False)
        return
    atomic_write(out, text.encode("utf-8"), mode=0o600)
    emit(ctx, {"path": str(out), "events": len(items)},
         lambda: click.echo(f"Wrote {len(items)} event{'s' if len(items) != 1 else ''} to {out}"))


commands = [event]
