"""`circle` with no subcommand: open the app for the CLI context's home."""

from __future__ import annotations

import os
from typing import Any

from circle.home import PASSPHRASE_ENV


def launch(ctx: Any) -> None:
    """Run the app; first run and the passphrase prompt happen inside it.

    A passphrase given non-interactively (--passphrase-file or the
    environment) is used; otherwise the app asks on its own screen, never
    with getpass.
    """
    from circle.tui.app import CircleApp

    passphrase = None
    if getattr(ctx, "passphrase_file", None) is not None or os.environ.get(PASSPHRASE_ENV) is not None:
        passphrase = ctx.passphrase()
    app = CircleApp(home_path=ctx.home_path, circle=ctx.circle, passphrase=passphrase)
    app.run()
