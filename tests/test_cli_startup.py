"""Plain board commands must not load the network or UI stacks (start-up time)."""

from __future__ import annotations

import subprocess
import sys


def test_cli_import_does_not_load_network_or_ui_stacks() -> None:
    code = (
        "import sys, circle.cli.main\n"
        "heavy = [m for m in ('textual', 'websockets', 'zeroconf', 'circle.node.live', 'circle.node.relays', "
        "'circle.relay.server', 'segno') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_relay_default_port_is_the_servers() -> None:
    from circle.cli.relay import DEFAULT_PORT
    from circle.relay.server import DEFAULT_PORT as SERVER_DEFAULT

    assert DEFAULT_PORT == SERVER_DEFAULT
