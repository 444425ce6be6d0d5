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
@json_option
@pass_ctx
def invite(ctx: Ctx, expires_min: float, listen: str, addresses: tuple[str, ...], relays: tuple[str, ...],
           no_qr: bool) -> None:
    """Show a one-time invite code (and QR code) and wait for the new member."""
    from circle.net.keys import fingerprint
    from circle.node.invites import InviteHost, JoinedEvent
    from circle.node.live import parse_listen

    svc = ctx.service()
    mine = fingerprint(svc.board.view().members[svc.me].sign_key)

    async def run() -> JoinedEvent | None:  # noqa: F821
        joined: asyncio.Future[JoinedEvent] = asyncio.get_running_loop().create_future()
        host = InviteHost(svc, on_joined=lambda e: joined.done() or joined.set_result(e))
        bound = await host.start(*parse_listen(listen))
        addrs = tuple(addresses) or tuple(local_addresses(bound[1]) if bound[0] == "0.0.0.0" else [f"{bound[0]}:{bound[1]}"])
        code = host.create(expires_min, addrs, tuple(relays) or tuple(r.url for r in _relays(svc)))
        text = code.encode()
        if ctx.json:
            click.echo(json.dumps({"event": "invite", "code": text, "safety_number": mine,
                                   "expires_at": code.expires_at, "addresses": list(addrs)}))
        else:
            click.echo(f"Invite code for {svc.config.name} (one use, expires in {expires_min:g} min):\n\n  {text}\n")
            if not no_qr:
                click.echo(qr_text(text))
            click.echo(f"Your safety number: {mine}")
            click.echo(f"They run:  circle join {text} --handle THEIR-NAME")
        sys.stdout.flush()
        try:
            while not joined.done():
                left = code.expires_at - time.time()
                if left <= 0:
                    return None
                if not ctx.json and sys.stderr.isatty():
                    click.echo(f"\rWaiting for the new member... {int(left) // 60:02d}:{int(left) % 60:02d} left ",
                               err=True, nl=False)
                await asyncio.wait({joined}, timeout=min(1.0, left))
            return joined.result()
        finally:
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


def _relays(svc):  # type: ignore[no-untyped-def]
    getter = getattr(svc.board, "relays", None)
    return list(getter()) if getter is not None else []


@click.command("join")
@click.argument("code")
@click.option("--handle", required=True, help="Your pseudonym in this circle.")
@click.option("--zone", default="", help="Your coarse area (never an address).")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest (new device only).")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@json_option
@pass_ctx
def join_command(ctx: Ctx, code: str, handle: str, zone: str, no_passphrase: bool, timeout: float) -> None:
    """Join a circle with an invite code from a member."""
    from circle.node.invites import INVITE_CLOCK_SKEW_S, join
    parsed = InviteCode.parse(code)  # a mistyped code fails here, before any network traffic
    # The inviter judges expiry on its own clock; this laptop's clock may be
    # hours off, so it gives up on its own only beyond the stated skew.
    if parsed.expires_at + INVITE_CLOCK_SKEW_S <= time.time():
        raise InviteError("this invite has expired; ask for a new one")
    if not handle.strip():
        raise UsageError("a handle is required")
    if len(handle.strip()) > 40:
        raise UsageError("a handle has at most 40 characters")
    if len(zone.strip()) > 60:
        raise UsageError("a zone has at most 60 characters")
    handle, zone = handle.strip(), zone.strip()
    check_profile_text(handle, zone)
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
