"""`circle devices`, `circle device link|join|remove`: one person, several laptops.

A member is one long-term key (its first device); each further device has its
own keys, certified in person by the first one (like an invite, one-time
code). The member id people compare stays the same on every device.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import click

from circle.cli.common import Ctx, emit, json_option, pass_ctx, table
from circle.errors import InviteError, UsageError


@click.command("devices")
@json_option
@pass_ctx
def devices_command(ctx: Ctx) -> None:
    """This circle's devices: whose they are, fingerprints, which are revoked."""
    from circle.net.keys import fingerprint

    svc = ctx.service()
    m = svc.membership()
    here = svc.home.identity.verify_key
    rows, data = [], []
    for d in sorted(m.devices.values(), key=lambda d: (d.member != svc.member_key, d.added_at)):
        owner = m.members.get(d.member)
        active = m.active_device(d.key) is not None
        item = {"fingerprint": fingerprint(d.key), "member": owner.handle if owner else "?",
                "member_id": owner.id if owner else None, "this_device": d.key == here,
                "first_device": d.key == d.member, "active": active, "added_at": d.added_at}
        data.append(item)
        rows.append([item["fingerprint"], str(item["member"]) + (" (this device)" if d.key == here else ""),
                     "first" if d.key == d.member else "linked", "active" if active else "revoked"])
    emit(ctx, data, lambda: table(rows, ["fingerprint", "member", "kind", "state"]))


@click.group("device")
def device() -> None:
    """Link another laptop of yours, or revoke a lost or seized one."""


@device.command("link")
@click.option("--expires", "expires_min", type=float, default=10, show_default=True)
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Where to wait for the new device.")
@click.option("--address", "addresses", multiple=True, metavar="HOST:PORT")
@click.option("--no-qr", is_flag=True)
@json_option
@pass_ctx
def device_link(ctx: Ctx, expires_min: float, listen: str, addresses: tuple[str, ...], no_qr: bool) -> None:
    """Show a one-time code; on the new laptop run `circle device join CODE`."""
    from circle.cli.invite import qr_text
    from circle.net.discovery import local_addresses
    from circle.node.invites import InviteHost, JoinedEvent
    from circle.node.live import parse_listen

    svc = ctx.service()

    async def run() -> JoinedEvent | None:
        joined: asyncio.Future[JoinedEvent] = asyncio.get_running_loop().create_future()
        host = InviteHost(svc, on_joined=lambda e: joined.done() or joined.set_result(e))
        bound = await host.start(*parse_listen(listen))
        addrs = tuple(addresses) or tuple(local_addresses(bound[1]) if bound[0] == "0.0.0.0"
                                          else [f"{bound[0]}:{bound[1]}"])
        code = host.create_link(expires_min, addrs)
        text = code.encode()
        if ctx.json:
            click.echo(json.dumps({"event": "link", "code": text, "fingerprint": code.fingerprint,
                                   "expires_at": code.expires_at, "addresses": list(addrs)}))
        else:
            click.echo(f"Link code (one use, expires in {expires_min:g} min):\n\n  {text}\n")
            if not no_qr:
                click.echo(qr_text(text))
            click.echo(f"On your other laptop:  circle device join {text}")
        sys.stdout.flush()
        try:
            left = code.expires_at - time.time()
            await asyncio.wait({joined}, timeout=max(0.0, left))
            return joined.result() if joined.done() else None
        finally:
            await host.close()

    result = asyncio.run(run())
    if result is None:
        click.echo(json.dumps({"event": "expired"}) if ctx.json else "The link code expired unused.")
        sys.exit(7)
    from circle.net.keys import fingerprint

    fpr = fingerprint(bytes(svc.membership().devices[_key_of(svc, result.member_id)].key))
    if ctx.json:
        click.echo(json.dumps({"event": "linked", "device_fingerprint": fpr}))
    else:
        click.echo(f"Linked a new device ({fpr}). It now reads and writes as you.")


def _key_of(svc, device_id: str) -> bytes:  # type: ignore[no-untyped-def]
    from circle.net.keys import member_id_for

    for key in svc.membership().devices:
        if member_id_for(key) == device_id:
            return bytes(key)
    raise UsageError("the linked device is not in the document yet")


@device.command("join")
@click.argument("code")
@click.option("--no-passphrase", is_flag=True, help="Do not encrypt this device's data at rest.")
@click.option("--timeout", type=float, default=30.0, show_default=True)
@json_option
@pass_ctx
def device_join(ctx: Ctx, code: str, no_passphrase: bool, timeout: float) -> None:
    """Join your own circle from a new laptop with a code from `circle device link`."""
    from circle.net.invite import InviteCode
    from circle.node.home import Home
    from circle.node.invites import INVITE_CLOCK_SKEW_S, join

    parsed = InviteCode.parse(code)
    if parsed.expires_at + INVITE_CLOCK_SKEW_S <= time.time():  # the inviter's clock decides (clock rules)
        raise InviteError("this link code has expired; make a new one")
    if Home.exists(ctx.home_path):
        home = ctx.home()
    else:
        home = Home.create(ctx.home_path, None if no_passphrase else ctx.passphrase(confirm_new=True))
    result = asyncio.run(join(home, parsed, "device", "", timeout))
    svc = result.service
    me = svc.board.view().members.get(svc.me)  # type: ignore[call-overload]
    data = {"circle_id": svc.config.circle_id, "name": svc.config.name, "member_id": svc.me,
            "handle": me.handle if me else None, "linked": svc.member_key != home.identity.verify_key}
    emit(ctx, data, lambda: click.echo(
        f"This laptop is now one of {data['handle']}'s devices in {svc.config.name} (member {svc.me})."))


@device.command("remove")
@click.argument("fingerprint_prefix")
@click.option("--yes", is_flag=True)
@json_option
@pass_ctx
def device_remove(ctx: Ctx, fingerprint_prefix: str, yes: bool) -> None:
    """Revoke a device (lost, stolen, seized): it is shut out and the key rotates."""
    from circle.net.keys import fingerprint
    from circle.node import membership

    svc = ctx.service()
    m = svc.membership()
    want = fingerprint_prefix.replace(" ", "").lower()
    hits = [d for d in m.devices.values()
            if fingerprint(d.key).replace(" ", "").startswith(want) and m.active_device(d.key) is not None]
    if len(hits) != 1:
        raise UsageError(f"'{fingerprint_prefix}' matches {len(hits)} active devices; give more of the fingerprint")
    target = hits[0]
    if target.member != svc.member_key:
        raise UsageError("that is another member's device; remove the member instead (`circle remove`)")
    if target.key == svc.home.identity.verify_key:
        raise UsageError("this is the device you are using; revoke it from another of your devices")
    if not yes and sys.stdin.isatty():
        click.confirm(f"Revoke device {fingerprint(target.key)}? It keeps what it already has.", abort=True)
    number = membership.remove_device(svc, target.key)
    data = {"revoked": fingerprint(target.key), "key_generation": membership.generation(svc), "epoch": number}
    emit(ctx, data, lambda: click.echo(
        f"Revoked {data['revoked']}; the circle key rotated (generation {data['key_generation']}). "
        "It keeps what it already had; it cannot read or write anything new."))


commands = [devices_command, device]
