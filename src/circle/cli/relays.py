"""`circle relays`, `circle relay add|remove` and `circle bundle write|read`.

The relay list lives in the circle's document (any member may add or remove
one; it syncs like everything else). `circle relay` with no subcommand runs a
relay server (cli_relay.py), which attaches `relay_add` / `relay_remove`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from circle.cli.common import Ctx, emit, handle_of, json_option, pass_ctx, table


def _relay_dict(ctx: Ctx, rec: Any) -> dict[str, Any]:
    svc = ctx.service()
    return {"id": rec.id, "url": rec.url, "added_by": rec.added_by, "added_by_handle": handle_of(svc, rec.added_by),
            "added_at": rec.added_at, "active": rec.active, "removed_at": rec.removed_at}


@click.command("relays")
@click.option("--all", "show_all", is_flag=True, help="Also list relays that were removed.")
@json_option
@pass_ctx
def relays_command(ctx: Ctx, show_all: bool) -> None:
    """List the circle's relays (synced in the document; any member may change it)."""
    from circle.node.relays import STATE_KEY

    svc = ctx.service()
    items = [_relay_dict(ctx, r) for r in svc.board.relays(include_removed=show_all)]
    data = {"relays": items, "state_saved": STATE_KEY in svc.config.settings, "epoch": svc.config.epoch}

    def human() -> None:
        if not items:
            click.echo("No relays. Add one with `circle relay add wss://HOST/PATH`.")
            return
        table([[r["url"], r["added_by_handle"], time.strftime("%Y-%m-%d", time.localtime(r["added_at"] / 1000)),
                "listed" if r["active"] else "removed"] for r in items],
              ["url", "added by", "added", "state"])

    emit(ctx, data, human)


@click.command("add")
@click.argument("url")
@json_option
@pass_ctx
def relay_add(ctx: Ctx, url: str) -> None:
    """Add a relay (wss://; plain ws:// only for one on this machine) to the circle's list."""
    from circle.net.relay_protocol import check_relay_url

    check_relay_url(url)  # a ws:// relay elsewhere would see the mailbox token in clear
    svc = ctx.service()
    rec = svc.board.add_relay(url)
    emit(ctx, _relay_dict(ctx, rec), lambda: click.echo(
        f"Added relay {rec.url}. Members use it from their next `circle sync` (or at once if running)."))


@click.command("remove")
@click.argument("url")
@json_option
@pass_ctx
def relay_remove(ctx: Ctx, url: str) -> None:
    """Remove a relay from the circle's list (its stored ciphertext stays there until it expires)."""
    svc = ctx.service()
    rec = svc.board.remove_relay(url)
    emit(ctx, _relay_dict(ctx, rec), lambda: click.echo(f"Removed relay {rec.url}."))


@click.group("bundle")
def bundle() -> None:
    """Encrypted bundle files for a USB stick (sneakernet)."""


@bundle.command("write")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_ctx
def bundle_write(ctx: Ctx, file: Path) -> None:
    """Write the whole circle, sealed under the current circle key, to FILE."""
    from circle.node import bundles

    svc = ctx.service()
    count = bundles.write(svc, file)
    data = {"file": str(file), "envelopes": count, "snapshots": 1, "bytes": file.stat().st_size,
            "epoch": svc.config.epoch}
    emit(ctx, data, lambda: click.echo(
        f"Wrote {file} ({data['bytes']} bytes, encrypted). Only members of this circle can read it."))


@bundle.command("read")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
@pass_ctx
def bundle_read(ctx: Ctx, file: Path) -> None:
    """Merge a bundle into this circle. An envelope that fails to open
    (tampered, another circle, a removed member), or a part of a large
    snapshot that is missing, repeated or out of place, refuses the whole
    file. Envelopes under an epoch this device does not hold yet are retried
    once the others were merged (they may carry the grant of that epoch)."""
    from circle.net.keys import member_id_for
    from circle.node import bundles

    svc = ctx.service()
    got = bundles.read(svc, file)
    authors = sorted(handle_of(svc, member_id_for(a)) for a in got.authors)
    data = {"file": str(file), "envelopes": got.envelopes, "snapshots": got.snapshots, "changes": got.changes,
            "parts": got.parts, "changed": got.changed, "authors": authors,
            "skipped_unknown_epoch": got.skipped_unknown_epoch, "new_changes": got.new_changes}
    emit(ctx, data, lambda: click.echo(
        f"Read {file}: {'merged new data' if got.changed else 'nothing new'} "
        f"({got.snapshots} snapshot(s), {got.changes} change(s), from {', '.join(authors) or 'nobody'})."))


commands = [relays_command, bundle]
