"""`circle invite`, `circle join` and `circle remove`."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from circle.cli.common import Ctx, check_profile_text, emit, json_option, pass_ctx
from circle.errors import InviteError, UsageError
from circle.net.discovery import local_addresses
from circle.net.invite import InviteCode
from circle.node import membership
from circle.node.home import Home


def qr_text(code: str) -> str:
    """The code as a QR code drawn with Unicode half blocks."""
    import io

    import segno

    out = io.StringIO()
    segno.make(code, error="l").terminal(out=out, compact=True)
    return out.getvalue()


@click.command()
@click.option("--expires", "expires_min", type=float, default=30, show_default=True, help="Minutes until the code expires.")
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Where to wait for the joiner.")
@click.option("--address", "addresses", multiple=True, metavar="HOST:PORT",
              help="Address(es) to put in the code (default: this machine's LAN addresses).")
@click.option("--relay", "relays", multiple=True, metavar="URL", help="Relay(s) to list in the code.")
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code.")
@click.option("--short", "short", is_flag=True,
              help="Also show a 12-digit code to read aloud, for someone on the same network.")
@click.option("--interface", "interfaces", multiple=True, metavar="IP",
              help="With --short: announce the short code on these interfaces only (default: all).")
@json_option
@pass_ctx
def invite(ctx: Ctx, expires_min: float, listen: str, addresses: tuple[str, ...], relays: tuple[str, ...],
           no_qr: bool, short: bool, interfaces: tuple[str, ...]) -> None:
    """Show a one-time invite code (and QR code) and wait for the new member."""
    from circle.net.keys import fingerprint
    from circle.net.shortcode import MAX_ATTEMPTS
    from circle.node.invites import InviteHost, JoinedEvent, advertise_short
    from circle.node.live import parse_listen

    svc = ctx.service()
    mine = fingerprint(svc.board.view().members[svc.me].sign_key)

    async def run() -> JoinedEvent | None:  # noqa: F821
        joined: asyncio.Future[JoinedEvent] = asyncio.get_running_loop().create_future()
        host = InviteHost(svc, on_joined=lambda e: joined.done() or joined.set_result(e))
        bound = await host.start(*parse_listen(listen))
        addrs = tuple(addresses) or tuple(local_addresses(bound[1]) if bound[0] == "0.0.0.0" else [f"{bound[0]}:{bound[1]}"])
        relay_urls = tuple(relays) or tuple(r.url for r in _relays(svc))
        short_code = None
        if short:
            code, short_code = host.create_short(expires_min, addrs, relay_urls)
        else:
            code = host.create(expires_min, addrs, relay_urls)
        text = code.encode()
        announced, mdns_note = None, ""
        if short_code is not None:
            if _is_loopback(bound[0]):
                mdns_note = "listening on this machine only: not announced on the network"
            else:
                try:
                    announced = await advertise_short(
                        short_code, bound[1], list(interfaces) or ([bound[0]] if bound[0] != "0.0.0.0" else None))
                except (OSError, RuntimeError, ValueError) as exc:
                    mdns_note = f"could not announce it on the network ({exc})"
        if ctx.json:
            event: dict[str, object] = {"event": "invite", "code": text, "safety_number": mine,
                                        "expires_at": code.expires_at, "addresses": list(addrs)}
            if short_code is not None:
                event.update(short_code=short_code.text, short_attempts=MAX_ATTEMPTS, announced=announced is not None)
            click.echo(json.dumps(event))
        elif short_code is not None:
            click.echo(f"Invite for {svc.config.name} (one use, expires in {expires_min:g} min).\n")
            click.echo(f"  Short code (same network):  {short_code.text}\n")
            click.echo(f"They run:  circle join {short_code.text} --handle THEIR-NAME")
            if mdns_note:
                click.echo(f"(The short code is {mdns_note}; they add --peer {addrs[0]})")
            click.echo(f"\nLong code (works anywhere, also through relays):\n  {text}\n")
            click.echo(f"Your safety number: {mine}")
        else:
            click.echo(f"Invite code for {svc.config.name} (one use, expires in {expires_min:g} min):\n\n  {text}\n")
            if not no_qr:
                click.echo(qr_text(text))
            click.echo(f"Your safety number: {mine}")
            click.echo(f"They run:  circle join {text} --handle THEIR-NAME")
        sys.stdout.flush()
        used_up_told = False
        try:
            while not joined.done():
                left = code.expires_at - time.time()
                if left <= 0:
                    return None
                if short_code is not None and not used_up_told and host.short_attempts_left(short_code.nameplate) == 0:
                    used_up_told = True
                    if announced is not None:  # nothing left to find
                        await announced.close()
                        announced = None
                    if ctx.json:
                        click.echo(json.dumps({"event": "short_code_used_up"}))
                    else:
                        click.echo(f"\nThe short code was tried {MAX_ATTEMPTS} times and no longer works. "
                                   "The long code still does; or stop and make a new invite.", err=True)
                    sys.stdout.flush()
                if not ctx.json and sys.stderr.isatty():
                    click.echo(f"\rWaiting for the new member... {int(left) // 60:02d}:{int(left) % 60:02d} left ",
                               err=True, nl=False)
                await asyncio.wait({joined}, timeout=min(1.0, left))
            return joined.result()
        finally:
            if announced is not None:
                await announced.close()
            await host.close()

    result = asyncio.run(run())
    if result is None:
        if ctx.json:
            click.echo(json.dumps({"event": "expired"}))
        else:
            click.echo("\nThe invite expired unused.")
        sys.exit(7)
    joined_member = svc.board.view().members.get(result.member_id)  # type: ignore[call-overload]
    theirs = fingerprint(joined_member.sign_key) if joined_member is not None else "?"
    if ctx.json:  # one JSON object per line, so scripts can follow along
        click.echo(json.dumps({"event": "joined", "member": result.member_id, "handle": result.handle,
                               "safety_number": theirs}))
        return
    click.echo(f"\n{result.handle} joined. Their safety number: {theirs}")
    click.echo(f"Read yours ({mine}) to {result.handle} and listen to theirs.")
    _ask_match(result.handle, f"remove them with `circle remove {result.handle}` and invite again in person")


def _ask_match(who: str, if_not: str) -> None:
    """The explicit "do they match?" step, on a terminal."""
    if not sys.stdin.isatty():
        click.echo(f"Compare both safety numbers with {who} before trusting the connection.")
        return
    if click.confirm("Do both numbers match what the other screen shows?", default=False):
        click.echo("Matched: you are talking to the right device.")
    else:
        click.echo(f"They do not match: someone else may have used the code; {if_not}.", err=True)
        sys.exit(8)


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _relays(svc):  # type: ignore[no-untyped-def]
    getter = getattr(svc.board, "relays", None)
    return list(getter()) if getter is not None else []


@click.command("join")
@click.argument("code", nargs=-1, required=True)
@click.option("--handle", required=True, help="Your pseudonym in this circle.")
@click.option("--zone", default="", help="Your coarse area (never an address).")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest (new device only).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--peer", default=None, metavar="HOST:PORT",
              help="Short code only: the inviter's address, where the network has no multicast.")
@click.option("--interface", "interfaces", multiple=True, metavar="IP",
              help="Short code only: look for the inviter on these interfaces (default: all).")
@json_option
@pass_ctx
def join_command(ctx: Ctx, code: tuple[str, ...], handle: str, zone: str, no_passphrase: bool, timeout: float,
                 peer: str | None, interfaces: tuple[str, ...]) -> None:
    """Join a circle with an invite code from a member: the long code, or the
    12-digit short code (as one word or in groups: 4821 0937 5512)."""
    from circle.net.shortcode import ShortCode
    from circle.node.invites import INVITE_CLOCK_SKEW_S, join

    text = " ".join(code)
    short = ShortCode.parse(text) if ShortCode.looks_short(text) else None  # mistypes fail here, offline
    if short is None and (peer or interfaces):
        raise UsageError("--peer and --interface are for short codes; a long code names its addresses itself")
    parsed = InviteCode.parse(text) if short is None else None
    # The inviter judges expiry on its own clock; this laptop's clock may be
    # hours off, so it gives up on its own only beyond the stated skew.
    if parsed is not None and parsed.expires_at + INVITE_CLOCK_SKEW_S <= time.time():
        raise InviteError("this invite has expired; ask for a new one")
    if not handle.strip():
        raise UsageError("a handle is required")
    if len(handle.strip()) > 40:
        raise UsageError("a handle has at most 40 characters")
    if len(zone.strip()) > 60:
        raise UsageError("a zone has at most 60 characters")
    handle, zone = handle.strip(), zone.strip()
    check_profile_text(handle, zone)
    if short is not None:  # before any prompt: a wrong short code costs nothing on this device
        parsed = asyncio.run(_redeem(short, peer, list(interfaces), timeout))
    assert parsed is not None
    if Home.exists(ctx.home_path):
        home = ctx.home()
    else:
        passphrase = None if no_passphrase else ctx.passphrase(confirm_new=True)
        home = Home.create(ctx.home_path, passphrase)
    result = asyncio.run(join(home, parsed, handle, zone, timeout))
    svc = result.service
    inviter = svc.board.view().members.get(parsed.inviter)  # type: ignore[call-overload]
    from circle.net.keys import fingerprint

    me = svc.board.view().members[svc.me]
    data = {"circle_id": svc.config.circle_id, "name": svc.config.name, "member_id": svc.me,
            "inviter": parsed.inviter, "inviter_handle": inviter.handle if inviter else None,
            "inviter_safety_number": fingerprint(inviter.sign_key) if inviter else None,
            "safety_number": fingerprint(me.sign_key),
            "members": sum(1 for m in svc.board.members() if m.active)}

    def human() -> None:
        click.echo(f"Joined {svc.config.name}, invited by {data['inviter_handle']}; you are {handle} ({svc.me}).")
        click.echo(f"{data['inviter_handle']}'s safety number: {data['inviter_safety_number']}")
        click.echo(f"Your safety number:  {data['safety_number']}")
        if not home.encrypted:
            click.echo("Note: no passphrase set - this device's data is protected only by file permissions.")
        _ask_match(str(data["inviter_handle"]),
                   f"post nothing; run `circle leave --circle \"{svc.config.name}\"` and ask for a new invite in person")

    emit(ctx, data, human)


async def _redeem(short, peer: str | None, interfaces: list[str], timeout: float) -> InviteCode:  # type: ignore[no-untyped-def]
    """The long code behind a short one: at --peer, or wherever mDNS finds it."""
    from circle.node.invites import find_inviter, redeem_short

    addresses = [peer] if peer else await find_inviter(short, interfaces or None)
    return await redeem_short(short, addresses, timeout)


@click.command()
@click.argument("member")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def remove(ctx: Ctx, member: str, yes: bool) -> None:
    """Remove a member and rotate the circle key."""
    svc = ctx.service()
    target = svc.board.member(member)
    if not yes and sys.stdin.isatty():
        click.confirm(f"Remove {target.handle} ({target.id})? They keep everything they already have; "
                      "they will not be able to read anything written from now on.", abort=True)
    removed, epoch = membership.remove(svc, member)
    remaining = sum(1 for m in svc.board.members() if m.active)
    data = {"removed": removed.id, "handle": removed.handle, "epoch": epoch, "remaining_members": remaining,
            "key_generation": membership.generation(svc)}

    def human() -> None:
        click.echo(f"Removed {removed.handle}. A new circle key (generation {data['key_generation']}) is sealed "
                   f"to the {remaining} remaining members.")
        click.echo(f"{removed.handle} keeps everything they already had on their device: removal cannot "
                   "take that back. From the next sync on, their device fails every handshake and cannot "
                   "decrypt anything new.")
        click.echo("Sync now (`circle sync`, or keep the app open) so everyone learns of the removal.")

    emit(ctx, data, human)


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_ctx
def leave(ctx: Ctx, yes: bool) -> None:
    """Leave this circle: sign your own removal (the others rotate the key)."""
    svc = ctx.service()
    if not yes and sys.stdin.isatty():
        click.confirm(f"Leave {svc.config.name}? Coming back takes a new invite from a member.", abort=True)
    membership.leave(svc)
    data = {"left": svc.config.circle_id, "name": svc.config.name}
    emit(ctx, data, lambda: click.echo(
        f"You left {svc.config.name}. Sync once (`circle sync`) so the others learn it; your device keeps "
        "what it already had, and the others' next key is never sealed to it."))


commands = [invite, join_command, remove, leave]
