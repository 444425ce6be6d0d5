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
    """Sync once with every peer found on the LAN and every --peer."""
    from circle.node.live import LiveSync, parse_listen

    svc = ctx.service()

    async def run() -> list[dict[str, object]]:
        live = LiveSync(svc, listen=parse_listen(listen), manual_peers=peers, discovery=not no_discovery,
                        interfaces=list(interfaces) or None)
        live.on_change = lambda: _progress_printer(live)
        await live.start(keep_connected=False)
        try:
            reports = await live.sync_round(timeout)
        finally:
            await live.close()
        relay_rows: list[dict[str, object]] = []
        if live.relays is not None:
            st = live.relays.stats
            for rr in live.relay_results:
                relay_rows.append({
                    "peer": rr.url, "path": "relay", "mailbox": rr.epoch, "member": None, "handle": None,
                    "in_sync": rr.error is None, "error": rr.error,
                    "changes_applied": st.change_envelopes_new, "snapshot_received": st.snapshots_new > 0,
                    "snapshot_sent": st.snapshots_sent > 0, "envelopes_sent": st.envelopes_sent,
                    "bytes_sent": None, "bytes_received": None, "seconds": None,
                })
        return relay_rows + [{
            "peer": f"{r.address[0]}:{r.address[1]}", "member": r.peer_member_id,
            "handle": live._handle(r.peer_member_id), "in_sync": r.in_sync,
            "error": str(r.error) if r.error else None, "seconds": round(r.seconds, 3),
            "bytes_sent": r.stats.wire_bytes_out, "bytes_received": r.stats.wire_bytes_in,
            "changes_applied": r.stats.changes_applied, "snapshot_sent": r.stats.snapshots_sent > 0,
            "snapshot_received": r.stats.snapshots_received > 0,
        } for r in reports]

    results = asyncio.run(run())

    def human() -> None:
        if not results:
            click.echo("No peers found. Give one with --peer HOST:PORT if this network blocks multicast.")
            return
        rows = [[str(r["peer"]), str(r["handle"] or r["member"] or ("relay" if r.get("path") == "relay" else "?")),
                 "in sync" if r["in_sync"] else f"FAILED: {r['error']}",
                 f"{r['bytes_sent']}/{r['bytes_received']}", str(r["changes_applied"])] for r in results]
        table(rows, ["peer", "member", "result", "bytes out/in", "changes applied"])

    emit(ctx, results, human)
    if results and not any(r["in_sync"] for r in results):
        sys.exit(6)


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
