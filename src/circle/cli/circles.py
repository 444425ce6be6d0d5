"""`circle circles`, `use`, `leave`, `profile`, `activity`, `search`, `report`:
the daily-use commands a group asked for first (issue 11)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx, table
from circle.errors import UsageError

# --- several circles ----------------------------------------------------------------


@click.command("circles")
@json_option
@pass_ctx
def circles_cmd(ctx: Ctx) -> None:
    """List the circles on this device (the default is marked)."""
    from circle.node.circles import circles

    entries = circles(ctx.home())
    data = [{"id": c.id, "name": c.name, "default": c.default} for c in entries]
    emit(ctx, data, lambda: table([[c.name, c.id, "default" if c.default else ""] for c in entries],
                                  ["name", "id", ""]))


@click.command("use")
@click.argument("circle")
@json_option
@pass_ctx
def use_cmd(ctx: Ctx, circle: str) -> None:
    """Make CIRCLE (a name, name prefix or id prefix) the default on this device."""
    from circle.node.circles import circles, pick, remember

    home = ctx.home()
    cid = pick(home, circle)
    remember(home, cid)
    name = next(c.name for c in circles(home) if c.id == cid)
    emit(ctx, {"id": cid, "name": name, "default": True},
         lambda: click.echo(f"'{name}' is now the default circle on this device."))


@click.command("forget")
@click.argument("circle")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def forget_cmd(ctx: Ctx, circle: str, yes: bool) -> None:
    """Delete this device's copy of a circle (its records and keys).

    It does not take you out of the circle: `circle leave` first signs your
    own removal, so the others rotate the key."""
    from circle.node.circles import circles, forget, pick

    home = ctx.home()
    cid = pick(home, circle)
    name = next(c.name for c in circles(home) if c.id == cid)
    if not yes:
        if not click.get_text_stream("stdin").isatty():
            raise UsageError("forgetting deletes this device's copy of the circle; add --yes to confirm")
        click.confirm(f"Delete this device's copy of '{name}'? Other members keep theirs", abort=True)
    forget(home, cid)
    def human() -> None:
        click.echo(f"Deleted this device's copy of '{name}'.")
        click.echo("If you did not `circle leave` first, the others still list you until one of them removes you.")
    emit(ctx, {"id": cid, "name": name, "forgotten": True}, human)


# --- profile ---------------------------------------------------------------------------


@click.command("profile")
@click.option("--handle", default=None, help="Your new handle (pseudonym).")
@click.option("--zone", default=None, help="Your new coarse area (never an address).")
@json_option
@pass_ctx
def profile_cmd(ctx: Ctx, handle: str | None, zone: str | None) -> None:
    """Show or edit your handle and zone in this circle."""
    from circle.crdt.stewardship import check_profile
    from circle.net.keys import fingerprint
    from circle.node.membership import set_profile

    svc = ctx.service()
    m = svc.board.view().members[svc.me]
    if handle is not None or zone is not None:
        set_profile(svc, *check_profile(m, handle, zone))
        m = svc.board.view().members[svc.me]
    inviter = svc.board.view().members.get(m.invited_by) if m.invited_by else None
    data = {"id": m.id, "handle": m.handle, "zone": m.zone, "safety_number": fingerprint(m.sign_key),
            "invited_by": inviter.handle if inviter else None}
    def human() -> None:
        click.echo(f"You are {m.handle}" + (f" in {m.zone}" if m.zone else "") + f" ({m.id}).")
        click.echo(f"Your safety number: {data['safety_number']}")
        click.echo("Invited by " + (inviter.handle if inviter else "nobody (you founded the circle)") + ".")
    emit(ctx, data, human)


# --- activity ----------------------------------------------------------------------------

_SPAN = re.compile(r"^(\d+)\s*([smhdw])$")


def _since(text: str, now_ms: int) -> int:
    m = _SPAN.match(text.strip().lower())
    if not m:
        raise UsageError("--since takes a span like 30m, 12h, 2d or 1w")
    n, unit = int(m.group(1)), m.group(2)
    return now_ms - n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit] * 1000


@click.command("activity")
@click.option("--since", "since_text", default=None, help="A span like 12h or 2d (default: since you last looked).")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@pass_ctx
def activity_cmd(ctx: Ctx, since_text: str | None, limit: int) -> None:
    """What changed since you last looked (or within --since)."""
    from circle.crdt.activity import recent
    from circle.node.circles import last_looked, mark_looked

    svc = ctx.service()
    now = svc.clock()
    cid = svc.config.circle_id
    since = _since(since_text, now) if since_text else last_looked(svc.home, cid)
    if since is None:
        since = now - 7 * 86_400_000
    events = recent(svc.board.view(), svc.me, since, limit)
    if since_text is None:
        mark_looked(svc.home, cid, now)
    data = {"since": _iso(since), "events": [
        {"at": _iso(e.at), "kind": e.kind, "text": e.text, "collection": e.collection, "id": e.record}
        for e in events]}
    def human() -> None:
        click.echo(f"Since {time.strftime('%a %d %b %H:%M', time.localtime(since / 1000))}:")
        if not events:
            click.echo("  nothing new.")
        for e in events:
            click.echo(f"  {time.strftime('%a %d %b %H:%M', time.localtime(e.at / 1000))}  {e.text}")
    emit(ctx, data, human)


def _iso(ms: int) -> str:
    from circle.crdt.csvio import iso

    return iso(ms)


# --- search --------------------------------------------------------------------------------


@click.command("search")
@click.argument("words", nargs=-1, required=True)
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@pass_ctx
def search_cmd(ctx: Ctx, words: tuple[str, ...], limit: int) -> None:
    """Search needs, offers, tools and members at once."""
    from circle.crdt.search import SearchIndex

    svc = ctx.service()
    hits, counts = SearchIndex.build(svc.board.view()).search(" ".join(words), limit)
    data = {"counts": counts, "hits": [
        {"collection": h.collection, "id": h.id, "title": h.title, "summary": h.summary, "live": h.live}
        for h in hits]}
    emit(ctx, data, lambda: table([[h.collection[:-1], h.id, h.title[:40], h.summary] for h in hits],
                                  ["in", "id", "title", "what"]))


# --- report ----------------------------------------------------------------------------------


@click.command("report")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout).")
@click.option("--new-days", type=int, default=30, show_default=True, help="Members who joined within this many days.")
@json_option
@pass_ctx
def report_cmd(ctx: Ctx, fmt: str, out: Path | None, new_days: int) -> None:
    """A one-page meeting summary: open needs, offers, tools out and overdue, new members,
    upcoming gatherings and open shifts, pinned resources."""
    from circle.crdt.report import build_for, html, markdown

    svc = ctx.service()
    rep = build_for(svc.board, svc.clock(), new_days)
    text = html(rep) if fmt == "html" else markdown(rep)
    if out is None:
        if ctx.json:
            emit(ctx, {"format": fmt, "text": text, "summary": rep.summary}, lambda: None)
        else:
            click.echo(text, nl=False)
        return
    from circle.crdt.store import atomic_write

    atomic_write(out, text.encode("utf-8"), mode=0o600)
    emit(ctx, {"format": fmt, "path": str(out), "summary": rep.summary},
         lambda: click.echo(f"Wrote {out}", err=True))


commands = [circles_cmd, use_cmd, forget_cmd, profile_cmd, activity_cmd, search_cmd, report_cmd]
