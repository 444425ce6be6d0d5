"""`circle sync` (once) and `circle serve` (keep syncing in the background)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from circle.node.live import LiveSync

from circle.cli.common import Ctx, emit, json_option, pass_ctx, table

_peer_option = click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
                            help="A peer to sync with directly (for networks that block multicast).")
_discovery_option = click.option("--no-discovery", is_flag=True, help="Do not use mDNS; only --peer addresses.")
_interface_option = click.option("--interface", "interfaces", multiple=True, metavar="IP",
                                 help="Run mDNS only on these local addresses (default: all).")


def _progress_printer(live: LiveSync) -> None:
    """One status line on stderr while a large transfer runs (TTY only)."""
    if not sys.stderr.isatty():
        return
    parts = [f"{p.handle or p.key}: {p.progress[0] // 1024}/{p.progress[1] // 1024} KiB"
             for p in live.peers.values() if p.progress]
    if parts:
        click.echo("\r" + "  ".join(parts) + " " * 10, err=True, nl=False)


@click.command()
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds to wait per peer.")
@_peer_option
@_discovery_option
@_interface_option
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Where to accept peers while syncing.")
@json_option
@pass_ctx
def sync(ctx: Ctx, timeout: float, peers: tuple[str, ...], no_discovery: bool,
         interfaces: tuple[str, ...], listen: str) -> None:
    """Sync once with every peer found on the LAN and every --peer.

    One line per member (however many sessions it took) and per address where
    no member answered. Exit status 6 if a member that answered is not in
    sync, or if nothing at all could be synced."""
    from circle.node.live import LiveSync, parse_listen

    svc = ctx.service()

    async def run() -> list[dict[str, object]]:
        live = LiveSync(svc, listen=parse_listen(listen), manual_peers=peers, discovery=not no_discovery,
                        interfaces=list(interfaces) or None)
        live.on_change = lambda: _progress_printer(live)
        await live.start(keep_connected=False)
        try:
            members = await live.sync_round(timeout)
        finally:
            await live.close()
        relay_rows: list[dict[str, object]] = []
        if live.relays is not None:
            st = live.relays.stats
            for rr in live.relay_results:
                relay_rows.append({
                    "peer": rr.url, "addresses": [rr.url], "path": "relay", "mailbox": rr.epoch,
                    "member": None, "handle": None, "in_sync": rr.error is None, "error": rr.error,
                    "changes_applied": st.change_envelopes_new, "snapshot_received": st.snapshots_new > 0,
                    "snapshot_sent": st.snapshots_sent > 0, "envelopes_sent": st.envelopes_sent,
                    "bytes_sent": None, "bytes_received": None, "seconds": None,
                })
        return relay_rows + [{
            "peer": m.addresses[0] if m.addresses else None, "addresses": m.addresses,
            "path": "lan", "member": m.member_id, "handle": m.handle, "in_sync": m.in_sync,
            "error": m.error, "seconds": round(m.seconds, 3),
            "bytes_sent": m.bytes_sent, "bytes_received": m.bytes_received,
            "changes_applied": m.changes_applied, "snapshot_sent": m.snapshot_sent,
            "snapshot_received": m.snapshot_received,
        } for m in members]

    results = asyncio.run(run())

    def human() -> None:
        if not results:
            click.echo("No peers found. Give one with --peer HOST:PORT if this network blocks multicast.")
            return

        def size(n: object) -> str:
            return "-" if n is None else str(n)

        def where(r: dict[str, object]) -> str:
            addresses = r.get("addresses")
            return ", ".join(map(str, addresses)) if isinstance(addresses, list) and addresses else "?"

        rows = [[where(r),
                 str(r["handle"] or r["member"] or ("relay" if r.get("path") == "relay" else "(no member)")),
                 "in sync" if r["in_sync"] else f"not in sync: {r['error']}",
                 f"{size(r['bytes_sent'])}/{size(r['bytes_received'])}", str(r["changes_applied"])]
                for r in results]
        table(rows, ["peer", "member", "result", "bytes out/in", "changes applied"])

    emit(ctx, results, human)
    if sync_failed(results):
        sys.exit(6)


def sync_failed(results: list[dict[str, object]]) -> bool:
    """Exit 6 when a member that answered is not in sync, or nothing synced at all.

    An address where no member answered (nothing listening, a stranger)
    fails the run only if it was the only thing there was to sync with."""
    if any(r["member"] is not None and not r["in_sync"] for r in results):
        return True
    return bool(results) and not any(r["in_sync"] for r in results)


@click.command()
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Address to accept peers on.")
@_peer_option
@_discovery_option
@_interface_option
@json_option
@pass_ctx
def serve(ctx: Ctx, listen: str, peers: tuple[str, ...], no_discovery: bool, interfaces: tuple[str, ...]) -> None:
    """Keep syncing in the foreground until interrupted (the TUI does the same)."""
    from circle.node.live import LiveSync, parse_listen

    svc = ctx.service()

    async def run() -> None:
        live = LiveSync(svc, listen=parse_listen(listen), manual_peers=peers, discovery=not no_discovery,
                        interfaces=list(interfaces) or None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        seen: dict[str, tuple[object, ...]] = {}

        def report() -> None:
            for key in [k for k in seen if k not in live.peers]:
                del seen[key]  # left the list: lost on the LAN with no session open
                if ctx.json:
                    click.echo(json.dumps({"event": "peer_gone", "peer": key, "t": time.time()}))
                else:
                    click.echo(f"{key}: gone from the LAN")
            for key, p in live.peers.items():
                snapshot = (p.connected, p.in_sync, p.error, p.member_id)
                if seen.get(key) != snapshot:
                    seen[key] = snapshot
                    if ctx.json:
                        click.echo(json.dumps({"event": "peer", "peer": key, "member": p.member_id,
                                               "connected": p.connected, "in_sync": p.in_sync,
                                               "error": p.error, "t": time.time()}), nl=True)
                    else:
                        state = "in sync" if p.in_sync else ("connected" if p.connected else "disconnected")
                        click.echo(f"{key} {p.handle or p.member_id or ''}: {state}"
                                   + (f" ({p.error})" if p.error else ""))
            sys.stdout.flush()

        live.on_change = report
        from circle.node.panic import LockWatch

        locked = asyncio.ensure_future(LockWatch(ctx.home_path).wait())  # `circle lock`: forget keys, stop
        locked.add_done_callback(lambda _t: stop.set())
        await live.start()
        assert live.bound is not None
        if ctx.json:
            click.echo(json.dumps({"event": "listening", "host": live.bound[0], "port": live.bound[1]}))
        else:
            click.echo(f"Listening on {live.bound[0]}:{live.bound[1]}; Ctrl-C to stop.")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await live.close()
            if locked.done():
                click.echo(json.dumps({"event": "locked"}) if ctx.json else "Locked: keys forgotten; stopping.")
            locked.cancel()

    asyncio.run(run())


commands = [sync, serve]
