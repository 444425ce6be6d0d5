"""`circle` (or `circle app`): open the app for the CLI context's home, with
live sync, invites and joining wired in."""

from __future__ import annotations

import os
from typing import Any

from circle.node.home import PASSPHRASE_ENV


def launch(ctx: Any, options: Any = None, bell: bool = False) -> None:
    """Run the app; first run and the passphrase prompt happen inside it.

    A passphrase given non-interactively (--passphrase-file or the
    environment) is used; otherwise the app asks on its own screen, never
    with getpass.
    """
    from circle.tui.app import CircleApp
    from circle.tui.live import LiveJoin, LiveLink, LiveOptions

    passphrase = None
    if getattr(ctx, "passphrase_file", None) is not None or os.environ.get(PASSPHRASE_ENV) is not None:
        passphrase = ctx.passphrase()
    link = LiveLink(options if options is not None else LiveOptions())
    app = CircleApp(home_path=ctx.home_path, circle=ctx.circle, passphrase=passphrase,
                    sync=link, invites=link, join=LiveJoin(), on_service=link.attach, bell=bell)
    app.run()
