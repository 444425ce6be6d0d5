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
    from circle.net.bundle import write_bundle
    from circle.node.relays import seal_bundle_envelopes

    svc = ctx.service()
    envs = seal_bundle_envelopes(svc)
    count = write_bundle(file, envs)
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
    (tampered, another circle, a removed member) refuses the whole file.
    Envelopes under an epoch this device does not hold yet are retried once
    the others were merged (they may carry the grant of that epoch)."""
    from circle.crdt.am import AmDoc
    from circle.errors import UnknownEpoch
    from circle.net.bundle import read_bundle
    from circle.net.envelope import Kind, OpenedEnvelope, open_envelope

    svc = ctx.service()
    envs = read_bundle(file)
    before = svc.doc.heads()
    snapshots = changes = 0
    authors: set[str] = set()
    todo = list(envs)
    while todo:
        accepted: list[OpenedEnvelope] = []
        unknown: list[bytes] = []
        for env in todo:
            try:
                accepted.append(open_envelope(env, lambda n: svc.config.epoch_keys.get(n), svc.is_active_member))
            except UnknownEpoch:
                unknown.append(env)
        if not accepted:
            if unknown and svc.doc.heads() == before:
                open_envelope(unknown[0], lambda n: svc.config.epoch_keys.get(n), svc.is_active_member)  # raises
            break
        # Everything in the file is checked (signed by members' devices) before
        # the document adopts it: snapshots first, then changes with their proofs.
        from circle.node.authorship import PROOF_BLOCK_MAGIC, decode_proofs, unpack_snapshot

        h0 = svc.doc.heads()
        for opened in accepted:
            if opened.kind is Kind.SNAPSHOT:
                saved, proofs = unpack_snapshot(opened.payloads[0])
                other = AmDoc.load(saved)
                svc.gate.stage(svc.doc, lambda fork, other=other: fork.merge(other), proofs)  # type: ignore[misc]
                snapshots += 1
        for opened in accepted:
            authors.add(handle_of(svc, opened.author_id))
            if opened.kind is Kind.CHANGES:
                chunks = [p for p in opened.payloads if not p.startswith(PROOF_BLOCK_MAGIC)]
                proofs = [x for p in opened.payloads if p.startswith(PROOF_BLOCK_MAGIC) for x in decode_proofs(p)]
                svc.gate.stage(svc.doc, lambda fork, chunks=chunks: fork.apply_changes(chunks), proofs)  # type: ignore[misc]
                changes += len(chunks)
        if svc.doc.heads() != h0:
            svc.remote_changed()  # reconcile: may adopt the key the `unknown` ones need
        todo = unknown
    changed = svc.doc.heads() != before
    data = {"file": str(file), "envelopes": len(envs), "snapshots": snapshots, "changes": changes,
            "changed": changed, "authors": sorted(authors), "skipped_unknown_epoch": len(todo),
            "new_changes": len(svc.doc.changes_since(before)) if changed else 0}
    emit(ctx, data, lambda: click.echo(
        f"Read {file}: {'merged new data' if changed else 'nothing new'} "
        f"({snapshots} snapshot(s), {changes} change(s), from {', '.join(sorted(authors)) or 'nobody'})."))


commands = [relays_command, bundle]
