"""Drive JavaScript Automerge (tests/js/amtool.mjs) from tests.

The reference implementation writes values circle never writes (Counters,
Timestamps, Text objects) and is the independent reader of our documents.
Tests using it skip with a reason when node or the npm install is missing;
`.ci/run` runs `npm ci` in tests/js so CI always has both."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent / "js"
TOOL = JS_DIR / "amtool.mjs"


def require_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: JavaScript Automerge interop tests need Node.js 20+")
    if not (JS_DIR / "node_modules" / "@automerge" / "automerge").is_dir():
        pytest.skip("JavaScript Automerge is not installed: run `npm ci` in tests/js")
    return node


def _run(args: list[str]) -> str:
    node = require_node()
    out = subprocess.run([node, str(TOOL), *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"amtool {args[0]} failed: {out.stderr}")
    return out.stdout


def js_edit(saved: bytes, ops: list[dict[str, Any]], actor: bytes | None = None) -> bytes:
    """Load `saved` in JavaScript Automerge, apply `ops` as one change (by
    `actor` if given: a member's device running a modified client), return
    the saved result."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.am", Path(tmp) / "out.am"
        src.write_bytes(saved)
        _run(["edit", str(src), str(dst), json.dumps(ops), *([actor.hex()] if actor else [])])
        return dst.read_bytes()


def js_read(saved: bytes) -> dict[str, Any]:
    """What JavaScript Automerge reads from `saved`: meta and titles by record id."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.am"
        src.write_bytes(saved)
        result: dict[str, Any] = json.loads(_run(["read", str(src)]))
        return result
