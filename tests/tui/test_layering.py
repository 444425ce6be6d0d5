"""circle.crdt, net, node and relay must never import textual (DESIGN §2)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import importlib, pkgutil, sys
import circle.crdt, circle.net, circle.node, circle.relay
for pkg in (circle.crdt, circle.net, circle.node, circle.relay):
    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(mod.name)
import circle.errors
bad = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
print("LOADED", len([m for m in sys.modules if m.startswith("circle.")]))
assert not bad, f"textual imported by the core: {bad[:5]}"
"""


def test_core_does_not_import_textual() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED" in out.stdout


def test_the_check_itself_can_fail() -> None:
    """Guard against a vacuous check: importing the TUI does load textual."""
    script = "import sys, circle.tui.app; assert 'textual' in sys.modules"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
