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
    from circle.tui.sync_view import CallbackSync

    d = build_demo(seed=seed)
    try:
        app = CircleApp(
            d.founder, sync=CallbackSync(d.peers),
            tickers=[(1.0, d.step_sync), (post_every, d.post_something)],
        )
        app.run()
    finally:
        d.close()


commands = [demo]
