"""`circle`: every board action as a command, with `--json` for scripts.

Errors are turned into one sentence on stderr and a non-zero exit code here,
and only here (besides the TUI).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from circle.crdt.matching import needs_for, offers_for
from circle.crdt.model import Condition, Member, Need, Offer, Tool, ToolState, Urgency
from circle.crdt.transfer import export_csv, export_json, import_records, parse_import, record_dict
from circle.errors import CircleError, NotFound, UsageError
from circle.home import PASSPHRASE_ENV, Home, default_home
from circle.service import CircleService

F = TypeVar("F", bound=Callable[..., Any])


# --- context -------------------------------------------------------------------


class Ctx:
    def __init__(self, home: Path, circle: str | None, json_out: bool, passphrase_file: Path | None) -> None:
        self.home_path = home
        self.circle = circle
        self.json = json_out
        self.passphrase_file = passphrase_file
        self._home: Home | None = None
        self._service: CircleService | None = None

    def passphrase(self, confirm_new: bool = False) -> str | None:
        if self.passphrase_file is not None:
            try:
                return self.passphrase_file.read_text("utf-8").rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read passphrase file {self.passphrase_file}: {exc.strerror}") from None
        env = os.environ.get(PASSPHRASE_ENV)
        if env is not None:
            return env
        if sys.stdin.isatty():
            if confirm_new:
                first = getpass.getpass("Passphrase to encrypt this device's data (empty for none): ")
                if not first:
                    return None
                if getpass.getpass("Repeat passphrase: ") != first:
                    raise UsageError("the passphrases do not match")
                return first
            return getpass.getpass("Passphrase: ")
        return None

    def home(self) -> Home:
        if self._home is None:
            self._home = Home.open(self.home_path, self.passphrase())
        return self._home

    def service(self) -> CircleService:
        if self._service is None:
            self._service = CircleService.open(self.home(), self.circle)
            self._service.refresh()
        return self._service


pass_ctx = click.make_pass_decorator(Ctx)


def json_option(func: F) -> F:
    """`--json` on any command (also accepted before the command name)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Ctx).json = True  # type: ignore[union-attr]

    return click.option("--json", "json_flag", is_flag=True, expose_value=False, callback=callback,
                        help="Print machine-readable JSON.")(func)


def emit(ctx: Ctx, data: Any, human: Callable[[], None]) -> None:
    if ctx.json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human()


# --- formatting ------------------------------------------------------------------


def ago(ms: int, now: int | None = None) -> str:
    delta = ((now if now is not None else int(time.time() * 1000)) - ms) // 1000
    future = delta < 0
    delta = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            text = f"{delta // size}{unit}"
            break
    else:
        text = f"{delta}s"
    return f"in {text}" if future else f"{text} ago"


def table(rows: list[list[str]], header: list[str]) -> None:
    if not rows:
        click.echo("(nothing)")
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def handle_of(svc: CircleService, member_id: str) -> str:
    m = svc.board.view().members.get(member_id)  # type: ignore[call-overload]
    return m.handle if m else member_id


def show_record(svc: CircleService, rec: Need | Offer | Tool) -> None:
    data = record_dict(rec)
    for key, value in data.items():
        if key in ("author", "steward", "borrower") and isinstance(value, str):
            value = f"{handle_of(svc, value)} ({value})"
        elif key == "claims" and isinstance(value, dict):
            value = ", ".join(f"{handle_of(svc, k)} {ago(v)}" for k, v in value.items()) or "-"
        elif key.endswith("_at") and isinstance(value, int):
            value = f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(value / 1000))} ({ago(value)})"
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        click.echo(f"{key:>18}: {value}")


# --- root --------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help=f"Data directory (default: ${'{'}CIRCLE_HOME{'}'} or the platform's user data dir).")
@click.option("--circle", "circle_sel", default=None, help="Which circle (name or id prefix) when there are several.")
@click.option("--json", "json_out", is_flag=True, help="Print machine-readable JSON.")
@click.option("--passphrase-file", type=click.Path(path_type=Path), default=None,
              help=f"Read the passphrase from a file (or set {PASSPHRASE_ENV}).")
@click.version_option(package_name="circle")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, circle_sel: str | None, json_out: bool,
        passphrase_file: Path | None) -> None:
    """circle: a local-first, end-to-end encrypted mutual-aid board."""
    ctx.obj = Ctx(home if home is not None else default_home(), circle_sel, json_out, passphrase_file)
    if ctx.invoked_subcommand is None:
        try:
            from circle.tui.launch import launch
        except ModuleNotFoundError as exc:
            if exc.name != "circle.tui.launch":
                raise
            click.echo(ctx.get_help())
            return
        launch(ctx.obj)


@cli.command()
@click.option("--name", required=True, help="The circle's name (only members ever see it).")
@click.option("--handle", required=True, help="Your pseudonym in this circle.")
@click.option("--zone", default="", help="Your coarse area (never an address).")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest.")
@json_option
@pass_ctx
def init(ctx: Ctx, name: str, handle: str, zone: str, no_passphrase: bool) -> None:
    """Create this device's identity (if needed) and a new circle."""
    if Home.exists(ctx.home_path):
        home = ctx.home()
    else:
        passphrase = None if no_passphrase else ctx.passphrase(confirm_new=True)
        home = Home.create(ctx.home_path, passphrase)
        ctx._home = home
    svc = CircleService.create(home, name, handle, zone)
    data = {"circle_id": svc.config.circle_id, "name": name, "member_id": svc.me, "home": str(home.path),
            "encrypted_at_rest": home.encrypted}
    def human() -> None:
        click.echo(f"Created circle '{name}' ({svc.config.circle_id}); you are {handle} ({svc.me}).")
        if not home.encrypted:
            click.echo("Note: no passphrase set - this device's data is protected only by file permissions.")
    emit(ctx, data, human)


# --- needs ------------------------------------------------------------------------------

URGENCY = click.Choice([u.value for u in Urgency])


@cli.group()
def need() -> None:
    """Needs: what members ask for."""


def _need_rows(svc: CircleService, items: list[Need]) -> list[list[str]]:
    return [[n.id, n.status.value, n.urgency.value, n.title[:40], n.category, n.zone,
             ",".join(handle_of(svc, c) for c in n.claims) or "-", ago(n.created_at)] for n in items]


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
    svc = ctx.service()
    items = svc.board.needs(status, category, search)
    emit(ctx, [record_dict(n) for n in items],
         lambda: table(_need_rows(svc, items), ["id", "status", "urgency", "title", "category", "zone", "claimed by", "posted"]))


@need.command("show")
@click.argument("need_id")
@json_option
@pass_ctx
def need_show(ctx: Ctx, need_id: str) -> None:
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
    svc = ctx.service()
    rid = svc.board.edit_need(need_id, title=title, details=details, category=category,
                              tags=tags or None, urgency=Urgency(urgency) if urgency else None,
                              zone=zone, expires_days=expires_days)
    n = svc.board.need(rid)
    emit(ctx, record_dict(n), lambda: click.echo(f"Updated need {n.id}"))


def _status_action(group: click.Group, kind: str, name: str, method: str, verb: str) -> None:
    """`circle need claim ID`, `circle offer pause ID`, ...: one board method each."""

    @group.command(name, help=f"Mark a {kind} as {verb}.")
    @click.argument("record_id")
    @json_option
    @pass_ctx
    def command(ctx: Ctx, record_id: str) -> None:
        svc = ctx.service()
        rid = getattr(svc.board, method)(record_id)
        rec = getattr(svc.board, kind)(rid)
        emit(ctx, record_dict(rec),
             lambda: click.echo(f"{kind.capitalize()} {rec.id} {verb}; now {rec.status.value}."))


for _name, _verb in (("claim", "claimed by you"), ("unclaim", "no longer claimed by you"), ("met", "met"),
                     ("withdraw", "withdrawn"), ("reopen", "reopened")):
    _status_action(need, "need", _name, f"{_name}_need", _verb)


# --- offers -------------------------------------------------------------------------


@cli.group()
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
    svc = ctx.service()
    items = svc.board.offers(status, category, search)
    rows = [[o.id, o.status.value, o.title[:40], o.category, o.zone, handle_of(svc, o.author),
             "" if o.quantity is None else str(o.quantity), ago(o.created_at)] for o in items]
    emit(ctx, [record_dict(o) for o in items],
         lambda: table(rows, ["id", "status", "title", "category", "zone", "by", "qty", "posted"]))


@offer.command("show")
@click.argument("offer_id")
@json_option
@pass_ctx
def offer_show(ctx: Ctx, offer_id: str) -> None:
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
    svc = ctx.service()
    rid = svc.board.edit_offer(offer_id, title=title, details=details, category=category, zone=zone,
                               tags=tags or None, quantity=quantity, recurring=recurring,
                               expires_days=expires_days)
    o = svc.board.offer(rid)
    emit(ctx, record_dict(o), lambda: click.echo(f"Updated offer {o.id}"))


for _name, _verb in (("pause", "paused"), ("resume", "resumed"), ("close", "closed")):
    _status_action(offer, "offer", _name, f"{_name}_offer", _verb)


# --- tools ------------------------------------------------------------------------------

CONDITION = click.Choice([c.value for c in Condition])


@cli.group()
def tool() -> None:
    """The shared tool library: inventory, loans and holds."""


def _tool_row(svc: CircleService, t: Tool) -> list[str]:
    state = t.availability.value
    if t.current_loan is not None:
        state += f" ({handle_of(svc, t.current_loan.borrower)}, due {ago(t.current_loan.due_at)})"
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
    svc = ctx.service()
    items = svc.board.tools(available, search)
    emit(ctx, [record_dict(t) for t in items],
         lambda: table([_tool_row(svc, t) for t in items], ["id", "name", "category", "condition", "availability", "holds"]))


@tool.command("show")
@click.argument("tool_id")
@json_option
@pass_ctx
def tool_show(ctx: Ctx, tool_id: str) -> None:
    svc = ctx.service()
    t = svc.board.tool(tool_id)
    loans = svc.board.loans_of(t.id)
    holds = svc.board.holds_of(t.id)
    data = {**record_dict(t), "loans": [record_dict(x) for x in loans], "holds": [record_dict(h) for h in holds]}
    def human() -> None:
        show_record(svc, t)
        for x in loans[-5:]:
            click.echo(f"  loan {x.id}: {handle_of(svc, x.borrower)} {x.status.value}, out {ago(x.out_at)}, "
                       f"due {ago(x.due_at)}{' OVERDUE' if x.overdue else ''}")
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
    svc = ctx.service()
    rid = svc.board.set_condition(tool_id, Condition(condition), note)
    t = svc.board.tool(rid)
    emit(ctx, record_dict(t), lambda: click.echo(f"{t.name} is now {t.condition.value}"))


@tool.command("borrow")
@click.argument("tool_id")
@click.option("--days", type=int, default=None, help="Loan length (default: the tool's loan days).")
@json_option
@pass_ctx
def tool_borrow(ctx: Ctx, tool_id: str, days: int | None) -> None:
    svc = ctx.service()
    loan_id = svc.board.borrow(tool_id, days)
    loan = svc.board.view().loans[loan_id]
    t = svc.board.tool(loan.tool)
    emit(ctx, record_dict(loan), lambda: click.echo(f"You borrowed {t.name} (loan {loan.id}), due {ago(loan.due_at)}."))


@tool.command("return")
@click.argument("tool_id")
@click.option("--condition", type=CONDITION, default=None)
@click.option("--note", default=None)
@click.option("--loan", "loan_id", default=None, help="Close a specific loan (e.g. a conflict).")
@json_option
@pass_ctx
def tool_return(ctx: Ctx, tool_id: str, condition: str | None, note: str | None, loan_id: str | None) -> None:
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
    svc = ctx.service()
    lid = svc.board.renew(tool_id)
    loan = svc.board.view().loans[lid]
    emit(ctx, record_dict(loan), lambda: click.echo(f"Renewed; now due {ago(loan.due_at)}."))


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
    svc = ctx.service()
    hid = svc.board.unhold(tool_id)
    emit(ctx, record_dict(svc.board.view().holds[hid]), lambda: click.echo("Hold cancelled."))


# --- match, members, status ----------------------------------------------------------


@cli.command()
@click.argument("record_id", required=False)
@json_option
@pass_ctx
def match(ctx: Ctx, record_id: str | None) -> None:
    """Offers that fit a need, needs that fit an offer (all open needs without an id)."""
    svc = ctx.service()
    board = svc.board
    if record_id is None:
        needs = board.needs("active")
        results = [m for n in needs for m in offers_for(n, board.offers("open"), limit=3)]
    else:
        try:
            results = offers_for(board.need(record_id), board.offers("open"))
        except NotFound:
            results = needs_for(board.offer(record_id), board.needs("active"))
    data = [{"need": m.need.id, "need_title": m.need.title, "offer": m.offer.id, "offer_title": m.offer.title,
             "score": m.score, "reasons": list(m.reasons)} for m in results]
    rows = [[m.need.id, m.need.title[:30], m.offer.id, m.offer.title[:30], str(m.score), "; ".join(m.reasons)]
            for m in results]
    emit(ctx, data, lambda: table(rows, ["need", "title", "offer", "title", "score", "why"]))


@cli.command()
@json_option
@pass_ctx
def members(ctx: Ctx) -> None:
    """Members with fingerprints and who invited whom."""
    from circle.net.keys import fingerprint

    svc = ctx.service()
    items: list[Member] = svc.board.members()
    data = [{**record_dict(m), "fingerprint": fingerprint(m.sign_key), "active": m.active} for m in items]
    rows = [[m.id, m.handle + (" (you)" if m.id == svc.me else ""), m.zone, fingerprint(m.sign_key),
             handle_of(svc, m.invited_by) if m.invited_by else "founder",
             "active" if m.active else f"removed by {handle_of(svc, m.removed_by or '')}"] for m in items]
    emit(ctx, data, lambda: table(rows, ["id", "handle", "zone", "fingerprint", "invited by", "state"]))


@cli.command()
@json_option
@pass_ctx
def status(ctx: Ctx) -> None:
    """The circle at a glance: counts, conflicts, storage protection."""
    svc = ctx.service()
    data = svc.status()
    def human() -> None:
        c, me, n, st = data["circle"], data["me"], data["counts"], data["storage"]
        click.echo(f"Circle {c['name']} ({c['id']}), key generation {c['key_generation']}")
        click.echo(f"You: {me['handle']} ({me['id']}){'' if me['active'] else ' - NOT an active member'}")
        click.echo(f"{n['members']} members, {n['open_needs']} open needs, {n['open_offers']} open offers, "
                   f"{n['tools']} tools ({n['on_loan']} on loan, {n['overdue']} overdue)")
        for conflict in data["conflicts"]:
            click.echo(f"CONFLICT: {conflict['name']} ({conflict['tool']}) has {len(conflict['conflicting_loans']) + 1} "
                       f"open loans made concurrently; current is {conflict['current_loan']}")
        for bad in data["malformed"]:
            click.echo(f"Unreadable record {bad['collection']}/{bad['id']}: {bad['reason']}")
        click.echo(f"Storage: {st['protection']} ({st['path']})")
        for peer in data.get("peers", []):
            seen = peer.get("last_seen")
            when = ago(int(seen * 1000)) if isinstance(seen, int | float) else "never"
            who = peer.get("handle") or peer.get("member_id") or "?"
            state = "has all our changes" if peer.get("has_all_ours") else "may be missing some of our changes"
            click.echo(f"Peer {who} at {peer.get('address')} ({peer.get('path')}): last seen {when}, {state}"
                       + (f"; last error: {peer['error']}" if peer.get("error") else ""))
    emit(ctx, data, human)


# --- export / import / compact ------------------------------------------------------------


@cli.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout).")
@pass_ctx
def export_cmd(ctx: Ctx, fmt: str, out: Path | None) -> None:
    """Export every record (JSON is re-importable; CSV has a section per collection)."""
    svc = ctx.service()
    text = json.dumps(export_json(svc.board), indent=2, sort_keys=True) + "\n" if fmt == "json" else export_csv(svc.board)
    if out is None:
        click.echo(text, nl=False)
    else:
        from circle.crdt.store import atomic_write

        atomic_write(out, text.encode("utf-8"), mode=0o600)
        click.echo(f"Wrote {out}", err=True)


@cli.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@pass_ctx
def import_cmd(ctx: Ctx, file: Path) -> None:
    """Merge records from a JSON export (never overwrites existing records)."""
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {exc}") from None
    data = parse_import(text)
    svc = ctx.service()
    report = import_records(svc.board, data)
    def human() -> None:
        for name, counts in report.items():
            click.echo(f"{name}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    emit(ctx, report, human)


@cli.command()
@json_option
@pass_ctx
def compact(ctx: Ctx) -> None:
    """Rewrite the snapshot and empty the change log (atomic)."""
    svc = ctx.service()
    svc.compact()
    data = {"snapshot_bytes": svc.store.snapshot_size(), "log_bytes": svc.store.log_size()}
    emit(ctx, data, lambda: click.echo(f"Compacted: snapshot {data['snapshot_bytes']} bytes."))


def _register_optional() -> None:
    """Commands owned by other modules (sync, relays, invites, TUI)."""
    import importlib

    for module, attr in (("circle.cli_sync", "commands"), ("circle.cli_relay", "commands"),
                         ("circle.cli_relays", "commands"), ("circle.cli_invite", "commands"),
                         ("circle.cli_tui", "commands")):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for command in getattr(mod, attr, []):
            cli.add_command(command)


_register_optional()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="circle", standalone_mode=False)
    except CircleError as exc:
        click.echo(f"circle: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("circle: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
