"""`circle alert ...`: raise, confirm, resolve, retract, list and watch alerts.

Who raised or confirmed is always the *verified* writer (crdt/defence.py);
while no trust layer is wired, the declared author is shown marked
"unverified".
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import click

from circle.cli.common import Ctx, ago, emit, json_option, pass_ctx, table
from circle.crdt.defence import (
    DEFAULT_ALERT_MS,
    RATE_WINDOW_MS,
    Alert,
    AlertKind,
    Checkin,
    CheckinState,
    Defence,
    Fact,
    parse_duration,
)
from circle.crdt.model import MemberId
from circle.node.service import CircleService


def defence(ctx: Ctx) -> tuple[CircleService, Defence]:
    svc = ctx.service()
    return svc, Defence(svc.board)


def who(d: Defence, member: MemberId | None, verified: bool) -> dict[str, Any]:
    return {"id": member, "handle": d.handle(member) if member else None, "verified": verified}


def who_text(d: Defence, member: MemberId | None, verified: bool) -> str:
    return d.handle(member) + ("" if verified or member is None else " (unverified)")


def fact_dict(d: Defence, f: Fact) -> dict[str, Any]:
    return {"id": f.id, "kind": f.kind.value, "at": f.at, "note": f.note, "by": who(d, f.writer, f.verified),
            "declared_author": f.declared, "ignored": f.ignored}


def alert_dict(d: Defence, a: Alert) -> dict[str, Any]:
    return {
        "id": a.id, "text": a.text, "kind": a.kind.value, "zone": a.zone, "state": a.state.value,
        "raised_at": a.raised_at, "expires_at": a.expires_at, "raised_by": who(d, a.raiser, a.verified),
        "declared_author": a.declared,
        "confirmed_by": [who(d, m, True) for m in a.confirmed_by],
        "resolved_by": who(d, a.resolved_by, True) if a.resolved_by else None,
        "flagged": a.flagged, "alerts_by_raiser_within_30_min": a.rate,
        "facts": [fact_dict(d, f) for f in a.facts],
    }


def rate_text(d: Defence, a: Alert) -> str:
    minutes = RATE_WINDOW_MS // 60_000
    return f"{d.handle(a.raiser)} raised {a.rate} alerts within {minutes} min"


def alert_line(d: Defence, a: Alert, now: int | None = None) -> str:
    stamp = time.strftime("%H:%M", time.localtime(a.raised_at / 1000))
    conf = f", confirmed by {', '.join(d.handle(m) for m in a.confirmed_by)}" if a.confirmed_by else ""
    zone = f" [zone {a.zone}]" if a.zone else ""
    flag = f"  FLAGGED: {rate_text(d, a)}" if a.flagged else ""
    return (f"{stamp} {a.kind.value.upper()} {a.state.value}{conf}: {a.text}{zone} "
            f"- raised by {who_text(d, a.raiser, a.verified)} ({a.id}){flag}")


def checkin_dict(d: Defence, c: Checkin) -> dict[str, Any]:
    return {
        "id": c.id, "title": c.title, "state": c.state.value, "owner": who(d, c.owner, c.verified),
        "buddies": [who(d, b, True) for b in c.buddies], "every_ms": c.every_ms, "until_at": c.until_at,
        "started_at": c.started_at, "last_ok_at": c.last_ok_at, "due_at": c.due_at, "ended_at": c.ended_at,
        "ended_by": who(d, c.ended_by, True) if c.ended_by else None,
        "message": d.missed_message(c) if c.state == CheckinState.MISSED else None,
        "facts": [fact_dict(d, f) for f in c.facts],
    }


@click.group()
def alert() -> None:
    """Alerts: raise one, a second member confirms it; they expire (default 2h)."""


@alert.command("raise")
@click.argument("text")
@click.option("--kind", type=click.Choice([k.value for k in AlertKind]), default="other", show_default=True)
@click.option("--zone", default="", help="A coarse area (never an address).")
@click.option("--expires", default="2h", show_default=True, help="How long it stays active (30m, 2h, 1d).")
@json_option
@pass_ctx
def alert_raise(ctx: Ctx, text: str, kind: str, zone: str, expires: str) -> None:
    """Raise an alert: every connected member sees it at once."""
    _svc, d = defence(ctx)
    rid = d.raise_alert(text, AlertKind(kind), zone, parse_duration(expires) if expires else DEFAULT_ALERT_MS)
    a = d.alert(rid)
    emit(ctx, alert_dict(d, a), lambda: click.echo(
        f"Raised alert {a.id}; it is unconfirmed until another member confirms it (circle alert confirm {a.id})."))


@alert.command("list")
@click.option("--active", is_flag=True, help="Only unconfirmed and confirmed alerts.")
@json_option
@pass_ctx
def alert_list(ctx: Ctx, active: bool) -> None:
    _svc, d = defence(ctx)
    items = d.alerts(active_only=active)

    def human() -> None:
        table([[a.id, a.state.value, a.kind.value, a.text[:40], a.zone, who_text(d, a.raiser, a.verified),
                str(len(a.confirmed_by)), ago(a.raised_at), "FLAGGED" if a.flagged else ""] for a in items],
              ["id", "state", "kind", "text", "zone", "raised by", "conf.", "raised", ""])
    emit(ctx, [alert_dict(d, a) for a in items], human)


@alert.command("show")
@click.argument("alert_id")
@json_option
@pass_ctx
def alert_show(ctx: Ctx, alert_id: str) -> None:
    _svc, d = defence(ctx)
    a = d.alert(alert_id)

    def human() -> None:
        click.echo(alert_line(d, a))
        click.echo(f"  expires {ago(a.expires_at)}")
        for f in a.facts:
            note = f": {f.note}" if f.note else ""
            skip = f"  (does not count: {f.ignored})" if f.ignored else ""
            click.echo(f"  {ago(f.at)} {f.kind.value} by {who_text(d, f.writer, f.verified)}{note}{skip}")
    emit(ctx, alert_dict(d, a), human)


def _fact_command(name: str, method: str, verb: str, doc: str) -> None:
    @alert.command(name, help=doc)
    @click.argument("alert_id")
    @click.option("--note", default="", help="A short note (what you see).")
    @json_option
    @pass_ctx
    def command(ctx: Ctx, alert_id: str, note: str) -> None:
        _svc, d = defence(ctx)
        getattr(d, method)(alert_id, note)
        a = d.alert(alert_id)
        emit(ctx, alert_dict(d, a), lambda: click.echo(f"Alert {a.id} {verb}; now {a.state.value}."))


_fact_command("confirm", "confirm", "confirmed", "Vouch for another member's alert (yours do not count).")
_fact_command("resolve", "resolve", "resolved", "Mark an alert as dealt with.")
_fact_command("retract", "retract", "retracted", "Withdraw your own alert (a false alarm).")


# --- watch -----------------------------------------------------------------------


def _signature(a: Alert) -> tuple[object, ...]:
    return (a.state, a.confirmed_by, a.resolved_by, a.flagged, a.text)


@alert.command("watch")
@click.option("--offline", is_flag=True,
              help="Do not sync; only follow this device's store (when `circle serve` or the app runs).")
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Address to accept peers on.")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to sync with directly.")
@click.option("--no-discovery", is_flag=True, help="Do not use mDNS; only --peer addresses.")
@click.option("--interface", "interfaces", multiple=True, metavar="IP", help="Run mDNS only on these addresses.")
@json_option
@pass_ctx
def alert_watch(ctx: Ctx, offline: bool, listen: str, peers: tuple[str, ...], no_discovery: bool,
                interfaces: tuple[str, ...]) -> None:
    """One line per new or changed alert (and missed check-in), until interrupted."""
    from circle.node.panic import LockWatch

    svc, d = defence(ctx)
    lock = LockWatch(ctx.home_path)

    def out(event: dict[str, Any], text: str) -> None:
        click.echo(json.dumps(event, sort_keys=True) if ctx.json else text)
        sys.stdout.flush()

    async def run() -> None:
        live = None
        if not offline:
            from circle.node.live import LiveSync, parse_listen
            live = LiveSync(svc, listen=parse_listen(listen), manual_peers=peers, discovery=not no_discovery,
                            interfaces=list(interfaces) or None)
        wake = asyncio.Event()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        unsubscribe = svc.subscribe(lambda _origin: wake.set())
        if live is not None:
            await live.start()
        out({"event": "watching", "port": live.bound[1] if live and live.bound else None},
            "Watching for alerts; Ctrl-C to stop.")
        seen: dict[str, tuple[object, ...]] = {}
        checkins: dict[str, CheckinState] = {}
        first = True
        try:
            while not stop.is_set():
                if lock.tripped():
                    out({"event": "locked"}, "Locked: this device's keys were forgotten; stopping.")
                    break
                if live is None:
                    svc.refresh()
                for a in reversed(d.alerts()):
                    sig_now = _signature(a)
                    if seen.get(a.id) != sig_now and (not first or a.active):
                        out({"event": "alert", **alert_dict(d, a)}, alert_line(d, a))
                    seen[a.id] = sig_now
                for c in d.checkins(include_ended=True):
                    before = checkins.get(c.id)
                    if before != c.state and (not first or c.state == CheckinState.MISSED):
                        if c.state == CheckinState.MISSED or before is not None:
                            text = d.missed_message(c) if c.state == CheckinState.MISSED else \
                                f"check-in {c.id} ({c.title}) of {d.handle(c.owner)}: {c.state.value}"
                            out({"event": "checkin", "buddy": svc.me in c.buddies, **checkin_dict(d, c)},
                                ("MISSED: " if c.state == CheckinState.MISSED else "") + text)
                    checkins[c.id] = c.state
                first = False
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=0.5)
                except TimeoutError:
                    pass
        finally:
            unsubscribe()
            if live is not None:
                await live.close()

    asyncio.run(run())


commands = [alert]
