"""`circle demo`: the terminal app on a throwaway circle (registered by cli.py)."""

from __future__ import annotations

import click


@click.command()
@click.option("--seed", type=int, default=7, show_default=True, help="Seed for the simulated members' posts.")
@click.option("--post-every", type=float, default=12.0, show_default=True,
              help="Seconds between the simulated members' posts.")
def demo(seed: int, post_every: float) -> None:
    """Open the app on a throwaway circle with sample data and two simulated members.

    Nothing touches your real circle: the demo lives in a temporary directory
    that is deleted when you quit.
    """
    from circle.tui.app import CircleApp
    from circle.tui.demo import build_demo
    from circle.tui.live import LoopbackDemo

    d = build_demo(seed=seed)
    live = LoopbackDemo(d)  # the simulated members sync with you over real loopback TCP sessions
    try:
        app = CircleApp(d.founder, sync=live.link, invites=live.link, on_service=live.attach,
                        tickers=[(post_every, d.post_something)])
        app.run()
    finally:
        d.close()


@click.command("app")
@click.option("--listen", default="0.0.0.0:0", show_default=True, help="Where to accept peers.")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT", help="A peer to keep syncing with.")
@click.option("--no-discovery", is_flag=True, help="Do not use mDNS; only --peer addresses.")
@click.option("--interface", "interfaces", multiple=True, metavar="IP", help="Run mDNS only on these addresses.")
@click.option("--invite-address", "invite_addresses", multiple=True, metavar="HOST:PORT",
              help="Address(es) to put in invite codes (default: this machine's LAN addresses).")
@click.option("--bell", is_flag=True, help="Ring the terminal bell with notifications.")
@click.pass_context
def app_command(ctx: click.Context, listen: str, peers: tuple[str, ...], no_discovery: bool,
                interfaces: tuple[str, ...], invite_addresses: tuple[str, ...], bell: bool) -> None:
    """Open the terminal app (what `circle` alone does), with sync options."""
    from circle.node.live import parse_listen
    from circle.node.panic import check_not_wiped
    from circle.tui.launch import launch

    check_not_wiped(ctx.obj.home_path)
    from circle.tui.live import LiveOptions

    launch(ctx.obj, LiveOptions(parse_listen(listen), peers, not no_discovery, interfaces, invite_addresses),
           bell=bell)


commands = [demo, app_command]
